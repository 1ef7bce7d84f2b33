"""How well an edit made with imperfect masks holds up around the true outlines.

``outline_scores`` looks at a band of ``BAND_PX`` pixels either side of the edited region's true
outline (``region``: the true mask minus what is protected), with a pixel counted as changed when
it moved by more than ``DE_VISIBLE`` (CIEDE2000) from the photo:

- ``wrong``: the share of band pixels that end wrong - changed outside the region, or left
  unchanged inside it. Inside pixels that the same edit made with the exact masks does not
  visibly change either (a tone on an already light ceiling) are not counted: there, unchanged
  is right.
- ``bleed``: the share of the region's neighbouring pixels (outside it, beyond the ``soft_px``
  soft edge the edits may blend over, within the band) that changed.
- ``off_exact``: the stricter comparison, the share of band pixels further than ``DE_VISIBLE``
  from the result of the exact masks (a half-painted pixel on the outline counts here).

Protected pixels. Where a promise and a quality figure meet, the promise wins and the figure
counts what the promise keeps as right: an edit's protect mask is a promise (those pixels stay
byte-identical), so a pixel the edit under test protects is right, whatever the truth says.
``judged_region`` applies this to every edit alike, coarse and fitted: each is judged on the true
mask minus the true protect masks minus its own protect mask, against the exact-mask edit made
under the same promise. (A coarse protect mask smeared onto the wall excuses the coarse edit
there, not a fitted edit whose own protect mask does not hold those pixels.)
"""

from __future__ import annotations

import cv2
import numpy as np

from devtools.metrics import ciede2000
from engine.edits.colour import srgb_to_lab

BAND_PX = 12
DE_VISIBLE = 3.0


def _delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ciede2000(srgb_to_lab(a.astype(np.float64)), srgb_to_lab(b.astype(np.float64)))


def judged_region(true_mask: np.ndarray, true_protect: np.ndarray | None,
                  own_protect: np.ndarray | None) -> np.ndarray:
    """The pixels an edit is judged on: the true mask minus what the truth protects and what
    the edit under test protects (its promise)."""
    region = true_mask.copy()
    for protect in (true_protect, own_protect):
        if protect is not None:
            region &= ~protect
    return region


def outline_scores(before: np.ndarray, after: np.ndarray, reference: np.ndarray, region: np.ndarray,
                   soft_px: int, band: int = BAND_PX) -> dict[str, float]:
    """``after``: the edit with the masks under test; ``reference``: the same edit with the exact masks."""
    d_in = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_out = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ring = (region & (d_in <= band)) | (~region & (d_out <= band))
    inside = region[ring]
    changed = _delta_e(after[ring], before[ring]) > DE_VISIBLE
    intended = _delta_e(reference[ring], before[ring]) > DE_VISIBLE
    counted = ~inside | intended
    wrong = (changed & ~inside) | (~changed & inside & intended)
    neighbours = (~region & (d_out > soft_px))[ring]
    off_exact = _delta_e(after[ring], reference[ring]) > DE_VISIBLE
    return {"wrong": float(wrong[counted].mean()) if counted.any() else 0.0,
            "bleed": float(changed[neighbours].mean()) if neighbours.any() else 0.0,
            "off_exact": float(off_exact.mean()) if off_exact.size else 0.0,
            "band_pixels": int(counted.sum())}
