"""Edits on large windows do work only where a region's pixels or border are, with the same result."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.applier import Edit, apply_edits
from engine.edits import blend
from engine.edits.blend import edge_foreground, foreground_colour, soft_matte
from engine.edits.colour import to_linear
from engine.edits.recolor import material_pattern
from engine.actions.recolor import Recolor


def photo_and_scattered_region(height=1100, width=1500, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (height // 50, width // 50, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    rgb = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    region = np.zeros((height, width), bool)
    for cy, cx in rng.integers(0, [height, width], (12, 2)):
        cv2.circle(region.view(np.uint8), (int(cx), int(cy)), int(rng.integers(10, 60)), 1, -1)
    return rgb, region


@pytest.mark.parametrize("band", [4, 7])  # matte subsampling 2 and 3, surface colour step 3 and 5
def test_tiled_filters_match_one_run_over_the_whole_window(monkeypatch, band):
    rgb, region = photo_and_scattered_region(1110, 1500)  # sides: multiples of every step
    protect = np.zeros_like(region)
    protect[:, :40] = True
    tiled = soft_matte(rgb, region, protect, band=band)
    soft = (tiled > 0) & (tiled < 1)
    tiled_surface = edge_foreground(rgb, tiled, region, band)
    monkeypatch.setattr(blend, "TILE", 10**6)  # one tile: the whole window at once
    whole = soft_matte(rgb, region, protect, band=band)
    assert np.array_equal(tiled, whole)
    whole_surface = foreground_colour(to_linear(rgb), region & (whole >= 1), region, 2 * band + 1)
    assert np.array_equal(tiled_surface[soft], whole_surface[soft])


def test_material_is_evaluated_only_where_asked_with_the_same_values():
    rgb, region = photo_and_scattered_region(600, 800, seed=1)
    lightness = rgb.mean(axis=2).astype(np.float32) / 2.55
    where = cv2.dilate(region.view(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    for material in ("wood", "stone"):
        everywhere = material_pattern(material, lightness, region, seed=5)
        subset = material_pattern(material, lightness, region, seed=5, where=where)
        assert np.array_equal(subset[where], everywhere[where]) and not subset[~where].any()


def test_protected_pixels_stay_byte_identical_on_a_large_scattered_edit():
    rgb, region = photo_and_scattered_region(seed=2)
    protect = np.zeros_like(region)
    protect[::3] = True  # every third row, through every fragment
    out = apply_edits(rgb, [Edit(Recolor((40, 90, 200)), region)], protect)
    assert np.array_equal(out[protect], rgb[protect])
    changed = (out != rgb).any(axis=2)
    assert changed[region & ~protect].mean() > 0.9


def test_kernels_in_chunks_on_threads_give_the_same_pixels():
    from engine.edits.backend import NumpyBackend
    from engine.edits.kernels import RecolorParams, ToneKernelParams

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (300_001, 3), dtype=np.uint8)
    material = rng.normal(0, 1, len(pixels)).astype(np.float32)
    recolor = RecolorParams(50.0, 1.2, 60.0, (1.1, 0.9, 0.8))
    tone = ToneKernelParams((1.02, 1.0, 0.97), 1.3, 2.0, 0.5, 1.1)
    whole, chunked = NumpyBackend(chunk=10**9), NumpyBackend(chunk=7_000)
    assert np.array_equal(whole.recolor(pixels, recolor, material), chunked.recolor(pixels, recolor, material))
    assert np.array_equal(whole.tone(pixels, tone), chunked.tone(pixels, tone))
