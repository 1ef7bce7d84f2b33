"""A job's masks made ready for its plan: fitted to the photo, derived concepts added.

``fit_masks(rgb, masks, plan)`` runs once per photo, after the masks are obtained (segmented for
``full`` and ``segment``, loaded for ``apply``, so stored masks from anywhere get the same
treatment):

- each concept's coarse mask is fitted to the photo's edges (engine/maskfit.py); an empty one
  comes back as it is, with no instances (a fit would give the same), and so does one whose
  outline already follows the photo (``Outline``: fitted by an earlier run, or exact), so that
  ``apply`` on stored masks edits the pixels ``full`` edited. Protect concepts, and
  the sources of a complement, only grow (``fit_protect``): what the job protects stays
  protected, byte for byte;
- instances follow their concept's fitted mask: each keeps the fitted pixels within the fit's
  band of its own mask;
- derived concepts whose sources are at hand are built from the fitted sources
  (engine/derive.py); a derived concept loaded from storage is treated like any other.

Only the plan's concepts come back (sources prompted for a derived concept are not stored); what
was fitted or derived here comes back marked ``Outline.FITTED``.
Where the fit runs is the caller's choice (``fitter``): ``HostFitter`` here, or the editor's device
(engine/edits/device/handover.py), with the same pixels but for what that module says.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from engine.derive import derive_masks
from engine.maskfit import band_px, fit_mask, fit_protect
from engine.rules import Plan
from engine.segmenter import ConceptMasks, Instance, Outline, Segmentation


class ConceptFitter(Protocol):
    def fit(self, found: ConceptMasks, grow_only: bool, surface: bool = True) -> ConceptMasks:
        """The concept's union fitted (grown only, with ``grow_only``; objects the fit takes out of
        a ``surface``'s band are followed into it), its instances following it."""
        ...


class HostFitter:
    """The fit on the host's CPUs (numpy and OpenCV)."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb, self.band = rgb, band_px(rgb.shape)

    def fit(self, found: ConceptMasks, grow_only: bool, surface: bool = True) -> ConceptMasks:
        union = fit_protect(self.rgb, found.union) if grow_only else fit_mask(self.rgb, found.union, follow=surface)
        followed = (_follow(inst, union, self.band) for inst in found.instances)
        # ids stay as they were: rules of later ``apply`` jobs name instances by id
        return ConceptMasks(found.concept, union, [inst for inst in followed if inst.area], outline=Outline.FITTED)


def fit_masks(rgb: np.ndarray, masks: Segmentation, plan: Plan, fitter: ConceptFitter | None = None) -> Segmentation:
    fitter = fitter or HostFitter(rgb)
    wanted = plan.concepts_to_find()
    # Grow only: what is protected, and what a complement is taken from (a background made from
    # everything that is not the product must never take the product's shaded rim).
    grow_only = set(plan.protect) | {s for c in wanted if c.derived and c.derived.rule == "complement"
                                     for s in c.derived.sources}
    fitted: Segmentation = {}
    for name, found in masks.items():
        concept = plan.preset.concepts.get(name)
        if concept is not None and concept.derived is not None and all(s in masks for s in concept.derived.sources):
            continue  # rebuilt from its fitted sources
        if found.outline.follows_photo:
            fitted[name] = found
        elif found.holds_pixels():
            # objects a surface's mask swallows are followed into it; an object's own mask (a
            # multi-instance concept: furniture) holds faces of other shades that would be taken
            surface = concept is not None and not concept.multi_instance
            fitted[name] = fitter.fit(found, name in grow_only, surface)
        else:  # an empty mask fits to itself (no outline to move): no full-frame passes for it
            fitted[name] = ConceptMasks(name, np.zeros(found.shape, bool), outline=Outline.FITTED)
    derived = derive_masks(rgb, fitted, [c for c in wanted if c.name not in fitted])
    for name in derived.keys() - fitted.keys():
        derived[name].outline = Outline.FITTED
    return {c.name: derived[c.name] for c in wanted if c.name in derived}


def _follow(inst: Instance, union: np.ndarray, band: int) -> Instance:
    """The instance's share of the fitted union: the union's pixels within ``band`` of its mask."""
    h, w = union.shape
    x0, y0, x1, y1 = inst.bbox
    bx0, by0, bx1, by1 = max(0, x0 - band), max(0, y0 - band), min(w, x1 + band), min(h, y1 + band)
    grown = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    grown[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0] = inst.crop
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    crop = cv2.dilate(grown, kernel).astype(bool) & union[by0:by1, bx0:bx1]
    rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
    if rows.size == 0:
        return Instance.from_crop(inst.id, inst.score, (0, 0, 0, 0), np.zeros((0, 0), bool), union.shape)
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return Instance.from_crop(inst.id, inst.score, (bx0 + c0, by0 + r0, bx0 + c1, by0 + r1), crop[r0:r1, c0:c1],
                              union.shape)
