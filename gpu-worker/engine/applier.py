"""Mask-based edits with protected pixels never touched.

``apply_edits(image, edits, protect)`` returns a new uint8 RGB image. Edits run in order, each on
the result of the previous ones. Each edit's effective region is its mask minus ``protect``; its
action (engine/actions/) says which pixels it owns and how far its soft edge reaches, and the
edit works on that region's bounding window only, with a soft image-aware matte at the border
(engine/edits/blend.py) taken from the photo as it came in. Every pixel whose weight is zero
(protected pixels, and pixels farther than the soft-edge band from every region) is copied byte
for byte from the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engine.actions import Before, Op, Span, Tools, action_for
from engine.edits.backend import Backend, choose_backend
from engine.edits.blend import (UNSEEN_WEIGHT, Window, composite, edge_band_px, max_reach_px, soft_matte,
                                window_around)
from engine.edits.remove import Inpainter
from engine.edits.structure_fill import StructureInpainter

__all__ = ["Edit", "apply_edits", "apply_edits_with", "edge_band_px", "edit_weights", "max_reach_px"]


@dataclass(frozen=True)
class Edit:
    op: Op
    mask: np.ndarray  # bool H x W: the concept's mask, limited to the rule's instances


def apply_edits(image: np.ndarray, edits: Sequence[Edit], protect: np.ndarray | None) -> np.ndarray:
    return apply_edits_with(image, edits, protect)


def apply_edits_with(image: np.ndarray, edits: Sequence[Edit], protect: np.ndarray | None, *,
                     backend: Backend | None = None, inpainter: Inpainter | None = None) -> np.ndarray:
    """``apply_edits`` with the per-pixel back end and the inpainter chosen by the caller."""
    out = image.copy()
    band = edge_band_px(image.shape)
    tools: Tools | None = None
    filled: np.ndarray | None = None  # pixels the removes so far made up
    for edit in edits:
        region = edit.mask if protect is None else edit.mask & ~protect
        if not region.any():
            continue
        action = action_for(edit.op)
        span = action.span(region, protect, band)
        window = window_around(span.region, span.pad)
        if window is None:
            continue
        rgb = out[window.slices]
        before = Before(image[window.slices], None if filled is None else filled[window.slices])
        alpha = edit_weights(span, window, before.photo, region, protect, band)
        if not (alpha > 0).any():
            continue
        tools = tools or Tools(backend or choose_backend(), inpainter or StructureInpainter())
        edited = action.edit(edit.op, rgb, alpha, span.region[window.slices], band, tools, before)
        composite(out, window, alpha, edited)
        if action.fills:
            filled = np.zeros(image.shape[:2], bool) if filled is None else filled
            filled[window.slices] |= alpha > 0
    if protect is not None:  # already true by construction; absolute, and cheap as OpenCV's masked copy
        out = cv2.copyTo(image, np.ascontiguousarray(protect).view(np.uint8), out)
    return out


def edit_weights(span: Span, window: Window, photo: np.ndarray, region: np.ndarray, protect: np.ndarray | None,
                 band: int) -> np.ndarray:
    """The edit's weight per pixel of its window (float32 0..1; ``soft_matte``), decided on
    ``photo``, the window of the photo as taken, not as the edits before it left it: how much of
    a pixel belongs to a region is the scene's, and a weight taken from an earlier edit's result
    would follow its rounding (the two editors, a level apart here and there, would then weigh
    a far recolor's soft edge some levels apart). ``region`` (full frame): the rule's own pixels."""
    slices = window.slices
    alpha = soft_matte(photo, span.region[slices], None if protect is None else protect[slices], band,
                       anchor=region[slices], reach=span.reach, replaces=span.replaces)
    if span.replaces:
        alpha[region[slices]] = 1.0
        alpha[alpha < UNSEEN_WEIGHT] = 0.0
    return alpha
