"""Remove without a learned model, keeping the lines that run behind the object.

A thin object (a lamp's pole, a chair leg) hides a strip of wall, baseboard and floor whose lines
cross it: the wall's corner, the baseboard's top edge, the joints between planks. Each hole pixel
is filled along the direction in which those lines continue across the hole:

1. For each of ``directions`` orientations, every hole pixel looks both ways along that
   orientation to the first known pixel on each side (a rotated copy of the window, scanned row
   by row). The orientation whose two ends agree best (smoothed colours, a small cost per pixel
   of gap) is the one a line crossing the hole follows; the costs are smoothed over a few pixels
   first so that neighbouring pixels agree on it.
2. The fill's low frequencies are the two ends' smoothed colours interpolated by distance along
   that orientation: a plank joint, a baseboard edge, a wall's shading ramp go straight through.
3. Its texture (the image minus its smoothed copy) is copied at full resolution from just beyond
   the hole along the same orientation, shifted by the hole's width there, so grain and plaster
   noise continue at their own scale and direction.

Crossings are only looked for up to 1.5 ``wide_gap`` (a share of the window's long side). Where
the hole is wide, its shortest crossing longer than ``wide_gap`` (a lamp's shade, a table top, a
lamp's base seen from above), two ends say little about what lies between them, and the exemplar
fill (``PatchInpainter``) is used, blended in over the next half ``wide_gap`` of width.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.edits.colour import LUMA
from engine.edits.remove import Inpainter, PatchInpainter

_FAR = 1 << 20


def _rotation(shape: tuple[int, int], angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Affine map of the window into a canvas in which ``angle`` runs along the rows."""
    h, w = shape
    c, s = math.cos(angle), math.sin(angle)
    cw, ch = int(math.ceil(abs(w * c) + abs(h * s))) + 2, int(math.ceil(abs(w * s) + abs(h * c))) + 2
    # (x, y) -> rotated by -angle about the window's centre, then into the canvas' centre
    m = np.array([[c, s, 0.0], [-s, c, 0.0]], np.float64)
    m[:, 2] = np.array([cw / 2, ch / 2]) - m[:, :2] @ np.array([w / 2, h / 2])
    return m, (cw, ch)


def _scan(known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column of the nearest known pixel to the left and to the right of each pixel, per row
    (-1 and _FAR where there is none)."""
    cols = np.arange(known.shape[1], dtype=np.int32)[None, :]
    left = np.maximum.accumulate(np.where(known, cols, -1), axis=1)
    right = np.minimum.accumulate(np.where(known, cols, _FAR)[:, ::-1], axis=1)[:, ::-1]
    return left, right


def _at(image: np.ndarray, inverse: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``image`` at the window pixels nearest to the rotated canvas' points (cols, rows)."""
    h, w = image.shape[:2]
    x = np.rint(inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]).astype(np.int32)
    y = np.rint(inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]).astype(np.int32)
    return image[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]


