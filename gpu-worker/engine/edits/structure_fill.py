"""Remove without a learned model, keeping the lines that run behind the object.

A thin object (a lamp's pole, a chair leg) hides a strip of wall, baseboard and floor whose lines
cross it: the wall's corner, the baseboard's top edge, the joints between planks. Each hole pixel
is filled along the direction in which those lines continue across the hole:

1. For each of ``directions`` orientations, every hole pixel looks both ways along that
   orientation to the first known pixel on each side (a rotated copy of the window, scanned row
   by row). The orientation whose two ends agree best (their smoothed colours across the
   crossing, ``ends_mismatch``, and a small cost per pixel of gap) is the one a line crossing the
   hole follows; the costs are smoothed over a few pixels first so that neighbouring pixels
   agree on it.
2. The fill's low frequencies are the two ends' smoothed colours interpolated by distance along
   that orientation: a plank joint, a baseboard edge, a wall's shading ramp go straight through.
3. Its texture (the image minus its smoothed copy) is copied at full resolution from just beyond
   the hole along the same orientation, shifted by the hole's width there, so grain and plaster
   noise continue at their own scale and direction.

Crossings are only looked for up to 1.5 ``wide_gap`` (a share of the window's long side). Where
the hole is wide, its shortest crossing longer than ``wide_gap`` (a lamp's shade, a table top, a
lamp's base seen from above), each connected wide part is crossed again (``_fill_wide``), along
its surroundings' coherent grain only (the dominant orientation and a fan of +-5.6 degrees about
it, as joints in perspective spread; none where there is no coherent grain), with crossings of
any length and no cost per pixel of gap, and an end reached along more than ``wide_gap`` of the
hole's other parts (a shade's crossing running on down its pole to the floor) counts as none.
Where the part's median cost is at most ``wide_match``, its pixels with two ends take that fill
(plank joints run on under a lamp's base); the others, and parts whose ends disagree, take the
exemplar fill (``PatchInpainter``), which is also blended into the thin fill over the next half
``wide_gap`` of width. A wide part's texture is mirrored across the nearer end rather than
shifted by the crossing's width: over a long crossing that source lies far off, outside the
window (where it was once clamped to the window's border row, one pixel repeated down each
column of a plain wall: streaks), or off its line by a fraction of a degree (a joint's edge
copied beside it), and is held to the surface's typical detail (its 84th percentile, half a thin
part's bound): a joint's light edge mirrored a fraction of a degree off its line left light
scribbles tracing a lamp base's outline. Texture whose source falls outside the window is none.

The choices above are discrete (thin or wide, which orientation, which extra angles, the wide
parts and whether each is crossed), and the
torch version (engine/edits/device/structure.py) must make the same ones. So they are computed
where any order of arithmetic gives the same bits: the smoothed colours and the costs are
float64 blurs of integers by Gaussian taps rounded to multiples of 2^-12 (exact in any order),
each cost is rounded to an integer, the rotation is 10-bit fixed point, and the thin/wide
threshold sits midway between two of the distance transform's possible values. ``guide`` (the
photo before this photo's edits, identical on both paths) is what the choices are made on;
the colours filled in come from ``rgb``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from engine.edits.colour import LUMA
from engine.edits.remove import Inpainter, PatchInpainter

_FAR = 1 << 20
_TAP_STEP = 2.0**-12  # Gaussian taps are multiples of this: blurs of integers are exact in float64
_NO_CROSSING = float(1 << 22)  # the cost of an orientation without a crossing (exact through two blurs)
_CHAMFER = (float(np.float32(0.955)), float(np.float32(1.3693)))  # cv2.distanceTransform's DIST_L2 3x3 steps


@lru_cache(maxsize=32)
def dyadic_gaussian(sigma: float) -> np.ndarray:
    """``cv2.getGaussianKernel`` for float images (8 sigma + 1 taps, odd), each tap rounded to a
    multiple of ``_TAP_STEP``, the centre taking up the rest so that they sum to 1 exactly."""
    size = int(round(sigma * 8 + 1)) | 1
    taps = np.rint(cv2.getGaussianKernel(size, sigma, cv2.CV_64F).ravel() / _TAP_STEP)
    taps[size // 2] += 1 / _TAP_STEP - taps.sum()
    return taps * _TAP_STEP


def exact_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (BORDER_REFLECT_101) of a float64 image of integers by ``dyadic_gaussian``:
    every product and sum is exact, so any implementation gives these bits."""
    taps = dyadic_gaussian(sigma)
    return cv2.sepFilter2D(x, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT_101)


