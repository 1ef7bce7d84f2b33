"""Masks made ready for a plan: duplicates merged, derived concepts built, masks fitted."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from devtools.product_scene import render_product
from devtools.scenes import render_room
from devtools.segmenter_like import SegmenterStyle, segmenter_like, segmenter_like_instances
from engine.actions.recolor import Recolor
from engine.applier import Edit, apply_edits_with
from engine.dedupe import merge_duplicates
from engine.derive import lines_within
from engine.edits.backend import NumpyBackend
from engine.plan_masks import fit_masks
from engine.rules import Plan, PlannedRule
from engine.segmenter import ConceptMasks, Instance, bbox_of, instances_from_union
from presets.interior import PRESET as INTERIOR
from presets.seller import PRESET as SELLER


@pytest.fixture(scope="module")
def room():
    return render_room(720, 540, seed=12)


def as_segmentation(masks: dict[str, np.ndarray], multi: set[str]) -> dict[str, ConceptMasks]:
    return {n: ConceptMasks(n, m, instances_from_union(m, n in multi)) for n, m in masks.items()}


def test_duplicates_and_parts_of_one_object_are_listed_once(room):
    rgb, masks = room
    count, labels = cv2.connectedComponents(masks["Furniture"].astype(np.uint8))
    style = SegmenterStyle(duplicate_rate=1.0, nested_rate=1.0)
    found = segmenter_like_instances(masks, seed=2, multi={"Furniture"}, style=style)["Furniture"]
    assert len(found) >= 2 * (count - 1)
    instances = [Instance(i, 0.9 - 0.01 * i, bbox_of(m), m) for i, m in enumerate(found)]
    merged = merge_duplicates(instances)
    assert [m.id for m in merged] == list(range(count - 1))
    owners = sorted(int(np.bincount(labels[m.mask], minlength=count)[1:].argmax()) for m in merged)
    assert owners == list(range(count - 1)), "one instance per object"
    assert merged[0].score == pytest.approx(0.9)
    # distinct objects stay apart, even touching ones
    a, b = np.zeros((50, 80), bool), np.zeros((50, 80), bool)
    a[10:40, 5:40], b[10:40, 38:75] = True, True
    assert len(merge_duplicates([Instance(0, 0.9, bbox_of(a), a), Instance(1, 0.8, bbox_of(b), b)])) == 2


def test_grout_is_found_in_the_photo_within_the_tiles(room):
    rgb, masks = room
    coarse = segmenter_like(masks, seed=3)
    derived = lines_within(rgb, [coarse["Tile"]])
    truth = masks["Grout"]
    iou = lambda x: (x & truth).sum() / (x | truth).sum()  # noqa: E731
    assert iou(derived) >= 0.65 and iou(derived) > iou(coarse["Grout"]) + 0.2


def test_a_wall_recolor_keeps_the_tile_panels_outer_grout_line():
    """The panel's outer grout line (tile on one side, a wall of nearly its lightness on the
    other) is grout: the derived Grout holds it, so a wall recolor protecting Grout keeps it.
    Its pixels are partly tile (camera blur), and each pixel's own colour is noisy: judged as a
    blend of line and tile, averaged along the outline, 87% of it is held (70% judged pixel by
    pixel as the line's colour itself)."""
    rgb, masks = render_room(960, 720, seed=11)
    coarse = segmenter_like(masks, seed=32)
    plan = Plan(INTERIOR, (PlannedRule("Wall", Recolor((40, 50, 90)), None),), ("Grout",))
    ready = fit_masks(rgb, as_segmentation({n: coarse[n] for n in ("Wall", "Tile")}, set()), plan)
    tile = masks["Tile"].astype(np.uint8)
    outer = masks["Grout"] & (cv2.distanceTransform(tile, cv2.DIST_L2, 5) <= 3)
    wall_by_tile = masks["Wall"] & (cv2.distanceTransform(1 - tile, cv2.DIST_L2, 5) <= 6)
    grout = ready["Grout"].union
    assert (grout & outer).sum() >= 0.8 * outer.sum(), (grout & outer).sum() / outer.sum()
    assert (grout & wall_by_tile).sum() <= 0.02 * wall_by_tile.sum(), "the wall beside the panel stays wall"
    out = apply_edits_with(rgb, [Edit(plan.rules[0].op, ready["Wall"].union)], grout, backend=NumpyBackend())
    kept = (out[outer] == rgb[outer]).all(axis=-1)
    assert kept.mean() >= 0.8


def test_plan_prompts_sources_instead_of_derived_concepts():
    plan = Plan(SELLER, (PlannedRule("Background", Recolor((250, 250, 250)), None),), ("Logo",))
    assert [c.name for c in plan.concepts_to_prompt()] == ["Product", "Prop", "Reflection", "Logo"]
    assert [c.name for c in plan.concepts_to_find()] == ["Background", "Logo"]
    grout = Plan(INTERIOR, (PlannedRule("Wall", Recolor((1, 2, 3)), None),), ("Grout",))
    assert [c.name for c in grout.concepts_to_prompt()] == ["Wall", "Tile"]


def test_seller_background_is_recolored_when_the_background_prompt_finds_nothing():
    rgb, masks = render_product(400, 400, seed=4)
    plan = Plan(SELLER, (PlannedRule("Background", Recolor((250, 250, 250)), None),), ())
    prompted = {c.name for c in plan.concepts_to_prompt()}
    exact = {n: masks.get(n, np.zeros(rgb.shape[:2], bool)) for n in prompted | {"Background"}}
    coarse = segmenter_like(exact, seed=1)
    assert not coarse["Background"].any()  # the model finds no "background"
    found = as_segmentation({n: coarse[n] for n in prompted}, {"Product", "Prop", "Reflection"})
    ready = fit_masks(rgb, found, plan)
    assert set(ready) == {"Background"}
    background = ready["Background"].union
    truth = masks["Background"]
    assert (background & truth).sum() >= 0.97 * truth.sum()
    assert (background & masks["Product"]).sum() <= 0.01 * masks["Product"].sum()
    out = apply_edits_with(rgb, [Edit(plan.rules[0].op, background)], None, backend=NumpyBackend())
    core = cv2.erode(truth.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~masks["Shadow"]
    assert out[core].mean() > 240
    product_core = cv2.erode(masks["Product"].astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert np.array_equal(out[product_core], rgb[product_core])


def test_protect_masks_only_grow_and_instances_follow_the_fitted_mask(room):
    rgb, masks = room
    coarse = segmenter_like(masks, seed=5)
    plan = Plan(INTERIOR, (PlannedRule("Furniture", Recolor((200, 60, 40)), None),), ("Door", "Frame_Molding"))
    found = as_segmentation({n: coarse[n] for n in ("Furniture", "Door", "Frame_Molding")}, {"Furniture", "Door"})
    ready = fit_masks(rgb, found, plan)
    for name in ("Door", "Frame_Molding"):
        assert not (coarse[name] & ~ready[name].union).any(), "a protect mask never shrinks"
    union = ready["Furniture"].union
    assert [i.id for i in ready["Furniture"].instances] == [i.id for i in found["Furniture"].instances]
    for inst in ready["Furniture"].instances:
        assert not (inst.mask & ~union).any()
    covered = np.zeros_like(union)
    for inst in ready["Furniture"].instances:
        covered |= inst.mask
    assert np.array_equal(covered, union)
