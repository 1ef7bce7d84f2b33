"""Masks that look like a text-prompted segmenter's, made from a rendered scene's exact masks.

Quality figures measured with exact masks say little about real jobs: SAM3 does not hand those
over. This module degrades exact masks the way SAM3's output is degraded, seeded, so the mask
fitting (engine/maskfit.py), the merging of duplicates (engine/dedupe.py) and the edits can be
judged against known truth on masks like the ones they will get.

What SAM3 does to a mask, and the parameter that models it (``SegmenterStyle``):

- ``grid`` 288: SAM3 predicts every mask as 288 x 288 logits for the whole (square-resized)
  photo and they are scaled up bilinearly and thresholded at 0. The exact mask is therefore
  averaged down to a 288 x 288 coverage grid first: structures thinner than a cell (grout lines,
  thin frames, a lamp pole at a distance) fade or vanish, corners round off, and at 12 MP
  (4000 x 3000) one cell is about 14 x 10 photo pixels.
- ``shift_cells`` 1.0: the predicted outline sits up to one prediction pixel in or out of the
  true one. The displacement is a smooth random field (``wobble_cells``, its correlation length
  in cells, 12), so outlines wobble along their length rather than shifting uniformly - the fuzzy
  wall and floor edges users describe.
- ``noise`` 0.15 (in cells of signed distance): per-cell jitter of the logits, which turns into
  small stair steps once scaled up.
- ``holes_per_mp`` / ``islands_per_mp``: small holes inside large masks and stray islands near
  them, one to two cells across, a few per megapixel of mask area, as seen in thresholded
  low-resolution logits on textured surfaces.
- ``overlaps``: concept pairs (a, b) where a's mask runs into b by up to ``overlap_cells`` cells
  along their shared outline (the wall mask running over the door frame and the skirting board,
  the floor mask running under the furniture's legs).
- ``duplicates``: for multi-instance concepts the same object comes back twice (a second,
  independently degraded copy of its mask, as the query decoder proposes near-identical boxes;
  Ultralytics added NMS to its SAM3 predictor for this, PR #23751), and sometimes nested (a part
  of the object as its own detection; labelme suppresses masks contained in others, PR #2088).
- ``blind``: concepts the model does not find at all, typically "background"
  (facebookresearch/sam3 issue #409: the prompt "usually produces nothing").

    coarse = segmenter_like(masks, seed=3)                              # dict of bool masks
    found = segmenter_like_instances(masks, seed=3, multi={"Furniture"})  # instances per concept
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

INTERIOR_OVERLAPS: tuple[tuple[str, str], ...] = (
    ("Wall", "Frame_Molding"),
    ("Wall", "Door"),
    ("Floor", "Furniture"),
    ("Ceiling", "Frame_Molding"),
)


@dataclass(frozen=True)
class SegmenterStyle:
    grid: int = 288
    shift_cells: float = 1.0
    wobble_cells: float = 12.0
    noise: float = 0.15
    holes_per_mp: float = 4.0
    islands_per_mp: float = 4.0
    overlaps: tuple[tuple[str, str], ...] = INTERIOR_OVERLAPS
    overlap_cells: float = 1.0
    duplicate_rate: float = 0.5  # share of multi-instance objects detected twice
    nested_rate: float = 0.3  # share also detected as a part of themselves
    blind: frozenset[str] = field(default_factory=lambda: frozenset({"Background"}))


DEFAULT_STYLE = SegmenterStyle()


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], corr: float) -> np.ndarray:
    """A smooth random field in [-1, 1] with correlation length ``corr`` (in grid cells)."""
    field_ = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), max(corr / 2, 0.5))
    peak = float(np.abs(field_).max())
    return field_ / peak if peak > 0 else field_


def _signed_distance(coverage: np.ndarray) -> np.ndarray:
    """Signed distance to the 0.5 level of a coverage grid, in cells (positive inside). Near the
    outline the coverage itself places the edge to a fraction of a cell."""
    inside = (coverage >= 0.5).astype(np.uint8)
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    sdf = np.where(inside > 0, d_in - 0.5, 0.5 - d_out).astype(np.float32)
    near = np.abs(sdf) <= 1.0
    sdf[near] = coverage[near] - 0.5
    return sdf


def _bumps(rng: np.random.Generator, where: np.ndarray, count: int, sign: float) -> np.ndarray:
    """``count`` round bumps of one to two cells, centred on random cells of ``where``."""
    out = np.zeros(where.shape, np.float32)
    ys, xs = np.nonzero(where)
    if count <= 0 or ys.size == 0:
        return out
    for i in rng.choice(ys.size, size=min(count, ys.size), replace=False):
        radius = float(rng.uniform(0.6, 1.2))
        cv2.circle(out, (int(xs[i]), int(ys[i])), max(1, round(radius)), 1.0, -1)
    return sign * 3.0 * cv2.GaussianBlur(out, (0, 0), 0.6)


def coarse_logits(mask: np.ndarray, rng: np.random.Generator, style: SegmenterStyle = DEFAULT_STYLE,
                  *, grow_into: np.ndarray | None = None) -> np.ndarray:
    """The ``grid`` x ``grid`` logits (signed distance in cells) a segmenter would give for
    ``mask``; ``grow_into``: a neighbour's exact mask the outline runs into."""
    g = style.grid
    coverage = cv2.resize(mask.astype(np.float32), (g, g), interpolation=cv2.INTER_AREA)
    logits = _signed_distance(coverage)
    logits += style.shift_cells * _smooth_field(rng, (g, g), style.wobble_cells)
    logits += style.noise * rng.standard_normal((g, g)).astype(np.float32)
    if grow_into is not None and grow_into.any():
        other = cv2.resize(grow_into.astype(np.float32), (g, g), interpolation=cv2.INTER_AREA) > 0.25
        reach = np.abs(logits) <= style.overlap_cells + 1.0
        push = style.overlap_cells * (0.5 + 0.5 * np.abs(_smooth_field(rng, (g, g), style.wobble_cells)))
        logits = np.where(other & reach & (logits < 0), logits + push + 0.5, logits)
    area_mp = float(mask.sum()) / 1e6
    inner = logits > 2.5
    outer = (logits < -1.5) & (logits > -6.0)
    logits += _bumps(rng, inner, int(rng.poisson(style.holes_per_mp * area_mp)), -1.0)
    logits += _bumps(rng, outer, int(rng.poisson(style.islands_per_mp * area_mp)), +1.0)
    return logits


