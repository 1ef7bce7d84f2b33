"""remove: fill the region (the object and its anti-aliased rim) from its surroundings
(engine/edits/remove.py); takes no value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from engine.actions.base import Action, Before, Span, Tools
from engine.edits.blend import max_reach_px
from engine.edits.remove import remove
from presets import Preset


@dataclass(frozen=True)
class Remove:
    action: ClassVar[str] = "remove"


class RemoveAction(Action):
    name = "remove"
    value_type = None
    value_help = "takes no value"
    value_doc = "none"
    summary = "fills the region (the object and its anti-aliased rim) from its surroundings"
    fills = True

    def resolve(self, value: Any, preset: Preset, concept: str) -> Remove:
        return Remove()

    def span(self, region: np.ndarray, protect: np.ndarray | None, band: int) -> Span:
        # take the object's anti-aliased rim and a pixel of contact with it, within the reach
        reach = max_reach_px(region.shape)
        grow = max(0, min(max(1, band // 2), reach - band))
        if grow:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
            region = cv2.dilate(region.astype(np.uint8), kernel).astype(bool)
            if protect is not None:
                region &= ~protect
        else:
            reach = band
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        size = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        return Span(region, reach, max(32, int(0.6 * size)), replaces=True)  # pad: room for the fill's material

    def edit(self, op: Remove, rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, band: int,
             tools: Tools, before: Before[np.ndarray]) -> np.ndarray:
        return remove(rgb, alpha, tools.inpainter, before.photo, before.filled)


ACTION = RemoveAction()
