"""``StructureInpainter`` (engine/edits/structure_fill.py) on a torch device.

Everything that scales with the photo runs here: which parts of the hole are thin (a distance
threshold, as binary dilations), the smoothed colours and texture, the grain around the hole,
and, for every orientation, the rotated scan for each hole pixel's two ends and the blurred
cost of crossing there. Only the histogram that picks the extra orientations (one number per
hole pixel, two vectors) goes to the host, to the numpy code itself. The wide parts are labelled
on the host (``cv2.connectedComponents``; torch has no connected components, and the mask of the
wide parts is small next to the photo), each part's crossings found here, their median cost
taken on the host; what they leave goes to the device version of the fallback.

The discrete choices come out as on the numpy path because they are computed where the order
of arithmetic cannot matter (see structure_fill's docstring): exact float64 blurs of integers,
integer costs, fixed-point rotation, the same float64 products for every coordinate.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.edits.colour import LUMA
from engine.edits.device import ops
from engine.edits.structure_fill import (_BAND, _CHAMFER, _FAR, _NO_CROSSING, OFFSET_WEIGHT, StructureInpainter,
                                         _rotation, dyadic_gaussian, thin_threshold)

if TYPE_CHECKING:
    from engine.edits.device.fill import DeviceFill


@lru_cache(maxsize=32)
def octagon_rows(limit: float) -> tuple[int, ...]:
    """Half widths of the rows of {(dx, dy): chamfer distance <= limit}, the ball of
    ``cv2.distanceTransform(DIST_L2, 3)`` (diagonal steps, then straight ones)."""
    a, b = _CHAMFER
    reach = int(limit / a)
    d = np.arange(reach + 1, dtype=np.float64)
    lo, hi = np.minimum(d[:, None], d[None, :]), np.maximum(d[:, None], d[None, :])
    inside = lo * b + (hi - lo) * a <= limit
    half = [int(np.flatnonzero(row).max()) for row in inside]  # dy >= 0; row 0 always holds dx = 0
    return tuple(half[:0:-1] + half)


def dilate_square(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """``cv2.dilate`` by a (2 radius + 1) square (outside pixels never count), by doubling runs."""
    for dim in (0, 1):
        size = 2 * radius + 1
        n = mask.shape[dim]
        shape = list(mask.shape)
        shape[dim] = n + 2 * radius
        run = torch.zeros(shape, dtype=torch.bool, device=mask.device)
        run.narrow(dim, radius, n).copy_(mask)
        length = 1  # run[i] = OR of the padded mask over [i, i + length)
        while 2 * length <= size:
            kept = run.shape[dim] - length
            run = run.narrow(dim, 0, kept) | run.narrow(dim, length, kept)
            length *= 2
        mask = run.narrow(dim, 0, n) | run.narrow(dim, size - length, n)
    return mask


def thin_part(hole: torch.Tensor, wide: float) -> torch.Tensor:
    """``StructureInpainter.inpaint``'s thin pixels: no pixel within reach is deeper in the hole
    than the threshold (a pixel is deep where no known pixel lies within it)."""
    limit = thin_threshold(wide)
    deep = hole & ~ops.dilate(~hole, octagon_rows(limit))
    return hole & ~dilate_square(deep, max(1, int(0.75 * wide)))


def _taps(sigma: float, exact: bool) -> np.ndarray:
    if exact:
        return dyadic_gaussian(sigma)
    return cv2.getGaussianKernel(int(round(sigma * 8 + 1)) | 1, sigma, cv2.CV_64F).ravel()


@lru_cache(maxsize=16)
def _band(size: int, sigma: float, exact: bool) -> np.ndarray:
    """The kernel laid along a band: row i holds the taps at columns i .. i + 2r (of the input
    padded by r), so that a block of rows is one matrix product."""
    taps = _taps(sigma, exact)
    band = np.zeros((size, size + len(taps) - 1))
    for i in range(size):
        band[i, i : i + len(taps)] = taps
    return band


def _blur(x: torch.Tensor, sigma: float, exact: bool) -> torch.Tensor:
    """Separable blur of C x H x W float64 (BORDER_REFLECT_101): a convolution for short
    kernels, block by block of rows as matrix products for long ones (float64 never runs in
    reduced precision)."""
    taps = _taps(sigma, exact)
    r = len(taps) // 2
    if len(taps) <= 31:
        k = torch.from_numpy(np.ascontiguousarray(taps)).to(x.device)
        padded = ops.pad_reflect101(x, r)[:, None]
        return F.conv2d(F.conv2d(padded, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))[:, 0]
    block = max(64, 2 * r)
    band = torch.from_numpy(_band(block, sigma, exact)).to(x.device)

    def along_rows(padded: torch.Tensor, n: int) -> torch.Tensor:  # C x (n + 2r) x W'
        out = padded.new_empty((padded.shape[0], n, padded.shape[2]))
        for top in range(0, n, block):
            m = min(block, n - top)
            out[:, top : top + m] = band[:m, : m + 2 * r] @ padded[:, top : top + m + 2 * r]
        return out

    h, w = x.shape[-2:]
    rows = along_rows(ops.pad_reflect101(x, r), h)  # C x H x (W + 2r)
    return along_rows(rows.transpose(1, 2), w).transpose(1, 2)


def exact_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``structure_fill.exact_blur`` of C x H x W float64: integers times taps that are multiples
    of 2^-12, so every product and sum is exact and the bits are the numpy path's. Summed tap by
    tap into the output (the order cannot matter), with no unfolded copy of the image per tap."""
    taps = [float(t) for t in dyadic_gaussian(sigma)]
    r = len(taps) // 2
    h, w = x.shape[-2:]
    padded = ops.pad_reflect101(x, r)
    across = x.new_zeros((*x.shape[:-2], h + 2 * r, w))
    for k, tap in enumerate(taps):
        across.add_(padded[..., k : k + w], alpha=tap)
    del padded
    out = x.new_zeros(x.shape)
    for k, tap in enumerate(taps):
        out.add_(across[..., k : k + h, :], alpha=tap)
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``cv2.GaussianBlur(x, (0, 0), sigma)`` of C x H x W float64 (to float rounding)."""
    return _blur(x, sigma, exact=False)


def _erode5(known: torch.Tensor) -> torch.Tensor:
    """``cv2.erode`` by a 5 x 5 square (outside pixels never count)."""
    return ~dilate_square(~known, 2)


def _sobel(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cv2.Sobel(grey, CV_64F, 1, 0)`` and ``(0, 1)`` (3 x 3, BORDER_REFLECT_101)."""
    h, w = grey.shape
    p = ops.pad_reflect101(grey, 1)
    across = p[:, 2:] - p[:, :-2]  # (H + 2) x W
    down = p[2:, :] - p[:-2, :]  # H x (W + 2)
    gx = across[:-2] + 2 * across[1:-1] + across[2:]
    gy = down[:, :-2] + 2 * down[:, 1:-1] + down[:, 2:]
    return gx, gy


