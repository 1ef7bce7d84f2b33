"""The soft matte and the soft edge's surface colour (engine/edits/blend.py) in torch.

Both run over the whole window at once: with the window's sides padded to multiples of the
filters' steps (as blend.py pads each tile), one run over the window gives the values blend.py's
tiles give, and a device has no use for the tiles' savings.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from engine.edits import blend
from engine.edits.device import ops


def guided_filter(rgb: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                  subsample: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``blend.guided_filter``: ``rgb`` uint8 3 x H x W, ``src`` float32 H x W."""
    h, w = src.shape
    rgb_f = rgb.float()
    if subsample > 1:
        rgb_p, src_p = ops.pad_to_multiple(rgb_f, subsample), ops.pad_to_multiple(src[None], subsample)
        g = ops.area_down_u8(rgb_p, subsample) * (1 / 255)
        p = ops.area_down(src_p, subsample)[0]
        r = max(1, radius // subsample)
        full = tuple(src_p.shape[-2:])
    else:
        g, p, r, full = rgb_f * (1 / 255), src, radius, (h, w)
    box = ops.box_mean
    mean_g = box(g, r)
    mean_p = box(p[None], r)[0]
    mean_gp = box(g * p[None], r)
    cov_gp = mean_gp - mean_g * mean_p[None]
    gr, gg, gb = g[0], g[1], g[2]
    mr, mg, mb = mean_g[0], mean_g[1], mean_g[2]
    second = box(torch.stack([gr * gr, gr * gg, gr * gb, gg * gg, gg * gb, gb * gb]), r)
    s_rr = second[0] - mr * mr + eps
    s_rg = second[1] - mr * mg
    s_rb = second[2] - mr * mb
    s_gg = second[3] - mg * mg + eps
    s_gb = second[4] - mg * mb
    s_bb = second[5] - mb * mb + eps
    del second
    a = torch.stack(blend.solve_sym3((s_rr, s_rg, s_rb, s_gg, s_gb, s_bb), (cov_gp[0], cov_gp[1], cov_gp[2])))
    b = mean_p - (a * mean_g).sum(0)
    mean_a = box(a, r)
    mean_b = box(b[None], r)[0]
    both = (mean_p > 0.02) & (mean_p < 0.98)
    m = mean_p[None]
    inside = mean_gp / m.clamp_min(1e-6)
    outside = (mean_g - mean_gp) / (1.0 - m).clamp_min(1e-6)
    contrast = torch.where(both, ((inside - outside) ** 2).sum(0).sqrt(), torch.zeros_like(mean_p))
    inside = torch.where(both[None], inside, mean_g)

    def full_size(x: torch.Tensor) -> torch.Tensor:
        return ops.linear_up(x, full)[..., :h, :w] if subsample > 1 else x

    filtered = full_size(mean_b[None])[0]
    up_a = full_size(mean_a)
    for c in range(3):
        filtered = filtered + up_a[c] * (rgb_f[c] * (1 / 255))
    return filtered, full_size(contrast[None])[0], full_size(inside)


def soft_matte(rgb: torch.Tensor, region: torch.Tensor, protect: torch.Tensor | None, band: int,
               anchor: torch.Tensor, reach: int, replaces: bool = False) -> torch.Tensor:
    """``blend.soft_matte`` over a window: ``rgb`` uint8 3 x H x W, masks bool H x W."""
    core = ops.erode(region, ops.ellipse_rows(band))
    within = ops.dilate(anchor, ops.disk_rows(int(reach)))
    alpha = (core & within).float()
    ring = within & ~core
    matte, contrast, surface = guided_filter(rgb, region.float(), band + 1, 2e-3, max(1, band // 2))
    trust = (contrast / blend.EDGE_CONTRAST).clamp(0.0, 1.0)
    inside = region.float()
    weight = trust * matte.clamp(0.0, 1.0) + (1.0 - trust) * inside
    weight = _averaged_along_edge(weight, ring, protect)
    if not replaces:
        weight = limit_to_share(rgb, region, ring, protect, weight, surface, int(reach) + 1)
    weight = torch.where(region, torch.maximum(weight, torch.tensor(0.5, device=weight.device)),
                         torch.minimum(weight, torch.tensor(0.5, device=weight.device)))
    raised, lowered = (2 * weight - 0.8).clamp_max(1.0), (2 * weight - 0.2).clamp_min(0.0)
    weight = torch.where(region, torch.where(weight >= 0.8, raised, weight), torch.where(weight <= 0.2, lowered, weight))
    alpha = torch.where(ring, weight, alpha)
    if protect is not None:
        alpha = alpha.masked_fill(protect, 0.0)
    return alpha


def along_edge(key: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, among: torch.Tensor | None = None,
               centre: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``blend.along_edge``: per 3 x 3 offset, the neighbours of (ys, xs) and how much each lies
    along the same edge (the same arithmetic in the same order)."""
    h, w = key.shape
    own = key[ys, xs]
    for dy in (-1, 0, 1):
        ny = (ys + dy).clamp(0, h - 1)
        for dx in (-1, 0, 1):
            if dy == dx == 0 and not centre:
                continue
            nx = (xs + dx).clamp(0, w - 1)
            weight = (1.0 - (key[ny, nx] - own).abs() * (1 / blend.ALONG_EDGE)).clamp_min(0.0)
            if among is not None:
                weight = weight * among[ny, nx]
            yield ny, nx, weight


def edge_mixture(rgb: torch.Tensor, alpha: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``blend.edge_mixture``: ``rgb`` uint8 H x W x 3; (N x 3 linear, N x 3 sRGB levels)."""
    own = ops.to_linear(rgb[ys, xs])
    total = torch.zeros((ys.numel(), 3), dtype=torch.float32, device=rgb.device)
    count = torch.zeros(ys.numel(), dtype=torch.float32, device=rgb.device)
    for ny, nx, weight in along_edge(alpha, ys, xs, centre=False):
        total += ops.to_linear(rgb[ny, nx]) * weight[:, None]
        count += weight
    alone = count[:, None] <= 0
    mixture = torch.where(alone, own, total / torch.where(alone, 1.0, count[:, None]))
    return mixture, rgb[ys, xs].float() - ops.to_srgb255(mixture)


def limit_to_share(rgb: torch.Tensor, region: torch.Tensor, ring: torch.Tensor, protect: torch.Tensor | None,
                   weight: torch.Tensor, surface: torch.Tensor, layers: int) -> torch.Tensor:
    """``blend.limit_to_share`` over the window (the weight H x W, other pixels as they were;
    ``surface`` 3 x H x W). Layers are counted out to ``layers``, one past the farthest ring
    pixel, which is all ``cv2.distanceTransform``'s chessboard distances are compared at."""
    out_ring = ring & ~region
    if protect is not None:
        out_ring = out_ring & ~protect
    ys, xs = out_ring.nonzero(as_tuple=True)
    if ys.numel() == 0:
        return weight
    layer = torch.full(region.shape, layers + 1, dtype=torch.int32, device=region.device)
    reached = region
    layer = layer.masked_fill(region, 0)
    for k in range(1, layers + 1):
        grown = ops.dilate(reached, (1, 1, 1))
        layer = layer.masked_fill(grown & ~reached, k)
        reached = grown
    h, w = region.shape
    own_layer = layer[ys, xs]
    colours = rgb.permute(1, 2, 0)
    total = torch.zeros((ys.numel(), 3), dtype=torch.float32, device=rgb.device)
    count = torch.zeros(ys.numel(), dtype=torch.float32, device=rgb.device)
    for dy in (-1, 0, 1):
        ny = (ys + dy).clamp(0, h - 1)
        for dx in (-1, 0, 1):
            nx = (xs + dx).clamp(0, w - 1)
            beyond = (layer[ny, nx] == own_layer + 1).float()
            total += colours[ny, nx].float() * beyond[:, None]
            count += beyond
    beyond_colour = total / count.clamp_min(1.0)[:, None] * (1 / 255)
    step = surface[:, ys, xs].T - beyond_colour
    step_size = (step * step).sum(1).sqrt()
    share = ((colours[ys, xs].float() * (1 / 255) - beyond_colour) * step).sum(1) / (step_size * step_size).clamp_min(1e-6)
    sure = torch.where(count > 0, (step_size / blend.SHARE_STEP - 1.0).clamp(0.0, 1.0), torch.zeros_like(count))
    shares = torch.zeros_like(weight)
    shares[ys, xs] = share.clamp(0.0, 1.0)
    among = torch.zeros_like(weight)
    among[ys, xs] = sure
    total_share = torch.zeros(ys.numel(), dtype=torch.float32, device=weight.device)
    count_share = torch.zeros(ys.numel(), dtype=torch.float32, device=weight.device)
    for ny, nx, along in along_edge(shares, ys, xs, among):
        total_share += shares[ny, nx] * along
        count_share += along
    averaged = total_share / count_share.clamp_min(1e-6)
    limit = (averaged + blend.SHARE_SLACK).clamp_max(1.0)
    limit = sure * limit + (1.0 - sure) * 1.0
    out = weight.clone()
    out[ys, xs] = torch.minimum(weight[ys, xs], limit)
    return out


def _averaged_along_edge(weight: torch.Tensor, ring: torch.Tensor, protect: torch.Tensor | None) -> torch.Tensor:
    """``blend._averaged_along_edge`` over the window's ring (other pixels as they were)."""
    plane = torch.where(ring, weight, torch.zeros((), device=weight.device))
    among = ring if protect is None else ring & ~protect
    ys, xs = ring.nonzero(as_tuple=True)
    total = torch.zeros(ys.numel(), dtype=torch.float32, device=weight.device)
    count = torch.zeros(ys.numel(), dtype=torch.float32, device=weight.device)
    for ny, nx, w in along_edge(plane, ys, xs, among):
        total += plane[ny, nx] * w
        count += w
    out = weight.clone()
    out[ys, xs] = torch.where(count > 0, total / count.clamp_min(1e-6), weight[ys, xs])
    return out


def foreground(lin: torch.Tensor, core: torch.Tensor, fallback: torch.Tensor, radius: int) -> torch.Tensor:
    """``blend.foreground_colour``: ``lin`` float 3 x H x W linear, masks bool H x W."""
    h, w = core.shape
    step = max(1, radius // 3)
    lin_p = ops.pad_to_multiple(lin, step)
    hp, wp = lin_p.shape[-2:]

    def padded(mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((1, hp, wp), dtype=torch.float32, device=mask.device)
        out[0, :h, :w] = mask.float()
        return out

    r = max(1, radius // step)
    lin_s = ops.area_down(lin_p, step)
    out = lin_s.clone()
    missing = torch.ones(lin_s.shape[-2:], dtype=torch.bool, device=lin.device)
    for samples in (core, fallback):
        weight = ops.area_down(padded(samples), step)
        w_sum = ops.box_sum_zero(weight, r)[0]
        c_sum = ops.box_sum_zero(lin_s * weight, r)
        have = missing & (w_sum > 0.5)
        out = torch.where(have[None], c_sum / torch.where(have, w_sum, 1.0)[None], out)
        missing &= ~have
    if step > 1:
        out = ops.linear_up(out, (hp, wp))[:, :h, :w]
        missing = missing.repeat_interleave(step, 0).repeat_interleave(step, 1)[:h, :w]
    return torch.where(missing[None], lin, out)


def edge_foreground(rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, band: int) -> torch.Tensor:
    """``blend.edge_foreground`` (3 x H x W linear; read only at soft-edge pixels)."""
    return foreground(ops.to_linear(rgb), region & (alpha >= 1.0), region, 2 * band + 1)
