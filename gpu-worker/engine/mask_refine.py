"""SAM3's low-resolution mask logits made into photo-size masks on the device: upsampled and
refined with a fast guided filter driven by the photo's luma, so edges follow the photo instead
of the 288 px prediction grid; plus the box means and mask boxes that work needs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MASK_THRESHOLD = 0.5  # on the refined mask probability, as in SAM3's own post-processing
LOGIT_CLAMP = 12.0  # mask logits beyond this are certain either way

def luma(image: torch.Tensor) -> torch.Tensor:
    """uint8 3 x H x W RGB -> float32 H x W in [0, 1] (Rec. 601 luma), the guide image.
    One channel at a time: a float copy of the whole photo would be 12 bytes a pixel."""
    red, green, blue = image.unbind(0)
    out = red.float().mul_(0.299 / 255.0)
    out.add_(green.float().mul_(0.587 / 255.0))
    return out.add_(blue.float().mul_(0.114 / 255.0))


def refine_masks(
    mask_logits: torch.Tensor,
    guide: torch.Tensor,
    *,
    work_side: int = 1024,
    radius_cells: float = 2.0,
    eps: float = 1e-3,
    pixel_budget: int = 16_000_000,
) -> torch.Tensor:
    """Low-resolution mask logits (N, h, w) -> boolean masks (N, H, W) whose edges follow ``guide``.

    ``guide`` is the photo's brightness (H, W) in [0, 1]. Two candidates are blended per pixel:

    - plain: the logits upsampled bilinearly (SAM3's own post-processing), and
    - snapped: a guided filter (He et al.) of that mask, which fits it in every window as a
      linear function of the photo's brightness, so a mask edge near a photo edge moves onto it.

    The blend weight is the photo's local structure, var / (var + eps), box-averaged: where the
    photo has an edge the snapped mask wins; where it is flat the plain mask is kept, so thin
    masks (grout, frames) are not blurred away. The window radius covers ``radius_cells`` cells
    of SAM3's mask grid, about the error of its edges. Statistics are computed at a working
    resolution (longest side ``work_side``) and their coefficients upsampled bilinearly (the
    "fast guided filter"), so full resolution costs a few multiply-adds per pixel. Masks are
    processed in chunks of at most ``pixel_budget`` output pixels to bound memory.
    """
    count, (height, width) = mask_logits.shape[0], guide.shape
    if count == 0:
        return torch.zeros((0, height, width), dtype=torch.bool, device=guide.device)
    full = (height, width)
    scale = min(1.0, work_side / max(height, width))
    work = (max(1, round(height * scale)), max(1, round(width * scale)))
    guide_full = guide[None, None].float()
    guide_work = F.interpolate(guide_full, size=work, mode="area") if work != full else guide_full
    radius = max(1, math.ceil(radius_cells * max(work) / max(mask_logits.shape[-2:])))

    def box(x: torch.Tensor) -> torch.Tensor:
        return box_mean(x, radius)

    def to_full(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=full, mode="bilinear", align_corners=False) if work != full else x

    def to_full_probability(logits: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=full, mode="bilinear", align_corners=False).sigmoid()

    mean_i = box(guide_work)
    var_i = box(guide_work * guide_work) - mean_i * mean_i
    structure = to_full(box(var_i / (var_i + eps)))  # 0 where the photo is flat, ~1 at its edges
    chunk = max(1, pixel_budget // (height * width))
    out = []
    for start in range(0, count, chunk):
        # Clamped: probabilities that far from 0.5 change nothing, and on CPUs the tiny values
        # a sigmoid of large logits gives (denormal floats) make every later op many times slower.
        logits = mask_logits[start : start + chunk, None].float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        prob_work = F.interpolate(logits, size=work, mode="bilinear", align_corners=False).sigmoid()
        mean_p = box(prob_work)
        a = (box(guide_work * prob_work) - mean_i * mean_p) / (var_i + eps)
        b = mean_p - a * mean_i
        snapped = to_full(box(a)).mul_(guide_full).add_(to_full(box(b)))  # in place: full-size floats add up
        plain = to_full_probability(logits) if work != full else prob_work
        out.append(plain.lerp_(snapped, structure)[:, 0] > MASK_THRESHOLD)
    return torch.cat(out)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of ``x`` (N, C, H, W) over each (2r+1)^2 window clipped to the image, in O(1) per pixel
    (running sums along each axis; exact enough in float32 at the working resolution)."""
    if x.device.type == "cpu":
        return _box_mean_cv2(x, radius)
    return box_mean_running_sums(x, radius)


def box_mean_running_sums(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``box_mean`` on any device (used on the GPU), from running sums along each axis."""
    return _box_mean_1d(_box_mean_1d(x, radius, -1), radius, -2)


def _box_mean_cv2(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The same on the host through OpenCV's box filter, about ten times faster there than
    running sums in torch. Zero padding divided by the window's in-image share = clipped mean."""
    size = (2 * radius + 1, 2 * radius + 1)
    planes = x.detach().float().contiguous().numpy().reshape(-1, *x.shape[-2:])

    def window_mean(plane: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(plane, -1, size, normalize=True, borderType=cv2.BORDER_CONSTANT)

    share = window_mean(np.ones(x.shape[-2:], np.float32))
    out = np.stack([window_mean(plane) for plane in planes]) / share
    return torch.from_numpy(out.reshape(x.shape)).to(x.dtype)


def _box_mean_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Window means along ``dim`` (-1 or -2) of a 4-D tensor, from running sums.

    With S[k] = sum of x[:k], the window around i sums S[min(i + r + 1, n)] - S[max(i - r, 0)].
    Padding the running sums with r + 1 zeros in front and r copies of the total behind turns
    both clamped lookups into two shifted slices of one tensor.
    """
    size = x.shape[dim]
    running = x.cumsum(dim)
    if dim == -1:
        front, back = (radius + 1, 0, 0, 0), (0, radius, 0, 0)
    else:
        front, back = (0, 0, radius + 1, 0), (0, 0, 0, radius)
    padded = F.pad(F.pad(running, front), back, mode="replicate")
    sums = padded.narrow(dim, 2 * radius + 1, size) - padded.narrow(dim, 0, size)
    pos = torch.arange(size, device=x.device)
    counts = ((pos + radius + 1).clamp(max=size) - (pos - radius).clamp(min=0)).to(x.dtype)
    return sums / (counts if dim == -1 else counts[:, None])


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) int64 boxes x0, y0, x1, y1 (exclusive); empty masks give zeros."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.long, device=masks.device)
    height, width = masks.shape[-2:]
    rows, cols = masks.any(2).to(torch.uint8), masks.any(1).to(torch.uint8)
    y0, x0 = rows.argmax(1), cols.argmax(1)
    y1, x1 = height - rows.flip(1).argmax(1), width - cols.flip(1).argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(rows.any(1, keepdim=True).bool(), boxes, torch.zeros_like(boxes))
