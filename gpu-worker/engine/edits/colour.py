"""Colour conversions used by the edits: sRGB <-> linear light, luminance, CIE L*.

Per-pixel edits work on flat arrays of the pixels they touch (N x 3 float32 linear RGB), which
keeps the maths independent of the region's shape and lets the same kernels run on a GPU tensor
(see engine/edits/kernels.py).
"""

from __future__ import annotations

import numpy as np

# Rec. 709 / sRGB primaries, D65 white. The one home of the colour constants: the kernels
# (engine/edits/kernels.py) read the same numbers as plain floats.
LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)
LUMA = np.array(LUMA_WEIGHTS, np.float32)
RGB_TO_XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
], np.float64)
D65 = np.array([0.95047, 1.0, 1.08883], np.float64)

CIE_EPS = 216 / 24389  # the L* curve's linear toe ends at this Y
CIE_KAPPA = 24389 / 27  # and has this slope


def _srgb_decode(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _srgb_encode(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


# uint8 -> linear is exact through a 256-entry table; linear -> sRGB goes through a fine table
# (step 1/65535 in linear light, under 0.06 of an 8-bit level anywhere on the curve).
DECODE_LUT = _srgb_decode(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
_ENCODE_STEPS = 65535
ENCODE_LUT = (_srgb_encode(np.arange(_ENCODE_STEPS + 1, dtype=np.float64) / _ENCODE_STEPS) * 255.0).astype(np.float32)


def to_linear(rgb8: np.ndarray) -> np.ndarray:
    """uint8 sRGB (any shape, last axis 3) -> float32 linear RGB in [0, 1]."""
    return DECODE_LUT[rgb8]


def to_srgb255(linear: np.ndarray) -> np.ndarray:
    """float linear RGB -> float32 sRGB on the 0..255 scale (not rounded)."""
    idx = np.clip(linear, 0.0, 1.0) * _ENCODE_STEPS + 0.5
    return ENCODE_LUT[idx.astype(np.int32)]


def luminance(linear: np.ndarray) -> np.ndarray:
    return linear @ LUMA


def lstar(y: np.ndarray) -> np.ndarray:
    """CIE L* (0..100) from relative luminance Y (0..1)."""
    y = np.asarray(y, np.float32)
    return np.where(y > CIE_EPS, 116.0 * np.cbrt(y) - 16.0, CIE_KAPPA * y).astype(np.float32)


def y_from_lstar(l: np.ndarray) -> np.ndarray:
    l = np.asarray(l, np.float32)
    return np.where(l > 8.0, ((l + 16.0) / 116.0) ** 3, l / CIE_KAPPA).astype(np.float32)


def srgb8_to_linear_vec(rgb: tuple[int, int, int] | np.ndarray) -> np.ndarray:
    return _srgb_decode(np.asarray(rgb, np.float64) / 255.0)


def linear_to_lab(linear: np.ndarray) -> np.ndarray:
    """float linear RGB (..., 3) -> CIELAB (D65), float64."""
    xyz = np.asarray(linear, np.float64) @ RGB_TO_XYZ.T / D65
    f = np.where(xyz > CIE_EPS, np.cbrt(xyz), (CIE_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB on the 0..255 scale (uint8 or float, ..., 3) -> CIELAB (D65), float64."""
    return linear_to_lab(_srgb_decode(np.asarray(rgb, np.float64) / 255.0))


def lab_to_linear(lab: np.ndarray) -> np.ndarray:
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], -1)
    xyz = np.where(f**3 > CIE_EPS, f**3, (116 * f - 16) / CIE_KAPPA) * D65
    return xyz @ np.linalg.inv(RGB_TO_XYZ).T
