"""Fit a coarse segmenter mask to the photo's own edges.

A text-prompted segmenter predicts each mask on a coarse grid (SAM3: 288 x 288 for the whole
photo) and scales it up, so at 12 MP an outline can be off by a grid cell (10 to 15 pixels),
wobbly, with small holes and stray islands. Editing with such a mask as it is leaves strips of
the old colour along the objects a wall meets and paints a strip of the neighbours. ``fit_mask``
turns it into a mask whose outline follows the photo:

1. Clean: islands and holes smaller than ``MIN_SPECK_CELLS`` grid cells are removed / filled
   (a size relative to the photo, since the grid is).
2. Band: the mask is certain deeper than ``band`` pixels (``BAND_CELLS`` grid cells) inside
   ("sure inside") or outside ("sure outside"); only the band between is decided again.
3. Decide the band from local colour: around each band pixel, the mean and spread of the
   photo's colour (CIELAB, lightly smoothed against sensor noise) over the sure-inside and the
   sure-outside pixels within ``2 * band``. A band pixel is inside when it is nearer the inside
   mean than the outside one and within ``OUTLIER_SIGMAS`` spreads of the inside mean (a white
   frame between a beige wall and a dark door belongs to neither and stays out). Where the two
   sides do not look different enough for that (``SEPARATION`` spreads), the coarse mask is kept.
4. A majority filter removes single-pixel speckle along the new outline, then step 1 again.

The matte of the edits (engine/edits/blend.py) then anti-aliases along the same photo edges.
Work is done tile by tile around the band only: the cost follows the outline's length.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.edits.blend import tiles_where

PREDICTION_GRID = 288  # SAM3's mask side (logits for the whole, square-resized photo)
MIN_SPECK_CELLS = 6.0  # islands and holes below this many grid cells are the segmenter's noise
OUTLIER_SIGMAS = 3.0  # a band pixel farther than this from the inside colour is not inside
SEPARATION = 2.0  # sides closer than this (in spreads) are not told apart by colour
NOISE_FLOOR = 1.5  # CIELAB variance added to every spread (about 1.2 dE of noise)
SMOOTH_SIGMA = 0.8  # px; denoises the colours the band is decided on
# The band's half width in cells: the prediction's own displacement (up to a cell) plus a mask
# running a cell into its neighbour (a wall over the door frame).
BAND_CELLS = 2.0


def prediction_cell_px(shape: tuple[int, ...], grid: int = PREDICTION_GRID) -> float:
    """The larger side of one prediction cell at the photo's size, in pixels."""
    return max(shape[0], shape[1]) / grid


def band_px(shape: tuple[int, ...]) -> int:
    """How far from the coarse outline the fit may move it, in pixels."""
    return int(math.ceil(BAND_CELLS * prediction_cell_px(shape))) + 1


