"""recolor: paint the region a palette colour (``"value": "sage"``) or any ``#RRGGBB``; the surface
keeps its shading and texture (engine/edits/recolor.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from engine.actions.base import Action, Before, Tools
from engine.edits.recolor import recolor
from engine.errors import InvalidMessage
from presets import Preset

HEX_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")


@dataclass(frozen=True)
class Recolor:
    action: ClassVar[str] = "recolor"
    rgb: tuple[int, int, int]
    material: str = "flat"
    spread: float = 0.0


def hex_to_rgb(value: str) -> tuple[int, int, int]:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


class RecolorAction(Action):
    name = "recolor"
    value_type = str
    value_help = "needs a palette id or #RRGGBB value"
    value_doc = "a palette id of the preset or `#RRGGBB`"
    summary = ("the region takes the target colour while keeping its shading and texture; a material "
               "(wood, stone) also carries its tonal spread")

    def resolve(self, value: Any, preset: Preset, concept: str) -> Recolor:
        if HEX_COLOUR.match(value):
            return Recolor(hex_to_rgb(value))
        entry = preset.palette.get(value)
        if entry is None:
            raise InvalidMessage(
                f"concepts.{concept}: unknown colour {value!r}; use #RRGGBB or one of "
                f"{', '.join(sorted(preset.palette))}"
            )
        return Recolor(entry.rgb, entry.material, entry.spread)

    def edit(self, op: Recolor, rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, band: int,
             tools: Tools, before: Before[np.ndarray]) -> np.ndarray:
        return recolor(rgb, alpha, region, op, band, tools.backend)


ACTION = RecolorAction()
