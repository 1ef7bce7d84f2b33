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
3. Decide the band from the photo's edges first, its colours second. Around each band pixel,
   the mean and spread of the photo's colour (CIELAB, lightly smoothed against sensor noise)
   over the sure-inside and the sure-outside pixels within ``2 * band``. An edge pixel is one
   where the colour steps (over ``EDGE_SCALE_CELLS`` of a cell) by more than ``EDGE_MIN`` and
   than ``EDGE_TEXTURE`` times the inside's own texture. Then:
   - a flat (non-edge) pixel reached from one sure side only, within the band's width, without
     crossing an edge, belongs to that side (a geodesic dilation: shading may drift, an edge
     stops it; a gap in an edge lets the other side in only near the gap), also where no sure
     outside is near (a wall brightening towards a lamp pole it surrounds). The inside's reach
     also crosses a ramp: a faint step (under ``RAMP_MAX``) that keeps growing over twice the
     distance (``RAMP_GROWTH`` times) is shading, a lamp's glow steep enough to pass for an
     edge, where an object's border, sharp or blurred, steps as much over either distance;
   - reached from both (no edge between the sides): by colour - inside when nearer the inside
     mean than the outside one and within ``OUTLIER_SIGMAS`` spreads of the inside mean; where
     the sides do not differ by ``SEPARATION`` spreads, the coarse mask is kept, and so it is
     where the flat pixels just beside the pixel that one side only reaches, this side's and
     that side's, differ by less than the least visible step (``2 * EDGE_MIN``): the sides'
     means are taken a band away, and a surface shading into the border (a ceiling darkening
     into its corner with the crown molding) looks there more like the other side's mean;
   - reached from neither, a pocket between edges (a white frame between a wall and a door, a
     molding, a third colour): colour may only take it out of the coarse mask, and not where the
     sides just beside it look alike as above. It joins the inside only where the inside reaches
     it without crossing an edge within ``SHORT_CELLS`` past the coarse outline and its colour
     is within ``JOIN_SIGMAS`` spreads of the inside's
     (a wall drawn a third of a cell thin: the strip between the coarse outline and the wall's
     edge). A molding a barely visible step from the wall differs from it by more than that,
     though its step is no edge;
   - an edge pixel goes with the side whose flat pixels just across the edge its colour is
     nearer, so the outline runs through the middle of the step; with flat pixels of the inside
     only near, the coarse mask and the colour rule decide (a thin object is all edge pixels),
     or, where the inside is too narrow for colour statistics of its own (a strip of floor
     between a lamp's base and a rug), whether its colour is nearer those flat pixels' than the
     sure outside's mean. With flat pixels of the outside only near it goes out, but where the
     inside is that narrow (a lamp pole the coarse mask holds, all edge pixels) it stays as the
     coarse mask has it when its colour is an outlier of those flat pixels'.
4. A majority filter removes single-pixel speckle along the new outline.
5. Objects past the band (``follow_objects``; for a surface's mask, ``follow``: an object's
   own mask, furniture, holds faces of other shades this would take): what step 3 took out is
   often the end of an object the coarse mask swallows deeper than the band (a table leg whose
   foot the floor mask covers whole). From the pixels taken out (flat, or of their colour: not
   the blends of their border with the surface), the object is followed into the mask through
   flat pixels of their colour, nearer it than the inside's, at least a cell wide (a plank's
   groove is not followed), up to ``FOLLOW_CELLS`` cells. What is reached leaves the mask only
   where the photo outlines it: at least ``ENCLOSED_SHARE`` of the mask pixels around it are edge pixels
   (a foot on a floor is outlined; a ceiling running on into a crown molding it looks like is
   not), and its mean colour differs from the surface's around it by ``DISTINCT`` (a patch of
   planks between their joints does not), with the edge pixels around it nearer its colour than
   the inside's. Where the edge scale is more than a pixel (above 1440 px), this runs on blocks
   of it and the pixels beside a followed object go with the nearer of its colour and the
   surface's. Then step 1 again.

The matte of the edits (engine/edits/blend.py) then anti-aliases along the same photo edges.
Work is done tile by tile around the band only: the cost follows the outline's length.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from engine.edits.blend import tiles_where