def upscale(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Logits scaled to the photo bilinearly and thresholded at 0, as SAM3's post-processing does."""
    h, w = shape
    return cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR) > 0


def coarse_mask(mask: np.ndarray, rng: np.random.Generator, style: SegmenterStyle = DEFAULT_STYLE,
                *, grow_into: np.ndarray | None = None) -> np.ndarray:
    return upscale(coarse_logits(mask, rng, style, grow_into=grow_into), mask.shape)


def segmenter_like(masks: Mapping[str, np.ndarray], seed: int,
                   style: SegmenterStyle = DEFAULT_STYLE) -> dict[str, np.ndarray]:
    """Each concept's union mask as a segmenter would return it (``blind`` concepts come back empty)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(masks):
        mask = masks[name]
        if name in style.blind:
            out[name] = np.zeros_like(mask, dtype=bool)
            continue
        into = None
        for a, b in style.overlaps:
            if a == name and b in masks:
                into = masks[b] if into is None else into | masks[b]
        out[name] = coarse_mask(mask, np.random.default_rng(rng.integers(2**32)), style, grow_into=into)
    return out


def _components(mask: np.ndarray) -> list[np.ndarray]:
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return [labels == k for k in range(1, count)]


def _part_of(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A nested detection: the object's upper or lower part (a sofa's back, a lamp's shade)."""
    ys = np.flatnonzero(mask.any(axis=1))
    cut = int(ys[0] + (ys[-1] - ys[0]) * rng.uniform(0.35, 0.65))
    part = mask.copy()
    if rng.random() < 0.5:
        part[cut:] = False
    else:
        part[:cut] = False
    return part


def segmenter_like_instances(masks: Mapping[str, np.ndarray], seed: int, multi: Iterable[str] = (),
                             style: SegmenterStyle = DEFAULT_STYLE) -> dict[str, list[np.ndarray]]:
    """Each concept's detections, best first, as a segmenter would list them: one per connected
    object of a ``multi`` concept (plus duplicates and nested parts), one for the others."""
    rng = np.random.default_rng(seed)
    multi = set(multi)
    unions = segmenter_like(masks, seed, style)
    out: dict[str, list[np.ndarray]] = {}
    for name in sorted(masks):
        if name not in multi:
            out[name] = [unions[name]] if unions[name].any() else []
            continue
        found: list[np.ndarray] = []
        for obj in _components(masks[name]):
            found.append(coarse_mask(obj, np.random.default_rng(rng.integers(2**32)), style))
            if rng.random() < style.duplicate_rate:
                found.append(coarse_mask(obj, np.random.default_rng(rng.integers(2**32)), style))
            if rng.random() < style.nested_rate:
                found.append(coarse_mask(_part_of(obj, rng), np.random.default_rng(rng.integers(2**32)), style))
        out[name] = [f for f in found if f.any()]
    return out
