"""The mask fit in torch (engine/edits/device/maskfit.py) against the host's (engine/maskfit.py),
and the masks' hand-over from the segmenter through the fit to the torch editor
(engine/edits/device/handover.py). On the CPU here and on CUDA where present."""

from __future__ import annotations

from unittest import mock

import cv2
import numpy as np
import pytest
import torch

from devtools.product_scene import render_product
from devtools.scenes import render_room
from devtools.segmenter_like import SegmenterStyle, segmenter_like
from engine import maskfit as host
from engine.actions.recolor import Recolor
from engine.editor import NumpyEditor, TorchEditor
from engine.edits.device import maskfit as device_fit
from engine.edits.device.handover import follow
from engine.edits.remove import PatchInpainter
from engine.pipeline import edits_for
from engine.plan_masks import _follow, fit_masks
from engine.rules import Plan, PlannedRule
from engine.segmenter import ConceptMasks, Instance, instances_from_union
from presets import PRESETS
from scripts.mask_quality import ROOM_PROTECT
from tests.test_maskfit import ceiling_shading_into_its_corner

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
INTERIOR = PRESETS["interior"]


def _surface(name: str) -> bool:
    """Whether the fit follows objects into this concept's mask (``plan_masks.fit_masks``)."""
    concept = INTERIOR.concepts.get(name) or PRESETS["seller"].concepts.get(name)
    return concept is not None and not concept.multi_instance


@pytest.fixture(scope="module")
def scenes():
    """(photo, exact masks, segmenter-like masks, the host's fit of each non-empty one)."""
    rooms = []
    for seed in (0, 7):
        rgb, exact = render_room(480, 360, seed=seed)
        rooms.append((rgb, exact, segmenter_like(exact, seed=21 + seed)))
    rgb, exact = render_product(360, 360, seed=1)
    rooms.append((rgb, exact, segmenter_like(exact, seed=21)))
    return [(rgb, exact, coarse, {n: host.fit_mask(rgb, m, follow=_surface(n)) for n, m in coarse.items() if m.any()})
            for rgb, exact, coarse in rooms]


def _host_clean(mask: torch.Tensor, min_area: float, block: int) -> torch.Tensor:
    return torch.from_numpy(host.clean_specks(mask.cpu().numpy(), min_area)).to(mask.device)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_fit_decides_the_band_as_the_host_fit(scenes, device):
    """With the host's speck cleaning, the port gives the host's pixels but for float rounding
    (a few pixels, where a colour distance ties its threshold)."""
    with mock.patch.object(device_fit, "clean_specks", _host_clean):
        for rgb, _, coarse, fitted in scenes:
            photo = torch.from_numpy(rgb).to(device)
            for name, ours in fitted.items():
                theirs = device_fit.fit_mask(photo, torch.from_numpy(coarse[name]).to(device),
                                             follow=_surface(name)).cpu().numpy()
                assert (ours ^ theirs).sum() <= max(5, 0.003 * (ours ^ coarse[name]).sum()), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "band", "block"), [((301, 407), 29, 3), ((300, 400), 17, 2), ((121, 90), 12, 4)])
