"""One instance per object: near-duplicate and nested detections of a concept merged.

A DETR-style segmenter proposes many queries per prompt and keeps every one above its score
threshold, so the same object can come back twice with slightly different masks, or once whole
and once as a part (a sofa and its back cushion). Two detections are one object when their
masks overlap by ``IOU_SAME`` (intersection over union) or when ``CONTAINED_SAME`` of the smaller
one lies inside the larger. The merged instance is the union of the masks with the better
score, and keeps the better detection's place in the (best-first) order; ids are renumbered.

The thresholds were measured on segmenter-like detections of rendered rooms (three seeds, every
object detected twice and once more in part; devtools/segmenter_like.py): duplicates overlapped
at IoU 0.65-0.99, parts lay 0.75-1.0 inside their whole (0.82 or more but once; merging is
transitive, so that part still joined through its duplicate), and distinct objects 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.segmenter import Instance

IOU_SAME = 0.5
CONTAINED_SAME = 0.8


def _overlap(a: Instance, b: Instance) -> int:
    x0, y0 = max(a.bbox[0], b.bbox[0]), max(a.bbox[1], b.bbox[1])
    x1, y1 = min(a.bbox[2], b.bbox[2]), min(a.bbox[3], b.bbox[3])
    if x1 <= x0 or y1 <= y0:
        return 0
    ca = a.crop[y0 - a.bbox[1]:y1 - a.bbox[1], x0 - a.bbox[0]:x1 - a.bbox[0]]
    cb = b.crop[y0 - b.bbox[1]:y1 - b.bbox[1], x0 - b.bbox[0]:x1 - b.bbox[0]]
    return int(np.count_nonzero(ca & cb))


def same_object(a: Instance, b: Instance, iou: float = IOU_SAME, contained: float = CONTAINED_SAME) -> bool:
    inter = _overlap(a, b)
    if inter == 0:
        return False
    union = a.area + b.area - inter
    return inter >= iou * union or inter >= contained * min(a.area, b.area)


def _merge(a: Instance, b: Instance) -> Instance:
    x0, y0 = min(a.bbox[0], b.bbox[0]), min(a.bbox[1], b.bbox[1])
    x1, y1 = max(a.bbox[2], b.bbox[2]), max(a.bbox[3], b.bbox[3])
    crop = np.zeros((y1 - y0, x1 - x0), bool)
    for inst in (a, b):
        bx0, by0, bx1, by1 = inst.bbox
        crop[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] |= inst.crop
    return Instance.from_crop(a.id, max(a.score, b.score), (x0, y0, x1, y1), crop, a.shape)


def merge_duplicates(instances: Sequence[Instance], iou: float = IOU_SAME,
                     contained: float = CONTAINED_SAME) -> list[Instance]:
    """``instances`` (best first) with detections of the same object merged; ids 0..n-1."""
    kept: list[Instance] = []
    for inst in instances:
        for i, other in enumerate(kept):
            if same_object(other, inst, iou, contained):
                kept[i] = _merge(other, inst)
                break
        else:
            kept.append(inst)
    return [Instance.from_crop(i, k.score, k.bbox, k.crop, k.shape) for i, k in enumerate(kept)]
