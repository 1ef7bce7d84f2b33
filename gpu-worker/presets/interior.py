"""Interior preset: rooms, surfaces and the fine structures users protect."""

from presets.base import Concept, Derived, PaletteEntry, build_preset

PRESET = build_preset(
    "interior",
    concepts=[
        Concept("Wall", "wall", 0.40, multi_instance=False),
        Concept("Floor", "floor", 0.40, multi_instance=False),
        Concept("Ceiling", "ceiling", 0.40, multi_instance=False),
        Concept("Tile", "tiles", 0.40, multi_instance=False),
        # Grout lines are thinner than SAM3's mask cell: found in the photo within the tiles.
        Concept("Grout", "tile grout lines", 0.30, multi_instance=False, derived=Derived("lines_within", ("Tile",))),
        Concept("Door", "door", 0.45, multi_instance=True),
        Concept("Window", "window", 0.45, multi_instance=True),
        Concept("Glass_highlight", "bright reflection on glass", 0.30, multi_instance=False),
        Concept("Frame_Molding", "door frame or window frame or crown molding", 0.35, multi_instance=True),
        Concept("Cabinet", "cabinet", 0.45, multi_instance=True),
        Concept("Countertop", "countertop", 0.45, multi_instance=True),
        Concept("Furniture", "furniture", 0.45, multi_instance=True),
    ],
    palette=[
        # Paints (sRGB)
        PaletteEntry("offwhite_a", (242, 239, 230)),
        PaletteEntry("offwhite_b", (236, 231, 218)),
        PaletteEntry("pure_white", (250, 250, 248)),
        PaletteEntry("greige", (200, 192, 178)),
        PaletteEntry("sage", (163, 176, 148)),
        PaletteEntry("navy", (38, 52, 82)),
        PaletteEntry("charcoal", (54, 56, 58)),
        PaletteEntry("terracotta", (190, 104, 74)),
        PaletteEntry("sky", (170, 200, 222)),
        PaletteEntry("black", (28, 28, 30)),
        # Materials: wood tones for floors, cabinets, countertops
        PaletteEntry("oak_a", (176, 132, 86), material="wood", spread=0.18),
        PaletteEntry("oak_b", (196, 160, 116), material="wood", spread=0.15),
        PaletteEntry("walnut", (98, 66, 44), material="wood", spread=0.20),
        PaletteEntry("ash_grey", (160, 152, 140), material="wood", spread=0.12),
        PaletteEntry("marble_white", (232, 230, 226), material="stone", spread=0.06),
        PaletteEntry("slate", (84, 90, 96), material="stone", spread=0.10),
    ],
)