PREDICTION_GRID = 288  # SAM3's mask side (logits for the whole, square-resized photo)
MIN_SPECK_CELLS = 6.0  # islands and holes below this many grid cells are the segmenter's noise
OUTLIER_SIGMAS = 3.0  # a band pixel farther than this from the inside colour is not inside
JOIN_SIGMAS = 1.0  # an unreached pocket joins the inside only this near its colour (in spreads)
# How far past the coarse outline the inside may reach a pocket, in cells: the prediction's own
# displacement (a mask running into its neighbour, the band's second cell, only runs over).
SHORT_CELLS = 1.0
SEPARATION = 2.0  # sides closer than this (in spreads) are not told apart by colour
NOISE_FLOOR = 1.5  # CIELAB variance added to every spread (about 1.2 dE of noise)
SMOOTH_SIGMA = 0.8  # px; denoises the colours the band is decided on
EDGE_MIN = 1.5  # CIELAB units (half a step, see _edge_strength): a step of 3, about the least one sees, is an edge
EDGE_SCALE_CELLS = 0.3  # edges are measured over this share of a prediction cell (1 px at 1 MP)
EDGE_REACH = 3  # an edge pixel's colour is compared with the flat pixels this near (in edge scales)
EDGE_TEXTURE = 2.5  # nor are steps less than this many times the inside's mean gradient (wood grain)
# A ramp is no border: a step under RAMP_MAX (a step of 5, in _edge_strength's half steps) that
# grows by RAMP_GROWTH or more measured over twice the distance (a border's step stays the same).
RAMP_MAX = 2.5
RAMP_GROWTH = 1.6
# The band's half width in cells: the prediction's own displacement (up to a cell) plus a mask
# running a cell into its neighbour (a wall over the door frame).
BAND_CELLS = 2.0
SURE_BLOCK_CELLS_INV = 4.0  # the sure sides are measured on blocks of a quarter cell (1 px at 1 MP)
FOLLOW_CELLS = 16.0  # how far past the band an object taken out is followed into the mask
ENCLOSED_SHARE = 0.8  # of the mask pixels around a followed object, at least this share are edge pixels
DISTINCT = 10.0  # and its mean colour this far from the surface's around it (CIELAB; planks differ by less)


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


