"""Recolor: the surface takes the target colour and keeps its shading and texture.

Lightness is mapped affinely in CIE L*: the region's mean goes to the target's L* and deviations
from the mean are scaled by ``kappa``. ``kappa`` follows what a change of paint does under
unchanged light (radiance scales with albedo, so L* + 16 scales by the cube root of the albedo
ratio) when that lightens, up to 1.6; when it darkens, ``kappa`` stays 1, because shading and
texture squeezed into fewer L* units drown in 8-bit steps and a dark wall reads flat. It is then
lowered just enough that the region's brightest and darkest 0.5 % still fit between L* 2 and 99
(near white, the aimed mean may give up to one CIEDE2000 unit of lightness for headroom first);
the few pixels beyond roll off smoothly instead of clipping. An affine map keeps the lightness
structure exactly, which is what a viewer reads as "the same wall, repainted".

The target's chromaticity is applied to the new luminance, then the lightness offset and the
chromaticity are refined a few times on a sample of the region so that the mean colour of the
composited result, soft edges included, lands on the target.

Material palette entries (``wood``, ``stone``) add a procedural tonal variation of the entry's
``spread`` on top, minus the texture the surface already has, so a plain surface gains grain
while a wooden floor recoloured to another wood does not get twice as busy.
"""

from __future__ import annotations

import math
from typing import Protocol

import cv2
import numpy as np

from engine.edits import colour, kernels
from engine.edits.backend import Backend
from engine.edits.blend import edge_foreground, edge_mixture, pixelwise
from engine.edits.kernels import RecolorParams


class RecolorTarget(Protocol):
    """What to paint: an sRGB colour and, for materials, the tonal spread to add."""

    @property
    def rgb(self) -> tuple[int, int, int]: ...
    @property
    def material(self) -> str: ...  # "flat", "wood" or "stone"
    @property
    def spread(self) -> float: ...

FIT_SAMPLES = 60_000
FIT_ROUNDS = 4
L_LO, L_HI = 2.0, 99.0
TAIL = 0.5  # percent of the region allowed past L_LO / L_HI, into the soft roll-off
KAPPA_MAX = 1.6  # lightening a dark surface amplifies its noise too; beyond this it shows
KAPPA_MIN = 1.0  # darkening keeps the shading's L* contrast: the texture must outlast 8-bit steps


