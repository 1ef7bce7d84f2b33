"""Each registered action (engine/actions/) on a torch device, looked up by the action's name.

``DEVICE_ACTIONS`` holds the torch versions of recolor, tone and remove. An action registered
without one (a plug-in) still runs on the device path through ``HostAction``: its own span and
edit on the window brought to the host, the result sent back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from engine.actions import Action, Before, Op, Tools, action_for
from engine.edits.blend import max_reach_px
from engine.edits.device import ops
from engine.edits.device.actions import recolor_window, tone_window
from engine.edits.device.fill import DeviceFill


@dataclass(frozen=True)
class DeviceSpan:
    """``engine.actions.Span`` on the device."""

    region: torch.Tensor
    reach: int
    pad: int
    replaces: bool = False


@dataclass(frozen=True)
class DeviceTools:
    fill: DeviceFill  # remove's fill on the device
    host: Tools  # for actions that run on the host


class DeviceAction(Protocol):
    fills: bool  # ``Action.fills``

    def span(self, region: torch.Tensor, protect: torch.Tensor | None, band: int) -> DeviceSpan: ...

    def edit(self, op: Any, rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, band: int,
             tools: DeviceTools, before: Before[torch.Tensor]) -> torch.Tensor:
        """Edited window (H x W x 3 float sRGB 0..255; read where ``alpha > 0``); ``before`` is
        ``Action.edit``'s."""
        ...


class _OwnRegion:
    """``Action.span``'s default: the region itself, the usual soft-edge band."""

    fills = False

    def span(self, region: torch.Tensor, protect: torch.Tensor | None, band: int) -> DeviceSpan:
        return DeviceSpan(region, band, 2 * band + 4)


class RecolorOnDevice(_OwnRegion):
    def edit(self, op: Any, rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, band: int,
             tools: DeviceTools, before: Before[torch.Tensor]) -> torch.Tensor:
        return recolor_window(rgb, alpha, region, op, band)


class ToneOnDevice(_OwnRegion):
    def edit(self, op: Any, rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, band: int,
             tools: DeviceTools, before: Before[torch.Tensor]) -> torch.Tensor:
        return tone_window(rgb, alpha, region, op.params, band)


class RemoveOnDevice:
    fills = True

    def span(self, region: torch.Tensor, protect: torch.Tensor | None, band: int) -> DeviceSpan:
        """``RemoveAction.span``: the object's anti-aliased rim and a pixel of contact with it."""
        reach = max_reach_px(tuple(region.shape))
        grow = max(0, min(max(1, band // 2), reach - band))
        if grow:
            region = ops.dilate(region, ops.ellipse_rows(grow))
            if protect is not None:
                region = region & ~protect
        else:
            reach = band
        rows, cols = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
        size = max(int(rows[-1] - rows[0]), int(cols[-1] - cols[0])) + 1
        return DeviceSpan(region, reach, max(32, int(0.6 * size)), replaces=True)

    def edit(self, op: Any, rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, band: int,
             tools: DeviceTools, before: Before[torch.Tensor]) -> torch.Tensor:
        hole = alpha > 0  # ``engine.edits.remove.remove``: what earlier removes made up is no source
        unknown = hole if before.filled is None else hole | before.filled
        return tools.fill(rgb, unknown, before.photo).float()


class HostAction:
    """A registered action without a device version, run on the host."""

    def __init__(self, action: Action) -> None:
        self.action = action
        self.fills = action.fills

    def span(self, region: torch.Tensor, protect: torch.Tensor | None, band: int) -> DeviceSpan:
        found = self.action.span(region.cpu().numpy(), None if protect is None else protect.cpu().numpy(), band)
        return DeviceSpan(torch.from_numpy(np.ascontiguousarray(found.region)).to(region.device), found.reach,
                          found.pad, found.replaces)

    def edit(self, op: Any, rgb: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor, band: int,
             tools: DeviceTools, before: Before[torch.Tensor]) -> torch.Tensor:
        alpha_np = alpha.cpu().numpy()
        on_host = Before(before.photo.cpu().numpy(), None if before.filled is None else before.filled.cpu().numpy())
        values = self.action.edit(op, rgb.cpu().numpy(), alpha_np, region.cpu().numpy(), band, tools.host, on_host)
        out = rgb.float()
        out[alpha > 0] = torch.from_numpy(np.asarray(values, np.float32)).to(rgb.device)
        return out


DEVICE_ACTIONS: dict[str, DeviceAction] = {
    "recolor": RecolorOnDevice(), "tone": ToneOnDevice(), "remove": RemoveOnDevice(),
}


def device_action_for(op: Op) -> DeviceAction:
    return DEVICE_ACTIONS.get(op.action) or HostAction(action_for(op))
