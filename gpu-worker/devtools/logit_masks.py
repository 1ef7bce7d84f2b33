"""Segmenter-like masks made the way SAM3 makes its own: logits on a 288 x 288 grid, upsampled.

SAM3 predicts, per concept, logits on a ``GRID`` x ``GRID`` grid covering the photo resized to a
square, upsamples them bilinearly to the photo's size (``torch.nn.functional.interpolate``,
``align_corners=False``) and keeps the pixels above 0. ``logit_masks`` follows that path from the
exact masks of a rendered scene, with the errors a learned predictor makes added on the grid:

1. Pseudo-logits. The exact mask on a square grid ``SUBCELLS`` times finer than the prediction
   grid, its signed distance to the outline (positive inside, in cells), averaged over each cell
   (a cell's soft coverage, said as how deep inside the outline its content lies) and clipped to
   +-``saturation_cells`` (3): a predictor is confident away from outlines, so far from them no
   perturbation below flips a cell but spill and blotches (steps 3, 4). Structures thinner than a
   cell fade, as they do for SAM3 (grout lines).
2. A bias per concept, uniform in +-``bias_cells`` (0.5): some concepts come out fatter, others
   thinner, by up to half a cell all round.
3. Spill across a neighbour's border, for the pairs in ``spill_pairs`` (the wall into the door
   and window frames, the ceiling into the crown molding, furniture onto the floor, the product
   onto its contact shadow: neighbours with little contrast or a strong semantic link). Along
   about half of the shared border, chosen by a smooth field with a ``spill_corr_cells`` (8)
   correlation length, the first concept's outline moves into the second one by up to
   ``spill_cells`` (2).
4. Blotches: ``holes`` (2) and ``islands`` (2) per concept, Gaussian bumps of +-2x saturation with
   a radius of 0.8-2 cells (about 2-4 cells across once thresholded), holes deep inside the
   concept, islands within 5 cells beyond their own reach outside it, none touching the outline:
   a predictor's confident mistakes on a texture or a highlight.
5. A smooth geometric warp, its largest displacement ``warp_cells`` (1.25) times U(0.5, 1),
   correlation length ``warp_corr_cells`` (32): the predictor's features are coarse, so outlines
   sit up to about a cell off the photo's edges, in a direction that drifts slowly along them.
6. Correlated logit noise at two scales, each clipped at 3 sigma so the outline's displacement
   has a hard bound: ``coarse_noise`` (sigma 0.25 cell, correlation 16 cells: a slow wobble) and
   ``fine_noise`` (sigma 0.15 cell, correlation 1.5 cells: the cell-scale unevenness).

Logits are in cells of signed distance, so a logit change of d moves the outline by about d
cells; apart from spill and blotches an outline lies within ``outline_bound_cells`` of the true
one (warp + bias + 3 sigma of each noise, 2.95 cells; about 1 cell typical). Concepts in
``blind`` ("Background": a prompt SAM3 finds nothing for) come out empty. Every concept draws
from its own seeded stream (seed, name), so the masks do not depend on which others are asked.
The parameters were chosen from the mechanism above before any mask fit was measured with them,
and were not changed after its figures were seen. Output: union masks per concept (instances
and duplicate detections are not modelled).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

GRID = 288  # SAM3's mask side
SUBCELLS = 4  # finer grid the signed distance is measured on, per prediction cell


@dataclass(frozen=True)
class LogitStyle:
    saturation_cells: float = 3.0
    bias_cells: float = 0.5
    spill_pairs: tuple[tuple[str, str], ...] = (
        ("Wall", "Frame_Molding"), ("Ceiling", "Frame_Molding"), ("Furniture", "Floor"), ("Product", "Shadow"))
    spill_cells: float = 2.0
    spill_corr_cells: float = 8.0
    holes: int = 2
    islands: int = 2
    warp_cells: float = 1.25
    warp_corr_cells: float = 32.0
    coarse_noise: tuple[float, float] = (0.25, 16.0)  # sigma (cells of logit), correlation (cells)
    fine_noise: tuple[float, float] = (0.15, 1.5)
    blind: tuple[str, ...] = ("Background",)

    @property
    def outline_bound_cells(self) -> float:
        return self.warp_cells + self.bias_cells + 3 * (self.coarse_noise[0] + self.fine_noise[0])


DEFAULT_LOGIT_STYLE = LogitStyle()


def _field(rng: np.random.Generator, corr_cells: float) -> np.ndarray:
    """Smooth Gaussian noise on the grid, unit standard deviation, clipped at 3."""
    f = cv2.GaussianBlur(rng.standard_normal((GRID, GRID)).astype(np.float32), (0, 0), corr_cells,
                         borderType=cv2.BORDER_REFLECT)
    return np.clip(f / max(float(f.std()), 1e-12), -3.0, 3.0)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """The exact mask's signed distance to its outline in cells, per grid cell (positive inside)."""
    side = GRID * SUBCELLS
    fine = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA) >= 0.5
    inside = cv2.distanceTransform(fine.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform((~fine).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    sdf = np.where(fine, inside - 0.5, 0.5 - outside) / SUBCELLS
    return cv2.resize(sdf, (GRID, GRID), interpolation=cv2.INTER_AREA)


def _blotches(rng: np.random.Generator, sdf: np.ndarray, count: int, sign: float, style: LogitStyle) -> np.ndarray:
    """``count`` Gaussian bumps of ``sign`` * 2x saturation: holes inside (sign -1), islands outside."""
    out = np.zeros_like(sdf)
    yy, xx = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    for _ in range(count):
        radius = rng.uniform(0.8, 2.0)
        clear = 3 * radius + 1  # the bump's tail adds under 0.07 cell at the outline
        where = sdf > clear if sign < 0 else (sdf < -clear) & (sdf > -clear - 5)
        ys, xs = np.nonzero(where)
        if ys.size == 0:
            continue
        i = rng.integers(ys.size)
        out += sign * 2 * style.saturation_cells * np.exp(-((yy - ys[i]) ** 2 + (xx - xs[i]) ** 2) / (2 * radius ** 2))
    return out


def _warp(rng: np.random.Generator, logits: np.ndarray, style: LogitStyle) -> np.ndarray:
    dx, dy = _field(rng, style.warp_corr_cells), _field(rng, style.warp_corr_cells)
    scale = style.warp_cells * rng.uniform(0.5, 1.0) / max(float(np.hypot(dx, dy).max()), 1e-12)
    yy, xx = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    return cv2.remap(logits, xx + dx * scale, yy + dy * scale, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def grid_logits(sdfs: Mapping[str, np.ndarray], name: str, seed: int,
                style: LogitStyle = DEFAULT_LOGIT_STYLE) -> np.ndarray:
    """One concept's perturbed logits on the grid (cells of signed distance), from all concepts'
    signed distances (``signed_distance``; the neighbours are needed for spill)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    sdf = sdfs[name]
    logits = np.clip(sdf, -style.saturation_cells, style.saturation_cells)
    logits = logits + rng.uniform(-style.bias_cells, style.bias_cells)
    for concept, neighbour in style.spill_pairs:
        if concept == name and neighbour in sdfs:
            depth = style.spill_cells * np.clip(_field(rng, style.spill_corr_cells), 0.0, 1.0)
            into = (sdfs[neighbour] > 0) & (sdf > -depth) & (depth > 0)
            logits = np.where(into, np.maximum(logits, np.minimum(sdf + depth, style.saturation_cells)), logits)
    logits = logits + _blotches(rng, sdf, style.holes, -1.0, style) + _blotches(rng, sdf, style.islands, 1.0, style)
    logits = _warp(rng, logits.astype(np.float32), style)
    for sigma, corr in (style.coarse_noise, style.fine_noise):
        logits = logits + sigma * _field(rng, corr)
    return logits.astype(np.float32)


def upsample(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Grid logits at the photo's size, as SAM3's post-processing scales them."""
    t = torch.from_numpy(np.ascontiguousarray(logits, np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def logit_masks(masks: Mapping[str, np.ndarray], seed: int,
                style: LogitStyle = DEFAULT_LOGIT_STYLE) -> dict[str, np.ndarray]:
    """Segmenter-like bool masks for the exact ``masks`` (all of one photo's size), seeded."""
    sdfs = {name: signed_distance(m) for name, m in masks.items()}
    out = {}
    for name, mask in masks.items():
        if name in style.blind:
            out[name] = np.zeros(mask.shape, bool)
        else:
            out[name] = upsample(grid_logits(sdfs, name, seed, style), mask.shape) > 0
    return out
