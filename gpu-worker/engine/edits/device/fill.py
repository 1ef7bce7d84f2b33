"""Remove's fill (engine/edits/remove.py) with its full-resolution work on a torch device.

A device fill takes the window (uint8 H x W x 3), the hole (bool H x W) and the guide (the
window before this photo's edits, on which the discrete choices are made) and returns the
filled window. ``device_fill`` picks the device version of an inpainter:

- ``PatchInpainter`` fills the hole at a reduced resolution (long side 256), patch by patch; that
  search is sequential and small, and stays on the host, as does the area reduction it starts
  from (the guide's uint8 pixels go to the host once, so the search sees the numpy path's very
  values). What scales with the photo runs on the device: the chosen sources read in the
  window's own reduction, and the synthesis at full resolution (every hole pixel takes the
  work-resolution fill's low frequencies and the detail of the pixel its patch's source points
  to). The seams' solve at work resolution (``PatchInpainter.seamless``) runs on the host too.
- ``StructureInpainter``: engine/edits/device/structure.py, with this patch fill for its wide parts.
- Any other inpainter runs as it is, on the window brought to the host.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch

from engine.edits.device import ops
from engine.edits.device.structure import DeviceStructureFill
from engine.edits.remove import Inpainter, PatchInpainter
from engine.edits.structure_fill import StructureInpainter

DeviceFill = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (rgb, hole, guide) -> filled


@lru_cache(maxsize=32)
def _area_weights(src: int, dst: int) -> np.ndarray:
    """``cv2.resize(..., INTER_AREA)``'s weights along one axis (dst x src, float32): each output
    pixel averages the input cells it covers, partial cells in proportion."""
    out = np.zeros((dst, src), np.float32)
    scale = src / dst
    for dx in range(dst):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, src - fsx1)
        sx2 = min(int(np.floor(fsx2)), src - 1)
        sx1 = min(int(np.ceil(fsx1)), sx2)
        if sx1 - fsx1 > 1e-3:
            out[dx, sx1 - 1] = np.float32((sx1 - fsx1) / cell)
        out[dx, sx1:sx2] = np.float32(1.0 / cell)
        if fsx2 - sx2 > 1e-3:
            out[dx, sx2] = np.float32(min(min(fsx2 - sx2, 1.0), cell) / cell)
    return out


def area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(x, (w, h), INTER_AREA)`` downscaling of H x W (x C) float32."""
    ay = torch.from_numpy(_area_weights(x.shape[0], size[0])).to(x.device)
    ax = torch.from_numpy(_area_weights(x.shape[1], size[1])).to(x.device)
    flat = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 0, 1)  # C x H x W
    out = ay @ flat @ ax.t()
    return out.permute(1, 2, 0).reshape(size[0], size[1], *x.shape[2:])


def sample_bilinear(small: torch.Tensor, qy: torch.Tensor, qx: torch.Tensor, full: tuple[int, int]) -> torch.Tensor:
    """``remove.sample_bilinear``: ``small`` (h x w x 3) at the full-resolution pixels (qy, qx)."""
    (h, w), (eh, ew) = full, small.shape[:2]
    map_y = ((qy.double() + 0.5) * (eh / h) - 0.5).float()
    map_x = ((qx.double() + 0.5) * (ew / w) - 0.5).float()
    return ops.bilinear_at(small, map_y, map_x)


