"""Concepts the segmenter finds nothing for: passed over by the fit and the edit, their mask PNG
made once per size, every stored byte as if they had been worked through."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from devtools.scenes import render_room
from devtools.segmenter_like import segmenter_like
from engine.actions.recolor import Recolor
from engine.applier import apply_edits_with
from engine.callback import RecordingCallbackSender
from engine.edits.backend import NumpyBackend
from engine.edits.structure_fill import StructureInpainter
from engine.job import parse_job
from engine.edits.device.handover import DeviceFitter
from engine.pipeline import Pipeline, edits_for
from engine.plan_masks import HostFitter, fit_masks
from engine.png import blank_png, write_png
from engine.postprocess import decode_image, encode_mask, encode_png, encode_thumbnail
from engine.rules import Plan, PlannedRule
from engine.segmenter import ConceptMasks, FileMaskSegmenter, Outline, instances_from_union
from engine.stages import plan_job
from engine.storage import LocalStorage
from presets.interior import PRESET as INTERIOR
from presets.seller import PRESET as SELLER
from tests.conftest import jpeg_bytes, make_job, make_settings, write_masks


def segmentation(masks: dict[str, np.ndarray], multi: set[str]) -> dict[str, ConceptMasks]:
    return {n: ConceptMasks(n, m, instances_from_union(m, n in multi)) for n, m in masks.items()}


def assert_same_masks(got: dict[str, ConceptMasks], want: dict[str, ConceptMasks]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert np.array_equal(got[name].union, want[name].union), name
        assert [(i.id, i.bbox, i.score) for i in got[name].instances] == \
               [(i.id, i.bbox, i.score) for i in want[name].instances], name
        for a, b in zip(got[name].instances, want[name].instances):
            assert np.array_equal(a.crop, b.crop), name


@pytest.fixture(scope="module")
def room():
    return render_room(720, 540, seed=3)


class RecordingFitter(HostFitter):
    def __init__(self, rgb: np.ndarray) -> None:
        super().__init__(rgb)
        self.fitted: list[str] = []

    def fit(self, found: ConceptMasks, grow_only: bool, surface: bool = True) -> ConceptMasks:
        self.fitted.append(found.concept)
        return super().fit(found, grow_only, surface)


@pytest.mark.parametrize("grow_only", [False, True], ids=["fit", "grow_only"])
def test_an_empty_mask_fits_to_itself_on_the_host_and_the_device(room, grow_only):
    """Why passing empty masks over changes nothing: fitting one gives no pixel and no instance."""
    rgb, _ = room
    nothing = ConceptMasks("Ceiling", np.zeros(rgb.shape[:2], bool))
    for fitter in (HostFitter(rgb), DeviceFitter(rgb, torch.device("cpu"))):
        fitted = fitter.fit(nothing, grow_only)
        assert not fitted.holds_pixels() and fitted.instances == [], type(fitter).__name__


def test_empty_masks_are_passed_over_and_the_rest_fitted(room):
    rgb, masks = room
    coarse = segmenter_like(masks, seed=7)
    nothing = np.zeros(rgb.shape[:2], bool)
    plan = Plan(INTERIOR, (PlannedRule("Wall", Recolor((90, 120, 90)), None),
                           PlannedRule("Ceiling", Recolor((240, 240, 235)), None),
                           PlannedRule("Furniture", Recolor((200, 60, 40)), None)), ("Window", "Frame_Molding"))
    found = segmentation({"Wall": coarse["Wall"], "Ceiling": nothing, "Furniture": coarse["Furniture"],
                          "Window": nothing, "Frame_Molding": coarse["Frame_Molding"]}, {"Furniture"})
    fitter = RecordingFitter(rgb)

    ready = fit_masks(rgb, found, plan, fitter)

    assert sorted(fitter.fitted) == ["Frame_Molding", "Furniture", "Wall"]
    assert not ready["Ceiling"].holds_pixels() and not ready["Window"].holds_pixels()
    assert_same_masks({"Wall": ready["Wall"], "Furniture": ready["Furniture"]},
                      {"Wall": HostFitter(rgb).fit(found["Wall"], False),
                       "Furniture": HostFitter(rgb).fit(found["Furniture"], False, surface=False)})
    assert np.array_equal(ready["Frame_Molding"].union, HostFitter(rgb).fit(found["Frame_Molding"], True).union)


def test_a_derived_concept_is_built_even_when_its_sources_are_empty():
    rgb = np.random.default_rng(1).integers(0, 255, (400, 400, 3), np.uint8)
    nothing = np.zeros(rgb.shape[:2], bool)
    plan = Plan(SELLER, (PlannedRule("Background", Recolor((250, 250, 250)), None),), ("Logo",))
    found = segmentation({n: nothing for n in ("Product", "Prop", "Reflection", "Logo")}, set())
    fitter = RecordingFitter(rgb)

    ready = fit_masks(rgb, found, plan, fitter)

    assert fitter.fitted == []
    assert ready["Background"].union.all()
    assert not ready["Logo"].holds_pixels()


def test_the_blank_mask_png_is_the_encoded_empty_mask():
    first = blank_png((640, 480))
    assert first == write_png(np.zeros((480, 640), np.uint8))
    assert encode_mask(np.zeros((480, 640), bool)) is first
    assert blank_png((640, 480)) is first  # made once per size
    with Image.open(io.BytesIO(first)) as img:
        assert img.size == (640, 480) and img.mode == "L" and not np.asarray(img).any()


@pytest.mark.parametrize("found", [(), ("Wall",)], ids=["nothing_found", "wall_only"])
async def test_stored_objects_match_the_edit_and_encoders_run_in_full(tmp_path, found):
    """Every object an item stores, byte for byte, is what running the edit and encoding every
    mask gives: with nothing found the result is the photo itself."""
    rgb, masks = render_room(640, 480, seed=5)
    settings = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"))
    storage = LocalStorage(settings.storage_local_dir)
    key = "inputs/u_abc/job_123/0.jpg"
    photo = jpeg_bytes(rgb)
    storage._put(key, photo, "image/jpeg", {})
    (tmp_path / "masks" / "inputs/u_abc/job_123/0").mkdir(parents=True)
    write_masks(tmp_path / "masks", key, {n: masks[n] for n in found})
    pipeline = Pipeline(settings, storage, FileMaskSegmenter(tmp_path / "masks"), RecordingCallbackSender())

    result = (await pipeline.run_job(make_job())).to_dict()

    assert result["status"] == "completed"
    image = decode_image(photo, max_pixels=settings.max_input_pixels, max_side=settings.max_output_side)
    plan = plan_job(parse_job(make_job())).plan
    segmented = segmentation({n: masks[n] if n in found else np.zeros(rgb.shape[:2], bool)
                              for n in ("Wall", "Floor", "Frame_Molding", "Window")}, set())
    ready = fit_masks(image.rgb, segmented, plan)
    for name, concept in ready.items():
        stored = storage.path_of(f"masks/u_abc/job_123/0_{name}.png").read_bytes()
        assert stored == encode_mask(concept.union, Outline.FITTED), name
    edited = apply_edits_with(image.rgb, *edits_for(plan, ready), backend=NumpyBackend(),
                              inpainter=StructureInpainter())
    assert np.array_equal(edited, image.rgb) == (not found)
    stored = storage.path_of("outputs/u_abc/job_123/0_result.png").read_bytes()
    assert stored == encode_png(edited, None, image.icc_profile, settings.png_compress_level)
    assert storage.path_of("previews/u_abc/job_123/0_thumb.jpg").read_bytes() == \
        encode_thumbnail(edited, settings.thumbnail_side)
