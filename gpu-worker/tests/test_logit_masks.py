"""devtools/logit_masks.py: seeded, outlines displaced within the stated bound, smooth at the
prediction cell's scale at 12 MP (bilinear upsampling, not blocks or pixel noise), holes,
islands and spill where they are meant to be, blind concepts empty."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from devtools.logit_masks import DEFAULT_LOGIT_STYLE, GRID, logit_masks

CLEAN = replace(DEFAULT_LOGIT_STYLE, holes=0, islands=0, spill_pairs=())  # outline errors only


def _rect(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def _scene(shape: tuple[int, int] = (900, 1200)) -> dict[str, np.ndarray]:
    h, w = shape
    door = _rect(shape, h // 3, h, w // 2, w // 2 + w // 8)
    frame = _rect(shape, h // 3 - 24, h, w // 2 - 24, w // 2 + w // 8 + 24) & ~door
    wall = _rect(shape, 0, h, 0, w) & ~door & ~frame
    return {"Wall": wall, "Frame_Molding": frame, "Door": door, "Background": np.ones(shape, bool)}


def _top_edge(mask: np.ndarray, x0: int, x1: int) -> np.ndarray:
    """Per column in [x0, x1): the first row the mask holds."""
    return np.argmax(mask[:, x0:x1], axis=0).astype(float)


def test_seeded_and_each_concept_on_its_own_stream():
    masks = _scene()
    a, b, c = logit_masks(masks, seed=3), logit_masks(masks, seed=3), logit_masks(masks, seed=4)
    assert all(np.array_equal(a[n], b[n]) for n in masks)
    assert not np.array_equal(a["Wall"], c["Wall"]) and not np.array_equal(a["Door"], c["Door"])
    alone = logit_masks({"Door": masks["Door"]}, seed=3)
    assert np.array_equal(alone["Door"], a["Door"])
    assert not np.array_equal(a["Door"], masks["Door"])


def test_blind_concept_is_empty_and_the_others_are_found():
    masks = _scene()
    out = logit_masks(masks, seed=1)
    assert not out["Background"].any()
    for name in ("Wall", "Door"):
        iou = (out[name] & masks[name]).sum() / (out[name] | masks[name]).sum()
        assert 0.85 < iou < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outline_displaced_within_the_stated_bound(seed):
    shape = (900, 1200)
    cell_h, cell_w = shape[0] / GRID, shape[1] / GRID
    y0, y1, x0, x1 = 200, 700, 300, 900
    truth = _rect(shape, y0, y1, x0, x1)
    out = logit_masks({"Box": truth}, seed=seed, style=CLEAN)["Box"]
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    # distance of every wrong pixel to the true outline, in cells of the square-resized photo
    to_outline = np.minimum(np.minimum(abs(yy - y0), abs(yy - y1)) / cell_h,
                            np.minimum(abs(xx - x0), abs(xx - x1)) / cell_w)
    wrong = out ^ truth
    bound = CLEAN.outline_bound_cells + 0.5  # + the cell averaging and the upsampling
    assert wrong.any() and to_outline[wrong].max() <= bound
    top = _top_edge(out, x0 + 60, x1 - 60)
    shift = np.abs(top - y0) / cell_h
    assert shift.mean() > 0.15  # displaced, not the exact outline
    assert top.max() - top.min() > 0.3 * cell_h  # and not by one constant: it wanders


def test_outline_is_smooth_at_the_cell_scale_at_12_mp():
    shape = (3000, 4000)  # a cell is 10.4 x 13.9 px
    cell_h = shape[0] / GRID
    truth = _rect(shape, 900, 2100, 1000, 3000)
    out = logit_masks({"Box": truth}, seed=5, style=CLEAN)["Box"]
    top = _top_edge(out, 1200, 2800)
    steps = np.abs(np.diff(top))
    # bilinear logits: the outline bends gently; blocks would step by a cell, pixel noise by anything
    assert steps.max() <= 2
    assert top.max() - top.min() > 0.3 * cell_h
    edge = out & ~cv2.erode(out.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert cv2.connectedComponents(edge.astype(np.uint8))[0] - 1 == 1  # one closed outline, no specks


def test_default_style_makes_holes_inside_and_islands_outside():
    shape = (900, 1200)
    truth = _rect(shape, 150, 750, 200, 1000)
    out = logit_masks({"Box": truth}, seed=7)["Box"]
    n, labels = cv2.connectedComponents((~out).astype(np.uint8), connectivity=4)
    outer = labels[0, 0]
    holes = [k for k in range(1, n) if k != outer]
    cell_area = (shape[0] / GRID) * (shape[1] / GRID)
    # a few blotches a cell or more across, not specks: at most the style's count of each
    assert 1 <= len(holes) <= DEFAULT_LOGIT_STYLE.holes
    assert all(truth[labels == k].all() and 0.5 * cell_area < (labels == k).sum() < 30 * cell_area for k in holes)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(out.astype(np.uint8), connectivity=8)
    main = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    islands = [k for k in range(1, n) if k != main]
    assert 1 <= len(islands) <= DEFAULT_LOGIT_STYLE.islands
    assert not any(truth[labels == k].any() for k in islands)
    assert all(0.5 * cell_area < stats[k, cv2.CC_STAT_AREA] < 30 * cell_area for k in islands)


def test_spill_runs_into_the_listed_neighbour_only_and_only_so_far():
    still = replace(DEFAULT_LOGIT_STYLE, holes=0, islands=0, bias_cells=0.0, warp_cells=0.0,
                    coarse_noise=(0.0, 16.0), fine_noise=(0.0, 1.5))
    masks = _scene()
    spilled = logit_masks(masks, seed=2, style=still)
    kept = logit_masks(masks, seed=2, style=replace(still, spill_pairs=()))
    frame, door = masks["Frame_Molding"], masks["Door"]
    assert (kept["Wall"] & frame).mean() < 0.1 * (spilled["Wall"] & frame).mean()
    assert (spilled["Wall"] & frame).sum() > 0.02 * frame.sum()
    assert not (spilled["Wall"] & door).any()  # the door is not a listed neighbour of the wall
    reach = cv2.distanceTransform((~masks["Wall"]).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    h, w = masks["Wall"].shape
    assert min(h, w) / GRID < reach[spilled["Wall"]].max() <= (still.spill_cells + 0.5) * max(h, w) / GRID
