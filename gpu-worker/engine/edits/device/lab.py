"""The colours engine/maskfit.py decides on, in torch: ``cv2.cvtColor(COLOR_RGB2Lab)`` of the
float photo, then ``cv2.GaussianBlur(SMOOTH_SIGMA)``.

OpenCV's float RGB -> Lab decodes sRGB through a spline table (up to 3% off the exact curve near
black), so the decoded value of each 8-bit level is read back from OpenCV once; the rest is the
exact conversion, within a few hundredths of a Lab unit of OpenCV's.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.edits.device import ops
from engine.maskfit import SMOOTH_SIGMA


@lru_cache(maxsize=1)
def _opencv_decoding() -> np.ndarray:
    """The linear value OpenCV's float RGB -> Lab gives each 8-bit level. Its sRGB decoding is
    a spline through a table of the exact curve (up to 3% off near black), so it is read back:
    for grey, L depends on the level's linear value alone, and OpenCV's linear-RGB -> Lab
    (the same conversion without the decoding) is bisected to give the same L."""
    grey = np.repeat((np.arange(256) / 255.0).astype(np.float32)[:, None], 3, 1)[None]
    target = cv2.cvtColor(grey, cv2.COLOR_RGB2Lab)[0, :, 0]
    lo, hi = np.zeros(256), np.ones(256)
    for _ in range(40):
        mid = (lo + hi) / 2
        below = cv2.cvtColor(np.repeat(mid.astype(np.float32)[:, None], 3, 1)[None], cv2.COLOR_LRGB2Lab)[0, :, 0] < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


@lru_cache(maxsize=8)
def _lab_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sRGB decoding per 8-bit level, OpenCV's RGB -> XYZ matrix over its D65 white, and the
    Gaussian kernel OpenCV uses for ``SMOOTH_SIGMA`` on float images (side 8 sigma + 1)."""
    linear = _opencv_decoding()
    to_xyz = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                       [0.019334, 0.119193, 0.950227]]) / np.array([[0.950456], [1.0], [1.088754]])
    side = int(round(SMOOTH_SIGMA * 4 * 2 + 1)) | 1
    kernel = cv2.getGaussianKernel(side, SMOOTH_SIGMA)[:, 0]
    return (torch.tensor(linear, dtype=torch.float32, device=device),
            torch.tensor(to_xyz, dtype=torch.float32, device=device),
            torch.tensor(kernel, dtype=torch.float32, device=device))


def smoothed_lab(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 H x W x 3 RGB -> CIELAB 3 x H x W as ``cv2.cvtColor(COLOR_RGB2Lab)`` of the float
    photo, then ``cv2.GaussianBlur(SMOOTH_SIGMA)`` (borders reflected, OpenCV's default)."""
    decode, to_xyz, kernel = _lab_constants(rgb.device)
    linear = decode[rgb.permute(2, 0, 1).long()]
    xyz = torch.einsum("ij,jhw->ihw", to_xyz, linear)
    eps = 0.008856
    f = torch.where(xyz > eps, xyz.clamp_min(0.0).pow(1 / 3), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(0)
    lightness = torch.where(xyz[1] > eps, 116.0 * fy - 16.0, 903.3 * xyz[1])
    lab = torch.stack([lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)])
    r = kernel.numel() // 2
    padded = ops.pad_reflect101(lab, r)[None]
    along_x = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(along_x, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
