"""Seller preset: product photos for marketplaces."""

from presets.base import Concept, Derived, PaletteEntry, build_preset

PRESET = build_preset(
    "seller",
    concepts=[
        Concept("Product", "product", 0.40, multi_instance=True),
        # SAM3 rarely finds "background" (it usually returns nothing): it is everything that is
        # not the product, a prop or a reflection. The shadow stays part of it, so a backdrop
        # recolor keeps the contact shadow (recolor keeps shading) instead of leaving a patch of
        # the old backdrop colour around the product's foot.
        Concept("Background", "background", 0.35, multi_instance=False,
                derived=Derived("complement", ("Product", "Prop", "Reflection"))),
        Concept("Shadow", "shadow", 0.30, multi_instance=True),
        Concept("Reflection", "reflection", 0.30, multi_instance=True),
        Concept("Logo", "logo", 0.40, multi_instance=True),
        Concept("Text", "text", 0.40, multi_instance=True),
        Concept("Label", "label", 0.40, multi_instance=True),
        Concept("Prop", "decorative prop", 0.40, multi_instance=True),
    ],
    palette=[
        PaletteEntry("studio_white", (250, 250, 250)),
        PaletteEntry("soft_grey", (222, 222, 220)),
        PaletteEntry("warm_beige", (236, 224, 204)),
        PaletteEntry("pastel_pink", (244, 214, 220)),
        PaletteEntry("pastel_blue", (208, 226, 242)),
        PaletteEntry("mint", (208, 236, 222)),
        PaletteEntry("jet_black", (18, 18, 20)),
        PaletteEntry("oak_a", (176, 132, 86), material="wood", spread=0.18),
        PaletteEntry("marble_white", (232, 230, 226), material="stone", spread=0.06),
    ],
)
