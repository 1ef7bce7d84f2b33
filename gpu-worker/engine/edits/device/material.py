"""Recolor's material pattern (``recolor.material_pattern``, wood and stone) in torch.

The noise lattices and the per-board tones come from the host, drawn and hashed exactly as the
numpy path does (a few kilobytes); everything evaluated per pixel runs on the device. The value
noise is ``cv2.remap``'s bilinear lookup with the lattice tiled.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from engine.edits import recolor
from engine.edits.device import ops
from engine.edits.kernels import RecolorParams

CELLS = 128


def _mod(t: torch.Tensor, m: float) -> torch.Tensor:
    """``np.mod`` of floats (fmod, shifted into [0, m)), bit for bit."""
    r = torch.fmod(t, m)
    return torch.where(r < 0, r + m, r)


def _divide(t: torch.Tensor, by: float) -> torch.Tensor:
    """``t / by`` rounded as numpy rounds it: torch divides by a Python number as a product with
    its reciprocal, a bit off at times, and a board's edge is a floor of the quotient."""
    return t / torch.full_like(t, by)


def value_noise(grid: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``recolor._value_noise`` at points (u, v) given in cells, on a lattice from ``noise_grid``."""
    return ops.bilinear_at(grid, _mod(v, float(CELLS)), _mod(u, float(CELLS)), wrap=True)


def _sobel(l_win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cv2.Sobel`` dx and dy (3 x 3, reflect-101 border), as plain sums of shifted planes:
    a convolution may run in reduced precision on a GPU (TF32), and the texture's angle steers
    the wood's grain across the whole window."""
    h, w = l_win.shape
    p = ops.pad_reflect101(l_win, 1)
    gx = (p[0:h, 2:] - p[0:h, :w]) + 2.0 * (p[1 : h + 1, 2:] - p[1 : h + 1, :w]) + (p[2:, 2:] - p[2:, :w])
    gy = (p[2:, 0:w] - p[:h, 0:w]) + 2.0 * (p[2:, 1 : w + 1] - p[:h, 1 : w + 1]) + (p[2:, 2:] - p[:h, 2:])
    return gx, gy


def dominant_orientation(l_win: torch.Tensor, region: torch.Tensor) -> float | None:
    """``recolor.dominant_orientation``."""
    gx, gy = _sobel(l_win)
    jxx, jyy, jxy = (float((a * b)[region].double().mean()) for a, b in ((gx, gx), (gy, gy), (gx, gy)))
    coherence = math.hypot(jxx - jyy, 2 * jxy) / max(jxx + jyy, 1e-6)
    if coherence < 0.15:
        return None
    return round((0.5 * math.atan2(2 * jxy, jxx - jyy) + math.pi / 2) / recolor.ANGLE_STEP) * recolor.ANGLE_STEP


def _gaussian(x: torch.Tensor, taps: np.ndarray) -> torch.Tensor:
    """``cv2.GaussianBlur`` (reflect-101 border) as weighted sums of shifted planes (see _sobel)."""
    r = len(taps) // 2
    h, w = x.shape
    p = ops.pad_reflect101(x, r)
    rows = sum(float(t) * p[:, i : i + w] for i, t in enumerate(taps))
    return sum(float(t) * rows[i : i + h] for i, t in enumerate(taps))


def texture_std(l_win: torch.Tensor, region: torch.Tensor) -> float:
    """``recolor._texture_std``: a 33-tap Gaussian (sigma 4) and a 9 x 9 erosion."""
    detail = l_win - _gaussian(l_win, cv2.getGaussianKernel(33, 4.0, cv2.CV_32F)[:, 0])
    core = ~ops.dilate(~region, (4,) * 9)  # cv2.erode: outside the window counts as inside
    vals = detail[core] if int(core.sum()) > 64 else detail[region]
    return float(vals.double().std(unbiased=False)) if vals.numel() else 0.0


def _board_tones(board_idx: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """The per-board hash of the numpy path, computed there (on the host, in numpy) for each
    distinct (board, segment): a sine of a large argument is not bit-identical across libraries."""
    pairs, inverse = torch.unique(torch.stack([board_idx, seg]), dim=1, return_inverse=True)
    b, s = pairs.cpu().numpy()
    tones = np.mod(np.sin(b * 12.9898 + s * 78.233) * 43758.5453, 1.0) * 2 - 1
    return torch.from_numpy(tones.astype(np.float32)).to(board_idx.device)[inverse]


def pattern_at(material: str, l_win: torch.Tensor, region: torch.Tensor, seed: int,
               where: torch.Tensor) -> torch.Tensor:
    """``recolor.material_pattern``: zero-mean, unit-std pattern over ``region``, evaluated at
    ``where`` (H x W float32, zero elsewhere)."""
    out = torch.zeros(region.shape, dtype=torch.float32, device=region.device)
    rows, cols = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
    if rows.numel() == 0:
        return out
    rng = np.random.default_rng(seed)
    span_y, span_x = float(rows[-1] - rows[0]), float(cols[-1] - cols[0])
    extent = max(span_y, span_x, 8.0)
    at = where.nonzero()
    yy, xx = at[:, 0].float(), at[:, 1].float()

    def noise(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return value_noise(torch.from_numpy(recolor.noise_grid(rng, CELLS)).to(u.device), u, v)

    if material == "wood":
        angle = dominant_orientation(l_win, region)
        if angle is None:
            angle = 0.0 if span_x >= span_y else math.pi / 2
        ca, sa = math.cos(angle), math.sin(angle)
        along = xx * ca + yy * sa
        across = -xx * sa + yy * ca
        board = extent / 14.0
        board_idx = torch.floor(_divide(across, board))
        length = board * 7.0
        offset = _mod(board_idx * 0.618, 1.0) * length
        seg = torch.floor(_divide(along + offset, length))
        tone = _board_tones(board_idx, seg)
        wobble = noise(along / (board * 2.0), across / (board * 0.5))
        grain = torch.sin(2 * math.pi * (across / (board * 0.09) + 1.5 * wobble))
        pattern = 1.0 * tone + 0.6 * grain**3 + 0.3 * noise(along / (board * 0.8), across / (board * 0.2))
    else:
        base = noise(xx / (extent / 6), yy / (extent / 6)) + 0.5 * noise(xx / (extent / 14), yy / (extent / 14))
        veins = torch.exp(-torch.abs(noise(xx / (extent / 3) + 0.8 * base, yy / (extent / 3))) * 6.0)
        pattern = 0.6 * base - 1.2 * veins
    vals = pattern[region[at[:, 0], at[:, 1]]].double()
    mean, std = float(vals.mean()), float(vals.std(unbiased=False))
    out[at[:, 0], at[:, 1]] = (pattern - float(np.float32(mean))) / float(np.float32(std) + np.float32(1e-6))
    return out


def material_offsets(rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, op: recolor.RecolorTarget,
                     params: RecolorParams) -> torch.Tensor | None:
    """The L* offsets recolor adds for a material palette entry (H x W), or None for flat paint."""
    if not recolor.has_material(op) or op.material not in ("wood", "stone"):
        return None
    l_win = ops.lstar(ops.luminance(ops.to_linear(rgb)))
    pattern = pattern_at(op.material, l_win, region, recolor.material_seed(op), alpha > 0)
    return pattern * recolor.material_amplitude(op, params, texture_std(l_win, region))
