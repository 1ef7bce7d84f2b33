"""Mask-based edits: recolor, tone and remove, with protected pixels never touched.

``apply_edits(image, edits, protect)`` returns a new uint8 RGB image. Edits run in order, each on
the result of the previous ones. Each edit's effective region is its mask minus ``protect``; it
works on the region's bounding window only, with a soft image-aware matte at the border
(engine/edits/blend.py). Every pixel whose weight is zero (protected pixels, and pixels farther
than the soft-edge band from every region) is copied byte for byte from the input.

The edits themselves live in engine/edits/: recolor.py, tone.py, remove.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engine.edits.backend import Backend, choose_backend
from engine.edits.blend import composite, edge_band_px, soft_matte, window_around
from engine.edits.recolor import recolor
from engine.edits.remove import Inpainter, PatchInpainter, remove
from engine.edits.tone import tone
from engine.rules import Op, Recolor, Remove, Tone

__all__ = ["Edit", "apply_edits", "apply_edits_with", "edge_band_px", "max_reach_px"]


@dataclass(frozen=True)
class Edit:
    op: Op
    mask: np.ndarray  # bool H x W: the concept's mask, limited to the rule's instances


def max_reach_px(shape: tuple[int, ...]) -> int:
    """How far outside its region an edit may change pixels: 3 px at 1 MP, scaled with size."""
    return max(1, int(3 * math.sqrt(shape[0] * shape[1] / 1e6)))


def apply_edits(image: np.ndarray, edits: Sequence[Edit], protect: np.ndarray | None) -> np.ndarray:
    return apply_edits_with(image, edits, protect)


def apply_edits_with(image: np.ndarray, edits: Sequence[Edit], protect: np.ndarray | None, *,
                     backend: Backend | None = None, inpainter: Inpainter | None = None) -> np.ndarray:
    """``apply_edits`` with the per-pixel back end and the inpainter chosen by the caller."""
    out = image.copy()
    band = edge_band_px(image.shape)
    for edit in edits:
        region = edit.mask if protect is None else edit.mask & ~protect
        if not region.any():
            continue
        anchor, reach = region, band
        if isinstance(edit.op, Remove):
            # take the object's anti-aliased rim and a pixel of contact with it, within the reach
            grow = max(0, min(max(1, band // 2), max_reach_px(image.shape) - band))
            if grow:
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
                region = cv2.dilate(region.astype(np.uint8), kernel).astype(bool)
                if protect is not None:
                    region &= ~protect
                reach = max_reach_px(image.shape)
            rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
            size = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
            pad = max(32, int(0.6 * size))  # room for the fill to find its material
        else:
            pad = 2 * band + 4
        window = window_around(region, pad)
        if window is None:
            continue
        rgb = out[window.slices]
        win_region = region[window.slices]
        win_protect = protect[window.slices] if protect is not None else None
        alpha = soft_matte(rgb, win_region, win_protect, band,
                           anchor=anchor[window.slices], reach=reach)
        if not (alpha > 0).any():
            continue
        if isinstance(edit.op, Recolor):
            edited = recolor(rgb, alpha, win_region, edit.op, band, backend or choose_backend())
        elif isinstance(edit.op, Tone):
            edited = tone(rgb, alpha, win_region, edit.op.params, band, backend or choose_backend())
        elif isinstance(edit.op, Remove):
            edited = remove(rgb, alpha, inpainter or PatchInpainter())
        else:  # pragma: no cover - Op is a closed union
            raise TypeError(f"unknown edit {edit.op!r}")
        composite(out, window, alpha, edited)
    if protect is not None:  # already true by construction; absolute, and cheap as OpenCV's masked copy
        out = cv2.copyTo(image, np.ascontiguousarray(protect).view(np.uint8), out)
    return out
