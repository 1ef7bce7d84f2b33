"""Masks fitted on the editor's device and handed to the edits there (engine/plan_masks.py's
``ConceptFitter`` for ``TorchEditor``).

A union the segmenter left on this device (``ConceptMasks.on_device``) is fitted where it is;
one that came from the host (stored masks, a segmenter elsewhere) goes up once. The fitted
union stays on the device for the edits; its host copy is made only when something on the host
reads ``union`` (the mask PNGs of a stage that writes masks, a derived concept). Instances follow
the fitted union on the device too (the same ellipse dilation as ``plan_masks._follow``); each
comes down as its box's part, since instances are stored and listed on the host. A concept
made on the host from fitted ones (engine/derive.py) goes up once, so the edits find every mask
on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.edits.device import ops
from engine.edits.device.editor import on_device
from engine.edits.device.maskfit import fit_mask, fit_protect
from engine.maskfit import band_px
from engine.segmenter import ConceptMasks, Instance, Outline, Segmentation


class DeviceFitter:
    """Fits one photo's masks on ``device`` (the photo goes up once, at construction)."""

    def __init__(self, rgb: np.ndarray, device: torch.device) -> None:
        self.device = device
        self.photo = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
        self.band = band_px(rgb.shape)

    def fit(self, found: ConceptMasks, grow_only: bool, surface: bool = True) -> ConceptMasks:
        with torch.inference_mode():
            given = on_device(found.edit_mask, self.device)
            union = fit_protect(self.photo, given) if grow_only else fit_mask(self.photo, given, follow=surface)
            followed = (follow(inst, union, self.band) for inst in found.instances)
            # ids stay as they were: rules of later ``apply`` jobs name instances by id
            return ConceptMasks(found.concept, None, [inst for inst in followed if inst.area], union,
                                Outline.FITTED)


    def hand_over(self, masks: Segmentation) -> Segmentation:
        """Every concept on the device: those made on the host (derived concepts) go up once."""
        for found in masks.values():
            if found.on_device is None:
                found.on_device = on_device(found.union, self.device)
        return masks


def follow(inst: Instance, union: torch.Tensor, band: int) -> Instance:
    """``plan_masks._follow`` on the device: the union's pixels within ``band`` of the instance."""
    h, w = union.shape
    x0, y0, x1, y1 = inst.bbox
    bx0, by0, bx1, by1 = max(0, x0 - band), max(0, y0 - band), min(w, x1 + band), min(h, y1 + band)
    grown = torch.zeros((by1 - by0, bx1 - bx0), dtype=torch.bool, device=union.device)
    grown[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0] = torch.from_numpy(inst.crop).to(union.device)
    crop = ops.dilate(grown, ops.ellipse_rows(band)) & union[by0:by1, bx0:bx1]
    rows, cols = crop.any(1).nonzero()[:, 0], crop.any(0).nonzero()[:, 0]
    if rows.numel() == 0:
        return Instance.from_crop(inst.id, inst.score, (0, 0, 0, 0), np.zeros((0, 0), bool), (h, w))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return Instance.from_crop(inst.id, inst.score, (bx0 + c0, by0 + r0, bx0 + c1, by0 + r1),
                              crop[r0:r1, c0:c1].cpu().numpy(), (h, w))
