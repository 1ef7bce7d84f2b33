"""How well an edit made with imperfect masks holds up around the true outlines.

``outline_scores`` compares an edited photo with the same edit made with the exact masks, in a
band of ``BAND_PX`` pixels either side of the edited region's true outline:

- ``wrong``: the share of band pixels that end wrong - changed when they should not be, or not
  changed when they should - counted as a CIEDE2000 difference above ``DE_VISIBLE`` from the
  exact-mask result;
- ``bleed``: the share of the region's neighbouring pixels (outside it, beyond the soft edge the
  edits may blend over, within the band) that changed by more than ``DE_VISIBLE`` from the photo.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.edits.colour import srgb_to_lab
from devtools.metrics import ciede2000

BAND_PX = 12
DE_VISIBLE = 3.0


def _delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ciede2000(srgb_to_lab(a.astype(np.float64)), srgb_to_lab(b.astype(np.float64)))


def outline_scores(before: np.ndarray, after: np.ndarray, reference: np.ndarray, region: np.ndarray,
                   soft_px: int, band: int = BAND_PX) -> dict[str, float]:
    """``region``: the pixels the exact edit changes (its true mask minus the true protect)."""
    d_in = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_out = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ring = (region & (d_in <= band)) | (~region & (d_out <= band))
    neighbours = ~region & (d_out > soft_px) & (d_out <= band)
    wrong = _delta_e(after[ring], reference[ring]) > DE_VISIBLE
    bleed = _delta_e(after[neighbours], before[neighbours]) > DE_VISIBLE
    return {"wrong": float(wrong.mean()) if wrong.size else 0.0,
            "bleed": float(bleed.mean()) if bleed.size else 0.0,
            "band_pixels": int(ring.sum())}