def fit_mask(rgb: np.ndarray, mask: np.ndarray, *, cell: float | None = None, follow: bool = True) -> np.ndarray:
    """``mask`` (bool H x W) with specks cleaned and its outline moved onto ``rgb``'s edges
    within one prediction cell (``cell`` px; by default the SAM3 grid's at this size).
    ``follow``: step 5 too (it only takes pixels out)."""
    cell = prediction_cell_px(mask.shape) if cell is None else cell
    if cell < 1.0:  # the prediction is as fine as the photo: nothing coarse to fit
        return mask.copy()
    min_area = MIN_SPECK_CELLS * cell * cell
    cleaned = clean_specks(mask, min_area)
    if not cleaned.any() or cleaned.all():
        return cleaned
    band = int(math.ceil(BAND_CELLS * cell)) + 1
    sure_in, sure_out = _sure_sides(cleaned, band, max(1, int(cell // SURE_BLOCK_CELLS_INV)))
    unknown = ~sure_in & ~sure_out
    out = cleaned.copy()
    radius = 2 * band
    step = max(1, radius // 4)
    edge_scale = max(1, round(EDGE_SCALE_CELLS * cell))
    short = band + int(math.ceil(SHORT_CELLS * cell))  # steps from the sure inside
    for tile in tiles_where(unknown, step, radius + 2 * step + 2):
        need = np.zeros(unknown[tile.src].shape, bool)
        need[tile.inner] = unknown[tile.out]
        decided = _decide(rgb[tile.src], cleaned[tile.src], sure_in[tile.src], sure_out[tile.src], need, radius, step,
                          edge_scale, short)
        out[tile.out][unknown[tile.out]] = decided
    # majority of each 3 x 3 neighbourhood, on the band only
    smooth = cv2.medianBlur(out.astype(np.uint8) * 255, 3) > 127
    out = np.where(unknown, smooth, out)
    if follow:
        out &= ~follow_objects(rgb, cleaned & ~out & unknown, out, sure_in, cell)
    return clean_specks(out, min_area)


def follow_objects(rgb: np.ndarray, taken: np.ndarray, fitted: np.ndarray, sure_in: np.ndarray,
                   cell: float) -> np.ndarray:
    """The pixels of ``fitted`` that belong to the objects ``taken`` out of the coarse mask in
    its band, followed into the mask past the band (step 5 of the module's docstring). Worked
    on the window around what was taken, ``FOLLOW_CELLS`` cells wider; where the edge scale is
    more than a pixel, on blocks of it (``_follow_on_blocks``)."""
    follow = int(math.ceil(FOLLOW_CELLS * cell))
    found = np.zeros_like(fitted)
    rows, cols = np.flatnonzero(taken.any(axis=1)), np.flatnonzero(taken.any(axis=0))
    if rows.size == 0:
        return found
    h, w = taken.shape
    win = (slice(max(rows[0] - follow, 0), min(rows[-1] + follow + 1, h)),
           slice(max(cols[0] - follow, 0), min(cols[-1] + follow + 1, w)))
    scale = max(1, round(EDGE_SCALE_CELLS * cell))
    if scale == 1:
        found[win] = _follow_in_window(rgb[win], taken[win], fitted[win], sure_in[win], cell, follow).found
    else:
        found[win] = _follow_on_blocks(rgb[win], taken[win], fitted[win], sure_in[win], cell, scale)
    return found


def _follow_on_blocks(rgb: np.ndarray, taken: np.ndarray, fitted: np.ndarray, sure_in: np.ndarray, cell: float,
                      scale: int) -> np.ndarray:
    """``follow_objects`` on ``scale`` x ``scale`` blocks (the edge scale: the photo at the size
    where it is one pixel, a few seconds less a mask at 12 MP), then back to pixels: those of the
    blocks on and beside a followed object go with the nearer of its mean colour and the mean
    colour of the surface around it."""
    h, w = taken.shape
    size = (-(-w // scale), -(-h // scale))

    def small(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5

    blocks = _follow_in_window(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), small(taken), small(fitted),
                               small(sure_in), cell / scale, int(math.ceil(FOLLOW_CELLS * cell / scale)))
    objects = np.where(blocks.outlined[blocks.labels], blocks.labels, 0).astype(np.float32)
    # its border's edge pixels lie up to two blocks beside it (an edge is measured over two)
    objects = cv2.dilate(objects, np.ones((5, 5), np.uint8))
    ids = cv2.resize(objects, (size[0] * scale, size[1] * scale), interpolation=cv2.INTER_NEAREST)[:h, :w]
    ids = ids.astype(np.int32)
    ys, xs = np.nonzero(fitted & (ids > 0))
    found = np.zeros_like(fitted)
    if ys.size:
        lab = cv2.cvtColor(rgb[ys, xs][None].astype(np.float32) * (1 / 255), cv2.COLOR_RGB2Lab)[0]
        at = ids[ys, xs]
        nearer = _sq_dist(lab, blocks.own_mean[at]) < _sq_dist(lab, blocks.around_mean[at])
        found[ys[nearer], xs[nearer]] = True
    return found


class _Followed(NamedTuple):
    found: np.ndarray  # the pixels taken out of the mask
    labels: np.ndarray  # the objects followed (connected components, 0: none)
    outlined: np.ndarray  # per label: taken out (outlined by the photo, unlike the surface)
    own_mean: np.ndarray  # per label: its mean colour (CIELAB)
    around_mean: np.ndarray  # per label: the surface's around it


def _follow_in_window(rgb: np.ndarray, taken: np.ndarray, fitted: np.ndarray, sure_in: np.ndarray,
                      cell: float, follow: int) -> _Followed:
    lab = cv2.GaussianBlur(cv2.cvtColor(rgb.astype(np.float32) * (1 / 255), cv2.COLOR_RGB2Lab), (0, 0), SMOOTH_SIGMA)
    sq = _sq_dist(lab, 0.0)
    band = int(math.ceil(BAND_CELLS * cell)) + 1
    radius, scale = 2 * band, max(1, round(EDGE_SCALE_CELLS * cell))
    step = max(1, radius // 4)
    strength = _edge_strength(lab, scale)
    flat = strength < np.maximum(EDGE_MIN, EDGE_TEXTURE * _local_mean(strength, sure_in, radius, step))
    mean_in, var_in, have_in = _robust_stats(lab, sq, sure_in, radius, step)
    # the colour of what was taken, from a cell's worth of its pixels as far as an object is followed
    far_step = max(1, follow // 4)
    mean_t, var_t, have_t = _robust_stats(lab, sq, taken, follow, far_step, least=cell * cell)
    d_t = _sq_dist(lab, mean_t)
    nearer_it = ~have_in | (d_t < _sq_dist(lab, mean_in))
    its_colour = have_t & (d_t <= OUTLIER_SIGMAS**2 * (var_t + NOISE_FLOOR)) & nearer_it
    like = fitted & its_colour
    width = max(3, 2 * int(round(cell / 2)) + 1)  # at least a cell wide: no groove, no seam
    like = cv2.morphologyEx(like.astype(np.uint8), cv2.MORPH_OPEN,
                            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))).view(bool) & flat
    seed = taken & (flat | its_colour)  # not the blends of its border with the surface
    reached = _reach(seed, ~(like | seed), follow, scale) & (like | seed)
    # kept only where the photo outlines it: most mask pixels around it are edge pixels
    count, labels = cv2.connectedComponents(reached.astype(np.uint8), connectivity=8)
    if count <= 1:
        none = np.zeros((1, 3), np.float32)
        return _Followed(np.zeros_like(fitted), labels, np.zeros(1, bool), none, none)
    around = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
    ring = fitted & ~reached & (around > 0)
    total = np.bincount(around[ring], minlength=count)
    edged = np.bincount(around[ring & ~flat], minlength=count)
    outlined = edged >= ENCLOSED_SHARE * np.maximum(total, 1)
    outlined &= np.bincount(labels[reached & fitted], minlength=count) > 0  # reached into the mask
    # and it looks unlike the surface around it (planks between their joints do not)
    wide = 2 * EDGE_REACH * scale + 1
    near = cv2.dilate(labels.astype(np.float32), np.ones((wide, wide), np.uint8)).astype(np.int32)
    surface = fitted & flat & ~reached & ~ring & (near > 0)
    own_mean = _label_means(lab, labels, reached, count)
    around_mean = _label_means(lab, near, surface, count)
    outlined &= _sq_dist(own_mean, around_mean) >= DISTINCT**2
    outlined[0] = False
    # its outline runs through the middle of the step: the edge pixels around it nearer its colour
    rim = ring & ~flat & outlined[around] & nearer_it
    return _Followed((outlined[labels] | rim) & fitted, labels, outlined, own_mean, around_mean)


def _sure_sides(mask: np.ndarray, band: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The mask's pixels farther than ``band`` from its outside, and the outside's farther than
    ``band`` from the mask (Euclidean distance transforms; the frame's edge is no side),
    measured on ``block`` x ``block`` blocks: a few pixels either way do not matter against a
    band of two prediction cells, and the transforms cost a block's area less."""
    h, w = mask.shape
    if block > 1:
        small = cv2.resize(mask.astype(np.float32), (-(-w // block), -(-h // block)), interpolation=cv2.INTER_AREA)
        m8 = (small >= 0.5).astype(np.uint8)
    else:
        m8 = mask.astype(np.uint8)
    sides = []
    for inside in (m8, 1 - m8):
        far = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) > band / block
        if block > 1:
            far = cv2.resize(far.view(np.uint8), (far.shape[1] * block, far.shape[0] * block),
                             interpolation=cv2.INTER_NEAREST)[:h, :w].astype(bool)
        sides.append(far)
    return sides[0] & mask, sides[1] & ~mask


def fit_protect(rgb: np.ndarray, mask: np.ndarray, *, cell: float | None = None) -> np.ndarray:
    """A protect mask may grow to the photo edge it belongs to, never shrink: the union of the
    given mask and its fitted outline (without following objects past the band, which only
    takes pixels out)."""
    return mask | fit_mask(rgb, mask, cell=cell, follow=False)


def _decide(rgb: np.ndarray, coarse: np.ndarray, sure_in: np.ndarray, sure_out: np.ndarray, need: np.ndarray,
            radius: int, step: int, scale: int, short: int) -> np.ndarray:
    """The inside/outside decision for the ``need`` pixels of one tile (with its margin), in
    row-major order. ``short``: how many steps from the sure inside a pocket may join it."""
    lab = cv2.cvtColor(rgb.astype(np.float32) * (1 / 255), cv2.COLOR_RGB2Lab)
    lab = cv2.GaussianBlur(lab, (0, 0), SMOOTH_SIGMA)
    sq = _sq_dist(lab, 0.0)
    mean_in, var_in, have_in = _robust_stats(lab, sq, sure_in, radius, step)
    mean_out, var_out, have_out = _robust_stats(lab, sq, sure_out, radius, step)
    # Edges: colour steps larger than a floor and than the inside's own texture (wood grain).
    strength = _edge_strength(lab, scale)
    texture = _local_mean(strength, sure_in, radius, step)
    edge = strength >= np.maximum(EDGE_MIN, EDGE_TEXTURE * texture)
    flat = ~edge
    # the inside's reach crosses shading steep enough to pass for an edge (a lamp's glow)
    ramp = edge & (strength < RAMP_MAX)
    ry, rx = np.nonzero(ramp)
    ramp[ry, rx] = _edge_strength_at(lab, ry, rx, 2 * scale) >= RAMP_GROWTH * strength[ry, rx]
    steps = radius // 2  # the band's width: reach stays local, a gap in an edge leaks only near it
    reach_in = _reach(sure_in, (edge & ~ramp) | sure_out, steps, scale) & flat
    reach_out = _reach(sure_out, edge | sure_in, steps, scale) & flat
    reach_far = _reach(sure_in, edge | sure_out, short, scale) & flat

    # Colour, on the band and the few pixels around it an edge pixel's decision looks at.
    work = cv2.dilate(need.astype(np.uint8), np.ones((2 * EDGE_REACH * scale + 1,) * 2, np.uint8)) > 0
    lab_w = lab[work]
    mi, mo = mean_in[work], mean_out[work]
    d_in, d_out = _sq_dist(lab_w, mi), _sq_dist(lab_w, mo)
    spread_in, spread_out = var_in[work] + NOISE_FLOOR, var_out[work] + NOISE_FLOOR
    both_sides = have_in[work] & have_out[work]
    like_inside = d_in <= OUTLIER_SIGMAS**2 * spread_in
    # The sides' means are taken over sure pixels a band or more away. Where a surface shades
    # towards the border (a ceiling darkening into its corner with the crown molding), its pixels
    # beside the border look less like that mean than like the other side's, though the photo
    # shows no step there. So colour decides only where the flat pixels just this side and just
    # that side (reached from one side only) differ by at least the least visible step.
    (beside_in, any_in), (beside_out, any_out) = _sides_near(lab, reach_in ^ reach_out, reach_in, *np.nonzero(work),
                                                             EDGE_REACH, scale)
    alike_here = any_in & any_out & (_sq_dist(beside_in, beside_out) < (2 * EDGE_MIN) ** 2)
    told_apart = both_sides & (_sq_dist(mi, mo) > SEPARATION**2 * (spread_in + spread_out)) & ~alike_here
    by_colour = (d_in < d_out) & like_inside
    coarse_w = coarse[work]
    # with no sure-outside pixels near (a mask reaching the frame's edge), only the outlier test
    only_inside = have_in[work] & ~have_out[work]
    colour_rule = np.where(told_apart, by_colour, np.where(only_inside, coarse_w & like_inside, coarse_w))
    # Reached from one side only without crossing an edge: that side (the inside's reach also
    # where no sure outside is near). From both (no edge between the sides): by colour. From
    # neither, a pocket between edges (a frame, a molding): colour may only take pixels out of
    # the coarse mask, where the sides just beside it differ; it adds only what the inside reaches
    # within a cell past the coarse outline and is the inside's colour within its own spread (a
    # molding a faint step off the wall is not).
    flat_w, in_w, out_w = flat[work], reach_in[work], reach_out[work]
    unreached = flat_w & ~in_w & ~out_w & have_in[work]
    pocket = unreached & have_out[work]
    joins = reach_far[work] & (d_in <= JOIN_SIGMAS**2 * spread_in) & ((d_in < d_out) | ~have_out[work])
    decided = sure_in.copy()
    decided[work] = np.where(flat_w & (in_w ^ out_w) & (both_sides | in_w), in_w,
                             np.where(unreached,
                                      np.where(pocket, coarse_w & (by_colour | alike_here), colour_rule) | joins,
                                      colour_rule))
    # An edge pixel goes with the side whose flat pixels just across the edge its colour is
    # nearer: the outline runs through the middle of the step (a white frame's first pixel is
    # frame). With flat pixels of the outside only near it goes out; of the inside only, it stays
    # as the coarse mask and the colour rule have it: a crease in a wall stays in, while an object
    # narrower than the edge reach (a lamp pole, all edge pixels) is not handed to the wall.
    # Where the inside is too narrow for statistics of its own (no colour rule), the flat inside
    # pixels near stand in for its colour against the sure outside's, and an edge pixel with the
    # outside's flat pixels only near (the border of a pole the coarse mask holds) stays as the
    # coarse mask has it when it is unlike them.
    ridge = need & edge
    ys, xs = np.nonzero(ridge)
    (near_in, have_in_r), (near_out, have_out_r) = _sides_near(lab, flat, decided, ys, xs, EDGE_REACH, scale)
    lab_r = lab[ys, xs]
    nearer_in = _sq_dist(lab_r, near_in) < _sq_dist(lab_r, near_out)
    unlike_out = _sq_dist(lab_r, near_out) > OUTLIER_SIGMAS**2 * (var_out[ys, xs] + NOISE_FLOOR)
    one_side = np.where(have_out_r, coarse[ys, xs] & unlike_out & ~have_in[ys, xs],
                        (have_in_r & coarse[ys, xs]) | decided[ys, xs])
    stand_in = have_in_r & ~have_out_r & have_out[ys, xs] & ~have_in[ys, xs]
    one_side = np.where(stand_in, _sq_dist(lab_r, near_in) < _sq_dist(lab_r, mean_out[ys, xs]), one_side)
    decided[ys, xs] = np.where(have_in_r & have_out_r, nearer_in, one_side)
    return decided[need]


def _edge_strength(lab: np.ndarray, scale: int) -> np.ndarray:
    """Half the colour step across each pixel over ``2 * scale`` pixels, the larger of the two
    axes' (CIELAB units; a sharp step of 10 gives 5 whatever the scale, and so does one blurred
    over up to ``2 * scale`` pixels, as a camera's edges are at 12 MP)."""
    pad = cv2.copyMakeBorder(lab, scale, scale, scale, scale, cv2.BORDER_REPLICATE)
    h, w = lab.shape[:2]
    dx = _sq_dist(pad[scale:scale + h, 2 * scale:], pad[scale:scale + h, :w])
    dy = _sq_dist(pad[2 * scale:, scale:scale + w], pad[:h, scale:scale + w])
    return np.sqrt(np.maximum(dx, dy)) * 0.5


def _edge_strength_at(lab: np.ndarray, ys: np.ndarray, xs: np.ndarray, scale: int) -> np.ndarray:
    """``_edge_strength`` at the pixels (``ys``, ``xs``) only (the frame's edge replicated alike)."""
    h, w = lab.shape[:2]
    dx = _sq_dist(lab[ys, np.minimum(xs + scale, w - 1)], lab[ys, np.maximum(xs - scale, 0)])
    dy = _sq_dist(lab[np.minimum(ys + scale, h - 1), xs], lab[np.maximum(ys - scale, 0), xs])
    return np.sqrt(np.maximum(dx, dy)) * 0.5


def _sides_near(lab: np.ndarray, flat: np.ndarray, inside: np.ndarray, ys: np.ndarray, xs: np.ndarray, reach: int,
                scale: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """At the pixels (``ys``, ``xs``): the mean colour of the flat pixels inside and of those
    outside within ``reach`` blocks of ``scale`` x ``scale`` pixels, and whether there are any."""
    small, _ = _resizers(flat.shape, scale)
    flat_in = flat & inside
    w_all, w_in = _box_sum(small(flat.astype(np.float32)), reach), _box_sum(small(flat_in.astype(np.float32)), reach)
    c_all, c_in = _box_sum(small(lab * flat[..., None]), reach), _box_sum(small(lab * flat_in[..., None]), reach)
    by, bx = np.minimum(ys // scale, w_all.shape[0] - 1), np.minimum(xs // scale, w_all.shape[1] - 1)
    w_in, w_all, c_in, c_all = w_in[by, bx], w_all[by, bx], c_in[by, bx], c_all[by, bx]
    w_out, c_out = w_all - w_in, c_all - c_in
    least = 0.5 / (scale * scale)
    return ((c_in / np.maximum(w_in, 1e-6)[:, None], w_in > least),
            (c_out / np.maximum(w_out, 1e-6)[:, None], w_out > least))


def _reach(seed: np.ndarray, edge: np.ndarray, steps: int, scale: int) -> np.ndarray:
    """The pixels reached from a ``seed`` pixel in at most ``steps`` pixels of 4-neighbour steps
    without entering an ``edge`` pixel (a geodesic dilation; no slipping through a diagonal
    edge). Run on ``scale`` x ``scale`` blocks: a block holding an edge pixel is an edge, a
    block mostly seed is seed."""
    h, w = seed.shape
    small = (-(-w // scale), -(-h // scale))
    if scale > 1:
        seed = cv2.resize(seed.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.5
        edge = cv2.resize(edge.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0
    gate = (~edge | seed).astype(np.uint8)
    grown = (seed & (gate > 0)).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for _ in range(-(-steps // scale)):
        grown = cv2.dilate(grown, kernel) & gate
    if scale > 1:
        grown = cv2.resize(grown, (small[0] * scale, small[1] * scale), interpolation=cv2.INTER_NEAREST)[:h, :w]
    return grown.astype(bool)


def _label_means(lab: np.ndarray, labels: np.ndarray, where: np.ndarray, count: int) -> np.ndarray:
    """The mean colour of the ``where`` pixels of each label (``count`` labels; nan where none)."""
    idx = labels[where]
    n = np.bincount(idx, minlength=count).astype(np.float64)
    sums = np.stack([np.bincount(idx, lab[..., c][where], minlength=count) for c in range(3)], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / n[:, None]).astype(np.float32)


def _sq_dist(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """Squared Euclidean distance over the last (colour) axis (einsum: numpy's sum over a short
    last axis is several times slower)."""
    d = np.subtract(a, b, dtype=np.float32)
    return np.einsum("...c,...c->...", d, d)


def _robust_stats(lab: np.ndarray, sq: np.ndarray, where: np.ndarray, radius: int,
                  step: int, least: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_local_stats`` taken twice, the second time without the pixels the first found to be
    outliers: a coarse mask running a cell onto a neighbour (a wall over the skirting board)
    puts some of the neighbour in its "sure" part, which would widen the spread enough to let
    the whole neighbour in. ``sq``: the squared length of each pixel's ``lab``."""
    mean, var, have = _local_stats(lab, sq, where, radius, step, least)
    typical = _sq_dist(lab, mean) <= OUTLIER_SIGMAS**2 * (var + NOISE_FLOOR)
    return _local_stats(lab, sq, where & typical, radius, step, least)


def _resizers(shape: tuple[int, ...], step: int):
    """To the ``step``-subsampled grid and back (the statistics vary slowly)."""
    h, w = shape[:2]
    size = (max(1, w // step), max(1, h // step))

    def small(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, size, interpolation=cv2.INTER_AREA) if step > 1 else x

    def big(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) if step > 1 else x

    return small, big


def _box_sum(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=False, borderType=cv2.BORDER_CONSTANT)


def _local_mean(values: np.ndarray, where: np.ndarray, radius: int, step: int) -> np.ndarray:
    """Per pixel: the mean of ``values`` (H x W) over the ``where`` pixels within ``radius``
    (0 where there are none), computed every ``step`` pixels and interpolated."""
    small, big = _resizers(where.shape, step)
    r = max(1, radius // step)
    w_sum = _box_sum(small(where.astype(np.float32)), r)
    v_sum = _box_sum(small(values * where), r)
    return big(v_sum / np.maximum(w_sum, 1e-6))


def _local_stats(lab: np.ndarray, sq: np.ndarray, where: np.ndarray, radius: int,
                 step: int, least: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: the mean Lab colour of the ``where`` pixels within ``radius``, their variance
    (summed over the channels) and whether there are enough of them: a twentieth of the window,
    or ``least`` pixels. Computed every ``step`` pixels and interpolated: the statistics vary
    slowly."""
    small, big = _resizers(where.shape, step)
    r = max(1, radius // step)
    w_sum = _box_sum(small(where.astype(np.float32)), r)
    c_sum = _box_sum(small(lab * where[..., None]), r)
    s_sum = _box_sum(small(sq * where), r)
    have = w_sum > 0.05 * (2 * r + 1) ** 2 if least is None else w_sum * step * step >= least
    denom = np.maximum(w_sum, 1e-6)
    mean = c_sum / denom[..., None]
    var = np.maximum(s_sum / denom - _sq_dist(mean, 0.0), 0.0)
    return big(mean), big(var), big(have.astype(np.float32)) > 0.5
