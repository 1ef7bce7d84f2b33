"""Recolor, tone and remove on a torch device, each as its numpy counterpart in engine/edits/.

Every action takes the window's photo (uint8 H x W x 3), its matte (float H x W) and region
(bool H x W) on the device, and returns the edited window as float sRGB 0..255 (H x W x 3; only
pixels with a weight above 0 are read). Region statistics and the recolor fit run on the device
too, over the same samples the numpy path draws; only a few numbers per edit reach the host.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.edits import blend, kernels, recolor, tone
from engine.edits.device import ops
from engine.edits.device.matte import edge_foreground, edge_mixture

ROWS_PER_CHUNK_PIXELS = 1 << 21  # per-pixel kernels run over bands of rows of about this many pixels


def pixelwise(rgb: torch.Tensor, alpha: torch.Tensor, foreground: torch.Tensor | None,
              kernel: Callable[[torch.Tensor, slice], torch.Tensor]) -> torch.Tensor:
    """``blend.pixelwise`` over the window: fully weighted pixels take ``kernel`` of their own
    colour; soft-edge pixels ``pixel + kernel(F) - F`` with F the surface colour beside them,
    mixed into the plain edit above ``blend.NEAR_FULL``.
    ``kernel(lin, rows)`` edits linear H' x W x 3 colours of the window's rows ``rows``."""
    h, w = alpha.shape
    out = torch.empty((h, w, 3), dtype=torch.float32, device=rgb.device)
    step = max(1, ROWS_PER_CHUNK_PIXELS // max(1, w))
    for top in range(0, h, step):
        rows = slice(top, min(h, top + step))
        lin = ops.to_linear(rgb[rows])
        edited = ops.to_srgb255(kernel(lin, rows))
        if foreground is not None:
            fg = foreground[rows]
            a = alpha[rows]
            soft = (a > 0) & (a < 1.0)
            # the soft edge's mixture (its colour along the edge) and noise (blend.pixelwise)
            ys, xs = soft.nonzero(as_tuple=True)
            mixture, noise = edge_mixture(rgb, alpha, ys + top, xs)
            mixed, noisy = lin.clone(), torch.zeros_like(lin)
            mixed[ys, xs], noisy[ys, xs] = mixture, noise
            changed = ops.to_srgb255(mixed + kernel(fg, rows) - fg) + noisy
            ramp = ((a - blend.NEAR_FULL) / (1 - blend.NEAR_FULL)).clamp_min(0.0)[..., None]
            changed = torch.where(ramp > 0, changed + (edited - changed) * ramp, changed)
            edited = torch.where(soft[..., None], changed, edited)
        out[rows] = edited
    return out


def _foreground(rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, band: int) -> torch.Tensor | None:
    """Surface colour (H x W x 3 linear) where the window has soft-edge pixels, else None."""
    if not bool(((alpha > 0) & (alpha < 1.0)).any()):
        return None
    return edge_foreground(rgb.permute(2, 0, 1), alpha, region, band).permute(1, 2, 0)


def _sample(count: int, k: int, device: torch.device) -> torch.Tensor | None:
    """``recolor._sample``'s draw as device indices (None: every pixel)."""
    if count <= k:
        return None
    return torch.from_numpy(np.random.default_rng(0).choice(count, size=k, replace=False)).to(device)


class FitSamples:
    """``recolor.FitSamples`` on the device: the same pixels, composited with torch kernels."""

    def __init__(self, rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor,
                 foreground: torch.Tensor | None, material: torch.Tensor | None) -> None:
        where = region.nonzero()
        pick = _sample(where.shape[0], recolor.FIT_SAMPLES, rgb.device)
        if pick is not None:
            where = where[pick]
        ys, xs = where[:, 0], where[:, 1]
        self.base = rgb[ys, xs].float()
        self.lin = ops.to_linear(rgb[ys, xs])
        self.alpha = alpha[ys, xs]
        self.full = self.alpha >= 1.0
        self.fg = foreground[ys, xs] if foreground is not None else self.lin
        self.material = material[ys, xs] if material is not None else None
        self.mixture, self.noise = edge_mixture(rgb, alpha, ys, xs)

    def mean_composite(self, p: kernels.RecolorParams) -> np.ndarray:
        srgb = ops.to_srgb255(kernels.recolor(self.lin, p, torch, self.material))
        change = kernels.recolor(self.fg, p, torch, self.material) - self.fg
        srgb = torch.where(self.full[:, None], srgb, ops.to_srgb255(self.mixture + change) + self.noise)
        composite = self.base + (srgb - self.base) * self.alpha[:, None]
        return composite.mean(0).double().cpu().numpy()


def recolor_window(rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, op: recolor.RecolorTarget,
                   band: int) -> torch.Tensor:
    from engine.edits.device.material import material_offsets

    l_region = ops.lstar(ops.luminance(ops.to_linear(rgb[region])))
    mean_l = float(l_region.double().mean())
    hi, lo = ops.percentiles(l_region - mean_l, (100 - recolor.TAIL, recolor.TAIL))
    params, aim_l = recolor.params_from_stats(mean_l, hi, lo, op.rgb)
    del l_region
    material = material_offsets(rgb, alpha, region, op, params)
    foreground = _foreground(rgb, alpha, region, band)
    params = recolor.fit_params(params, aim_l, op.rgb, FitSamples(rgb, alpha, region, foreground, material))

    def kernel(lin: torch.Tensor, rows: slice) -> torch.Tensor:
        return kernels.recolor(lin, params, torch, None if material is None else material[rows])

    return pixelwise(rgb, alpha, foreground, kernel)


def tone_window(rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, params: tone.ToneControls,
                band: int) -> torch.Tensor:
    pixels = rgb[region]
    pick = _sample(pixels.shape[0], tone.STAT_SAMPLES, rgb.device)
    if pick is not None:
        pixels = pixels[pick]
    lin = ops.to_linear(pixels)
    mean_l = float(ops.lstar(ops.luminance(lin)).double().mean())
    kp = tone.kernel_params(params, mean_l)
    foreground = _foreground(rgb, alpha, region, band)
    return pixelwise(rgb, alpha, foreground, lambda lin, rows: kernels.tone(lin, kp, torch))
