"""The presets the worker knows, by name."""

from presets import interior, seller
from presets.base import Concept, PaletteEntry, Preset

PRESETS: dict[str, Preset] = {p.name: p for p in (interior.PRESET, seller.PRESET)}

__all__ = ["PRESETS", "Concept", "PaletteEntry", "Preset"]
