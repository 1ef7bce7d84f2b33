"""The presets the worker knows, by name."""

from presets import interior, seller
from presets.base import Concept, Derived, PaletteEntry, Preset

PRESETS: dict[str, Preset] = {p.name: p for p in (interior.PRESET, seller.PRESET)}

__all__ = ["PRESETS", "Concept", "Derived", "PaletteEntry", "Preset"]
