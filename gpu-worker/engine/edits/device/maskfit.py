"""engine/maskfit.py's fit in torch, so a segmenter's masks are fitted where they were made.

The steps and constants are engine/maskfit.py's (imported from there): clean specks, the band
between sure inside and sure outside, the local colour statistics of both sides, the per-pixel
decision (``decide`` and the edge pixels after it, the host's rule), a 3 x 3 majority on the band,
clean again. Inputs: the photo as uint8 H x W x 3 and masks as bool H x W tensors on one device.

Where torch has no equivalent of the host's OpenCV call, the port differs as follows:

- Specks (``clean_specks``): torch has no connected-component labelling. The mask is counted in
  blocks of ``speck_block_px`` pixels (a quarter of a prediction cell: one pixel while the photo's
  longer side is under 1728, 3 at 12 MP) and the 8-connected groups of occupied blocks are
  labelled on the device by spreading the highest label to the neighbours and jumping to the
  label's own block's label, a few more times than the doublings a compact speck's width in
  blocks takes; a group with fewer than ``min_area`` mask (background) pixels is dropped (filled).
  Two pixels that touch lie in touching blocks, so a group holds whole components and its count
  is their total area: everything dropped is a speck. Kept where the host drops: a speck less
  than a block from another part of the mask (it shares a group; it lies in the band, where the
  colour decides it), and a speck too long and thin to settle in those steps.
- Band: the host thresholds exact distance transforms on blocks of a quarter cell, the blocks
  made by OpenCV's area resize; the port resizes with the same weights (``ops.area_resize``)
  and dilates by the Euclidean disk of the band's radius in blocks: the same sure sides.
- Statistics: computed once over the window around the band instead of tile by tile; the
  window is aligned to the statistics' step as the host's tiles are, so they sample the same
  grid. At the photo's right and bottom edge the host resizes a partial step by OpenCV's area
  rule, the port pads it with no samples. The blocks of the edge scale (the geodesic reach,
  the flat sides' colours near an edge pixel) start at each host tile's corner, a multiple of
  the step, and at the window's in the port: the same blocks where the step is a multiple of
  the edge scale (always below 1440 px on the longer side, where that scale is one pixel),
  shifted by less than a block elsewhere (at 12 MP: step 14, edge scale 4).
- Objects past the band (``maskfit.follow_objects``): they are found by connected-component
  labelling with a count per component, which torch lacks; the host's step runs on host copies
  of the photo's window around what the band took out and of the masks, and its answer comes
  back to the device.
- Colour: OpenCV's float RGB -> Lab decodes sRGB through a spline table; the port uses the
  decoded values OpenCV gives each 8-bit level and exact cube roots (engine/edits/device/lab.py),
  within a few hundredths of a Lab unit of OpenCV's.

bench/maskfit_device_parity.py measures what the port changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from engine.edits.device import ops
from engine.edits.device.lab import smoothed_lab
from engine.maskfit import (BAND_CELLS, EDGE_MIN, EDGE_REACH, EDGE_SCALE_CELLS, EDGE_TEXTURE, JOIN_SIGMAS,
                            MIN_SPECK_CELLS, NOISE_FLOOR, OUTLIER_SIGMAS, RAMP_GROWTH, RAMP_MAX, SEPARATION,
                            SHORT_CELLS, SURE_BLOCK_CELLS_INV, follow_objects, prediction_cell_px)

SPECK_BLOCK_CELLS = 0.25  # speck labelling's block side in prediction cells (a speck is >= 1 cell)


def speck_block_px(cell: float) -> int:
    return max(1, int(round(SPECK_BLOCK_CELLS * cell)))


def fit_mask(rgb: torch.Tensor, mask: torch.Tensor, *, cell: float | None = None, follow: bool = True) -> torch.Tensor:
    """``maskfit.fit_mask`` on ``mask``'s device: ``rgb`` uint8 H x W x 3, ``mask`` bool H x W."""
    cell = prediction_cell_px(tuple(mask.shape)) if cell is None else cell
    if cell < 1.0:
        return mask.clone()
    min_area = MIN_SPECK_CELLS * cell * cell
    block = speck_block_px(cell)
    cleaned = clean_specks(mask, min_area, block)
    if not bool(cleaned.any()) or bool(cleaned.all()):
        return cleaned
    band = int(math.ceil(BAND_CELLS * cell)) + 1
    sure_in, sure_out = _sure_sides(cleaned, band, max(1, int(cell // SURE_BLOCK_CELLS_INV)))
    unknown = ~sure_in & ~sure_out
    radius = 2 * band
    step = max(1, radius // 4)
    window = _window(unknown, step, -(-(radius + 2 * step + 2) // step) * step)
    out = cleaned.clone()
    scale = max(1, round(EDGE_SCALE_CELLS * cell))
    if window is not None:
        decided = _decide_window(rgb[window], cleaned[window], sure_in[window], sure_out[window], unknown[window],
                                 radius, step, scale, band + int(math.ceil(SHORT_CELLS * cell)))
        out[window] = torch.where(unknown[window], decided, cleaned[window])
        smooth = _majority3(out[window])
        out[window] = torch.where(unknown[window], smooth, out[window])
        if follow:
            out &= ~_follow_objects_on_host(rgb, cleaned & ~out & unknown, out, sure_in, cell)
    return clean_specks(out, min_area, block)


def _follow_objects_on_host(rgb: torch.Tensor, taken: torch.Tensor, fitted: torch.Tensor, sure_in: torch.Tensor,
                            cell: float) -> torch.Tensor:
    """``maskfit.follow_objects`` on host copies (see the module's docstring)."""
    host = [t.cpu().numpy() for t in (rgb, taken, fitted, sure_in)]
    return torch.from_numpy(follow_objects(*host, cell)).to(fitted.device)


def _sure_sides(mask: torch.Tensor, band: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``maskfit._sure_sides``: the mask's pixels farther than ``band`` from its outside and the
    outside's farther than ``band`` from the mask, on ``block`` x ``block`` blocks (the host's
    area resize, so the same blocks; an exact distance transform's threshold is a dilation by
    the disk of that radius in blocks)."""
    h, w = mask.shape
    small = mask if block == 1 else ops.area_resize(mask.float(), (-(-h // block), -(-w // block))) >= 0.5
    disk = _disk_rows_within(band, block)
    far = ~ops.dilate(torch.stack([~small, small]), disk)  # from the outside, from the inside
    if block > 1:
        far = _blocks_to_pixels(far, block, h, w)
    return far[0] & mask, far[1] & ~mask


def _disk_rows_within(band: int, block: int) -> tuple[int, ...]:
    """Half widths of the blocks within ``band / block`` of a block: dy^2 + dx^2 <= (band / block)^2."""
    r2 = band * band // (block * block)
    reach = math.isqrt(r2)
    return tuple(math.isqrt(r2 - dy * dy) for dy in range(-reach, reach + 1))


def fit_protect(rgb: torch.Tensor, mask: torch.Tensor, *, cell: float | None = None) -> torch.Tensor:
    """Grow only: ``mask`` or its fitted outline (every given pixel stays in; no following)."""
    return mask | fit_mask(rgb, mask, cell=cell, follow=False)


# -- specks ----------------------------------------------------------------------------------


def clean_specks(mask: torch.Tensor, min_area: float, block: int) -> torch.Tensor:
    """``mask`` without islands, and with holes not touching the frame, of fewer than ``min_area``
    pixels, found on blocks of ``block`` pixels (see the module's docstring)."""
    h, w = mask.shape
    counts = _block_counts(mask, block)
    steps = _label_steps(min_area, block)
    islands = _small_groups(counts, min_area, steps, keep_border=False)
    counts = counts.masked_fill(islands, 0)
    holes = _small_groups(_frame_counts(h, w, block, mask.device) - counts, min_area, steps, keep_border=True)
    drop, fill = (_blocks_to_pixels(g, block, h, w) for g in (islands, holes))
    return (mask & ~drop) | fill


def _label_steps(min_area: float, block: int) -> int:
    """Spreading steps for a compact speck's blocks to settle on one label: each step's jump
    about doubles the distance a label has come, and a speck is at most ``2 sqrt(min_area)``
    pixels across."""
    return int(math.ceil(math.log2(2 * math.sqrt(min_area) / block + 1))) + 4


def _block_counts(mask: torch.Tensor, block: int) -> torch.Tensor:
    h, w = mask.shape
    padded = F.pad(mask.to(torch.int32), (0, -w % block, 0, -h % block))
    return padded.view(padded.shape[0] // block, block, padded.shape[1] // block, block).sum((1, 3))


@lru_cache(maxsize=16)
def _frame_counts(h: int, w: int, block: int, device: torch.device) -> torch.Tensor:
    """The photo's pixels per block (fewer in the last row and column of blocks)."""
    rows = torch.clamp(h - torch.arange(0, h, block), max=block)
    cols = torch.clamp(w - torch.arange(0, w, block), max=block)
    return (rows[:, None] * cols[None, :]).to(torch.int32).to(device)


def _small_groups(counts: torch.Tensor, min_area: float, steps: int, keep_border: bool) -> torch.Tensor:
    """Blocks of the 8-connected groups of occupied blocks whose counts sum below ``min_area``.

    Each occupied block starts with its own label (its index + 1) and, ``steps`` times, takes its
    neighbours' highest, then the label that the block its label names holds by now (a pointer
    jump: that block is in the same group and its label is never lower, so labels travel about
    twice as far each step). A group whose blocks then all hold one label is labelled, one still
    holding several (too long to settle in ``steps``) is kept whatever its size. With
    ``keep_border``, groups reaching the grid's edge are kept too."""
    occupied = counts > 0
    n = counts.numel()
    labels = torch.where(occupied, torch.arange(1, n + 1, device=counts.device, dtype=torch.float32).view_as(counts),
                         torch.zeros((), device=counts.device))
    for _ in range(steps):
        labels = torch.where(occupied, _max3(labels), labels)
        labels = torch.where(occupied, labels.view(-1)[(labels.long() - 1).clamp_min_(0)], labels)
    highest, lowest = _max3(labels), -_max3(-torch.where(occupied, labels, torch.full_like(labels, n + 1)))
    kept = occupied & ((highest != labels) | (lowest != labels))  # a group not settled
    if keep_border:
        edge = torch.ones_like(occupied)
        edge[1:-1, 1:-1] = False
        kept |= occupied & edge
    index = labels.long()
    area = torch.zeros(n + 1, dtype=torch.int64, device=counts.device).index_add_(0, index.view(-1),
                                                                                  counts.view(-1).long())
    keep = torch.zeros(n + 1, dtype=torch.bool, device=counts.device)
    keep[index[kept]] = True
    small = (area < min_area) & ~keep
    small[0] = False
    return small[index]


def _max3(x: torch.Tensor) -> torch.Tensor:
    """The highest value of each 3 x 3 neighbourhood (two passes of shifted maxima: on a CPU
    many times faster than torch's max pooling)."""
    p = F.pad(x[None], (1, 1, 1, 1), value=float("-inf"))[0]
    rows = torch.maximum(torch.maximum(p[:-2], p[1:-1]), p[2:])
    return torch.maximum(torch.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _blocks_to_pixels(grid: torch.Tensor, block: int, h: int, w: int) -> torch.Tensor:
    """Each block's value on its ``block`` x ``block`` pixels (the last two axes), cut to h x w."""
    return grid.repeat_interleave(block, -2).repeat_interleave(block, -1)[..., :h, :w]


# -- the band's decision ---------------------------------------------------------------------


@dataclass
class SideStats:
    """Per pixel, one side's local colour: mean Lab (3 x H x W), variance summed over the
    channels and whether enough sure pixels were near."""

    mean: torch.Tensor
    var: torch.Tensor
    have: torch.Tensor


def decide(lab: torch.Tensor, coarse: torch.Tensor, inside: SideStats, outside: SideStats, reach_in: torch.Tensor,
           reach_out: torch.Tensor, reach_far: torch.Tensor, flat: torch.Tensor,
           alike_here: torch.Tensor) -> torch.Tensor:
    """Inside or not, per pixel (``maskfit._decide``'s rule before its edge pixels): a flat pixel
    reached from one sure side only goes with it (from the inside also with no sure outside
    near); reached from both, by colour (nearer the inside colour and no outlier of it, where the
    sides differ enough; the coarse mask elsewhere, or with no sure outside near, the coarse mask
    minus the inside's outliers, and where ``alike_here``: the flat pixels just beside it that one
    side only reaches differ by less than the least visible step); a pocket reached from neither
    may only leave the coarse mask (not where ``alike_here``), but joins the inside where
    ``reach_far`` (the inside's reach to ``SHORT_CELLS`` past the coarse outline) gets to it and
    its colour is within ``JOIN_SIGMAS`` spreads of the inside's."""
    d_in, d_out = _sq_dist(lab, inside.mean), _sq_dist(lab, outside.mean)
    sep = _sq_dist(inside.mean, outside.mean)
    spread_in, spread_out = inside.var + NOISE_FLOOR, outside.var + NOISE_FLOOR
    both_sides = inside.have & outside.have
    like_inside = d_in <= OUTLIER_SIGMAS**2 * spread_in
    told_apart = both_sides & (sep > SEPARATION**2 * (spread_in + spread_out)) & ~alike_here
    by_colour = (d_in < d_out) & like_inside
    only_inside = inside.have & ~outside.have
    colour_rule = torch.where(told_apart, by_colour, torch.where(only_inside, coarse & like_inside, coarse))
    unreached = flat & ~reach_in & ~reach_out & inside.have
    pocket = unreached & outside.have
    joins = reach_far & (d_in <= JOIN_SIGMAS**2 * spread_in) & ((d_in < d_out) | ~outside.have)
    return torch.where(flat & (reach_in ^ reach_out) & (both_sides | reach_in), reach_in,
                       torch.where(unreached,
                                   torch.where(pocket, coarse & (by_colour | alike_here), colour_rule) | joins,
                                   colour_rule))


def _decide_window(rgb: torch.Tensor, coarse: torch.Tensor, sure_in: torch.Tensor, sure_out: torch.Tensor,
                   need: torch.Tensor, radius: int, step: int, scale: int, short: int) -> torch.Tensor:
    lab = smoothed_lab(rgb)
    inside = _robust_stats(lab, sure_in, radius, step)
    outside = _robust_stats(lab, sure_out, radius, step)
    strength = _edge_strength(lab, scale)
    edge = strength >= (EDGE_TEXTURE * _local_mean(strength, sure_in, radius, step)).clamp_min(EDGE_MIN)
    flat = ~edge
    ramp = (strength < RAMP_MAX) & (_edge_strength(lab, 2 * scale) >= RAMP_GROWTH * strength)
    steps = radius // 2
    stops = torch.stack([sure_out | (edge & ~ramp), sure_in | edge])  # the inside's reach crosses ramps
    reach_in, reach_out = _reach(torch.stack([sure_in, sure_out]), stops, steps, scale) & flat
    reach_far = _reach(sure_in[None], (sure_out | edge)[None], short, scale)[0] & flat
    work = _dilate_square(need, EDGE_REACH * scale)
    # the flat pixels beside each pixel that one side only reaches: do the sides differ there?
    (beside_in, any_in), (beside_out, any_out) = _sides_near(lab, reach_in ^ reach_out, reach_in, EDGE_REACH, scale)
    alike_here = any_in & any_out & (_sq_dist(beside_in, beside_out) < (2 * EDGE_MIN) ** 2)
    decided = torch.where(work, decide(lab, coarse, inside, outside, reach_in, reach_out, reach_far, flat, alike_here),
                          sure_in)
    # An edge pixel goes with the side whose flat pixels just across the edge its colour is nearer;
    # with the inside's only, as the coarse mask and the colour rule have it (a thin pole stays out),
    # or, where the inside has no statistics of its own, by those flat pixels' colour against the
    # sure outside's mean; with the outside's only, out, but where the inside has no statistics,
    # as the coarse mask has it when unlike those flat pixels (a pole's border).
    (near_in, have_in), (near_out, have_out) = _sides_near(lab, flat, decided, EDGE_REACH, scale)
    ridge = need & edge & (have_in | have_out)
    stand_in = have_in & ~have_out & outside.have & ~inside.have
    thin = ~have_in & have_out & ~inside.have
    unlike_out = _sq_dist(lab, near_out) > OUTLIER_SIGMAS**2 * (outside.var + NOISE_FLOOR)
    nearer_in = torch.where(have_in & have_out, _sq_dist(lab, near_in) < _sq_dist(lab, near_out),
                            torch.where(stand_in, _sq_dist(lab, near_in) < _sq_dist(lab, outside.mean),
                                        torch.where(thin, coarse & unlike_out, have_in & (coarse | decided))))
    return torch.where(ridge, nearer_in, decided)


def _edge_strength(lab: torch.Tensor, scale: int) -> torch.Tensor:
    """``maskfit._edge_strength``: half the larger colour step across each pixel over ``2 * scale``."""
    h, w = lab.shape[-2:]
    pad = F.pad(lab[None], (scale, scale, scale, scale), mode="replicate")[0]
    dx = _sq_dist(pad[:, scale:scale + h, 2 * scale:], pad[:, scale:scale + h, :w])
    dy = _sq_dist(pad[:, 2 * scale:, scale:scale + w], pad[:, :h, scale:scale + w])
    return torch.maximum(dx, dy).sqrt() * 0.5


def _reach(seed: torch.Tensor, edge: torch.Tensor, steps: int, scale: int) -> torch.Tensor:
    """``maskfit._reach`` of each ``seed`` plane (S x H x W, one ``edge`` plane each): pixels
    reached from it in ``steps`` 4-neighbour steps without entering ``edge``, on ``scale`` x
    ``scale`` blocks (an edge pixel makes its block an edge, a block mostly seed is seed; blocks
    past the window's edge hold nothing)."""
    h, w = seed.shape[-2:]
    pad = (0, -w % scale, 0, -h % scale)
    seed_b = ops.area_down(F.pad(seed.float(), pad), scale) > 0.5
    edge_b = ops.area_down(F.pad(edge.float(), pad), scale) > 0
    gate = ~edge_b | seed_b
    grown = seed_b & gate
    p = grown.new_zeros((*grown.shape[:-2], grown.shape[-2] + 2, grown.shape[-1] + 2))
    for _ in range(-(-steps // scale)):
        p[..., 1:-1, 1:-1] = grown
        grown = (grown | p[..., :-2, 1:-1] | p[..., 2:, 1:-1] | p[..., 1:-1, :-2] | p[..., 1:-1, 2:]) & gate
    return _blocks_to_pixels(grown, scale, h, w)


def _dilate_square(mask: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(mask.float()[None, None], 2 * r + 1, stride=1, padding=r)[0, 0] > 0


def _sides_near(lab: torch.Tensor, flat: torch.Tensor, inside: torch.Tensor, reach: int,
                scale: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``maskfit._sides_near`` at every pixel: the mean colour of the flat pixels inside and of
    those outside within ``reach`` blocks of ``scale`` pixels, taken at the pixel's block (the
    outside's as all flat pixels less the inside's, as the host does), and whether there are any."""
    h, w = flat.shape
    pad = (0, -w % scale, 0, -h % scale)
    flat_in = flat & inside
    weights = torch.stack([flat, flat_in]).float()
    colours = torch.cat([lab * flat, lab * flat_in])
    sums = ops.box_sum_zero(ops.area_down(F.pad(torch.cat([weights, colours]), pad), scale), reach)
    w_all, w_in, c_all, c_in = sums[0], sums[1], sums[2:5], sums[5:8]
    w_out, c_out = w_all - w_in, c_all - c_in
    least = 0.5 / (scale * scale)
    means = _blocks_to_pixels(torch.cat([c_in / w_in.clamp_min(1e-6), c_out / w_out.clamp_min(1e-6)]), scale, h, w)
    have = _blocks_to_pixels(torch.stack([w_in > least, w_out > least]), scale, h, w)
    return (means[:3], have[0]), (means[3:], have[1])


def _window(unknown: torch.Tensor, step: int, margin: int) -> tuple[slice, slice] | None:
    """The band's box widened by ``margin``, its origin on the statistics' grid (a multiple of
    ``step``, as the host's tiles are)."""
    rows, cols = unknown.any(1).nonzero()[:, 0], unknown.any(0).nonzero()[:, 0]
    if rows.numel() == 0:
        return None
    h, w = unknown.shape
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    y0, x0 = max(0, (y0 - margin) // step * step), max(0, (x0 - margin) // step * step)
    return slice(y0, min(h, y1 + margin)), slice(x0, min(w, x1 + margin))


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distance over the colour axis (0) of C x H x W planes."""
    d = a - b
    return (d * d).sum(0)


def _robust_stats(lab: torch.Tensor, where: torch.Tensor, radius: int, step: int) -> SideStats:
    """``maskfit._robust_stats``: the statistics again without the first pass's outliers."""
    first = _local_stats(lab, where, radius, step)
    typical = _sq_dist(lab, first.mean) <= OUTLIER_SIGMAS**2 * (first.var + NOISE_FLOOR)
    return _local_stats(lab, where & typical, radius, step)


def _local_stats(lab: torch.Tensor, where: torch.Tensor, radius: int, step: int) -> SideStats:
    """``maskfit._local_stats``: block sums every ``step`` pixels (blocks past the window's edge
    hold no samples), box sums over ``radius``, bilinear back to every pixel."""
    h, w = where.shape
    pad = (0, -w % step, 0, -h % step)
    weight = F.pad(where.float(), pad)[None]
    lab_w = F.pad(lab * where, pad)
    sq_w = F.pad((lab * lab).sum(0) * where, pad)[None]
    r = max(1, radius // step)
    k = 2 * r + 1
    w_sum = ops.box_sum_zero(ops.area_down(weight, step), r)[0]
    c_sum = ops.box_sum_zero(ops.area_down(lab_w, step), r)
    s_sum = ops.box_sum_zero(ops.area_down(sq_w, step), r)[0]
    have = w_sum > 0.05 * k * k
    denom = w_sum.clamp_min(1e-6)
    mean = c_sum / denom
    var = (s_sum / denom - (mean * mean).sum(0)).clamp_min(0.0)
    full = tuple(weight.shape[-2:])

    def up(x: torch.Tensor) -> torch.Tensor:
        return ops.linear_up(x, full)[..., :h, :w]

    return SideStats(up(mean), up(var[None])[0], up(have.float()[None])[0] > 0.5)


def _local_mean(values: torch.Tensor, where: torch.Tensor, radius: int, step: int) -> torch.Tensor:
    """``maskfit._local_mean``: the mean of ``values`` over the ``where`` pixels within ``radius``."""
    h, w = where.shape
    pad = (0, -w % step, 0, -h % step)
    r = max(1, radius // step)
    w_sum = ops.box_sum_zero(ops.area_down(F.pad(where.float(), pad)[None], step), r)
    v_sum = ops.box_sum_zero(ops.area_down(F.pad(values * where, pad)[None], step), r)
    return ops.linear_up(v_sum / w_sum.clamp_min(1e-6), (h + pad[3], w + pad[1]))[0, :h, :w]


def _majority3(mask: torch.Tensor) -> torch.Tensor:
    """``cv2.medianBlur(3)`` of a binary mask (borders replicated): 5 of the 9 pixels set."""
    padded = F.pad(mask.float()[None, None], (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(padded, 3, stride=1)[0, 0] * 9 > 4.5