def patch_fill(inpainter: PatchInpainter) -> DeviceFill:
    def fill(rgb: torch.Tensor, hole: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``PatchInpainter.inpaint``: uint8 H x W x 3 window and guide, ``hole`` bool -> uint8 H x W x 3."""
        if bool(hole.all()):
            mean = rgb.reshape(-1, 3).double().mean(0).to(torch.uint8)
            return mean.expand_as(rgb).clone()
        # the reduction on the host, from the guide's uint8 pixels: the exemplar search is
        # discrete, and a reduction that differs in the last float bit can pick another patch
        work, work_hole = inpainter.reduce(guide.cpu().numpy().astype(np.float32) / 255.0, hole.cpu().numpy())
        scaled = work_hole.shape != tuple(hole.shape)
        searched, off_y, off_x, shift = inpainter._fill(work, work_hole)
        work_hole_t = torch.from_numpy(np.ascontiguousarray(work_hole)).to(rgb.device)
        if guide is rgb or torch.equal(guide, rgb):
            filled = inpainter.seamless(work, work_hole, searched, off_y, off_x)
        else:
            own = area_resize(_unit(rgb), work_hole.shape) if scaled else _unit(rgb)
            rendered = _render(own, work_hole_t, off_y, off_x, shift)
            # the seams' solve is small (work resolution) and iterative: on the host, as numpy runs it
            filled = inpainter.seamless(own.cpu().numpy(), work_hole, rendered.cpu().numpy(), off_y, off_x)
        filled_t = torch.from_numpy(filled).to(rgb.device)
        return _synthesise(rgb, hole, filled_t, work_hole_t, off_y, off_x, scaled)

    return fill


def _unit(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 levels as float32 0..1 (made where needed: no full-size float copy is kept)."""
    return rgb.float() / 255.0


def _render(work: torch.Tensor, work_hole: torch.Tensor, off_y: np.ndarray, off_x: np.ndarray,
            shift: np.ndarray) -> torch.Tensor:
    """``PatchInpainter.render`` on the device."""
    ys, xs = work_hole.nonzero().unbind(1)
    dy = torch.from_numpy(off_y).to(work.device)[ys, xs].long()
    dx = torch.from_numpy(off_x).to(work.device)[ys, xs].long()
    if not (bool(dy.any()) or bool(dx.any())):
        return torch.from_numpy(PatchInpainter.render(work.cpu().numpy(), work_hole.cpu().numpy(), off_y, off_x,
                                                      shift)).to(work.device)
    filled = work.clone()
    filled[ys, xs] = work[ys + dy, xs + dx] + torch.from_numpy(shift).to(work.device)[ys, xs, None]
    return filled


def _synthesise(rgb: torch.Tensor, hole: torch.Tensor, filled: torch.Tensor, work_hole: torch.Tensor,
                off_y: np.ndarray, off_x: np.ndarray, scaled: bool) -> torch.Tensor:
    """``PatchInpainter._synthesise`` on the device."""
    device = rgb.device
    h, w = hole.shape
    eh, ew = filled.shape[:2]
    qy, qx = hole.nonzero().unbind(1)
    out = rgb.clone()
    if not scaled:
        out[qy, qx] = (filled[qy, qx] * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        return out
    cy = torch.minimum(qy * eh // h, torch.tensor(eh - 1, device=device))
    cx = torch.minimum(qx * ew // w, torch.tensor(ew - 1, device=device))
    oy, ox = torch.from_numpy(off_y).to(device)[cy, cx], torch.from_numpy(off_x).to(device)[cy, cx]
    sy = qy + torch.round(oy.double() * (h / eh)).long()
    sx = qx + torch.round(ox.double() * (w / ew)).long()
    ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    sy, sx = sy.clamp(0, h - 1), sx.clamp(0, w - 1)
    ok &= ~hole[sy, sx]
    ok &= work_hole[cy, cx]
    detail = _unit(rgb[sy, sx]) - sample_bilinear(filled, sy, sx, (h, w))
    values = sample_bilinear(filled, qy, qx, (h, w)) + torch.where(ok[:, None], detail, 0.0)
    out[qy, qx] = (values * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    return out


def host_fill(inpainter: Inpainter) -> DeviceFill:
    """Any inpainter, on the window brought to the host and its result sent back."""
    def fill(rgb: torch.Tensor, hole: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        filled = inpainter.inpaint(rgb.cpu().numpy(), hole.cpu().numpy(), guide.cpu().numpy())
        return torch.from_numpy(filled).to(rgb.device)

    return fill


def device_fill(inpainter: Inpainter) -> DeviceFill:
    """The device version of ``inpainter`` where there is one, else ``host_fill``."""
    if isinstance(inpainter, StructureInpainter):
        return DeviceStructureFill(inpainter, device_fill(inpainter.fallback))
    if isinstance(inpainter, PatchInpainter):
        return patch_fill(inpainter)
    return host_fill(inpainter)