def clean_specks(mask: np.ndarray, min_area: float) -> np.ndarray:
    """``mask`` without its connected islands smaller than ``min_area`` pixels, and with its
    holes (background components not touching the image border) smaller than that filled.

    Only the mask's bounding box, one pixel wider, is labelled: every island and hole lies in it,
    and a background component reaching the box's edge reaches the image border (a straight
    line from outside the box to the border never enters the box). An empty mask costs a scan."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    out = mask.copy()
    if rows.size == 0:
        return out
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    kept = _drop_small(mask[box], min_area)
    out[box] = ~_drop_small(~kept, min_area, keep_border=True)
    return out


def _drop_small(mask: np.ndarray, min_area: float, keep_border: bool = False) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.copy()
    small = stats[:, cv2.CC_STAT_AREA] < min_area
    small[0] = False
    if keep_border:
        h, w = mask.shape
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        touches = (x == 0) | (y == 0) | (x + stats[:, cv2.CC_STAT_WIDTH] == w) | (y + stats[:, cv2.CC_STAT_HEIGHT] == h)
        small &= ~touches
    if not small.any():
        return mask.copy()
    return mask & ~small[labels]


def fit_mask(rgb: np.ndarray, mask: np.ndarray, *, cell: float | None = None) -> np.ndarray:
    """``mask`` (bool H x W) with specks cleaned and its outline moved onto ``rgb``'s edges
    within one prediction cell (``cell`` px; by default the SAM3 grid's at this size)."""
    cell = prediction_cell_px(mask.shape) if cell is None else cell
    if cell < 1.0:  # the prediction is as fine as the photo: nothing coarse to fit
        return mask.copy()
    min_area = MIN_SPECK_CELLS * cell * cell
    cleaned = clean_specks(mask, min_area)
    if not cleaned.any() or cleaned.all():
        return cleaned
    band = int(math.ceil(BAND_CELLS * cell)) + 1
    m8 = cleaned.astype(np.uint8)
    # farther than ``band`` from the other side (exact Euclidean distance: a disk's erosion and
    # dilation at a fraction of their cost; the frame's edge is no side)
    sure_in = cv2.distanceTransform(m8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) > band
    sure_out = cv2.distanceTransform(1 - m8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) > band
    unknown = ~sure_in & ~sure_out
    out = cleaned.copy()
    radius = 2 * band
    step = max(1, radius // 4)
    for tile in tiles_where(unknown, step, radius + 2 * step + 2):
        need = np.zeros(unknown[tile.src].shape, bool)
        need[tile.inner] = unknown[tile.out]
        decided = _decide(rgb[tile.src], cleaned[tile.src], sure_in[tile.src], sure_out[tile.src], need, radius, step)
        out[tile.out][unknown[tile.out]] = decided
    # majority of each 3 x 3 neighbourhood, on the band only
    smooth = cv2.medianBlur(out.astype(np.uint8) * 255, 3) > 127
    out = np.where(unknown, smooth, out)
    return clean_specks(out, min_area)


def fit_protect(rgb: np.ndarray, mask: np.ndarray, *, cell: float | None = None) -> np.ndarray:
    """A protect mask may grow to the photo edge it belongs to, never shrink: the union of the
    given mask and its fitted outline."""
    return mask | fit_mask(rgb, mask, cell=cell)


def _decide(rgb: np.ndarray, coarse: np.ndarray, sure_in: np.ndarray, sure_out: np.ndarray, need: np.ndarray,
            radius: int, step: int) -> np.ndarray:
    """The inside/outside decision for the ``need`` pixels of one tile (with its margin), in
    row-major order."""
    lab = cv2.cvtColor(rgb.astype(np.float32) * (1 / 255), cv2.COLOR_RGB2Lab)
    lab = cv2.GaussianBlur(lab, (0, 0), SMOOTH_SIGMA)
    mean_in, var_in, have_in = _robust_stats(lab, sure_in, radius, step)
    mean_out, var_out, have_out = _robust_stats(lab, sure_out, radius, step)
    lab, coarse = lab[need], coarse[need]
    mean_in, var_in, have_in = mean_in[need], var_in[need], have_in[need]
    mean_out, var_out, have_out = mean_out[need], var_out[need], have_out[need]
    d_in, d_out, sep = _sq_dist(lab, mean_in), _sq_dist(lab, mean_out), _sq_dist(mean_in, mean_out)
    spread_in, spread_out = var_in + NOISE_FLOOR, var_out + NOISE_FLOOR
    like_inside = d_in <= OUTLIER_SIGMAS**2 * spread_in
    told_apart = have_in & have_out & (sep > SEPARATION**2 * (spread_in + spread_out))
    by_colour = (d_in < d_out) & like_inside
    # with no sure-outside pixels near (a mask reaching the frame's edge), only the outlier test
    only_inside = have_in & ~have_out
    return np.where(told_apart, by_colour, np.where(only_inside, coarse & like_inside, coarse))


def _sq_dist(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """Squared Euclidean distance over the last (colour) axis (einsum: numpy's sum over a short
    last axis is several times slower)."""
    d = np.subtract(a, b, dtype=np.float32)
    return np.einsum("...c,...c->...", d, d)


def _robust_stats(lab: np.ndarray, where: np.ndarray, radius: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_local_stats`` taken twice, the second time without the pixels the first found to be
    outliers: a coarse mask running a cell onto a neighbour (a wall over the skirting board)
    puts some of the neighbour in its "sure" part, which would widen the spread enough to let
    the whole neighbour in."""
    mean, var, have = _local_stats(lab, where, radius, step)
    typical = _sq_dist(lab, mean) <= OUTLIER_SIGMAS**2 * (var + NOISE_FLOOR)
    return _local_stats(lab, where & typical, radius, step)


def _local_stats(lab: np.ndarray, where: np.ndarray, radius: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: the mean Lab colour of the ``where`` pixels within ``radius``, their variance
    (summed over the channels) and whether there are enough of them. Computed every ``step``
    pixels and interpolated: the statistics vary slowly."""
    h, w = where.shape
    size = (max(1, w // step), max(1, h // step))

    def small(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, size, interpolation=cv2.INTER_AREA) if step > 1 else x

    def big(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) if step > 1 else x

    r = max(1, radius // step)
    k = (2 * r + 1, 2 * r + 1)
    weight = small(where.astype(np.float32))
    lab_s = small(lab * where[..., None])
    sq_s = small(_sq_dist(lab, 0.0) * where)
    w_sum = cv2.boxFilter(weight, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    c_sum = cv2.boxFilter(lab_s, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    s_sum = cv2.boxFilter(sq_s, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    have = w_sum > 0.05 * k[0] * k[1]
    denom = np.maximum(w_sum, 1e-6)
    mean = c_sum / denom[..., None]
    var = np.maximum(s_sum / denom - _sq_dist(mean, 0.0), 0.0)
    return big(mean), big(var), big(have.astype(np.float32)) > 0.5
