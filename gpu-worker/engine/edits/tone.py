"""Tone: brightness, contrast, saturation and temperature inside the region, each in [-1, 1].

Every control is a monotonic curve that maps the displayable range onto itself, so no setting can
clip: brightness is an exposure-like curve on luminance with a fixed white point, contrast a
sigmoid in L* around the region's own mean lightness, saturation a chroma scale around each
pixel's grey, temperature a luminance-neutral white-balance gain. Colours a gain pushes out of
gamut are pulled toward their grey, keeping luminance, rather than clipped per channel.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from engine.edits import colour, kernels
from engine.edits.backend import Backend
from engine.edits.blend import pixelwise
from engine.edits.kernels import LUMA, ToneKernelParams


class ToneControls(Protocol):
    """The four controls, each in [-1, 1] (the tone action's parameters satisfy this)."""

    @property
    def brightness(self) -> float: ...
    @property
    def contrast(self) -> float: ...
    @property
    def saturation(self) -> float: ...
    @property
    def temperature(self) -> float: ...


EXPOSURE_STOPS = 1.6  # brightness +-1 is a slope of 2**+-1.6 at black
STAT_SAMPLES = 200_000  # pixels drawn for the region's mean lightness
CONTRAST_BETA = 9.0   # contrast +-1 is a sigmoid of this steepness (or its inverse)
WARM = (0.20, -0.32)  # temperature +1: red and blue gains before renormalising to luminance


def _after_brightness(l: float, exposure: float) -> float:
    """Where the brightness curve moves lightness ``l``: contrast pivots about the result."""
    y = float(colour.y_from_lstar(np.float32(l)))
    return float(colour.lstar(np.float32(y * exposure / (1.0 + y * (exposure - 1.0)))))


def kernel_params(p: ToneControls, mean_l: float) -> ToneKernelParams:
    red, blue = 1.0 + WARM[0] * p.temperature, 1.0 + WARM[1] * p.temperature
    gain = np.array([red, 1.0, blue])
    gain /= float(gain @ np.asarray(LUMA))
    exposure = float(2.0 ** (EXPOSURE_STOPS * p.brightness))
    return ToneKernelParams(
        wb_gain=tuple(float(g) for g in gain),
        exposure=exposure,
        contrast_beta=float(CONTRAST_BETA * p.contrast),
        pivot=float(np.clip(_after_brightness(mean_l, exposure) / 100.0, 0.05, 0.95)),
        saturation=float(1.0 + p.saturation),
    )


def tone(rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, params: ToneControls, band: int,
         backend: Backend) -> np.ndarray:
    """Edited sRGB (0..255 float32) for each pixel of the window where ``alpha > 0``."""
    pixels = rgb[region]
    if pixels.shape[0] > STAT_SAMPLES:
        pixels = pixels[np.random.default_rng(0).choice(pixels.shape[0], STAT_SAMPLES, replace=False)]
    mean_l = float(colour.lstar(colour.luminance(colour.to_linear(pixels))).mean())
    kp = kernel_params(params, mean_l)
    return pixelwise(rgb, alpha, region, band,
                     bulk=lambda mask: backend.tone(rgb[mask], kp),
                     change=lambda lin, mask: kernels.tone(lin, kp, np))
