"""tone: brightness, contrast, saturation and temperature inside the region, each in [-1, 1],
given as an object or as a named tone (``"value": "warm"``); engine/edits/tone.py does the maths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.actions.base import Action, Before, Tools
from engine.edits.tone import tone
from engine.errors import InvalidMessage
from presets import Preset


class ToneParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    brightness: float = Field(0.0, ge=-1, le=1)
    contrast: float = Field(0.0, ge=-1, le=1)
    saturation: float = Field(0.0, ge=-1, le=1)
    temperature: float = Field(0.0, ge=-1, le=1)


NAMED_TONES: dict[str, ToneParams] = {
    "warm": ToneParams(temperature=0.5, saturation=0.1),
    "cool": ToneParams(temperature=-0.5),
    "bright": ToneParams(brightness=0.4, contrast=0.05),
    "dark": ToneParams(brightness=-0.4, contrast=0.05),
    "vivid": ToneParams(saturation=0.5, contrast=0.15),
    "muted": ToneParams(saturation=-0.5, contrast=-0.1),
}


@dataclass(frozen=True)
class Tone:
    action: ClassVar[str] = "tone"
    params: ToneParams


class ToneAction(Action):
    name = "tone"
    value_type = str | ToneParams
    value_help = "needs a named tone or an object of brightness/contrast/saturation/temperature"
    value_doc = "a named tone or an object of `brightness`, `contrast`, `saturation`, `temperature`, each in [-1, 1]"
    summary = "adjusts the region's brightness, contrast, saturation and temperature"

    def resolve(self, value: Any, preset: Preset, concept: str) -> Tone:
        if isinstance(value, ToneParams):
            return Tone(value)
        params = NAMED_TONES.get(value)
        if params is None:
            raise InvalidMessage(
                f"concepts.{concept}: unknown tone {value!r}; use one of {', '.join(NAMED_TONES)} "
                "or an object of brightness/contrast/saturation/temperature"
            )
        return Tone(params)

    def edit(self, op: Tone, rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, band: int,
             tools: Tools, before: Before[np.ndarray]) -> np.ndarray:
        return tone(rgb, alpha, region, op.params, band, tools.backend)


ACTION = ToneAction()