def _smooth(img: torch.Tensor, known: torch.Tensor, sigma: float) -> torch.Tensor:
    """``structure_fill._smooth`` of uint8 H x W x 3: H x W x 3 float64, a channel at a time."""
    weight = exact_blur(known.double()[None], sigma)[0].clamp_min_(1e-3)
    out = torch.empty(img.shape, dtype=torch.float64, device=img.device)
    for c in range(img.shape[2]):
        out[..., c] = exact_blur((img[..., c].double() * known)[None], sigma)[0] / weight
    return out


def _at(image: torch.Tensor, inverse: np.ndarray, cols: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[:2]
    c, r = cols.double(), rows.double()
    x = torch.round(float(inverse[0, 0]) * c + float(inverse[0, 1]) * r + float(inverse[0, 2])).long()
    y = torch.round(float(inverse[1, 0]) * c + float(inverse[1, 1]) * r + float(inverse[1, 2])).long()
    return image[y.clamp(0, h - 1), x.clamp(0, w - 1)]


def _ends_mismatch(decide_on: torch.Tensor, inverse: np.ndarray, end_l: torch.Tensor, end_r: torch.Tensor,
                   row: torch.Tensor, beside: int) -> torch.Tensor:
    """``structure_fill.ends_mismatch``, the same operations in the same order."""
    d = [_at(decide_on, inverse, end_l, row + offset) - _at(decide_on, inverse, end_r, row + offset)
         for offset in (0, -beside, beside)]
    mean = (d[0] + d[1] + d[2]) / 3
    total = torch.zeros(row.shape, dtype=torch.float64, device=row.device)
    for part in d:
        e = part - mean
        total = total + (e[:, 0] * e[:, 0] + e[:, 1] * e[:, 1] + e[:, 2] * e[:, 2])
    return total / 3 + OFFSET_WEIGHT * (mean[:, 0] * mean[:, 0] + mean[:, 1] * mean[:, 1] + mean[:, 2] * mean[:, 2])


def _rotated_rows(known: torch.Tensor, inverse: np.ndarray, rows: torch.Tensor, width: int) -> torch.Tensor:
    """``structure_fill.rotated_rows``."""
    h, w = known.shape
    cols, r = torch.arange(width, dtype=torch.float64, device=known.device), rows.double()

    def source(k: int) -> torch.Tensor:
        per_row = torch.round((float(inverse[k, 1]) * r + float(inverse[k, 2])) * 1024).long() + 512
        per_col = torch.round(float(inverse[k, 0]) * cols * 1024).long()
        return (per_row[:, None] + per_col[None, :]) >> 10

    x, y = source(0), source(1)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return inside & known.reshape(-1)[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1))]