def test_sure_sides_on_blocks_are_the_hosts(device, shape, band, block):
    """The host's area resize (sides no multiple of the block too) and distance threshold."""
    h, w = shape
    field = cv2.resize(np.random.default_rng(band).standard_normal((6, 8)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    mask = field > 0.1
    ours = host._sure_sides(mask, band, block)
    theirs = device_fit._sure_sides(torch.from_numpy(mask).to(device), band, block)
    for a, b in zip(ours, theirs):
        assert a.any() and np.array_equal(a, b.cpu().numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_torch_fit_decides_the_band_as_the_host_fit_on_blocks(device):
    """A prediction cell of 8 px (a 2304 px photo's): sure sides on 2 px blocks, edges measured
    and their sides' colours sampled on 2 px blocks. With the host's speck cleaning the port
    gives the host's pixels but for float rounding."""
    rgb, exact = render_room(640, 480, seed=3)
    coarse = segmenter_like(exact, seed=24, style=SegmenterStyle(grid=80))
    photo = torch.from_numpy(rgb).to(device)
    with mock.patch.object(device_fit, "clean_specks", _host_clean):
        for name in ("Wall", "Floor", "Door"):
            ours = host.fit_mask(rgb, coarse[name], cell=8.0)
            theirs = device_fit.fit_mask(photo, torch.from_numpy(coarse[name]).to(device), cell=8.0).cpu().numpy()
            changed = int((ours ^ coarse[name]).sum())
            assert changed > 500 and (ours ^ theirs).sum() <= max(5, 0.003 * changed), name


def _noisy(shape: tuple[int, int], colour: tuple[int, int, int], seed: int) -> np.ndarray:
    rgb = np.empty((*shape, 3), np.float64)
    rgb[:] = colour
    return rgb + np.random.default_rng(seed).normal(0, 1.5, rgb.shape)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_fit_joins_pockets_and_keeps_the_lone_inside_reach_as_the_host(device):
    """A wall's coarse outline short of its edge (a white molding; a faint one before a dark
    door), a wall brightening towards a pole it surrounds (no sure outside near), a strip too
    narrow for colour statistics of its own with its edge rows left out, a thin pole the coarse
    mask holds: the port changes the host's pixels and gives the same ones, but where the
    brightening crosses a colour threshold in every row (a few pixels in a hundred: the port's
    Lab is the host's within hundredths of a unit)."""
    thin = _noisy((720, 960), (200, 196, 186), 0)
    thin[:60] = _noisy((60, 960), (244, 242, 236), 1)
    faint = _noisy((720, 960), (200, 196, 186), 0)
    faint[:60] = _noisy((60, 960), (206, 202, 193), 1)
    faint[:55] = _noisy((55, 960), (90, 70, 55), 2)
    short = np.zeros((720, 960), bool)
    short[63:] = True
    glow = _noisy((720, 960), (150, 145, 138), 0)
    x = np.arange(960, dtype=np.float64)
    glow += (np.clip(1 - np.minimum(np.abs(x - 470), np.abs(x - 485)) / 10, 0, 1) * 35)[None, :, None]
    glow[:, 474:481] = (70, 68, 66)
    gap = np.ones((720, 960), bool)
    gap[:, 470:485] = False
    strip = _noisy((720, 960), (60, 60, 62), 0)
    strip[300:314] = _noisy((14, 960), (200, 150, 100), 1)
    rims = np.random.default_rng(2).integers(20, 110, (6, 960, 1))
    strip[294:300], strip[314:320] = rims, rims[::-1]
    narrow = np.zeros((720, 960), bool)
    narrow[301:313] = True
    pole = _noisy((720, 960), (190, 185, 175), 0)
    pole[:, 480:486] = np.array([150, 140, 125, 100, 75, 55], np.float64)[None, :, None]
    held = np.zeros((720, 960), bool)
    held[:, 479:487] = True
    for rgb, coarse in ((thin, short), (faint, short), (glow, gap), (strip, narrow), (pole, held)):
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        ours = host.fit_mask(rgb, coarse)
        theirs = device_fit.fit_mask(torch.from_numpy(rgb).to(device), torch.from_numpy(coarse).to(device))
        changed = int((ours ^ coarse).sum())
        assert changed > 100 and (ours ^ theirs.cpu().numpy()).sum() <= max(5, 0.03 * changed)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_fit_keeps_a_shaded_ceilings_outline_as_the_host(device):
    """A ceiling shading into its corner with a molding of its corner colour (no step): where
    the flat pixels just either side look alike, the port keeps the coarse outline as the host
    does (both took one pixel in two off the ceiling along the border)."""
    rgb, ceiling = ceiling_shading_into_its_corner()
    ours = host.fit_mask(rgb, ceiling)
    theirs = device_fit.fit_mask(torch.from_numpy(rgb).to(device), torch.from_numpy(ceiling).to(device)).cpu().numpy()
    assert (ceiling & ~theirs)[:, 200:760].sum() <= 0.15 * 560 and not (theirs & ~ceiling).any()
    assert (ours ^ theirs).sum() <= 5


@pytest.mark.parametrize("device", DEVICES)
def test_torch_fit_decides_few_pixels_otherwise_on_segmenter_like_masks(scenes, device):
    """With its own speck labelling (blocks of half a cell): on every scene, the pixels decided
    otherwise are a small share of those the host fit changes (bench/results/maskfit_device_parity_*)."""
    for rgb, _, coarse, fitted in scenes:
        photo = torch.from_numpy(rgb).to(device)
        changed = otherwise = 0
        for name, ours in fitted.items():
            theirs = device_fit.fit_mask(photo, torch.from_numpy(coarse[name]).to(device),
                                         follow=_surface(name)).cpu().numpy()
            changed += int((ours ^ coarse[name]).sum())
            otherwise += int((ours ^ theirs).sum())
        assert changed > 500 and otherwise <= 0.04 * changed


@pytest.mark.parametrize("device", DEVICES)
def test_speck_labelling_on_blocks_drops_only_specks_and_keeps_the_host_definition_apart(device):
    mask = np.zeros((300, 400), bool)
    mask[40:260, 40:300] = True
    mask[100:104, 100:104] = False  # a hole of 16 px, far from anything
    mask[150:190, 150:190] = False  # a hole of 1600 px: an object in the wall
    mask[10:13, 350:353] = True  # an island of 9 px, far from anything
    mask[120:123, 302:305] = True  # an island of 9 px two pixels off the mask's edge
    cleaned = device_fit.clean_specks(torch.from_numpy(mask).to(device), 50, 4).cpu().numpy()
    assert cleaned[100:104, 100:104].all() and not cleaned[10:13, 350:353].any()
    assert not cleaned[150:190, 150:190].any()
    assert cleaned[120:123, 302:305].all()  # shares a block group with the mask: left to the band
    expected = host.clean_specks(mask, 50)
    expected[120:123, 302:305] = True
    assert np.array_equal(cleaned, expected)


@pytest.mark.parametrize("seed", range(8))
def test_speck_labelling_on_blocks_drops_no_pixel_the_host_keeps(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((90, 120)) < rng.uniform(0.2, 0.8)
    for min_area, block in ((4, 2), (20, 3), (60, 5)):
        ours = host.clean_specks(mask, min_area)
        theirs = device_fit.clean_specks(torch.from_numpy(mask), min_area, block).numpy()
        assert not (mask & ~theirs & ours).any()  # every pixel dropped is a speck's


@pytest.mark.parametrize("device", DEVICES)
def test_torch_protect_fit_only_grows(scenes, device):
    rgb, _, coarse, _ = scenes[0]
    photo = torch.from_numpy(rgb).to(device)
    for name in ("Frame_Molding", "Door", "Window"):
        given = torch.from_numpy(coarse[name]).to(device)
        grown = device_fit.fit_protect(photo, given)
        assert bool((grown | given).eq(grown).all()) and int(grown.sum()) > int(given.sum())


@pytest.mark.parametrize("device", DEVICES)
def test_instances_follow_the_fitted_union_on_the_device_as_on_the_host(scenes, device):
    rgb, _, coarse, fitted = scenes[1]
    union = fitted["Furniture"]
    on_device = torch.from_numpy(union).to(device)
    for inst in instances_from_union(coarse["Furniture"], True):
        ours, theirs = _follow(inst, union, 9), follow(inst, on_device, 9)
        assert ours.bbox == theirs.bbox and np.array_equal(ours.crop, theirs.crop)
    empty = Instance.from_crop(3, 0.5, (0, 0, 4, 4), np.ones((4, 4), bool), union.shape)
    assert follow(empty, torch.zeros_like(on_device), 2).area == 0


def _plan() -> Plan:
    return Plan(INTERIOR, (PlannedRule("Wall", Recolor(INTERIOR.palette["navy"].rgb), None),), ROOM_PROTECT)


def _found(coarse: dict[str, np.ndarray], plan: Plan, device: str | None) -> dict[str, ConceptMasks]:
    """As a segmenter hands them over: on ``device`` without a host copy, or on the host."""
    out = {}
    for concept in plan.concepts_to_prompt():
        mask = coarse[concept.name]
        instances = instances_from_union(mask, concept.multi_instance)
        if device is None:
            out[concept.name] = ConceptMasks(concept.name, mask, instances)
        else:
            out[concept.name] = ConceptMasks(concept.name, None, instances, torch.from_numpy(mask).to(device))
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_masks_stay_on_the_device_from_segmenter_to_editor_and_protect_holds(scenes, device):
    rgb, _, coarse, _ = scenes[0]
    plan = _plan()
    editor = TorchEditor(device, PatchInpainter(), 1024)
    ready = editor.fit_masks(rgb, _found(coarse, plan, device), plan)
    for name, masks in ready.items():  # derived ones (Grout) made on the host, then sent up
        assert masks.on_device is not None and masks.on_device.device.type == device
        if INTERIOR.concepts[name].derived is None:
            assert masks._union is None  # nothing brought to the host for the edits
    edits, protect = edits_for(plan, ready)
    assert isinstance(edits[0].mask, torch.Tensor) and isinstance(protect, torch.Tensor)
    out = editor.apply(rgb, edits, protect)
    given = np.zeros(rgb.shape[:2], bool)
    for name in plan.protect:
        if INTERIOR.concepts[name].derived is None:  # the promise: what the segmenter marked
            given |= coarse[name]
    assert (out != rgb).any() and np.array_equal(out[given], rgb[given])
    # the host copy, when a stage writes masks, is the device union's bytes
    assert np.array_equal(ready["Wall"].union, ready["Wall"].on_device.cpu().numpy())
    host_ready = NumpyEditor(PatchInpainter(), 1).fit_masks(rgb, _found(coarse, plan, None), plan)
    for name in ready:
        assert host_ready[name].on_device is None
        assert (host_ready[name].union ^ ready[name].union).mean() < 0.002, name
        assert [i.id for i in host_ready[name].instances] == [i.id for i in ready[name].instances]


def test_host_fit_is_the_editor_choice_for_numpy(scenes):
    rgb, _, coarse, _ = scenes[2]
    plan = Plan(PRESETS["seller"], (PlannedRule("Background", Recolor((250, 250, 250)), None),), ())
    found = {c.name: ConceptMasks(c.name, coarse.get(c.name, np.zeros(rgb.shape[:2], bool)))
             for c in plan.concepts_to_prompt()}
    ours = NumpyEditor(PatchInpainter(), 1).fit_masks(rgb, found, plan)
    theirs = fit_masks(rgb, found, plan)
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[n].union, theirs[n].union) for n in ours)


def test_concept_masks_need_a_union_somewhere():
    with pytest.raises(ValueError):
        ConceptMasks("Wall", None)
    masks = ConceptMasks("Wall", None, None, torch.ones((2, 3), dtype=torch.bool))
    assert masks.shape == (2, 3) and masks.instances == [] and masks.union.all()
