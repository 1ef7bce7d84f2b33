"""What a preset is: concepts with their SAM3 prompts, and a palette of named colours."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Derived:
    """A concept made from others' masks instead of prompted (engine/derive.py has the rules)."""

    rule: str  # a rule of engine.derive.RULES
    sources: tuple[str, ...]  # the concepts it is made from (prompted ones)


@dataclass(frozen=True)
class Concept:
    name: str
    prompt: str  # the SAM3 text prompt
    threshold: float  # detection score threshold
    multi_instance: bool  # whether instances are listed separately (#1..#N cards)
    derived: Derived | None = None  # made from other concepts' masks; never prompted


@dataclass(frozen=True)
class PaletteEntry:
    id: str
    rgb: tuple[int, int, int]  # sRGB target colour
    # "flat" is paint-like; a material (e.g. "wood") also carries a tonal spread so that
    # the recolored surface keeps a material-like variation instead of a single flat hue.
    material: str = "flat"
    spread: float = 0.0  # relative lightness variation a material adds (0 = none)


@dataclass(frozen=True)
class Preset:
    name: str
    concepts: dict[str, Concept]
    palette: dict[str, PaletteEntry] = field(default_factory=dict)


def build_preset(name: str, concepts: list[Concept], palette: list[PaletteEntry]) -> Preset:
    return Preset(
        name=name,
        concepts={c.name: c for c in concepts},
        palette={p.id: p for p in palette},
    )
