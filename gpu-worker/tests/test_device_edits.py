"""The torch edit path (engine/edits/device/) against the numpy path: every scene, every action.

Same pixels within one level, protected pixels byte for byte on both; on the CPU here and on
CUDA where present. Also the editor's choice and its memory gate."""

from __future__ import annotations

import threading
from dataclasses import replace
import time

import numpy as np
import pytest
import torch

from devtools.product_scene import render_product
from devtools.scenes import render_room
from engine.actions import Tools
from engine.actions.recolor import Recolor
from engine.actions.remove import Remove
from engine.actions.tone import Tone, ToneParams
from engine.applier import Edit, apply_edits_with
from engine.editor import MemoryBudget, NumpyEditor, TorchEditor, choose_editor
from engine.edits.backend import NumpyBackend
from engine.edits.device.editor import apply_on_device
from engine.edits.device.fill import device_fill
from engine.edits.device.registry import DeviceTools
from engine.edits.remove import PatchInpainter
from presets import PRESETS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PALETTE = PRESETS["interior"].palette
ACTIONS = {
    "recolor": Recolor((163, 176, 148)),
    "recolor-wood": Recolor(PALETTE["walnut"].rgb, PALETTE["walnut"].material, PALETTE["walnut"].spread),
    "recolor-stone": Recolor((150, 150, 145), "stone", 0.15),
    "tone": Tone(ToneParams(brightness=0.4, contrast=0.1, saturation=-0.2, temperature=0.3)),
    "remove": Remove(),
}
SCENES = {
    "room": lambda: render_room(480, 360, seed=3),
    "room-large": lambda: render_room(1120, 840, seed=4),  # soft-edge band 2: filters at full size
    "product": lambda: render_product(400, 400, seed=1),
}
TARGETS = {"room": ("Wall", "Floor", "Furniture"), "room-large": ("Floor", "Furniture"), "product": None}


def device_tools() -> DeviceTools:
    return DeviceTools(device_fill(PatchInpainter()), Tools(NumpyBackend(), PatchInpainter()))


def _cases():
    for scene in TARGETS:
        for action in ACTIONS:
            if scene != "room-large" or action in ("recolor-wood", "remove"):
                yield scene, action


@pytest.fixture(scope="module")
def scenes():
    return {name: make() for name, make in SCENES.items()}


def _edit_and_protect(scene: str, action: str, rendered):
    rgb, masks = rendered[scene]
    names = TARGETS[scene] or tuple(n for n in masks if n != "Background")
    target = {"remove": names[-1], "tone": names[0]}.get(action, names[min(1, len(names) - 1)])
    protect = np.zeros(rgb.shape[:2], bool)
    for name in ("Window", "Frame_Molding", "Glass_highlight"):
        if name in masks:
            protect |= masks[name]
    if not protect.any():  # a protect mask through the region, so parity is checked next to it
        protect[:, ::7] = True
    return rgb, Edit(ACTIONS[action], masks[target]), protect


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scene,action", list(_cases()))
def test_torch_path_matches_numpy_within_one_level(scenes, scene, action, device):
    rgb, edit, protect = _edit_and_protect(scene, action, scenes)
    ours = apply_edits_with(rgb, [edit], protect, inpainter=PatchInpainter())
    theirs = apply_on_device(rgb, [edit], protect, torch.device(device), device_tools())
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    changed = (ours != rgb).any(axis=2)
    assert changed.sum() > 500  # the edit did something to compare
    assert diff.max() <= 1, f"max abs diff {diff.max()} on {(diff > 1).any(axis=2).sum()} pixels"
    assert np.array_equal(theirs[protect], rgb[protect]) and np.array_equal(ours[protect], rgb[protect])


@pytest.mark.parametrize("device", DEVICES)
def test_edits_in_sequence_match_and_device_masks_are_taken_as_they_are(scenes, device):
    rgb, masks = scenes["room"]
    protect = masks["Window"] | masks["Frame_Molding"]
    edits = [Edit(ACTIONS["remove"], masks["Furniture"]), Edit(ACTIONS["recolor"], masks["Wall"]),
             Edit(ACTIONS["tone"], masks["Floor"])]
    ours = apply_edits_with(rgb, edits, protect, inpainter=PatchInpainter())
    on_device = [Edit(e.op, torch.from_numpy(e.mask).to(device)) for e in edits]
    theirs = apply_on_device(rgb, on_device, torch.from_numpy(protect).to(device), torch.device(device),
                             device_tools())
    assert np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max() <= 1
    assert np.array_equal(theirs[protect], rgb[protect])


def test_apply_backend_picks_the_editor_once():
    inpainter = PatchInpainter()
    assert isinstance(choose_editor("numpy", inpainter, 1, 1024), NumpyEditor)
    torch_editor = choose_editor("torch", inpainter, 1, 1024)
    assert isinstance(torch_editor, TorchEditor)
    assert torch_editor.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    auto = choose_editor("auto", inpainter, 1, 1024)
    assert isinstance(auto, TorchEditor if torch.cuda.is_available() else NumpyEditor)