def _crossing_ends(known: torch.Tensor, inverse: np.ndarray, rx: torch.Tensor, ry: torch.Tensor,
                   width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``structure_fill.crossing_ends``: the rotated canvas scanned a band of rows at a time."""
    rows_per_band = max(1, _BAND // width)
    band = torch.div(ry, rows_per_band, rounding_mode="floor")
    order = torch.argsort(band, stable=True)
    lc, rc = torch.empty_like(rx), torch.empty_like(rx)
    start = 0
    for b, count in enumerate(torch.bincount(band).tolist()):
        if count:
            at = order[start : start + count]
            top = b * rows_per_band
            lines = torch.arange(top, top + rows_per_band, device=rx.device)
            left, right = _scan(_rotated_rows(known, inverse, lines, width))
            row, col = ry[at] - top, rx[at]
            lc[at], rc[at] = left[row, col], right[row, col]
        start += count
    return lc, rc


def _scan(known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cols = torch.arange(known.shape[1], device=known.device)[None, :]
    left = torch.where(known, cols, -1).cummax(1).values
    right = torch.where(known, cols, _FAR).flip(1).cummin(1).values.flip(1)
    return left, right


def _percentile(values: torch.Tensor, q: float) -> float:
    """``np.percentile(values, q)``, with numpy's own interpolation."""
    values = values.reshape(-1)
    at = q / 100 * (values.numel() - 1)
    lo = int(math.floor(at))
    ordered = values.sort().values
    a, b = float(ordered[lo]), float(ordered[min(lo + 1, values.numel() - 1)])
    t = at - lo
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


class DeviceStructureFill:
    """``StructureInpainter.inpaint`` with tensors: ``(rgb, hole, guide)`` -> uint8 H x W x 3."""

    def __init__(self, inpainter: StructureInpainter, fallback: DeviceFill) -> None:
        self.inpainter = inpainter
        self.fallback = fallback

    def __call__(self, rgb: torch.Tensor, hole: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        if not bool(hole.any()):
            return rgb.clone()
        if bool(hole.all()):
            return self.fallback(rgb, hole, guide)
        wide = self.inpainter.wide_gap * max(hole.shape)
        thin = thin_part(hole, wide)
        ys, xs = hole.nonzero().unbind(1)
        out = rgb.clone()
        weight = torch.ones(hole.shape, dtype=torch.float32, device=rgb.device)
        if bool(thin.any()):
            values, gap, _ = self._fill_thin(rgb, hole, thin, wide, guide)
            ty, tx = thin.nonzero().unbind(1)
            out[ty, tx] = (values + 0.5).clamp(0, 255).to(torch.uint8)
            weight[ty, tx] = ((gap - wide) / max(0.5 * wide, 1.0)).clamp(0.0, 1.0)
        rest = hole & ~thin
        blend = weight[ys, xs]
        del weight
        if bool((blend > 0).any()):
            base, crossed = self._fill_wide(rgb, hole, rest, wide, guide)
            missing = (blend > 0) & ~crossed
            if bool(missing.any()):
                base[missing] = self.fallback(rgb, hole, guide)[ys[missing], xs[missing]].float()
            mixed = out[ys, xs].float() * (1 - blend[:, None]) + base * blend[:, None]
            out[ys, xs] = (mixed + 0.5).clamp(0, 255).to(torch.uint8)
        return out

    def _fill_wide(self, rgb: torch.Tensor, hole: torch.Tensor, rest: torch.Tensor, wide: float,
                   guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``StructureInpainter._fill_wide``; the parts are labelled on the host (cv2), the
        crossings found on the device."""
        p = self.inpainter
        n = int(hole.sum())
        fill = torch.zeros((n, 3), dtype=torch.float32, device=rgb.device)
        crossed = torch.zeros(n, dtype=torch.bool, device=rgb.device)
        count, parts = cv2.connectedComponents(rest.cpu().numpy().astype(np.uint8), connectivity=8,
                                               ltype=cv2.CV_32S)
        parts = torch.from_numpy(parts).to(rgb.device)
        labels = parts[hole]
        for label in range(1, count):
            values, _, cost = self._fill_thin(rgb, hole, parts == label, wide, guide, wide_part=True)
            if float(np.median(cost.cpu().numpy())) > p.wide_match:
                continue
            two = torch.isfinite(cost)
            at = (labels == label).nonzero()[:, 0][two]
            fill[at] = values[two].float()
            crossed[at] = True
        return fill, crossed

    def _fill_thin(self, rgb: torch.Tensor, hole: torch.Tensor, thin: torch.Tensor, wide: float,
                   guide: torch.Tensor, wide_part: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.inpainter
        h, w = hole.shape
        margin = int(math.ceil(2.0 * wide)) + 4
        rows, cols = thin.any(1).nonzero()[:, 0], thin.any(0).nonzero()[:, 0]
        y0, y1 = max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + margin + 1)
        x0, x1 = max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + margin + 1)
        window = rgb[y0:y1, x0:x1]
        known = ~hole[y0:y1, x0:x1]
        query = thin[y0:y1, x0:x1]
        window_guide = guide[y0:y1, x0:x1]
        same = guide is rgb or torch.equal(window_guide, window)
        decide_on = _smooth(window if same else window_guide, known, p.smooth_sigma)
        grain = self._grain(decide_on, known, *query.nonzero().unbind(1), 0.01 * max(h, w))
        angles = p._angles(grain[0].cpu().numpy(), grain[1].cpu().numpy(), grain_only=wide_part)
        if not angles:
            n = int(query.sum())
            return (torch.zeros((n, 3), dtype=torch.float64, device=rgb.device),
                    torch.full((n,), math.inf, dtype=torch.float32, device=rgb.device),
                    torch.full((n,), math.inf, dtype=torch.float64, device=rgb.device))
        smooth = decide_on if same else _smooth(window, known, p.smooth_sigma)
        source = _erode5(known)  # the texture (window - smooth) is read only where needed
        ring = source & dilate_square(query, 12)
        typical = _percentile((window[ring].double() - smooth[ring]).abs(), 84) if bool(ring.any()) else 0.0
        del ring
        fill, shift_y, shift_x, gap, edge, cost = self._directional(
            smooth, decide_on, known, query, grain, angles, 0.01 * max(h, w), math.inf if wide_part else 1.5 * wide,
            0.0 if wide_part else p.gap_cost, window, wide_part, ~query if wide_part else None, wide)
        ys, xs = query.nonzero().unbind(1)
        sy, sx = torch.round(ys.double() + shift_y).long(), torch.round(xs.double() + shift_x).long()
        inside = (sy >= 0) & (sy < known.shape[0]) & (sx >= 0) & (sx < known.shape[1])
        sy, sx = torch.where(inside, sy, 0), torch.where(inside, sx, 0)
        detail = window[sy, sx].double() - smooth[sy, sx]
        bound = torch.full_like(edge, p.wide_texture * typical) if wide_part else edge.clamp_min(2.0 * typical)
        texture = torch.where((inside & source[sy, sx])[:, None], torch.maximum(torch.minimum(detail, bound), -bound),
                              0.0)
        return fill + texture, gap, cost

    def _directional(self, smooth: torch.Tensor, decide_on: torch.Tensor, known: torch.Tensor, hole: torch.Tensor,
                     grain_around: tuple[torch.Tensor, torch.Tensor], angles: list[float], unit: float,
                     longest: float, gap_cost: float, window: torch.Tensor, mirror: bool = False,
                     stop: torch.Tensor | None = None, beyond: float = 0.0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``StructureInpainter._directional``."""
        p = self.inpainter
        device = hole.device
        h, w = hole.shape
        ys, xs = hole.nonzero().unbind(1)
        n = ys.numel()
        best_cost = torch.full((n,), math.inf, dtype=torch.float64, device=device)
        best_fill = torch.zeros((n, 3), dtype=torch.float64, device=device)
        best_shift = torch.zeros(n, dtype=torch.float32, device=device)
        best_index = torch.zeros(n, dtype=torch.long, device=device)
        best_two = torch.zeros(n, dtype=torch.bool, device=device)
        best_edge = torch.zeros((n, 3), dtype=torch.float64, device=device)
        shortest = torch.full((n,), math.inf, dtype=torch.float32, device=device)
        sigma = max(1.0, 1.5 * p.smooth_sigma)
        grain, coherence = grain_around
        plane = torch.zeros((h, w), dtype=torch.float64, device=device)
        yd, xd = ys.double(), xs.double()
        per_span = gap_cost / unit
        beside = int(round(2 * p.smooth_sigma))
        for index, angle in enumerate(angles):
            m, size = _rotation((h, w), angle)
            inverse = cv2.invertAffineTransform(m)
            rx = torch.round(float(m[0, 0]) * xd + float(m[0, 1]) * yd + float(m[0, 2])).long().clamp(0, size[0] - 1)
            ry = torch.round(float(m[1, 0]) * xd + float(m[1, 1]) * yd + float(m[1, 2])).long().clamp(0, size[1] - 1)
            lc, rc = _crossing_ends(known, inverse, rx, ry, size[0])
            if stop is not None:
                sl, sr = _crossing_ends(stop, inverse, rx, ry, size[0])
                lc, rc = torch.where(sl - lc <= beyond, lc, -1), torch.where(rc - sr <= beyond, rc, _FAR)
            has_l, has_r = lc >= 0, rc < _FAR
            end_l, end_r = lc.clamp_min(0), rc.clamp_max(size[0] - 1)
            dl, dr = (rx - lc).float(), (rc - rx).float()
            both = has_l & has_r
            span = torch.where(both, dl + dr, torch.where(has_l, dl, dr))
            t = torch.where(both, dl / (dl + dr).clamp_min(1), 0.0)[:, None]
            il, ir = _at(smooth, inverse, end_l, ry), _at(smooth, inverse, end_r, ry)
            value = torch.where(both[:, None], il * (1 - t) + ir * t, torch.where(has_l[:, None], il, ir))
            one_sided = torch.where(has_l | has_r, p.one_sided_cost, _NO_CROSSING).double()
            mismatch = torch.where(both, _ends_mismatch(decide_on, inverse, end_l, end_r, ry, beside), one_sided)
            mismatch = torch.where(span <= longest, mismatch, _NO_CROSSING)
            shortest = torch.minimum(shortest, torch.where(both, span, math.inf))
            plane[ys, xs] = torch.round(mismatch + span.double() * per_span)
            cost = exact_blur(plane[None], sigma)[0][ys, xs]
            cost += torch.round(p.grain_cost * coherence * torch.sin(angle - grain) ** 2)
            better = cost < best_cost
            if not bool(better.any()):
                continue
            width = (rc - lc - 1).float()
            from_left = has_l & ((dl <= dr) | ~has_r)
            across = (torch.where(from_left, -2 * dl + 1, 2 * dr - 1) if mirror
                      else torch.where(from_left, -width, width))
            shift = torch.where(both, across,
                                torch.where(has_l, -2 * dl + 1, 2 * dr - 1))
            best_cost = torch.where(better, cost, best_cost)
            best_fill = torch.where(better[:, None], value, best_fill)
            best_shift = torch.where(better, shift, best_shift)
            best_index = torch.where(better, index, best_index)
            best_two = torch.where(better, both, best_two)
            el = _at(window, inverse, end_l, ry).double() - il
            er = _at(window, inverse, end_r, ry).double() - ir
            edge = torch.where(both[:, None] & (el * er > 0), torch.minimum(el.abs(), er.abs()), 0.0)
            best_edge = torch.where(better[:, None], edge, best_edge)
        sines = torch.tensor([math.sin(a) for a in angles], dtype=torch.float64, device=device)[best_index]
        cosines = torch.tensor([math.cos(a) for a in angles], dtype=torch.float64, device=device)[best_index]
        two_ended = torch.where(best_two, best_cost, math.inf)
        return best_fill, best_shift * sines, best_shift * cosines, shortest, best_edge, two_ended

    def _grain(self, smooth: torch.Tensor, known: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, unit: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``StructureInpainter._grain``."""
        luma = [float(v) for v in LUMA]
        grey = smooth[..., 0] * luma[0] + smooth[..., 1] * luma[1] + smooth[..., 2] * luma[2]
        gx, gy = _sobel(grey)
        del grey
        inner = _erode5(known).double()
        sigma = max(3.0, self.inpainter.tensor_sigma * 100 * unit)
        norm = gaussian_blur(inner[None], sigma)[0].clamp_min(1e-6)[ys, xs]
        products = torch.empty((3, *gx.shape), dtype=gx.dtype, device=gx.device)
        for plane, (a, b) in zip(products, ((gx, gx), (gy, gy), (gx, gy))):
            torch.mul(a, b, out=plane)
            plane.mul_(inner)
        del gx, gy, inner
        jxx, jyy, jxy = gaussian_blur(products, sigma)[:, ys, xs] / norm
        coherence = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy).clamp_min(1e-3)
        return 0.5 * torch.atan2(2 * jxy, jxx - jyy) + math.pi / 2, coherence