def _sample(n: int, k: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.random.default_rng(0).choice(n, size=k, replace=False)


def _lightness_tolerance(l: float) -> float:
    """The L* difference that alone makes a CIEDE2000 of 1 at lightness ``l`` (its S_L)."""
    return 1.0 + 0.015 * (l - 50.0) ** 2 / math.sqrt(20.0 + (l - 50.0) ** 2)


def initial_params(l_region: np.ndarray, target_rgb: tuple[int, int, int]) -> tuple[RecolorParams, float]:
    """Kernel parameters and the mean L* to aim for.

    The aim is the target's L*, except where the region's spread of lightness does not fit
    between L_LO and L_HI around it (near-white and near-black targets on unevenly lit
    surfaces): there the aim may move toward the middle by at most one CIEDE2000 unit of
    lightness, which buys headroom so that less of the shading has to be compressed.
    """
    mean_l = float(l_region.mean())
    hi, lo = (float(v) for v in np.percentile(l_region - mean_l, [100 - TAIL, TAIL]))
    return params_from_stats(mean_l, hi, lo, target_rgb)


def params_from_stats(mean_l: float, hi: float, lo: float,
                      target_rgb: tuple[int, int, int]) -> tuple[RecolorParams, float]:
    """``initial_params`` from the region's mean L* and its deviations at the TAIL percentiles."""
    target_l = float(colour.srgb_to_lab(np.asarray(target_rgb))[0])
    hi, lo = max(hi, 1e-3), min(lo, -1e-3)
    kappa_wanted = min(KAPPA_MAX, max(KAPPA_MIN, (target_l + 16.0) / (mean_l + 16.0)))

    def kappa_at(aim: float) -> float:
        return min(kappa_wanted, max(0.0, L_HI - aim) / hi, max(0.0, aim - L_LO) / -lo)

    # aims at which the shading keeps at least its original L* contrast (amplifying it, when
    # lightening, is a nicety that does not justify moving the mean)
    kappa_needed = min(kappa_wanted, 1.0)
    lowest, highest = L_LO + kappa_needed * -lo, L_HI - kappa_needed * hi
    ideal = float(np.clip(target_l, lowest, highest)) if lowest <= highest else (L_HI * -lo + L_LO * hi) / (hi - lo)
    slack = _lightness_tolerance(target_l)
    aim = float(np.clip(ideal, target_l - slack, target_l + slack))
    # Near pure white or black there may be no headroom at all: keep some of the structure
    # and let the soft roll-off take the extremes rather than flattening the surface.
    kappa = max(kappa_at(aim), 0.15 * kappa_wanted)
    lin_t = colour.srgb8_to_linear_vec(target_rgb)
    chroma = lin_t / max(float(lin_t @ colour.LUMA.astype(np.float64)), 1e-6)
    return RecolorParams(mean_l, kappa, aim, tuple(float(c) for c in chroma)), aim


class Samples(Protocol):
    def mean_composite(self, p: RecolorParams) -> np.ndarray:
        """Mean sRGB (0..255, float64) of the samples composited with ``p``."""
        ...


def fit_params(p: RecolorParams, aim_l: float, target_rgb: tuple[int, int, int], samples: Samples) -> RecolorParams:
    """Nudge the lightness offset and chromaticity until the composite's mean colour has the
    target's chromaticity and the aimed lightness."""
    target = np.asarray(target_rgb, np.float64)
    aim_lab = colour.srgb_to_lab(target)
    aim_lab[0] = aim_l
    luma = colour.LUMA.astype(np.float64)
    target_lin = colour.srgb8_to_linear_vec(target)
    target_chroma = target_lin / max(float(target_lin @ luma), 1e-9)
    for _ in range(FIT_ROUNDS):
        mean = samples.mean_composite(p)
        lab = colour.srgb_to_lab(mean)
        if np.abs(lab - aim_lab).max() < 0.05:
            break
        mean_lin = np.maximum(colour.srgb8_to_linear_vec(mean), 1e-6)
        chroma = np.asarray(p.chroma) * target_chroma / (mean_lin / max(float(mean_lin @ luma), 1e-9))
        chroma /= max(float(chroma @ luma), 1e-9)
        p = RecolorParams(p.mean_l, p.kappa, p.target_l + float(aim_lab[0] - lab[0]),
                          tuple(float(c) for c in chroma))
    return p


class FitSamples:
    """A sample of the region's pixels, composited exactly as ``recolor`` will composite them."""

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray,
                 foreground: np.ndarray | None, material: np.ndarray | None) -> None:
        ys, xs = np.nonzero(region)
        pick = _sample(ys.size, FIT_SAMPLES)
        ys, xs = ys[pick], xs[pick]
        self.base = rgb[ys, xs].astype(np.float32)
        self.lin = colour.to_linear(rgb[ys, xs])
        self.alpha = alpha[ys, xs]
        self.full = self.alpha >= 1.0
        self.fg = foreground[ys, xs] if foreground is not None else self.lin
        self.material = material[ys, xs] if material is not None else None
        self.mixture, self.noise = (self.lin, 0.0) if self.full.all() else edge_mixture(rgb, alpha, ys, xs)

    def composite(self, p: RecolorParams) -> np.ndarray:
        srgb = colour.to_srgb255(kernels.recolor(self.lin, p, np, self.material))
        if not self.full.all():
            change = kernels.recolor(self.fg, p, np, self.material) - self.fg
            srgb = np.where(self.full[:, None], srgb, colour.to_srgb255(self.mixture + change) + self.noise)
        return self.base + (srgb - self.base) * self.alpha[:, None]

    def mean_composite(self, p: RecolorParams) -> np.ndarray:
        return self.composite(p).mean(axis=0).astype(np.float64)


# -- materials ---------------------------------------------------------------------------------


