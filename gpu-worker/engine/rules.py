"""A job's rules resolved against its preset: what to find and what to do inside each mask.

``make_plan`` is where a usable envelope with bad rules becomes ``InvalidMessage``: unknown
preset or concept, a colour that is neither a palette id nor ``#RRGGBB``, an unknown tone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import InvalidMessage
from engine.job import Job, ToneParams
from presets import PRESETS, Concept, Preset

HEX_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")

NAMED_TONES: dict[str, ToneParams] = {
    "warm": ToneParams(temperature=0.5, saturation=0.1),
    "cool": ToneParams(temperature=-0.5),
    "bright": ToneParams(brightness=0.4, contrast=0.05),
    "dark": ToneParams(brightness=-0.4, contrast=0.05),
    "vivid": ToneParams(saturation=0.5, contrast=0.15),
    "muted": ToneParams(saturation=-0.5, contrast=-0.1),
}


@dataclass(frozen=True)
class Recolor:
    rgb: tuple[int, int, int]
    material: str = "flat"
    spread: float = 0.0


@dataclass(frozen=True)
class Tone:
    params: ToneParams


@dataclass(frozen=True)
class Remove:
    pass


Op = Recolor | Tone | Remove


@dataclass(frozen=True)
class PlannedRule:
    concept: str
    op: Op
    instances: tuple[int, ...] | None  # None: every instance of the concept


@dataclass(frozen=True)
class Plan:
    preset: Preset
    rules: tuple[PlannedRule, ...]
    protect: tuple[str, ...]

    def concepts_to_find(self) -> list[Concept]:
        """Every concept the job needs a mask for: rule concepts first, then protect ones."""
        names = [r.concept for r in self.rules] + [p for p in self.protect]
        return [self.preset.concepts[n] for n in dict.fromkeys(names)]


def _hex_to_rgb(value: str) -> tuple[int, int, int]:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def _resolve_op(preset: Preset, concept: str, action: str, value: object) -> Op:
    if action == "remove":
        if value is not None:
            raise InvalidMessage(f"concepts.{concept}: remove takes no value")
        return Remove()
    if action == "recolor":
        if not isinstance(value, str):
            raise InvalidMessage(f"concepts.{concept}: recolor needs a palette id or #RRGGBB value")
        if HEX_COLOUR.match(value):
            return Recolor(_hex_to_rgb(value))
        entry = preset.palette.get(value)
        if entry is None:
            raise InvalidMessage(
                f"concepts.{concept}: unknown colour {value!r}; use #RRGGBB or one of "
                f"{', '.join(sorted(preset.palette))}"
            )
        return Recolor(entry.rgb, entry.material, entry.spread)
    # tone
    if isinstance(value, str):
        params = NAMED_TONES.get(value)
        if params is None:
            raise InvalidMessage(
                f"concepts.{concept}: unknown tone {value!r}; use one of {', '.join(NAMED_TONES)} "
                "or an object of brightness/contrast/saturation/temperature"
            )
        return Tone(params)
    if isinstance(value, ToneParams):
        return Tone(value)
    raise InvalidMessage(f"concepts.{concept}: tone needs a named tone or parameters")


def make_plan(job: Job) -> Plan:
    preset = PRESETS.get(job.preset)
    if preset is None:
        raise InvalidMessage(f"unknown preset {job.preset!r}; known: {', '.join(sorted(PRESETS))}")
    unknown = [n for n in list(job.concepts) + job.protect if n not in preset.concepts]
    if unknown:
        raise InvalidMessage(
            f"unknown concept(s) for preset {preset.name}: {', '.join(dict.fromkeys(unknown))}"
        )
    rules = tuple(
        PlannedRule(
            concept=name,
            op=_resolve_op(preset, name, rule.action, rule.value),
            instances=tuple(rule.instances) if rule.instances is not None else None,
        )
        for name, rule in job.concepts.items()
    )
    return Plan(preset=preset, rules=rules, protect=tuple(dict.fromkeys(job.protect)))