@lru_cache(maxsize=64)
def thin_threshold(wide: float) -> float:
    """``0.75 wide`` moved to midway between the two nearest values the chamfer distance can take
    (n and m steps of its two lengths), so that its last float bits never decide a pixel."""
    limit = 0.75 * wide
    a, b = _CHAMFER
    n = np.arange(int(limit / a) + 3, dtype=np.float64)
    values = (n[:, None] * a + n[None, : int(limit / b) + 3] * b).ravel()
    below, above = values[values <= limit].max(), values[values > limit].min()
    return float(below + above) / 2


def rotated_rows(known: np.ndarray, inverse: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """``known`` warped into the rotated canvas (nearest pixel, outside False) at the canvas
    rows ``rows``: the source point of canvas pixel (x, y) in 10-bit fixed point, as
    ``cv2.warpAffine`` computes it, from products that every implementation rounds alike."""
    h, w = known.shape
    cols, rows = np.arange(width, dtype=np.float64), rows.astype(np.float64)

    def source(k: int) -> np.ndarray:
        per_row = np.rint((inverse[k, 1] * rows + inverse[k, 2]) * 1024).astype(np.int32) + 512
        per_col = np.rint(inverse[k, 0] * cols * 1024).astype(np.int32)
        return (per_row[:, None] + per_col[None, :]) >> 10

    x, y = source(0), source(1)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return inside & known.ravel()[np.clip(y, 0, h - 1) * w + np.clip(x, 0, w - 1)]


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


def _smooth(img: np.ndarray, known: np.ndarray, sigma: float) -> np.ndarray:
    """Smoothed colours (float64) of uint8 ``img`` from the known pixels only: next to the hole
    they must not carry the object. One channel at a time (the blurs are exact, so this is
    the three-channel blur's bits at a third of its working memory)."""
    weight = np.maximum(exact_blur(known.astype(np.float64), sigma), 1e-3)
    out = np.empty(img.shape, np.float64)
    plane = np.empty(known.shape, np.float64)
    for c in range(img.shape[2]):
        np.multiply(img[..., c], known, out=plane)
        out[..., c] = exact_blur(plane, sigma) / weight
    return out


def _at(image: np.ndarray, inverse: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``image`` at the window pixels nearest to the rotated canvas' points (cols, rows)."""
    h, w = image.shape[:2]
    x = np.rint(inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]).astype(np.int32)
    y = np.rint(inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]).astype(np.int32)
    return image[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]


# the share of two ends' mean colour difference counted beside their profiles' (a light or
# shadow the object cast on one side shifts the mean, not the profile)
OFFSET_WEIGHT = 0.25


def ends_mismatch(decide_on: np.ndarray, inverse: np.ndarray, end_l: np.ndarray, end_r: np.ndarray,
                  row: np.ndarray, beside: int) -> np.ndarray:
    """How far a crossing's two ends disagree, from their colours on the crossing's row and the
    rows ``beside`` either side of it on the rotated canvas: the squared distance between the two
    ends' profiles across the crossing (each less its mean) plus a share ``OFFSET_WEIGHT`` of the
    squared distance between the means. A line the crossing follows shows the same profile at
    both ends even where the object lit one side (a lamp brightening the wall beside it); a
    crossing slid along the baseboard's edge until that light is matched does not."""
    d = [_at(decide_on, inverse, end_l, row + offset) - _at(decide_on, inverse, end_r, row + offset)
         for offset in (0, -beside, beside)]
    mean = (d[0] + d[1] + d[2]) / 3
    total = np.zeros(row.shape, np.float64)
    for part in d:
        e = part - mean
        total += e[:, 0] * e[:, 0] + e[:, 1] * e[:, 1] + e[:, 2] * e[:, 2]
    return total / 3 + OFFSET_WEIGHT * (mean[:, 0] * mean[:, 0] + mean[:, 1] * mean[:, 1] + mean[:, 2] * mean[:, 2])


_CHUNK = 1 << 18  # hole pixels whose crossings are evaluated at a time
_BAND = 1 << 20  # rotated canvas pixels scanned at a time


def _chunks(n: int) -> list[slice]:
    return [slice(i, min(n, i + _CHUNK)) for i in range(0, n, _CHUNK)]


