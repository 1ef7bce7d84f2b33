"""Per-pixel colour kernels shared by the numpy path and the torch (GPU) path.

Each kernel takes an N x 3 array of linear RGB and returns one, using only arithmetic,
``.clip`` and the ``where``/``exp``/``log``/``tanh`` of the module passed as ``xp`` (``numpy`` or
``torch``), so one definition serves both back ends. Region statistics (means, percentiles,
fitted gains) are plain Python floats computed beforehand on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.edits.colour import CIE_EPS as _EPS, CIE_KAPPA as _KAPPA, LUMA_WEIGHTS as LUMA


def luminance(lin: Any) -> Any:
    return lin[..., 0] * LUMA[0] + lin[..., 1] * LUMA[1] + lin[..., 2] * LUMA[2]


def lstar(y: Any, xp: Any) -> Any:
    y = y.clip(0.0, None)
    return xp.where(y > _EPS, 116.0 * y ** (1 / 3) - 16.0, _KAPPA * y)


def y_from_lstar(l: Any, xp: Any) -> Any:
    l = l.clip(0.0, 100.0)
    return xp.where(l > 8.0, ((l + 16.0) / 116.0) ** 3, l / _KAPPA)


def _vec(values: tuple[float, float, float], like: Any) -> Any:
    """A length-3 constant of the same kind (numpy array or torch tensor) as ``like``."""
    if hasattr(like, "new_tensor"):
        return like.new_tensor(values)
    import numpy as np

    return np.asarray(values, dtype=like.dtype)


GAMUT_KNEE = 0.92  # linear channel level where colours start to be eased toward their grey
GAMUT_CEIL = 0.99  # approached, never reached: 8-bit 254 at most
GAMUT_FLOOR = 0.01  # and the same at the dark end


def gamut_map(lin: Any, y: Any, xp: Any) -> Any:
    """Pull each colour toward its own grey until it fits in [0, 1], keeping its luminance.

    The pull is soft: a channel headed past the knee is brought to a level that approaches 1
    without reaching it (nor rounding to 255; and one headed below the floor, to a level above 0), so saturated
    colours keep their gradations instead of a flat 255 or 0 channel.
    """
    y = y.clip(0.0, 1.0)[..., None]
    hi = xp.maximum(xp.maximum(lin[..., 0:1], lin[..., 1:2]), lin[..., 2:3])
    lo = xp.minimum(xp.minimum(lin[..., 0:1], lin[..., 1:2]), lin[..., 2:3])
    top = GAMUT_CEIL - GAMUT_KNEE
    eased = xp.where(hi > GAMUT_KNEE, GAMUT_KNEE + top * xp.tanh((hi - GAMUT_KNEE) / top), hi)
    eased = xp.maximum(eased, y)
    k_hi = xp.where(hi > eased, (eased - y) / (hi - y).clip(1e-6, None), 1.0)
    floor = xp.where(lo < GAMUT_FLOOR, GAMUT_FLOOR * xp.exp((lo - GAMUT_FLOOR).clip(None, 0.0) / GAMUT_FLOOR), lo)
    floor = xp.minimum(floor, y)
    k_lo = xp.where(lo < floor, (y - floor) / (y - lo).clip(1e-6, None), 1.0)
    k = xp.minimum(k_hi, k_lo).clip(0.0, 1.0)
    return (y + k * (lin - y)).clip(0.0, 1.0)


def soft_range(l: Any, xp: Any, lo: float, hi: float, floor: float, ceil: float) -> Any:
    """Identity on [lo, hi]; beyond, rolls off smoothly (C1) toward ``floor`` and ``ceil``
    without reaching them, so nothing lands flat on black or white."""
    top, bottom = ceil - hi, lo - floor
    l = xp.where(l > hi, hi + top * xp.tanh((l - hi) / top), l)
    return xp.where(l < lo, lo + bottom * xp.tanh((l - lo) / bottom), l)


@dataclass(frozen=True)
class RecolorParams:
    """L*_out = target_l + kappa * (L*_in - mean_l) (+ material offset); chroma fixed per channel.

    ``chroma`` is the target's linear RGB divided by its luminance, so a pixel's output colour
    is its new luminance times ``chroma``: the region keeps its shading and texture as lightness
    and takes the target's chromaticity, as a repainted surface under the same light does.
    """

    mean_l: float
    kappa: float
    target_l: float
    chroma: tuple[float, float, float]


def recolor(lin: Any, p: RecolorParams, xp: Any, material: Any = None) -> Any:
    l_in = lstar(luminance(lin), xp)
    l_out = p.target_l + p.kappa * (l_in - p.mean_l)
    if material is not None:
        l_out = l_out + material
    y_out = y_from_lstar(soft_range(l_out, xp, 2.0, 98.0, 0.3, 99.6), xp)
    return gamut_map(y_out[..., None] * _vec(p.chroma, lin), y_out, xp)


@dataclass(frozen=True)
class ToneKernelParams:
    wb_gain: tuple[float, float, float]  # temperature as a white-balance gain (luminance-neutral)
    exposure: float  # brightness: slope at black of a curve that maps [0, 1] onto itself
    contrast_beta: float  # sigmoid steepness; > 0 more contrast, < 0 less, 0 none
    pivot: float  # contrast pivot, region's mean L* / 100
    saturation: float  # chroma scale


def _sigmoid(x: Any, xp: Any) -> Any:
    return 1.0 / (1.0 + xp.exp(-x))


def contrast_curve(x: Any, beta: float, pivot: float, xp: Any) -> Any:
    """A monotonic map of [0, 1] onto itself, steeper (beta > 0) or flatter (beta < 0) at pivot."""
    import math

    b = abs(beta)
    if b < 1e-4:
        return x
    lo = 1.0 / (1.0 + math.exp(b * pivot))
    hi = 1.0 / (1.0 + math.exp(-b * (1.0 - pivot)))
    if beta > 0:
        return (_sigmoid(b * (x - pivot), xp) - lo) / (hi - lo)
    inner = (lo + x.clip(0.0, 1.0) * (hi - lo)).clip(1e-7, 1 - 1e-7)
    return pivot + xp.log(inner / (1.0 - inner)) / b


def tone(lin: Any, p: ToneKernelParams, xp: Any) -> Any:
    lin = lin * _vec(p.wb_gain, lin)
    y = luminance(lin).clip(0.0, 1.0)
    g = p.exposure
    y_b = y * g / (1.0 + y * (g - 1.0))
    l_c = 100.0 * contrast_curve(lstar(y_b, xp) / 100.0, p.contrast_beta, p.pivot, xp)
    y_out = y_from_lstar(l_c, xp)
    ratio = (y_out / y.clip(1e-6, None))[..., None]
    out = lin * ratio
    out = y_out[..., None] + p.saturation * (out - y_out[..., None])
    return gamut_map(out, y_out, xp)
