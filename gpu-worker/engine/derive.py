"""Concepts made from other concepts' masks (and the photo) instead of prompted.

Some concepts a text-prompted segmenter handles badly. The preset marks them ``derived`` with a
rule and its source concepts (presets/base.py ``Derived``); the plan prompts the sources instead
(``Plan.concepts_to_prompt``) and ``derive_masks`` builds the derived masks from the sources'
(fitted) masks:

- ``complement``: everything that is none of the sources. The seller preset's ``Background``:
  SAM3 rarely finds "background" at all, while the product, props and reflections it finds well.
- ``lines_within``: the thin lines inside the first source that differ from its faces, e.g.
  ``Grout`` within ``Tile``: grout lines are thinner than SAM3's mask cell (288 per photo side),
  so its grout masks are smears; the lines are found in the photo instead, as what a
  morphological opening wider than a line but narrower than a tile removes (top-hat), bright or
  dark, whichever stands out more, thresholded by Otsu's method inside the tile mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from engine.maskfit import prediction_cell_px
from engine.segmenter import ConceptMasks, Segmentation, instances_from_union
from presets import Concept

Rule = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]


def complement(rgb: np.ndarray, sources: list[np.ndarray]) -> np.ndarray:
    out = np.ones(rgb.shape[:2], bool)
    for mask in sources:
        out &= ~mask
    return out


def lines_within(rgb: np.ndarray, sources: list[np.ndarray]) -> np.ndarray:
    area = sources[0]
    if area.sum() < 64:
        return np.zeros(area.shape, bool)
    side = 2 * int(math.ceil(prediction_cell_px(rgb.shape))) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    inner = cv2.erode(area.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    best, best_score = np.zeros(area.shape, bool), -1.0
    for op in (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT):
        hat = cv2.morphologyEx(grey, op, kernel)
        values = hat[inner].reshape(-1, 1)
        if values.size == 0 or values.max() == 0:
            continue
        level, _ = cv2.threshold(values, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        lines = inner & (hat > level)
        # how clearly the lines stand out: their mean top-hat against the faces'
        score = float(hat[lines].mean() - hat[inner & ~lines].mean()) if lines.any() and (inner & ~lines).any() else 0.0
        if score > best_score:
            best, best_score = lines, score
    return best


RULES: dict[str, Rule] = {"complement": complement, "lines_within": lines_within}


def derive_masks(rgb: np.ndarray, masks: Segmentation, concepts: Sequence[Concept]) -> Segmentation:
    """``masks`` with each derived concept of ``concepts`` added, built from its sources' masks."""
    out = dict(masks)
    for concept in concepts:
        if concept.derived is None:
            continue
        sources = [out[name].union for name in concept.derived.sources]
        union = RULES[concept.derived.rule](rgb, sources)
        out[concept.name] = ConceptMasks(concept.name, union, instances_from_union(union, concept.multi_instance))
    return out
