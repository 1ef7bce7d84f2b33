"""Where an edit lands: the region's window, its soft image-aware matte, and the composite.

The matte is a guided filter of the region mask with the photo as the guide (He et al., "Guided
Image Filtering", with the colour guide and the subsampled "fast" variant). Where the photo has an
edge near the mask's border the matte follows that edge, which turns a stair-stepped binary mask
into the anti-aliased coverage of the real boundary; where it has none the matte is a short ramp.
Outside the region a pixel weighs no more than its own colour's share of the surface's
(``limit_to_share``: a thin pole beside a wall is not tinted, nor is a surface that runs on past
the mask). Three hard rules bound it:

- inside the region the weight is at least 1/2 and outside at most 1/2, so the matte agrees with
  the mask at its own threshold, and it is exactly 1 deeper than ``band`` pixels inside;
- it is exactly 0 farther than ``band`` pixels outside the region (the contract's soft-edge band);
- it is exactly 0 on protected pixels, which are therefore copied byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from engine.edits.colour import to_linear, to_srgb255
from engine.threads import cpu_pool


def edge_band_px(shape: tuple[int, ...]) -> int:
    """Soft-edge half width: 2 px at 1 MP, scaled with the image's linear size."""
    megapixels = shape[0] * shape[1] / 1e6
    return max(1, int(round(2 * np.sqrt(megapixels))))


def max_reach_px(shape: tuple[int, ...]) -> int:
    """How far outside its region an edit may change pixels: 3 px at 1 MP, scaled with size."""
    return max(1, int(3 * np.sqrt(shape[0] * shape[1] / 1e6)))