class StructureInpainter:
    """Directional fill for what thin parts of a hole hide; ``fallback`` for the wide parts."""

    name = "structure"

    def __init__(self, directions: int = 16, fallback: Inpainter | None = None, gap_cost: float = 120.0,
                 smooth_sigma: float = 1.5, wide_gap: float = 0.025, one_sided_cost: float = 400.0,
                 grain_cost: float = 1500.0, tensor_sigma: float = 0.012) -> None:
        self.directions = directions
        self.fallback = fallback if fallback is not None else PatchInpainter()
        self.gap_cost = gap_cost  # per 1 % of the window's long side of crossing, in squared 8-bit levels
        self.smooth_sigma = smooth_sigma
        # a hole whose shortest crossing is longer than this share of the window's long side is wide
        self.wide_gap = wide_gap
        self.one_sided_cost = one_sided_cost
        self.grain_cost = grain_cost  # crossing a coherent grain at right angles, in squared levels
        self.tensor_sigma = tensor_sigma  # the grain's neighbourhood, a share of the window's long side

    def inpaint(self, rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        if not hole.any():
            return rgb.copy()
        if hole.all():
            return self.fallback.inpaint(rgb, hole)
        wide = self.wide_gap * max(hole.shape)
        # thin: no pixel within reach is farther than half a short crossing from the hole's edge
        # (the rim of a wide part, a table top's, is left to the fallback whole)
        depth = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
        reach = max(1, int(0.75 * wide))
        thin = hole & (cv2.dilate(depth, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) <= 0.75 * wide)
        ys, xs = np.nonzero(hole)
        blend = np.ones(ys.size, np.float32)
        out = rgb.copy()
        if thin.any():
            values, gap = self._fill_thin(rgb, hole, thin, wide)
            ty, tx = np.nonzero(thin)
            out[ty, tx] = np.clip(values + 0.5, 0, 255).astype(np.uint8)
            weight = np.ones(hole.shape, np.float32)
            weight[ty, tx] = np.clip((gap - wide) / max(0.5 * wide, 1.0), 0.0, 1.0)
            blend = weight[ys, xs]
        if (blend > 0).any():
            base = self.fallback.inpaint(rgb, hole)[ys, xs].astype(np.float32)
            mixed = out[ys, xs].astype(np.float32) * (1 - blend[:, None]) + base * blend[:, None]
            out[ys, xs] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        return out

    def _fill_thin(self, rgb: np.ndarray, hole: np.ndarray, thin: np.ndarray, wide: float
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Directional fill of the ``thin`` pixels (row-major order) and their crossings' lengths,
        computed on the part of the window their crossings can reach."""
        h, w = hole.shape
        margin = int(math.ceil(2.0 * wide)) + 4
        rows, cols = np.flatnonzero(thin.any(axis=1)), np.flatnonzero(thin.any(axis=0))
        y0, y1 = max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)
        x0, x1 = max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)
        img = rgb[y0:y1, x0:x1].astype(np.float32)
        known = ~hole[y0:y1, x0:x1]
        query = thin[y0:y1, x0:x1]
        # smoothed colours from known pixels only: next to the hole they must not carry the object
        weight = cv2.GaussianBlur(known.astype(np.float32), (0, 0), self.smooth_sigma)
        smooth = cv2.GaussianBlur(img * known[..., None], (0, 0), self.smooth_sigma)
        smooth /= np.maximum(weight, 1e-3)[..., None]
        detail = img - smooth
        # texture is copied from pixels clear of the hole's rim (whose detail is the object's
        # edge, not the surface's grain), and limited to the surface's own range of detail
        source = cv2.erode(known.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        ring = source & cv2.dilate(query.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
        limit = 2.0 * float(np.percentile(np.abs(detail[ring]), 84)) if ring.any() else 0.0
        fill, shift_y, shift_x, gap = self._directional(smooth, known, query, 0.01 * max(h, w), 1.5 * wide)
        ys, xs = np.nonzero(query)
        sy = np.clip(np.rint(ys + shift_y).astype(np.int32), 0, known.shape[0] - 1)
        sx = np.clip(np.rint(xs + shift_x).astype(np.int32), 0, known.shape[1] - 1)
        texture = np.where(source[sy, sx][:, None], np.clip(detail[sy, sx], -limit, limit), 0.0)
        return fill + texture, gap

    def _directional(self, smooth: np.ndarray, known: np.ndarray, hole: np.ndarray, unit: float,
                     longest: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per hole pixel: the interpolated smoothed colour along the best orientation, the
        texture source's offset (y, x), and the length of the shortest crossing through it (how
        thin the hole is there, whichever orientation the lines take)."""
        h, w = hole.shape
        ys, xs = np.nonzero(hole)
        n = ys.size
        best_cost = np.full(n, np.inf, np.float32)
        best_fill = np.zeros((n, 3), np.float32)
        best_shift = np.zeros(n, np.float32)
        best_angle = np.zeros(n, np.float32)
        shortest = np.full(n, np.inf, np.float32)
        sigma = max(1.0, 1.5 * self.smooth_sigma)
        grain, coherence = self._grain(smooth, known, ys, xs, unit)
        points = np.stack([xs, ys, np.ones(n)]).astype(np.float64)
        plane = np.zeros((h, w), np.float32)
        known8 = known.astype(np.uint8)
        for angle in self._angles(grain, coherence):
            m, size = _rotation((h, w), angle)
            inverse = cv2.invertAffineTransform(m)
            k_r = cv2.warpAffine(known8, m, size, flags=cv2.INTER_NEAREST, borderValue=0) > 0
            rx, ry = np.rint(m @ points).astype(np.int32)
            rx, ry = np.clip(rx, 0, size[0] - 1), np.clip(ry, 0, size[1] - 1)
            lines, line = np.unique(ry, return_inverse=True)  # only the rows that hold hole pixels
            left, right = _scan(k_r[lines])
            lc, rc = left[line, rx], right[line, rx]
            has_l, has_r = lc >= 0, rc < _FAR
            # the ends' colours, read in the window at the points the rotated rows came from
            il = _at(smooth, inverse, np.maximum(lc, 0), ry)
            ir = _at(smooth, inverse, np.minimum(rc, size[0] - 1), ry)
            dl, dr = (rx - lc).astype(np.float32), (rc - rx).astype(np.float32)
            both = has_l & has_r
            span = np.where(both, dl + dr, np.where(has_l, dl, dr)).astype(np.float32)
            t = np.where(both, dl / np.maximum(dl + dr, 1), 0.0)[:, None]
            value = np.where(both[:, None], il * (1 - t) + ir * t, np.where(has_l[:, None], il, ir))
            mismatch = np.where(both, ((il - ir) ** 2).sum(axis=-1),
                                np.where(has_l | has_r, self.one_sided_cost, 1e9))
            mismatch = np.where(span <= longest, mismatch, 1e9)  # long crossings are the fallback's
            shortest = np.minimum(shortest, np.where(both, span, np.inf))
            plane[ys, xs] = mismatch + self.gap_cost * span / unit
            cost = cv2.GaussianBlur(plane, (0, 0), sigma)[ys, xs]
            cost += self.grain_cost * coherence * np.sin(angle - grain) ** 2
            better = cost < best_cost
            if not better.any():
                continue
            # texture comes from beyond the nearer end, shifted by the crossing's length
            width = (rc - lc - 1).astype(np.float32)
            from_left = has_l & ((dl <= dr) | ~has_r)
            shift = np.where(both, np.where(from_left, -width, width), np.where(has_l, -2 * dl + 1, 2 * dr - 1))
            best_cost[better] = cost[better]
            best_fill[better] = value[better]
            best_shift[better] = shift[better]
            best_angle[better] = angle
        return best_fill, best_shift * np.sin(best_angle), best_shift * np.cos(best_angle), shortest

    def _angles(self, grain: np.ndarray, coherence: np.ndarray) -> list[float]:
        """Evenly spaced orientations, plus the hole's dominant grain exactly (plank joints seen in
        perspective rarely fall on an even step, and a long crossing off by a few degrees misses
        its line by pixels)."""
        angles = [math.pi * k / self.directions for k in range(self.directions)]
        bins = 90
        weights = np.where(coherence > 0.5, coherence, 0.0)
        hist = np.bincount((np.mod(grain, math.pi) / math.pi * bins).astype(int) % bins, weights, bins)
        hist = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))
        step = math.pi / self.directions
        for b in np.argsort(hist)[::-1][:3]:
            if hist[b] < 0.1 * hist.sum() or hist[b] < max(hist[(b - 1) % bins], hist[(b + 1) % bins]):
                continue
            peak = (b + 0.5) * math.pi / bins
            if min(abs((peak - a + math.pi / 2) % math.pi - math.pi / 2) for a in angles) > 0.15 * step:
                angles.append(peak)
        return angles

    def _grain(self, smooth: np.ndarray, known: np.ndarray, ys: np.ndarray, xs: np.ndarray, unit: float
               ) -> tuple[np.ndarray, np.ndarray]:
        """Orientation (radians) and coherence (0..1) of the lines around each hole pixel: the
        structure tensor of the known pixels, averaged into the hole."""
        grey = smooth @ LUMA
        gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
        inner = cv2.erode(known.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(np.float32)
        sigma = max(3.0, self.tensor_sigma * 100 * unit)
        norm = np.maximum(cv2.GaussianBlur(inner, (0, 0), sigma), 1e-6)
        jxx, jyy, jxy = (cv2.GaussianBlur(a * inner, (0, 0), sigma) / norm for a in (gx * gx, gy * gy, gx * gy))
        jxx, jyy, jxy = jxx[ys, xs], jyy[ys, xs], jxy[ys, xs]
        coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(jxx + jyy, 1e-3)
        # lines run across the dominant gradient
        return 0.5 * np.arctan2(2 * jxy, jxx - jyy) + math.pi / 2, coherence.astype(np.float32)
