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
  dark, whichever stands out more, thresholded by Otsu's method inside the tile mask. A tile
  panel's outer line has a face on one side only, so the top-hat misses it where the neighbour
  beyond (a wall) is about as light as the line; it is taken from the colours instead
  (``_outer_lines``): along the tiles' outline, within a line's width and a little, the pixels
  nearer a blend of the lines' and the faces' colours than any blend of the faces' and the
  neighbour's just beyond.
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
LINE_LIGHTNESS_WEIGHT = 0.5  # L* differences count half against a* and b* when placing outer lines
LINE_BLEND = 0.5  # an outer line's pixel may hold up to this share of the faces' colour


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
    return best | _outer_lines(rgb, area, best)


def _line_width(lines: np.ndarray) -> float:
    """The lines' typical width in pixels: twice their area over their outline's length."""
    core = cv2.erode(lines.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))).astype(bool)
    outline = int((lines & ~core).sum())
    return 2.0 * float(lines.sum()) / max(outline, 1)


def _outer_lines(rgb: np.ndarray, area: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The lines along ``area``'s outline that ``lines_within``'s top-hat cannot see: pixels within
    a line's width (plus one) of the outline, either side, whose colour is nearer a blend of the
    lines' and the faces' (at most ``LINE_BLEND`` face) than any blend of the faces' and the
    neighbour's just beyond (up to two prediction cells out). The sides' colours are local means,
    a pixel's own is averaged along the outline (``_along_layer``), and lightness is weighed
    down: the light falls off across a wall by several L* within a few tiles, while a line's
    material shows in its hue and chroma. The lines' colour is taken from their purest pixels,
    the half farthest from the faces' colour (a line one or two pixels wide is mostly blended
    with the faces). On room 0 the panel's top line is as light as the wall beside it and a
    little tile by blur: judged by the line's colour itself, pixel by pixel, the derived Grout
    held 30% of the panel's outer line, 44% now (room 7: 62% -> 80%). Only pieces touching a
    found line count (a crossing line's end)."""
    out = np.zeros(area.shape, bool)
    faces = area & ~lines
    if lines.sum() < 16 or faces.sum() < 16:
        return out
    cell = prediction_cell_px(rgb.shape)
    reach = int(math.ceil(_line_width(lines))) + 1
    beyond = int(math.ceil(2 * cell)) + reach
    rows, cols = np.flatnonzero(area.any(axis=1)), np.flatnonzero(area.any(axis=0))
    h, w = area.shape
    y0, y1 = max(0, rows[0] - beyond - 1), min(h, rows[-1] + beyond + 2)
    x0, x1 = max(0, cols[0] - beyond - 1), min(w, cols[-1] + beyond + 2)
    box = (slice(y0, y1), slice(x0, x1))
    inside, found, flat = area[box], lines[box], faces[box]
    lab = cv2.cvtColor(rgb[box].astype(np.float32) * (1 / 255), cv2.COLOR_RGB2Lab)
    lab[..., 0] *= LINE_LIGHTNESS_WEIGHT
    d_out = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_in = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    near = ((~inside & (d_out <= reach)) | (flat & (d_in <= reach))) & ~found
    radius = 2 * beyond
    face_mean, have_face = _local_mean(lab, flat, radius)
    off_face = np.square(lab - face_mean).sum(axis=-1)
    pure = found & (off_face >= np.median(off_face[found]))
    line_mean, have_line = _local_mean(lab, pure, radius)
    beyond_mean, have_beyond = _local_mean(lab, ~inside & (d_out > reach) & (d_out <= beyond), beyond)
    # A pixel near the outline is a line where its colour is nearer a blend of the lines' and
    # the faces' that is mostly line than any blend of the faces' and the neighbour's (camera blur
    # mixes each pair across its border).
    layer = np.where(inside, -np.ceil(d_in), np.ceil(d_out)).astype(np.int32)
    along = _along_layer(lab, layer)
    to_line = _to_segment(along, line_mean, line_mean + LINE_BLEND * (face_mean - line_mean))
    like = near & have_line & have_face & have_beyond & (to_line < _to_segment(along, face_mean, beyond_mean))
    # The pixels between the tiles' outline and a line found a layer or two out are the line's
    # blend with the faces (camera blur): they go with the line.
    square = np.ones((3, 3), np.uint8)
    for k in range(reach - 1, 0, -1):
        farther = cv2.dilate((like & (layer > k)).astype(np.uint8), square).astype(bool)
        like |= near & (layer == k) & farther
    # keep the pieces within a line's reach of a found line (a crossing line's end)
    ends = cv2.dilate(found.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)).astype(bool)
    count, labels = cv2.connectedComponents(like.astype(np.uint8), connectivity=8)
    touching = np.zeros(count, bool)
    touching[np.unique(labels[like & ends])] = True
    touching[0] = False
    out[box] = touching[labels] & like
    return out


def _along_layer(lab: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Each pixel's colour averaged with its 3 x 3 neighbours of the same layer (as far from the
    outline): along a line, its colour without the sensor noise."""
    h, w = layer.shape
    padded_lab = cv2.copyMakeBorder(lab, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    padded_layer = cv2.copyMakeBorder(layer, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=np.iinfo(np.int32).min)
    total = np.zeros_like(lab)
    count = np.zeros(layer.shape, np.float32)
    for dy in range(3):
        for dx in range(3):
            same = (padded_layer[dy:dy + h, dx:dx + w] == layer).astype(np.float32)
            total += padded_lab[dy:dy + h, dx:dx + w] * same[..., None]
            count += same
    return total / count[..., None]


def _to_segment(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance of each colour in ``x`` to the segment between the colours ``a`` and ``b``."""
    ab = b - a
    t = np.clip(((x - a) * ab).sum(axis=-1) / np.maximum(np.square(ab).sum(axis=-1), 1e-6), 0.0, 1.0)
    return np.square(x - a - t[..., None] * ab).sum(axis=-1)


def _local_mean(lab: np.ndarray, where: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the mean colour of the ``where`` pixels within ``radius`` (a square window), and
    whether there are any."""
    size = (2 * radius + 1, 2 * radius + 1)
    weight = cv2.boxFilter(where.astype(np.float32), -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT)
    total = cv2.boxFilter(lab * where[..., None], -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT)
    return total / np.maximum(weight, 1e-6)[..., None], weight > 0.5


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
