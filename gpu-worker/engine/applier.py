"""Mask-based edits: recolor, tone and remove, with protected pixels never touched.

``apply_edits(image, edits, protect)`` returns a new uint8 RGB image. Each edit's effective
region is its mask minus ``protect``; edges are softened over a narrow band, and every pixel
whose blend weight is zero (protected pixels and pixels outside all regions) is copied
byte-for-byte from the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engine.rules import Op, Recolor, Remove, Tone


@dataclass(frozen=True)
class Edit:
    op: Op
    mask: np.ndarray  # bool H x W: the concept's mask, limited to the rule's instances


def edge_band_px(shape: tuple[int, ...]) -> int:
    """Soft-edge half width: 2 px at 1 MP, scaled with the image's linear size."""
    megapixels = shape[0] * shape[1] / 1e6
    return max(1, int(round(2 * np.sqrt(megapixels))))


def soft_alpha(region: np.ndarray, protect: np.ndarray | None) -> np.ndarray:
    """Float32 weight in [0, 1]: 1 well inside the region, easing to 0 just outside it."""
    band = edge_band_px(region.shape)
    alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigmaX=band / 2)
    alpha = np.maximum(alpha, region * 0.5)  # keep the region itself at least half-weighted
    alpha[alpha < 1 / 255] = 0
    if protect is not None:
        alpha[protect] = 0
    return alpha


def _recolor(image: np.ndarray, region: np.ndarray, op: Recolor) -> np.ndarray:
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    target = cv2.cvtColor(np.uint8([[op.rgb]]), cv2.COLOR_RGB2LAB)[0, 0].astype(np.float32)
    mean_l = float(lab[..., 0][region].mean()) if region.any() else target[0]
    lab[..., 0] = np.clip(lab[..., 0] - mean_l + target[0], 0, 255)
    lab[..., 1] = target[1]
    lab[..., 2] = target[2]
    return cv2.cvtColor(lab.astype(np.uint8), cv2.COLOR_LAB2RGB)


def _tone(image: np.ndarray, op: Tone) -> np.ndarray:
    p = op.params
    img = image.astype(np.float32) / 255.0
    img = img * (1.0 + p.brightness)
    img = (img - 0.5) * (1.0 + p.contrast) + 0.5
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * (1.0 + p.saturation)
    img[..., 0] *= 1.0 + 0.15 * p.temperature
    img[..., 2] *= 1.0 - 0.15 * p.temperature
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _remove(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    radius = edge_band_px(region.shape) * 2
    hole = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
    return cv2.inpaint(image, hole * 255, radius, cv2.INPAINT_TELEA)


def apply_edits(image: np.ndarray, edits: Sequence[Edit], protect: np.ndarray | None) -> np.ndarray:
    out = image.copy()
    for edit in edits:
        region = edit.mask if protect is None else edit.mask & ~protect
        if not region.any():
            continue
        if isinstance(edit.op, Recolor):
            edited = _recolor(out, region, edit.op)
        elif isinstance(edit.op, Tone):
            edited = _tone(out, edit.op)
        elif isinstance(edit.op, Remove):
            edited = _remove(out, region)
        else:  # pragma: no cover - Op is a closed union
            raise TypeError(f"unknown edit {edit.op!r}")
        alpha = soft_alpha(region, protect)[..., None]
        touched = alpha[..., 0] > 0
        blended = out.astype(np.float32) * (1 - alpha) + edited.astype(np.float32) * alpha
        out[touched] = (blended[touched] + 0.5).astype(np.uint8)
    return out