def noise_grid(rng: np.random.Generator, cells: int = 128) -> np.ndarray:
    """The value noise's lattice: smooth, unit std, tiling every ``cells``."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    grid = cv2.GaussianBlur(np.tile(grid, (3, 3)), (0, 0), 1.0)[cells:2 * cells, cells:2 * cells]
    grid /= grid.std() + 1e-6
    return grid


def _value_noise(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, cells: int = 128) -> np.ndarray:
    """Smooth noise (unit std) at coordinates given in noise cells; tiles every ``cells``."""
    grid = noise_grid(rng, cells)
    # remap takes 2-D maps: the points go through in rows of REMAP_ROW
    count = u.size
    rows = -(-count // REMAP_ROW)
    mu = np.zeros(rows * REMAP_ROW, np.float32)
    mv = np.zeros(rows * REMAP_ROW, np.float32)
    np.mod(u, cells, out=mu[:count], casting="unsafe")
    np.mod(v, cells, out=mv[:count], casting="unsafe")
    out = cv2.remap(grid, mu.reshape(rows, REMAP_ROW), mv.reshape(rows, REMAP_ROW), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_WRAP)
    return out.reshape(-1)[:count]


REMAP_ROW = 4096


ANGLE_STEP = 2.0**-12  # radians (0.014 degrees)


def dominant_orientation(l_crop: np.ndarray, region: np.ndarray) -> float | None:
    """Angle (radians) along which the region's texture runs, or None when it has none."""
    gx = cv2.Sobel(l_crop, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(l_crop, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = (float((a * b)[region].mean()) for a, b in ((gx, gx), (gy, gy), (gx, gy)))
    coherence = math.hypot(jxx - jyy, 2 * jxy) / max(jxx + jyy, 1e-6)
    if coherence < 0.15:
        return None
    # the gradient's main direction is across the grain; the angle is rounded to a multiple of
    # ANGLE_STEP so that the torch path's means, a float bit apart, draw the same boards
    return round((0.5 * math.atan2(2 * jxy, jxx - jyy) + math.pi / 2) / ANGLE_STEP) * ANGLE_STEP


def material_pattern(material: str, l_crop: np.ndarray, region: np.ndarray, seed: int,
                     where: np.ndarray | None = None) -> np.ndarray:
    """Zero-mean (over ``region``), unit-std tonal pattern over the window (float32), or zeros for
    flat paint. Evaluated only at ``where`` (default: everywhere; it must hold ``region``), zero
    elsewhere: a region scattered over a large window needs a few of its pixels."""
    h, w = region.shape
    out = np.zeros((h, w), np.float32)
    if material not in ("wood", "stone") or not region.any():
        return out
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(region)
    extent = max(float(np.ptp(ys)), float(np.ptp(xs)), 8.0)
    if where is None:
        where = np.ones((h, w), bool)
    py, px = np.nonzero(where)
    yy, xx = py.astype(np.float32), px.astype(np.float32)
    if material == "wood":
        angle = dominant_orientation(l_crop, region)
        if angle is None:  # plain surface: run the boards along its longer side
            angle = 0.0 if np.ptp(xs) >= np.ptp(ys) else math.pi / 2
        ca, sa = math.cos(angle), math.sin(angle)
        along = xx * ca + yy * sa
        across = -xx * sa + yy * ca
        board = extent / 14.0
        board_idx = np.floor(across / board)
        length = board * 7.0
        offset = np.mod(board_idx * 0.618, 1.0) * length
        seg = np.floor((along + offset) / length)
        tone = np.mod(np.sin(board_idx * 12.9898 + seg * 78.233) * 43758.5453, 1.0) * 2 - 1
        wobble = _value_noise(rng, along / (board * 2.0), across / (board * 0.5))
        grain = np.sin(2 * np.pi * (across / (board * 0.09) + 1.5 * wobble))
        pattern = 1.0 * tone + 0.6 * grain**3 + 0.3 * _value_noise(rng, along / (board * 0.8), across / (board * 0.2))
    else:
        base = (_value_noise(rng, xx / (extent / 6), yy / (extent / 6))
                + 0.5 * _value_noise(rng, xx / (extent / 14), yy / (extent / 14)))
        veins = np.exp(-np.abs(_value_noise(rng, xx / (extent / 3) + 0.8 * base, yy / (extent / 3))) * 6.0)
        pattern = 0.6 * base - 1.2 * veins
    vals = pattern[region[py, px]]
    out[py, px] = (pattern - vals.mean()) / (vals.std() + 1e-6)
    return out


def _texture_std(l_crop: np.ndarray, region: np.ndarray) -> float:
    """Std of the region's lightness detail (what a blur at a few pixels removes), in L*."""
    detail = l_crop - cv2.GaussianBlur(l_crop, (0, 0), 4.0)
    core = cv2.erode(region.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    vals = detail[core] if core.sum() > 64 else detail[region]
    return float(vals.std()) if vals.size else 0.0


def has_material(op: RecolorTarget) -> bool:
    return op.material != "flat" and op.spread > 0


def material_seed(op: RecolorTarget) -> int:
    return op.rgb[0] << 16 | op.rgb[1] << 8 | op.rgb[2]


def material_amplitude(op: RecolorTarget, params: RecolorParams, texture_std: float) -> float:
    """L* amplitude of the unit pattern: the entry's spread less the texture already there."""
    # spread is a relative luminance variation; d(L*) = (L* + 16) / 3 * d(ln Y)
    wanted = op.spread * (params.target_l + 16.0) / 3.0
    existing = params.kappa * texture_std
    return math.sqrt(max(0.0, wanted**2 - existing**2))


# -- the edit ----------------------------------------------------------------------------------


def recolor(rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, op: RecolorTarget, band: int,
            backend: Backend) -> np.ndarray:
    """Edited sRGB (0..255 float32) for each pixel of the window where ``alpha > 0``."""
    l_region = colour.lstar(colour.luminance(colour.to_linear(rgb[region])))
    params, aim_l = initial_params(l_region, op.rgb)

    material = None
    if has_material(op):
        l_window = colour.lstar(colour.luminance(colour.to_linear(rgb)))
        pattern = material_pattern(op.material, l_window, region, seed=material_seed(op), where=alpha > 0)
        material = pattern * material_amplitude(op, params, _texture_std(l_window, region))

    soft = (alpha > 0) & (alpha < 1)
    foreground = edge_foreground(rgb, alpha, region, band) if soft.any() else None
    params = fit_params(params, aim_l, op.rgb, FitSamples(rgb, alpha, region, foreground, material))

    def bulk(mask: np.ndarray) -> np.ndarray:
        return backend.recolor(rgb[mask], params, None if material is None else material[mask])

    def change(lin: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return kernels.recolor(lin, params, np, None if material is None else material[mask])

    return pixelwise(rgb, alpha, region, band, bulk, change, foreground)