def test_memory_budget_holds_photos_back_until_their_bytes_fit():
    budget = MemoryBudget(100)
    inside, peak, lock = [0], [0], threading.Lock()

    def photo(amount: int) -> None:
        with budget.reserve(amount):
            with lock:
                inside[0] += amount
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= amount

    threads = [threading.Thread(target=photo, args=(a,)) for a in (60, 60, 30, 500, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)
    assert peak[0] <= 500 and budget.used == 0
    # none of the 60s ever overlapped each other, and the oversized photo ran alone
    small = MemoryBudget(100)
    with small.reserve(60):
        got = threading.Event()
        waiter = threading.Thread(target=lambda: (small.reserve(60).__enter__(), got.set()))
        waiter.start()
        assert not got.wait(0.1)
    assert got.wait(2)


@pytest.mark.parametrize("action", ["recolor-wood", "tone", "remove"])
def test_a_few_pixels_at_the_corner_match_too(scenes, action):
    rgb, _ = scenes["room"]
    region = np.zeros(rgb.shape[:2], bool)
    region[-5:, -4:] = True  # windows smaller than every filter's border
    protect = np.zeros_like(region)
    protect[-2:, -1:] = True
    edit = Edit(ACTIONS[action], region)
    ours = apply_edits_with(rgb, [edit], protect, inpainter=PatchInpainter())
    theirs = apply_on_device(rgb, [edit], protect, torch.device("cpu"), device_tools())
    assert (ours != rgb).any()
    assert np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max() <= 1
    assert np.array_equal(theirs[protect], rgb[protect])


@pytest.mark.parametrize("device", DEVICES)
def test_a_thin_pole_beside_the_wall_keeps_its_colour_on_both_paths(device):
    """The soft matte's share limit (a pixel outside the region weighs no more than its share of
    the surface's colour) decides the same on the torch path: the pole keeps its own colour."""
    from tests.test_applier_quality import _wall_with_a_pole

    rgb, wall = _wall_with_a_pole()  # 960 x 720: the soft edge's band (2 px) reaches the pole
    edit = Edit(Recolor(PALETTE["navy"].rgb), wall >= 0.5)
    ours = apply_edits_with(rgb, [edit], None, inpainter=PatchInpainter())
    theirs = apply_on_device(rgb, [edit], None, torch.device(device), device_tools())
    pole = wall == 0.0
    assert np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max() <= 1
    assert np.abs(theirs[pole].astype(np.int16) - rgb[pole].astype(np.int16)).max() <= 2


def test_edits_take_the_masks_a_segmenter_handed_over_on_its_device():
    from engine.pipeline import edits_for
    from engine.rules import Plan, PlannedRule
    from engine.segmenter import ConceptMasks

    wall = np.zeros((40, 60), bool)
    wall[:20] = True
    window = np.zeros_like(wall)
    window[5:10, 5:10] = True
    masks = {"Wall": ConceptMasks("Wall", wall, [], torch.from_numpy(wall)),
             "Window": ConceptMasks("Window", window, [], torch.from_numpy(window))}
    plan = Plan(PRESETS["interior"], (PlannedRule("Wall", ACTIONS["recolor"], None),), ("Window",))
    edits, protect = edits_for(plan, masks)
    assert edits[0].mask is masks["Wall"].on_device and protect is masks["Window"].on_device
    without = {n: ConceptMasks(n, m.union, []) for n, m in masks.items()}
    edits, protect = edits_for(plan, without)
    assert edits[0].mask is wall and protect is window


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sam3_hands_its_unions_over_on_the_gpu(tmp_path):
    from engine.sam3 import load_sam3_segmenter
    from engine.segmenter import SegmentRequest
    from engine.settings import Settings
    from tests.sam3_tiny import save_tiny_sam3

    settings = Settings(_env_file=None, sam3_model=str(save_tiny_sam3(tmp_path)), sam3_device="cuda")
    segmenter = load_sam3_segmenter(settings)
    editor = TorchEditor("cuda", PatchInpainter(), 1024)
    editor.attach(segmenter)
    rgb, _ = render_room(320, 240, seed=1)
    concepts = [c for c in PRESETS["interior"].concepts.values()][:2]
    found = segmenter.segment([SegmentRequest(rgb, "a")], [replace(c, threshold=0.0) for c in concepts])[0]
    for masks in found.values():
        assert masks.on_device is not None and masks.on_device.is_cuda
        assert np.array_equal(masks.on_device.cpu().numpy(), masks.union)


@pytest.mark.parametrize("name", ["tone", "remove"])
def test_an_action_without_a_device_version_runs_on_the_host(scenes, monkeypatch, name):
    from engine.edits.device import registry

    monkeypatch.delitem(registry.DEVICE_ACTIONS, name)
    rgb, edit, protect = _edit_and_protect("room", name, scenes)
    ours = apply_edits_with(rgb, [edit], protect, inpainter=PatchInpainter())
    theirs = apply_on_device(rgb, [edit], protect, torch.device("cpu"), device_tools())
    assert np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max() <= 1
    assert isinstance(registry.device_action_for(edit.op), registry.HostAction)
