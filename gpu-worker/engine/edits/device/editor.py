"""``apply_edits`` on a torch device: the photo goes up once, masks arrive there (from a segmenter
on the same device, or uploaded), and one uint8 result comes back for encoding.

The steps are engine/applier.py's, edit by edit: the region minus protect, the action's span
(engine/edits/device/registry.py), the window, the soft matte, the action, the composite; then
the protected pixels restored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engine.actions import Before
from engine.applier import Edit
from engine.edits.blend import UNSEEN_WEIGHT, edge_band_px
from engine.edits.device.matte import soft_matte
from engine.edits.device.registry import DeviceSpan, DeviceTools, device_action_for


def on_device(mask: Any, device: torch.device) -> torch.Tensor:
    """A mask (numpy or torch) as a bool tensor on ``device``."""
    if isinstance(mask, torch.Tensor):
        return mask.to(device, torch.bool)
    return torch.from_numpy(np.ascontiguousarray(mask)).to(device)


def _window(region: torch.Tensor, pad: int) -> tuple[slice, slice] | None:
    rows, cols = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
    if rows.numel() == 0:
        return None
    h, w = region.shape
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return slice(max(0, y0 - pad), min(h, y1 + 1 + pad)), slice(max(0, x0 - pad), min(w, x1 + 1 + pad))


def apply_on_device(image: np.ndarray, edits: Sequence[Edit], protect: Any, device: torch.device,
                    tools: DeviceTools) -> np.ndarray:
    with torch.inference_mode():
        original = torch.from_numpy(np.ascontiguousarray(image)).to(device)
        out = original.clone()
        protect_t = None if protect is None else on_device(protect, device)
        band = edge_band_px(image.shape)
        filled = torch.zeros(image.shape[:2], dtype=torch.bool, device=device)  # what the removes made up
        for edit in edits:
            _apply_one(out, original, filled, edit, protect_t, band, tools)
        if protect_t is not None:
            out = torch.where(protect_t[..., None], original, out)
        return out.cpu().numpy()


def edit_weights(span: DeviceSpan, window: tuple[slice, slice], photo: torch.Tensor, region: torch.Tensor,
                 protect: torch.Tensor | None, band: int) -> torch.Tensor:
    """``engine.applier.edit_weights`` on the device: ``photo`` the window (H x W x 3 uint8),
    ``region`` and ``protect`` full frame."""
    alpha = soft_matte(photo.permute(2, 0, 1), span.region[window], None if protect is None else protect[window],
                       band, region[window], span.reach, span.replaces)
    if span.replaces:
        alpha = torch.where(region[window], 1.0, alpha)
        alpha = torch.where(alpha < UNSEEN_WEIGHT, 0.0, alpha)
    return alpha


def _apply_one(out: torch.Tensor, original: torch.Tensor, filled: torch.Tensor, edit: Edit,
               protect: torch.Tensor | None, band: int, tools: DeviceTools) -> None:
    mask = on_device(edit.mask, out.device)
    region = mask if protect is None else mask & ~protect
    if not bool(region.any()):
        return
    action = device_action_for(edit.op)
    span = action.span(region, protect, band)
    window = _window(span.region, span.pad)
    if window is None:
        return
    rgb = out[window]
    photo = original[window]
    alpha = edit_weights(span, window, photo, region, protect, band)
    touched = alpha > 0
    if not bool(touched.any()):
        return
    edited = action.edit(edit.op, rgb, alpha, span.region[window], band, tools, Before(photo, filled[window]))
    base = rgb.float()
    blended = (base + (edited - base) * alpha[..., None] + 0.5).clamp(0, 255).to(torch.uint8)
    out[window] = torch.where(touched[..., None], blended, rgb)
    if action.fills:
        filled[window] |= touched