def crossing_ends(known: np.ndarray, inverse: np.ndarray, rx: np.ndarray, ry: np.ndarray,
                  width: int) -> tuple[np.ndarray, np.ndarray]:
    """``_scan`` of the rotated canvas at the points (rx, ry), int32: the columns of the nearest
    known pixel left and right of each on its canvas row. The canvas is scanned a band of rows
    at a time (rows are independent), only the bands that hold points."""
    rows_per_band = max(1, _BAND // width)
    band = (ry // rows_per_band).astype(np.int16)
    order = np.argsort(band, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(band))])
    lc, rc = np.empty(rx.size, np.int32), np.empty(rx.size, np.int32)
    for b in np.flatnonzero(bounds[1:] > bounds[:-1]):
        at = order[bounds[b]:bounds[b + 1]]
        top = int(b) * rows_per_band
        lines = np.arange(top, top + rows_per_band)
        left, right = _scan(rotated_rows(known, inverse, lines, width))
        lc[at], rc[at] = left[ry[at] - top, rx[at]], right[ry[at] - top, rx[at]]
    return lc, rc


def _crossing(lc: np.ndarray, rc: np.ndarray, rx: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distances (float32) to the left and right ends, which ends exist, and the crossing's span."""
    has_l, has_r = lc >= 0, rc < _FAR
    dl, dr = (rx - lc).astype(np.float32), (rc - rx).astype(np.float32)
    both = has_l & has_r
    span = np.where(both, dl + dr, np.where(has_l, dl, dr)).astype(np.float32)
    return dl, dr, has_l, has_r, both, span


class StructureInpainter:
    """Directional fill for what thin parts of a hole hide; ``fallback`` for the wide parts."""

    name = "structure"

    def __init__(self, directions: int = 16, fallback: Inpainter | None = None, gap_cost: float = 120.0,
                 smooth_sigma: float = 1.5, wide_gap: float = 0.025, one_sided_cost: float = 400.0,
                 grain_cost: float = 1500.0, tensor_sigma: float = 0.012, wide_match: float = 100.0,
                 wide_texture: float = 1.0) -> None:
        self.directions = directions
        self.fallback = fallback if fallback is not None else PatchInpainter()
        self.gap_cost = gap_cost  # per 1 % of the window's long side of crossing, in squared 8-bit levels
        self.smooth_sigma = smooth_sigma
        # a hole whose shortest crossing is longer than this share of the window's long side is wide
        self.wide_gap = wide_gap
        self.one_sided_cost = one_sided_cost
        self.grain_cost = grain_cost  # crossing a coherent grain at right angles, in squared levels
        self.tensor_sigma = tensor_sigma  # the grain's neighbourhood, a share of the window's long side
        # a wide part is filled by its crossings where their median cost is at most this (squared levels)
        self.wide_match = wide_match
        # a wide part's texture is clipped to this many times the surface's 84th percentile of
        # detail (a thin part's to twice it, or the crossing's own edge)
        self.wide_texture = wide_texture

    def inpaint(self, rgb: np.ndarray, hole: np.ndarray, guide: np.ndarray | None = None) -> np.ndarray:
        if not hole.any():
            return rgb.copy()
        if hole.all():
            return self.fallback.inpaint(rgb, hole, guide)
        wide = self.wide_gap * max(hole.shape)
        # thin: no pixel within reach is farther than half a short crossing from the hole's edge
        # (the rim of a wide part, a table top's, is left to the fallback whole)
        depth = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
        reach = max(1, int(0.75 * wide))
        square = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
        thin = hole & (cv2.dilate(depth, square) <= thin_threshold(wide))
        ys, xs = np.nonzero(hole)
        out = rgb.copy()
        weight = np.ones(hole.shape, np.float32)  # the share of the wide fill or the fallback
        if thin.any():
            values, gap, _ = self._fill_thin(rgb, hole, thin, wide, guide)
            ty, tx = np.nonzero(thin)
            out[ty, tx] = np.clip(values + 0.5, 0, 255).astype(np.uint8)
            weight[ty, tx] = np.clip((gap - wide) / max(0.5 * wide, 1.0), 0.0, 1.0)
        rest = hole & ~thin
        blend = weight[ys, xs]
        del weight
        if (blend > 0).any():
            # what the thin fill leaves, wholly or in part, is filled part by part along its own
            # crossings where they agree, by the fallback elsewhere
            base, crossed = self._fill_wide(rgb, hole, rest, wide, guide)
            missing = (blend > 0) & ~crossed
            if missing.any():
                base[missing] = self.fallback.inpaint(rgb, hole, guide)[ys[missing], xs[missing]]
            mixed = out[ys, xs].astype(np.float32) * (1 - blend[:, None]) + base * blend[:, None]
            out[ys, xs] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        return out

    def _fill_wide(self, rgb: np.ndarray, hole: np.ndarray, rest: np.ndarray, wide: float,
                   guide: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Directional fill (float32) of the hole pixels (row-major order) in each connected part
        of ``rest`` whose crossings' median cost is at most ``wide_match``, where they have two
        ends, and whether it was made there."""
        n = int(hole.sum())
        fill = np.zeros((n, 3), np.float32)
        crossed = np.zeros(n, bool)
        count, parts = cv2.connectedComponents(rest.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        labels = parts[hole]
        for label in range(1, count):
            values, _, cost = self._fill_thin(rgb, hole, parts == label, wide, guide, wide_part=True)
            if np.median(cost) > self.wide_match:
                continue  # its ends disagree: no line runs through it
            two = np.isfinite(cost)  # one end or none: the fallback's
            at = np.flatnonzero(labels == label)[two]
            fill[at] = values[two]
            crossed[at] = True
        return fill, crossed

    def _fill_thin(self, rgb: np.ndarray, hole: np.ndarray, thin: np.ndarray, wide: float,
                   guide: np.ndarray | None, wide_part: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Directional fill of the ``thin`` pixels (row-major order), their crossings' lengths and
        the chosen crossings' costs, computed on the part of the window their crossings can reach.
        ``wide_part``: crossings of any length with no cost per pixel of gap, texture mirrored
        across the nearer end."""
        h, w = hole.shape
        rows, cols = np.flatnonzero(thin.any(axis=1)), np.flatnonzero(thin.any(axis=0))
        margin = int(math.ceil(2.0 * wide)) + 4
        y0, y1 = max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)
        x0, x1 = max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)
        window = rgb[y0:y1, x0:x1]
        known = ~hole[y0:y1, x0:x1]
        query = thin[y0:y1, x0:x1]
        same = guide is None or guide is rgb or np.array_equal(guide[y0:y1, x0:x1], window)
        decide_on = _smooth(window if same else guide[y0:y1, x0:x1], known, self.smooth_sigma)
        # the grain first: the colours' smoothed copy is not needed for it
        grain = self._grain(decide_on, known, *np.nonzero(query), 0.01 * max(h, w))
        angles = self._angles(*grain, grain_only=wide_part)
        if not angles:  # a wide part without a coherent grain: no line to continue
            n = int(query.sum())
            return np.zeros((n, 3)), np.full(n, np.inf, np.float32), np.full(n, np.inf)
        smooth = decide_on if same else _smooth(window, known, self.smooth_sigma)
        # texture (the window minus its smoothed copy, read where needed) is copied from pixels
        # clear of the hole's rim (whose detail is the object's edge, not the surface's grain),
        # and limited to the surface's own range of detail
        source = cv2.erode(known.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        ring = source & cv2.dilate(query.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
        typical = float(np.percentile(np.abs(window[ring] - smooth[ring]), 84)) if ring.any() else 0.0
        del ring
        fill, shift_y, shift_x, gap, edge, cost = self._directional(
            smooth, decide_on, known, query, grain, angles, 0.01 * max(h, w),
            math.inf if wide_part else 1.5 * wide, 0.0 if wide_part else self.gap_cost, window, wide_part,
            ~query if wide_part else None, wide)
        ys, xs = np.nonzero(query)
        sy, sx = np.rint(ys + shift_y).astype(np.int32), np.rint(xs + shift_x).astype(np.int32)
        inside = (sy >= 0) & (sy < known.shape[0]) & (sx >= 0) & (sx < known.shape[1])
        sy, sx = np.where(inside, sy, 0), np.where(inside, sx, 0)
        detail = window[sy, sx] - smooth[sy, sx]
        # a line as sharp as the smoothing (the pixel row where a baseboard meets the floor) shows
        # as detail: where both ends of the crossing show that much, it is let through. A wide
        # part's texture is held to the surface's typical detail: mirrored over a long crossing, a
        # joint's edge lands a fraction of a degree off its line, a light scribble across planks.
        bound = self.wide_texture * typical if wide_part else np.maximum(2.0 * typical, edge)
        texture = np.where((inside & source[sy, sx])[:, None], np.clip(detail, -bound, bound), 0.0)
        return fill + texture, gap, cost

    def _directional(self, smooth: np.ndarray, decide_on: np.ndarray, known: np.ndarray, hole: np.ndarray,
                     grain_around: tuple[np.ndarray, np.ndarray], angles: list[float], unit: float,
                     longest: float, gap_cost: float, window: np.ndarray, mirror: bool = False,
                     stop: np.ndarray | None = None, beyond: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per hole pixel: the interpolated smoothed colour along the best orientation, the
        texture source's offset (y, x), the length of the shortest crossing through it (how
        thin the hole is there, whichever orientation the lines take), and per channel the detail
        (``window`` less ``smooth``) both ends of the crossing show, the smaller, where they agree
        in sign (else 0), and the chosen crossing's smoothed cost where it has two ends (inf where
        it has one or none). The orientation is chosen on ``decide_on``'s smoothed colours, the
        colour interpolated in ``smooth``. ``mirror``: texture mirrored across the nearer end;
        ``stop``: the known pixels and the hole's other parts, where an end more than ``beyond``
        past the first of them counts as none."""
        h, w = hole.shape
        ys, xs = (v.astype(np.int32) for v in np.nonzero(hole))
        n = ys.size
        best_cost = np.full(n, np.inf, np.float64)
        best_fill = np.zeros((n, 3), np.float64)
        best_shift = np.zeros(n, np.float32)
        best_index = np.zeros(n, np.int8)
        best_two = np.zeros(n, bool)
        best_edge = np.zeros((n, 3), np.float64)
        shortest = np.full(n, np.inf, np.float32)
        sigma = max(1.0, 1.5 * self.smooth_sigma)
        grain, coherence = grain_around  # _grain's, at the hole pixels
        plane = np.zeros((h, w), np.float64)
        per_span = gap_cost / unit  # a product, not a quotient, in every implementation
        beside = int(round(2 * self.smooth_sigma))
        for index, angle in enumerate(angles):
            m, size = _rotation((h, w), angle)
            inverse = cv2.invertAffineTransform(m)
            rx = np.clip(np.rint(m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).astype(np.int32), 0, size[0] - 1)
            ry = np.clip(np.rint(m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).astype(np.int32), 0, size[1] - 1)
            lc, rc = crossing_ends(known, inverse, rx, ry, size[0])
            if stop is not None:  # an end reached along the hole's other parts (down a pole) is none
                sl, sr = crossing_ends(stop, inverse, rx, ry, size[0])
                lc, rc = np.where(sl - lc <= beyond, lc, -1), np.where(rc - sr <= beyond, rc, _FAR)
            for part in _chunks(n):  # the crossings' costs, at their hole pixels
                dl, dr, has_l, has_r, both, span = _crossing(lc[part], rc[part], rx[part])
                end_l, end_r, row = np.maximum(lc[part], 0), np.minimum(rc[part], size[0] - 1), ry[part]
                mismatch = np.where(both, ends_mismatch(decide_on, inverse, end_l, end_r, row, beside),
                                    np.where(has_l | has_r, self.one_sided_cost, _NO_CROSSING))
                mismatch = np.where(span <= longest, mismatch, _NO_CROSSING)  # long crossings are the fallback's
                shortest[part] = np.minimum(shortest[part], np.where(both, span, np.float32(np.inf)))
                plane[ys[part], xs[part]] = np.rint(mismatch + span.astype(np.float64) * per_span)
            blurred = exact_blur(plane, sigma)
            for part in _chunks(n):  # the orientation kept where its smoothed cost is lower
                cost = blurred[ys[part], xs[part]]
                cost += np.rint(self.grain_cost * coherence[part] * np.sin(angle - grain[part]) ** 2)
                better = cost < best_cost[part]
                if not better.any():
                    continue
                at = np.flatnonzero(better) + part.start
                dl, dr, has_l, has_r, both, _ = _crossing(lc[at], rc[at], rx[at])
                end_l, end_r = np.maximum(lc[at], 0), np.minimum(rc[at], size[0] - 1)
                t = np.where(both, dl / np.maximum(dl + dr, 1), np.float32(0.0))[:, None]
                il, ir = _at(smooth, inverse, end_l, ry[at]), _at(smooth, inverse, end_r, ry[at])
                # texture comes from beyond the nearer end, shifted by the crossing's length
                width = (rc[at] - lc[at] - 1).astype(np.float32)
                from_left = has_l & ((dl <= dr) | ~has_r)
                best_cost[at] = cost[better]
                best_fill[at] = np.where(both[:, None], il * (1 - t) + ir * t, np.where(has_l[:, None], il, ir))
                # mirrored across the nearer end where the crossing is long: shifted by the
                # width, the source would lie as far beyond it, off a line a degree off its course
                across = (np.where(from_left, -2 * dl + 1, 2 * dr - 1) if mirror
                          else np.where(from_left, -width, width))
                best_shift[at] = np.where(both, across,
                                          np.where(has_l, -2 * dl + 1, 2 * dr - 1))
                best_index[at] = index
                best_two[at] = both
                el = _at(window, inverse, end_l, ry[at]) - il
                er = _at(window, inverse, end_r, ry[at]) - ir
                best_edge[at] = np.where(both[:, None] & (el * er > 0), np.minimum(np.abs(el), np.abs(er)), 0.0)
            del blurred
        sines = np.array([math.sin(a) for a in angles])[best_index]
        cosines = np.array([math.cos(a) for a in angles])[best_index]
        two_ended = np.where(best_two, best_cost, np.inf)
        return best_fill, best_shift * sines, best_shift * cosines, shortest, best_edge, two_ended

    def _angles(self, grain: np.ndarray, coherence: np.ndarray, grain_only: bool = False) -> list[float]:
        """Evenly spaced orientations, plus the hole's dominant grain exactly (plank joints seen in
        perspective rarely fall on an even step, and a long crossing off by a few degrees misses
        its line by pixels); ``grain_only``: the dominant grain's orientations alone (none where
        there is no coherent grain)."""
        even = [math.pi * k / self.directions for k in range(self.directions)]
        angles = [] if grain_only else list(even)
        bins = 90
        weights = np.where(coherence > 0.5, coherence, 0.0)
        hist = np.bincount((np.mod(grain, math.pi) / math.pi * bins).astype(int) % bins, weights, bins)
        hist = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))
        step = math.pi / self.directions
        for b in np.argsort(hist)[::-1][:3]:
            if hist[b] < 0.1 * hist.sum() or hist[b] < max(hist[(b - 1) % bins], hist[(b + 1) % bins]):
                continue
            if grain_only and hist[b] <= 0:
                break
            peak = (b + 0.5) * math.pi / bins
            if grain_only:  # joints in perspective fan out about it
                angles += [(peak + k * step / 4) % math.pi for k in (0, -1, 1, -2, 2)]
            elif min(abs((peak - a + math.pi / 2) % math.pi - math.pi / 2) for a in even) > 0.15 * step:
                angles.append(peak)
        return angles

    def _grain(self, smooth: np.ndarray, known: np.ndarray, ys: np.ndarray, xs: np.ndarray, unit: float
               ) -> tuple[np.ndarray, np.ndarray]:
        """Orientation (radians) and coherence (0..1) of the lines around each hole pixel: the
        structure tensor of the known pixels, averaged into the hole."""
        luma = [float(v) for v in LUMA]
        grey = smooth[..., 0] * luma[0] + smooth[..., 1] * luma[1] + smooth[..., 2] * luma[2]
        gx, gy = cv2.Sobel(grey, cv2.CV_64F, 1, 0), cv2.Sobel(grey, cv2.CV_64F, 0, 1)
        del grey
        inner = cv2.erode(known.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(np.float64)
        sigma = max(3.0, self.tensor_sigma * 100 * unit)
        norm = np.maximum(cv2.GaussianBlur(inner, (0, 0), sigma), 1e-6)[ys, xs]

        def averaged(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # the blurred a b at the hole pixels
            product = a * b
            product *= inner
            return cv2.GaussianBlur(product, (0, 0), sigma)[ys, xs] / norm

        jxx, jxy = averaged(gx, gx), averaged(gx, gy)
        del gx
        jyy = averaged(gy, gy)
        del gy, inner
        coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(jxx + jyy, 1e-3)
        # lines run across the dominant gradient
        return 0.5 * np.arctan2(2 * jxy, jxx - jyy) + math.pi / 2, coherence
