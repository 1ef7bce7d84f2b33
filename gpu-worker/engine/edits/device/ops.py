"""Torch image operations that give OpenCV's results (to float rounding) on any torch device.

Images are float32 tensors C x H x W (or H x W for one plane), masks bool H x W. Each function
names the OpenCV call it stands for and the border rule that call uses, because the edits'
parity with the numpy path depends on the borders matching.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.edits import colour


@lru_cache(maxsize=64)
def ellipse_rows(radius: int) -> tuple[int, ...]:
    """Half widths of the rows of ``cv2.getStructuringElement(MORPH_ELLIPSE, 2r+1)`` (each row is
    a centred run)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return tuple(int(row.sum() - 1) // 2 for row in kernel)


@lru_cache(maxsize=64)
def disk_rows(radius: int) -> tuple[int, ...]:
    """Half widths of the Euclidean disk dy^2 + dx^2 <= r^2: the pixels ``cv2.distanceTransform``
    (DIST_L2, precise) puts within ``r`` of a pixel."""
    return tuple(int(np.floor(np.sqrt(radius * radius - dy * dy))) for dy in range(-radius, radius + 1))


def dilate(mask: torch.Tensor, rows: tuple[int, ...], replicate: bool = False) -> torch.Tensor:
    """Binary dilation by a symmetric kernel given as its rows' half widths (``cv2.dilate``:
    outside pixels never count; with ``replicate``, outside pixels repeat the border's), of an
    H x W mask or of several at once (... x H x W: one pass of calls for all)."""
    ry, rx = len(rows) // 2, max(rows)
    h, w = mask.shape[-2:]
    if replicate:
        ys = torch.arange(-ry, h + ry, device=mask.device).clamp_(0, h - 1)
        xs = torch.arange(-rx, w + rx, device=mask.device).clamp_(0, w - 1)
        padded = mask[..., ys, :][..., xs]
    else:
        padded = mask.new_zeros((*mask.shape[:-2], h + 2 * ry, w + 2 * rx))
        padded[..., ry : ry + h, rx : rx + w] = mask
    out = torch.zeros_like(mask)
    grown = padded.clone()  # the horizontal dilation by the current half width
    for half in range(rx + 1):
        if half:
            grown[..., half:] |= padded[..., :-half]
            grown[..., :-half] |= padded[..., half:]
        for dy, row in enumerate(rows):
            if row == half:
                out |= grown[..., dy : dy + h, rx : rx + w]
    return out


def erode(mask: torch.Tensor, rows: tuple[int, ...]) -> torch.Tensor:
    """``cv2.erode(..., borderType=BORDER_REPLICATE)`` by a symmetric kernel."""
    return ~dilate(~mask, rows, replicate=True)


def reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of ``cv2.BORDER_REFLECT`` (fedcba|abcdef|fedcba) padding of a length-``n`` axis."""
    i = torch.arange(-before, n + after, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def pad_reflect(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """``cv2.copyMakeBorder(..., BORDER_REFLECT)`` of the last two axes."""
    if not (top or bottom or left or right):
        return x
    h, w = x.shape[-2:]
    x = x.index_select(-2, reflect_index(h, top, bottom, x.device))
    return x.index_select(-1, reflect_index(w, left, right, x.device))


def pad_reflect101(x: torch.Tensor, r: int) -> torch.Tensor:
    """``BORDER_REFLECT_101`` (OpenCV's default: dcb|abcd|cba) padding by ``r`` on the last two
    axes, for any size (torch's reflect padding needs the side longer than the pad)."""
    def index(n: int) -> torch.Tensor:
        if n == 1:
            return torch.zeros(n + 2 * r, dtype=torch.long, device=x.device)
        i = torch.arange(-r, n + r, device=x.device) % (2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)

    return x.index_select(-2, index(x.shape[-2])).index_select(-1, index(x.shape[-1]))


def pad_to_multiple(x: torch.Tensor, step: int) -> torch.Tensor:
    """Reflect-pads bottom and right so both sides are multiples of ``step``."""
    h, w = x.shape[-2:]
    return pad_reflect(x, 0, -h % step, 0, -w % step)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``cv2.boxFilter(normalize=True, borderType=BORDER_REFLECT)`` of C x H x W planes."""
    k = 2 * radius + 1
    return F.avg_pool2d(pad_reflect(x, radius, radius, radius, radius)[None], k, stride=1)[0]


def box_sum_zero(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``cv2.boxFilter(normalize=False, borderType=BORDER_CONSTANT)`` of C x H x W planes."""
    k = 2 * radius + 1
    return F.avg_pool2d(x[None], k, stride=1, padding=radius, count_include_pad=True)[0] * float(k * k)


def area_down(x: torch.Tensor, step: int) -> torch.Tensor:
    """``cv2.resize(..., INTER_AREA)`` of float planes whose sides are multiples of ``step``."""
    return x if step == 1 else F.avg_pool2d(x[None], step)[0]


@lru_cache(maxsize=16)
def _area_taps(n_src: int, n_dst: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The source indices and weights (taps x ``n_dst``) ``cv2.resize(INTER_AREA)`` gives each
    output pixel along an axis of ``n_src`` pixels, read from OpenCV by resizing an identity (its
    fractional rule when the sides are no multiples of each other is not torch's pooling)."""
    weights = cv2.resize(np.eye(n_src, dtype=np.float32), (n_dst, n_src), interpolation=cv2.INTER_AREA)
    taps = int((weights > 0).sum(0).max())
    order = np.argsort(weights <= 0, axis=0, kind="stable")[:taps]  # each column's sources, ascending
    picked = np.take_along_axis(weights, order, 0)
    return (torch.from_numpy(order.astype(np.int64)).to(device), torch.from_numpy(picked).to(device))


def area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(..., INTER_AREA)`` of float planes (H x W or C x H x W) to any smaller
    ``size`` (rows, columns), axis by axis as OpenCV weighs them."""
    for axis, n_dst in ((-1, size[1]), (-2, size[0])):
        n_src = x.shape[axis]
        if n_src == n_dst:
            continue
        index, weight = _area_taps(n_src, n_dst, x.device)
        shape = [1] * x.dim()
        shape[axis] = n_dst
        total = x.index_select(axis, index[0]) * weight[0].view(shape)
        for k in range(1, index.shape[0]):
            total = total + x.index_select(axis, index[k]) * weight[k].view(shape)
        x = total
    return x


def area_down_u8(x: torch.Tensor, step: int) -> torch.Tensor:
    """The same for uint8 images (given as float planes of integers): OpenCV sums each block and
    rounds the mean, half up for 2 x 2 blocks (its vector path), half to even otherwise."""
    if step == 1:
        return x
    area = step * step
    total = torch.round(F.avg_pool2d(x[None], step)[0] * area)
    return torch.floor((total + area // 2) / area) if area == 4 else torch.round(total * np.float32(1 / area))


def linear_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(..., INTER_LINEAR)`` of float planes (half-pixel centres, edges clamped)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


@lru_cache(maxsize=8)
def _luts(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(colour.DECODE_LUT).to(device), torch.from_numpy(colour.ENCODE_LUT).to(device))


def to_linear(rgb8: torch.Tensor) -> torch.Tensor:
    """uint8 sRGB (any shape) -> float32 linear, through ``colour.DECODE_LUT``."""
    return _luts(rgb8.device)[0][rgb8.long()]


def to_srgb255(linear: torch.Tensor) -> torch.Tensor:
    """float linear -> float32 sRGB on 0..255 through ``colour.ENCODE_LUT`` (``colour.to_srgb255``)."""
    idx = (linear.clamp(0.0, 1.0) * 65535 + 0.5).to(torch.int32)
    return _luts(linear.device)[1][idx.long()]


def lstar(y: torch.Tensor) -> torch.Tensor:
    """``colour.lstar``: CIE L* from luminance."""
    eps, kappa = 216 / 24389, 24389 / 27
    return torch.where(y > eps, 116.0 * torch.pow(y.clamp_min(0.0), 1 / 3) - 16.0, kappa * y)


LUMA = tuple(float(v) for v in colour.LUMA)


def luminance(lin: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``colour.luminance`` along ``dim`` (the colour axis)."""
    r, g, b = lin.unbind(dim)
    return r * LUMA[0] + g * LUMA[1] + b * LUMA[2]


def percentiles(values: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile(values, qs)`` (linear interpolation) of a 1-D tensor."""
    n = values.numel()
    ordered = values.sort().values if values.device.type != "cpu" else None

    def ranked(k: int) -> float:
        return float(ordered[k]) if ordered is not None else float(values.kthvalue(k + 1).values)

    out = []
    for q in qs:
        at = q / 100.0 * (n - 1)
        lo = int(np.floor(at))
        v_lo, v_hi = ranked(lo), ranked(min(lo + 1, n - 1))
        out.append(v_lo + (at - lo) * (v_hi - v_lo))
    return out


def bilinear_at(image: torch.Tensor, y: torch.Tensor, x: torch.Tensor, wrap: bool = False) -> torch.Tensor:
    """``cv2.remap(image, x, y, INTER_LINEAR)`` at float32 points: ``image`` H x W (x C); the
    border repeated (BORDER_REPLICATE) or, with ``wrap``, tiled (BORDER_WRAP)."""
    h, w = image.shape[:2]
    fx, fy = torch.floor(x), torch.floor(y)
    ax, ay = x - fx, y - fy
    x0, y0 = fx.long(), fy.long()
    if wrap:
        xa, xb, ya, yb = x0 % w, (x0 + 1) % w, y0 % h, (y0 + 1) % h
    else:
        xa, xb = x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)
        ya, yb = y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1)
    if image.dim() == 3:
        ax, ay = ax[:, None], ay[:, None]
    return ((image[ya, xa] * (1 - ax) + image[ya, xb] * ax) * (1 - ay)
            + (image[yb, xa] * (1 - ax) + image[yb, xb] * ax) * ay)
