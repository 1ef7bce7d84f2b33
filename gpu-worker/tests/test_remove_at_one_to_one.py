"""Removing the floor lamp from a rendered room, judged at 1:1 on the crops where it hides
structure (wall corner, baseboard, planks) against the room rendered without it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from devtools.scenes import render_room
from engine.actions.remove import Remove
from engine.applier import Edit, apply_edits, apply_edits_with
from engine.edits.remove import PatchInpainter
from engine.segmenter import instances_from_union
from scripts.remove_crops import crop_regions, measure, seam_line

WIDTH, HEIGHT = 1024, 768


@pytest.fixture(scope="module")
def lamp_removed():
    rgb, masks = render_room(WIDTH, HEIGHT, seed=0)
    truth, truth_masks = render_room(WIDTH, HEIGHT, seed=0, furniture=False)
    lamp = min(instances_from_union(masks["Furniture"], multi_instance=True), key=lambda i: i.area).mask
    ours = apply_edits(rgb, [Edit(Remove(), lamp)], None)  # the default fill
    old = apply_edits_with(rgb, [Edit(Remove(), lamp)], None, inpainter=PatchInpainter())
    hole = (ours != rgb).any(axis=2) | (old != rgb).any(axis=2) | lamp
    return rgb, truth, ours, old, crop_regions(hole, truth_masks)


def test_every_crop_is_found(lamp_removed):
    *_, regions = lamp_removed
    assert set(regions) == {"wall seam", "baseboard", "planks"}


def test_the_wall_seam_where_the_pole_was(lamp_removed):
    _, truth, ours, old, regions = lamp_removed
    de, lines = measure(ours, truth, regions["wall seam"])
    old_de, old_lines = measure(old, truth, regions["wall seam"])
    assert de < LIMITS["wall seam"] and de < old_de, (de, old_de)
    assert lines > 0.4, (lines, old_lines)  # no dashed line of blocks, no dark rim line along the pole


def test_no_line_down_where_the_pole_was(lamp_removed):
    """The pole's anti-aliased rim lies inside its mask; a share of it kept by the matte showed as
    a dark line down the wall and across the baseboard (a column 5.4 and 7.8 L* apart from its
    neighbours at this size; the scene's own texture 0.3 and 0.8)."""
    _, truth, ours, _, regions = lamp_removed
    for name in ("wall seam", "baseboard"):
        line, own = seam_line(ours, regions[name]), seam_line(truth, regions[name])
        assert line < 1.2, (name, line, own)


def test_the_baseboard_notch(lamp_removed):
    _, truth, ours, _, regions = lamp_removed
    de, lines = measure(ours, truth, regions["baseboard"])
    assert de < LIMITS["baseboard"] and lines > 0.95, (de, lines)


def test_no_light_bump_above_the_baseboard_where_the_pole_was(lamp_removed):
    """The lamp lights the wall on one side of its pole. Crossings of the hole that matched colours
    alone slid along the baseboard's blurred top edge until that light was matched, and filled the
    wall's last rows above the edge with the baseboard's light: a bump (the rows just above the
    edge 2.0 levels lighter, against the wall further up, than in the truth at this size; 6.2 at
    1600 x 1200). Matched by their profiles across the crossing, they run along the edge."""
    rgb, truth, ours, _, regions = lamp_removed
    top = int(np.flatnonzero(regions["baseboard"].any(axis=1)).min())
    cols = np.flatnonzero(regions["baseboard"][top + 2])

    def step(img: np.ndarray) -> float:  # the 4 rows above the edge against rows 6 to 12 above it
        near, above = img[top - 4:top][:, cols], img[top - 12:top - 6][:, cols]
        return float(near.astype(float).mean() - above.astype(float).mean())

    assert abs(step(ours) - step(truth)) < 1.0, (step(ours), step(truth))


def test_the_plank_lines(lamp_removed):
    _, truth, ours, old, regions = lamp_removed
    de, lines = measure(ours, truth, regions["planks"])
    old_de, old_lines = measure(old, truth, regions["planks"])
    assert de < LIMITS["planks"] and de < old_de, (de, old_de)
    assert lines >= old_lines


# CIEDE2000 limits at this size, over what the structure fill gives (0.72, 0.97, 1.40; the exemplar
# fill alone 0.81, 0.89, 1.56, which the structure fill must also beat on the wall and the planks).
# The lamp lights the wall and baseboard around it by about 3 levels, which the truth (rendered
# without it) lacks: a fill that matches what surrounds it carries that, where the known pixels
# beside the pole are 1.45 and 1.68 from the truth.
LIMITS = {"wall seam": 0.85, "baseboard": 1.2, "planks": 1.62}


@pytest.fixture(scope="module")
def base_removed():
    """At 1200 x 900 the base seen from above is wide (its shortest crossing longer than
    ``wide_gap``): the photo, the truth, the default fill, the exemplar fill and the planks'
    hidden pixels."""
    rgb, masks = render_room(1200, 900, seed=0)
    truth, truth_masks = render_room(1200, 900, seed=0, furniture=False)
    lamp = min(instances_from_union(masks["Furniture"], multi_instance=True), key=lambda i: i.area).mask
    ours = apply_edits(rgb, [Edit(Remove(), lamp)], None)
    old = apply_edits_with(rgb, [Edit(Remove(), lamp)], None, inpainter=PatchInpainter())
    hole = (ours != rgb).any(axis=2) | (old != rgb).any(axis=2) | lamp
    return truth, ours, crop_regions(hole, truth_masks)["planks"]


def test_the_plank_joints_run_on_under_the_base(base_removed):
    """Crossed along the joints' grain, between its own ends, the joints continue where copied
    patches broke them (continuity 0.62, CIEDE2000 1.94 with patches there)."""
    truth, ours, region = base_removed
    de, lines = measure(ours, truth, region)
    assert de < 1.75 and lines > 0.72, (de, lines)


def test_no_light_scribbles_where_the_base_stood(base_removed):
    """A wide part's texture is mirrored across the nearer end of a long crossing, where a joint's
    light edge lands a fraction of a degree off its line: clipped at twice the surface's typical
    detail, 13 pixels of the fill came out lighter than all but 1% of the truth's detail (light
    scribbles tracing the base's outline); held to that typical detail, none does."""
    truth, ours, region = base_removed

    def detail(img: np.ndarray) -> np.ndarray:
        lightness = cv2.cvtColor(img, cv2.COLOR_RGB2Lab).astype(np.float32)[..., 0] * (100 / 255)
        return (lightness - cv2.GaussianBlur(lightness, (0, 0), 3.0))[region]

    highlight = np.percentile(detail(truth), 99)
    assert int((detail(ours) > highlight).sum()) <= 2