@dataclass(frozen=True)
class Window:
    """A rectangle of the image: rows y0:y1, columns x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def window_around(mask: np.ndarray, pad: int) -> Window | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return Window(max(0, int(rows[0]) - pad), min(h, int(rows[-1]) + 1 + pad),
                  max(0, int(cols[0]) - pad), min(w, int(cols[-1]) + 1 + pad))


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)



def solve_sym3(s: tuple, c: tuple) -> tuple:
    """Per pixel, ``S^-1 c`` for a symmetric 3 x 3 ``S`` given by its six entries (rr, rg, rb, gg,
    gb, bb) and a 3-vector ``c``, through the adjugate: elementwise arithmetic only, so numpy
    arrays and torch tensors alike."""
    s_rr, s_rg, s_rb, s_gg, s_gb, s_bb = s
    cr, cg, cb = c
    i_rr = s_gg * s_bb - s_gb * s_gb
    i_rg = s_gb * s_rb - s_rg * s_bb
    i_rb = s_rg * s_gb - s_gg * s_rb
    i_gg = s_rr * s_bb - s_rb * s_rb
    i_gb = s_rb * s_rg - s_rr * s_gb
    i_bb = s_rr * s_gg - s_rg * s_rg
    det = s_rr * i_rr + s_rg * i_rg + s_rb * i_rb
    return ((i_rr * cr + i_rg * cg + i_rb * cb) / det,
            (i_rg * cr + i_gg * cg + i_gb * cb) / det,
            (i_rb * cr + i_gb * cg + i_bb * cb) / det)

def guided_filter(rgb: np.ndarray, src: np.ndarray, radius: int, eps: float,
                  subsample: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour-guided filter of a single-channel ``src`` (float32), guided by ``rgb`` (uint8 H x W x 3).

    Also returns, from the same window sums, the colour distance (0..1 per channel) between the
    guide's mean over ``src``-weighted pixels and over the rest of the window (how different the
    two sides of a mask border look; 0 where the window holds only one side), and the first of
    those means, the colour of the ``src`` side (the window's mean where it holds only one side).

    With ``subsample`` the statistics are taken at reduced size and only the final linear model is
    evaluated at full size, one channel at a time (full-size float colour images are 12 bytes a pixel).
    """
    h, w = src.shape
    if subsample > 1:  # sides made multiples of the step: every tile then samples the window's grid
        rgb, src = pad_to_multiple(rgb, subsample), pad_to_multiple(src, subsample)
        size = (src.shape[1] // subsample, src.shape[0] // subsample)
        g = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255)
        p = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
        r = max(1, radius // subsample)
    else:
        g, p, r = rgb.astype(np.float32) * (1 / 255), src, radius
    mean_g = _box(g, r)
    mean_p = _box(p, r)
    mean_gp = _box(g * p[..., None], r)
    cov_gp = mean_gp - mean_g * mean_p[..., None]
    # 3 x 3 covariance of the guide per pixel (symmetric: six entries), regularised by eps
    gr, gg, gb = g[..., 0], g[..., 1], g[..., 2]
    mr, mg, mb = mean_g[..., 0], mean_g[..., 1], mean_g[..., 2]
    s_rr = _box(gr * gr, r) - mr * mr + eps
    s_rg = _box(gr * gg, r) - mr * mg
    s_rb = _box(gr * gb, r) - mr * mb
    s_gg = _box(gg * gg, r) - mg * mg + eps
    s_gb = _box(gg * gb, r) - mg * mb
    s_bb = _box(gb * gb, r) - mb * mb + eps
    a = np.stack(solve_sym3((s_rr, s_rg, s_rb, s_gg, s_gb, s_bb),
                            (cov_gp[..., 0], cov_gp[..., 1], cov_gp[..., 2])), axis=-1)
    b = mean_p - (a * mean_g).sum(axis=-1)
    mean_a = _box(a, r)
    mean_b = _box(b, r)
    both = (mean_p > 0.02) & (mean_p < 0.98)
    m = mean_p[..., None]
    inside = mean_gp / np.maximum(m, 1e-6)
    outside = (mean_g - mean_gp) / np.maximum(1.0 - m, 1e-6)
    contrast = np.where(both, np.sqrt(((inside - outside) ** 2).sum(axis=-1)), 0.0).astype(np.float32)
    inside = np.where(both[..., None], inside, mean_g).astype(np.float32)
    def full_size(x: np.ndarray) -> np.ndarray:
        if subsample == 1:
            return x
        return cv2.resize(x, (src.shape[1], src.shape[0]), interpolation=cv2.INTER_LINEAR)[:h, :w]

    filtered = full_size(mean_b)
    for c in range(3):
        filtered += full_size(np.ascontiguousarray(mean_a[..., c])) * np.multiply(rgb[:h, :w, c], 1 / 255,
                                                                                  dtype=np.float32)
    return filtered, full_size(contrast), full_size(inside)


def pad_to_multiple(x: np.ndarray, step: int, value: float | None = None) -> np.ndarray:
    """``x`` padded at the bottom and right to sides that are multiples of ``step``: reflected,
    or with ``value``."""
    bottom, right = -x.shape[0] % step, -x.shape[1] % step
    if not (bottom or right):
        return x
    if value is None:
        return cv2.copyMakeBorder(x, 0, bottom, 0, right, cv2.BORDER_REFLECT)
    return cv2.copyMakeBorder(x, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=value)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


# Pixels whose matte weights differ by this much do not lie along one edge. The weight falls off
# along a tent rather than a step, so a float bit of difference (the torch path's) moves a result
# by a float bit.
ALONG_EDGE = 0.3


def along_edge(key: np.ndarray, ys: np.ndarray, xs: np.ndarray, among: np.ndarray | None = None,
               centre: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each offset of the 3 x 3 neighbourhood of the pixels (ys, xs) (the centre's only with
    ``centre``): the neighbours' rows and columns (the window's border repeated) and how much
    each lies along the same edge as its pixel, ``1 - |key difference| / ALONG_EDGE`` and at
    least 0 (0 outside ``among``).

    A soft edge's matte weight and mixture of surface and neighbour change across the edge and
    hardly along it, while the photo's noise changes from pixel to pixel: averaged along the edge,
    the weight and the mixture lose the noise and keep the edge. Without it a recolor to a much
    darker colour left a speckled outline (on room 0's straight wall outlines at 960 x 720, 14
    levels from pixel to pixel for a near black, 11 for navy, where the photo has 3)."""
    h, w = key.shape
    own = key[ys, xs]
    for dy in (-1, 0, 1):
        ny = np.clip(ys + dy, 0, h - 1)
        for dx in (-1, 0, 1):
            if dy == dx == 0 and not centre:
                continue
            nx = np.clip(xs + dx, 0, w - 1)
            weight = np.maximum(0.0, 1.0 - np.abs(key[ny, nx] - own) * (1 / ALONG_EDGE))
            if among is not None:
                weight = weight * among[ny, nx]
            yield ny, nx, weight


def edge_mixture(rgb: np.ndarray, alpha: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The soft-edge pixels' (ys, xs) mixture of surface and neighbour without the photo's noise
    (linear, N x 3: their neighbours along the edge averaged, the pixel itself left out) and
    that noise (sRGB levels, N x 3: the pixel less its mixture). Left out, the pixel's own level
    passes into the result once, as its unedited share does, and not again through the edit's
    change; a pixel with no neighbour along the edge is its own mixture."""
    own = to_linear(rgb[ys, xs])
    total = np.zeros((ys.size, 3), np.float32)
    count = np.zeros(ys.size, np.float32)
    for ny, nx, weight in along_edge(alpha, ys, xs, centre=False):
        total += to_linear(rgb[ny, nx]) * weight[:, None]
        count += weight
    alone = count[:, None] <= 0
    mixture = np.where(alone, own, total / np.where(alone, 1.0, count[:, None]))
    return mixture, rgb[ys, xs].astype(np.float32) - to_srgb255(mixture)


def soft_matte(rgb: np.ndarray, region: np.ndarray, protect: np.ndarray | None, band: int,
               anchor: np.ndarray | None = None, reach: float | None = None, replaces: bool = False) -> np.ndarray:
    """Float32 weight in [0, 1] over a window: ``rgb`` uint8, ``region`` and ``protect`` bool.

    The weight is 0 farther than ``reach`` (default ``band``) pixels, Euclidean, from ``anchor``
    (default ``region``; remove grows its region first and passes the original here). An edit
    that changes the region's colour weighs a pixel outside it by no more than its share of the
    region's surface (``limit_to_share``); one that ``replaces`` the region has no surface
    colour to share, and its soft edge blends what it made into the photo.
    """
    region8 = region.astype(np.uint8)
    core = cv2.erode(region8, _disk(band), borderType=cv2.BORDER_REPLICATE).astype(bool)
    anchor = region if anchor is None else anchor
    distance = cv2.distanceTransform((~anchor).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    within = distance <= (band if reach is None else reach) + 1e-3
    alpha = (core & within).astype(np.float32)
    ring = within & ~core  # the only pixels whose weight is not plainly 1 or 0
    if ring.any():
        matte, contrast, surface = _guided_where(rgb, region, ring, radius=band + 1, eps=2e-3, subsample=max(1, band // 2))
        inside = region[ring]
        # The guided filter can only place the boundary where the photo has an edge. Where the two
        # sides look alike it returns an uninformative ramp, and the mask is the better judge
        # (otherwise a rim of half-edited pixels would run along, say, a ceiling meeting a shaded
        # crown molding); trust it in proportion to the colour contrast across the border.
        trust = np.clip(contrast[ring] / EDGE_CONTRAST, 0.0, 1.0)
        weight = trust * np.clip(matte[ring], 0.0, 1.0) + (1.0 - trust) * inside
        weight = _averaged_along_edge(weight, ring, protect)
        if not replaces:
            weight = limit_to_share(rgb, region, ring, protect, weight, surface)
        weight = np.where(inside, np.maximum(weight, 0.5), np.minimum(weight, 0.5))
        # the filter's tails: a few percent of weight on pixels that are plainly one side or the
        # other is leakage (a faint tint beside the edge, or a faint rim of the old colour). They
        # are pushed to 1 (from 0.9) and 0 (from 0.1) along a ramp, not a step, so that weights a
        # float bit apart (the torch path's) stay a float bit apart.
        raised, lowered = np.minimum(1.0, 2 * weight - 0.8), np.maximum(0.0, 2 * weight - 0.2)
        weight = np.where(inside, np.where(weight >= 0.8, raised, weight), np.where(weight <= 0.2, lowered, weight))
        alpha[ring] = weight
    if protect is not None:
        alpha[protect] = 0.0
    return alpha


# Outside the region, a ring pixel's weight is at most its share of the surface's colour (its
# colour as a mixture of the surface and what lies beyond it) plus this.
SHARE_SLACK = 0.05
# Where the surface and what lies beyond differ by less than this (sRGB, 0..1 per channel, as
# EDGE_CONTRAST) the share is noise; the limit fades in up to twice it.
SHARE_STEP = 0.04


def limit_to_share(rgb: np.ndarray, region: np.ndarray, ring: np.ndarray, protect: np.ndarray | None,
                   weight: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """The ring's weights (in ``ring``'s order), those outside the region no more than the
    pixel's share of the surface.

    A pixel just outside an edited region is a mixture ``a F + (1 - a) B`` of the surface ``F``
    (``surface``: the region's mean colour near it) and what lies beyond it ``B`` (the mean of
    its neighbours one layer further out, layers counted in 8-connected steps from the region),
    so ``a = (p - B).(F - B) / |F - B|^2``, averaged over its neighbours of a like share. The
    guided filter's linear model cannot give that: beside a wall, a lamp pole lit on one side
    and shaded on the other has two colours outside, which one line through the colour space
    cannot both send to 0 while sending the wall to 1; the pole's lit side took a fifth of a navy
    recolor. A pixel that looks like what lies beyond it gets no weight; a blurred or
    anti-aliased edge, whose pixels lie between their neighbours' colours, keeps its weight.
    """
    out_ring = ring & ~region
    if protect is not None:
        out_ring &= ~protect
    plane = np.zeros(ring.shape, np.float32)
    plane[ring] = weight
    ys, xs = np.nonzero(out_ring)
    if ys.size == 0:
        return weight
    layer = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_C, 3)
    h, w = region.shape
    own_layer = layer[ys, xs]
    total = np.zeros((ys.size, 3), np.float32)
    count = np.zeros(ys.size, np.float32)
    for dy in (-1, 0, 1):
        ny = np.clip(ys + dy, 0, h - 1)
        for dx in (-1, 0, 1):
            nx = np.clip(xs + dx, 0, w - 1)
            beyond = (layer[ny, nx] == own_layer + 1).astype(np.float32)
            total += rgb[ny, nx].astype(np.float32) * beyond[:, None]
            count += beyond
    beyond_colour = total / np.maximum(count, 1.0)[:, None] * (1 / 255)
    step = surface[ys, xs] - beyond_colour
    step_size = np.sqrt((step * step).sum(axis=1))
    share = ((rgb[ys, xs].astype(np.float32) * (1 / 255) - beyond_colour) * step).sum(axis=1) \
        / np.maximum(step_size * step_size, 1e-6)
    # how far the share can be trusted: 0 with nothing beyond or no step, 1 from twice SHARE_STEP
    sure = np.where(count > 0, np.clip(step_size / SHARE_STEP - 1.0, 0.0, 1.0), 0.0).astype(np.float32)
    shares = np.zeros(ring.shape, np.float32)
    shares[ys, xs] = np.clip(share, 0.0, 1.0)
    among = np.zeros(ring.shape, np.float32)
    among[ys, xs] = sure
    total_share = np.zeros(ys.size, np.float32)
    count_share = np.zeros(ys.size, np.float32)
    for ny, nx, along in along_edge(shares, ys, xs, among):
        total_share += shares[ny, nx] * along
        count_share += along
    averaged = total_share / np.maximum(count_share, 1e-6)
    limit = np.minimum(1.0, averaged + SHARE_SLACK)
    limit = sure * limit + (1.0 - sure) * 1.0
    plane[ys, xs] = np.minimum(plane[ys, xs], limit)
    return plane[ring]


def _averaged_along_edge(weight: np.ndarray, ring: np.ndarray, protect: np.ndarray | None) -> np.ndarray:
    """The ring's weights (in ``ring``'s order) averaged along the edge (``along_edge``), over
    the ring's unprotected pixels."""
    plane = np.zeros(ring.shape, np.float32)
    plane[ring] = weight
    among = ring if protect is None else ring & ~protect
    ys, xs = np.nonzero(ring)
    total = np.zeros(ys.size, np.float32)
    count = np.zeros(ys.size, np.float32)
    for ny, nx, w in along_edge(plane, ys, xs, among):
        total += plane[ny, nx] * w
        count += w
    return np.where(count > 0, total / np.maximum(count, 1e-6), weight)  # a protected pixel: set to 0 later


TILE = 512  # px; filters whose result is needed near a region's border run tile by tile


@dataclass(frozen=True)
class Tile:
    """A tile of a window (``out``), the part read to compute it (``src``: the tile and a margin
    wider than the filter's reach) and where the tile lies within that part (``inner``)."""

    out: tuple[slice, slice]
    src: tuple[slice, slice]
    inner: tuple[slice, slice]


def tiles_where(needed: np.ndarray, step: int, margin: int) -> Iterator[Tile]:
    """The tiles of the window holding ``needed`` pixels. Tile sides and margins are multiples of
    ``step`` (a filter's subsampling), so each tile samples the grid the whole window would: a
    filter run per tile gives the values of one run over the window wherever the window's sides
    are multiples of ``step`` too."""
    h, w = needed.shape
    size = max(step, TILE - TILE % step)
    margin = -(-margin // step) * step
    for y0 in range(0, h, size):
        for x0 in range(0, w, size):
            y1, x1 = min(h, y0 + size), min(w, x0 + size)
            if needed[y0:y1, x0:x1].any():
                ey0, ex0 = max(0, y0 - margin), max(0, x0 - margin)
                ey1, ex1 = min(h, y1 + margin), min(w, x1 + margin)
                yield Tile((slice(y0, y1), slice(x0, x1)), (slice(ey0, ey1), slice(ex0, ex1)),
                           (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0)))


def _guided_where(rgb: np.ndarray, region: np.ndarray, needed: np.ndarray, *, radius: int, eps: float,
                  subsample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``guided_filter`` of the region mask on the tiles that hold ``needed`` pixels; zeros
    elsewhere. A region scattered over a large window, or a large region, has its border in a
    small share of the window."""
    matte = np.zeros(needed.shape, np.float32)
    contrast = np.zeros(needed.shape, np.float32)
    inside = np.zeros((*needed.shape, 3), np.float32)
    src = region.astype(np.float32)
    for tile in tiles_where(needed, subsample, (2 * max(1, radius // subsample) + 4) * subsample):
        tile_matte, tile_contrast, tile_inside = guided_filter(rgb[tile.src], src[tile.src], radius, eps, subsample)
        matte[tile.out] = tile_matte[tile.inner]
        contrast[tile.out] = tile_contrast[tile.inner]
        inside[tile.out] = tile_inside[tile.inner]
    return matte, contrast, inside


EDGE_CONTRAST = 0.12  # colour distance (sRGB, 0..1 per channel) at which the photo's edge is trusted fully


def composite(out: np.ndarray, window: Window, alpha: np.ndarray, edited: np.ndarray) -> None:
    """Blend ``edited`` (float sRGB 0..255, one row per pixel where ``alpha > 0``) into ``out``.

    Only those pixels are written; every other pixel of ``out`` keeps its bytes.
    """
    view = out[window.slices]
    touched = alpha > 0
    # Bands of rows on the thread pool; ``edited`` is in row-major order, so a band's rows own
    # the run of it between the touched counts before and after them.
    ends = np.cumsum(np.count_nonzero(touched, axis=1))
    rows = max(1, touched.shape[0] * COMPOSITE_PIXELS // max(1, int(ends[-1])))

    def band(top: int) -> None:
        bottom = min(top + rows, touched.shape[0])
        first, last = (int(ends[top - 1]) if top else 0), int(ends[bottom - 1])
        if first == last:
            return
        mask, part = touched[top:bottom], view[top:bottom]
        base = part[mask].astype(np.float32)
        weight = alpha[top:bottom][mask][:, None]
        part[mask] = np.clip(base + (edited[first:last] - base) * weight + 0.5, 0, 255).astype(np.uint8)

    list(cpu_pool().map(band, range(0, touched.shape[0], rows)))


# A weight below this cannot move a pixel by a level (the edited value and the pixel differ by at
# most 255); an edit that replaces its pixels drops such weights (``Span.replaces``).
UNSEEN_WEIGHT = 0.5 / 255

COMPOSITE_PIXELS = 1 << 19  # touched pixels per band, on average


def foreground_colour(lin: np.ndarray, core: np.ndarray, fallback: np.ndarray, radius: int) -> np.ndarray:
    """Per pixel, the mean linear colour of the nearby ``core`` pixels (else ``fallback`` ones).

    The surface colour near an edge varies slowly, so it is estimated at a reduced resolution
    when the radius allows and scaled back up.
    """
    h, w = core.shape
    step = max(1, radius // 3)
    if step > 1:  # sides made multiples of the step (samples padded with none)
        lin = pad_to_multiple(lin, step)
        core = pad_to_multiple(core.astype(np.uint8), step, 0).astype(bool)
        fallback = pad_to_multiple(fallback.astype(np.uint8), step, 0).astype(bool)
    size = (lin.shape[1] // step, lin.shape[0] // step)
    small = (lambda x: cv2.resize(x, size, interpolation=cv2.INTER_AREA)) if step > 1 else (lambda x: x)
    r = max(1, radius // step)
    k = (2 * r + 1, 2 * r + 1)
    lin_s = small(lin)
    out = lin_s.copy()
    missing = np.ones(lin_s.shape[:2], bool)
    for samples in (core, fallback):
        weight = small(samples.astype(np.float32))
        w_sum = cv2.boxFilter(weight, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
        c_sum = cv2.boxFilter(lin_s * weight[..., None], -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
        have = missing & (w_sum > 0.5)
        out[have] = c_sum[have] / w_sum[have][:, None]
        missing &= ~have
    if step > 1:
        full = (lin.shape[1], lin.shape[0])
        out = cv2.resize(out, full, interpolation=cv2.INTER_LINEAR)[:h, :w]
        missing_full = cv2.resize(missing.astype(np.uint8), full, interpolation=cv2.INTER_NEAREST)[:h, :w]
        return np.where(missing_full[..., None] > 0, lin[:h, :w], out)
    return np.where(missing[..., None], lin, out)


NEAR_FULL = 0.9  # soft-edge weights above this mix the plain edit in, all of it at 1


def pixelwise(rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, band: int,
              bulk: Callable[[np.ndarray], np.ndarray],
              change: Callable[[np.ndarray, np.ndarray], np.ndarray],
              foreground: np.ndarray | None = None) -> np.ndarray:
    """Edited sRGB (0..255) for each pixel where ``alpha > 0``, for a per-pixel colour edit.

    ``bulk(mask)`` edits the fully weighted pixels (uint8 in, float sRGB out; the fast path).
    Pixels of the soft edge are mixtures of the region's surface and its neighbour; editing the
    mixture as if it were all surface would leave a fringe (a dark rim around a wall turned
    white). Instead, as linear light mixes, they receive the change the nearby surface gets:
    ``mixture + change(F) - F`` with F the local surface colour and the mixture the pixel's
    colour averaged along the edge, ``change(lin, mask)`` being the edit on linear colours; the
    pixel's noise is then added back in sRGB levels (``edge_mixture``: added in linear light it
    would keep its linear size, many levels near black). The composite then weighs that by the
    matte. ``foreground`` is ``edge_foreground``'s result when the caller already has it.
    """
    touched = alpha > 0
    full = touched & (alpha >= 1.0)
    out = np.empty((int(touched.sum()), 3), np.float32)
    in_full = full[touched]
    if full.any():
        out[in_full] = bulk(full)
    edge = touched & ~full
    if edge.any():
        if foreground is None:
            foreground = edge_foreground(rgb, alpha, region, band)
        fg = foreground[edge]
        mixture, noise = edge_mixture(rgb, alpha, *np.nonzero(edge))
        soft = to_srgb255(mixture + change(fg, edge) - fg) + noise
        # nearly full pixels pass from the edge's change to the plain edit along a ramp, so that
        # a weight a float bit below 1 (the torch path's) edits as 1 does
        near = edge & (alpha > NEAR_FULL)
        if near.any():
            at = near[edge]
            ramp = ((alpha[near] - NEAR_FULL) / (1 - NEAR_FULL))[:, None]
            soft[at] += (bulk(near) - soft[at]) * ramp
        out[~in_full] = soft
    return out


def edge_foreground(rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, band: int) -> np.ndarray:
    """The local surface colour (linear) at the window's soft-edge pixels (0 < alpha < 1), tile
    by tile around them; zeros elsewhere (never read: fully weighted pixels take the plain edit)."""
    radius = 2 * band + 1
    step = max(1, radius // 3)
    core = region & (alpha >= 1.0)
    out = np.zeros((*region.shape, 3), np.float32)
    for tile in tiles_where((alpha > 0) & (alpha < 1), step, (max(1, radius // step) + 3) * step):
        found = foreground_colour(to_linear(rgb[tile.src]), core[tile.src], region[tile.src], radius)
        out[tile.out] = found[tile.inner]
    return out
