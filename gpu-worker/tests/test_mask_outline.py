"""A mask's outline: only a coarse one is fitted. Masks this worker stores say they are fitted
(the PNG text chunk ``Mask-Outline``), so ``apply`` on them edits the pixels ``full`` edited;
masks drawn to the photo's pixels may say ``exact`` and are used as they are."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from devtools.scenes import render_room
from devtools.segmenter_like import segmenter_like
from engine.actions.recolor import Recolor
from engine.callback import RecordingCallbackSender
from engine.pipeline import Pipeline
from engine.plan_masks import fit_masks
from engine.png import write_png
from engine.rules import Plan, PlannedRule
from engine.segmenter import ConceptMasks, FileMaskSegmenter, Outline, SegmentRequest, instances_from_union
from engine.storage import LocalStorage
from engine.stored_masks import decode_mask, encode_mask
from presets.interior import PRESET as INTERIOR
from tests.conftest import jpeg_bytes, make_job, make_settings

W, H = 640, 480


@pytest.fixture(scope="module")
def room():
    return render_room(W, H, seed=0)


def text_of(png: bytes) -> dict:
    with Image.open(io.BytesIO(png)) as img:
        return dict(img.info)


@pytest.mark.parametrize("outline", [Outline.FITTED, Outline.EXACT])
@pytest.mark.parametrize("empty", [False, True], ids=["mask", "empty"])
def test_a_stored_mask_names_an_outline_that_follows_the_photo(outline, empty):
    mask = np.zeros((H, W), bool)
    if not empty:
        mask[100:300, 50:400] = True

    png = encode_mask(mask, outline)

    assert text_of(png)["Mask-Outline"] == outline.value
    got, got_outline = decode_mask(png, (W, H))
    assert np.array_equal(got, mask) and got_outline is outline


def test_a_mask_without_the_chunk_or_with_another_word_is_coarse():
    mask = np.zeros((H, W), bool)
    mask[10:20, 10:20] = True
    plain = encode_mask(mask)
    assert "Mask-Outline" not in text_of(plain)
    assert decode_mask(plain, (W, H))[1] is Outline.COARSE

    info = PngImagePlugin.PngInfo()
    info.add_text("Mask-Outline", "approximate")
    out = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(out, format="PNG", pnginfo=info)
    assert decode_mask(out.getvalue(), (W, H))[1] is Outline.COARSE


@pytest.mark.parametrize("keyword", ["", "k" * 80, "a\x00b"])
def test_write_png_refuses_a_text_png_cannot_hold(keyword):
    with pytest.raises(ValueError, match="text keyword"):
        write_png(np.zeros((4, 4), np.uint8), text=[(keyword, "fitted")])


def test_only_a_coarse_mask_is_fitted(room):
    rgb, exact = room
    plan = Plan(INTERIOR, (PlannedRule("Furniture", Recolor((200, 80, 60)), None),), ("Window",))

    def ready(outline: Outline) -> dict[str, ConceptMasks]:
        found = {n: ConceptMasks(n, exact[n], instances_from_union(exact[n], n == "Furniture"), outline=outline)
                 for n in ("Furniture", "Window")}
        return fit_masks(rgb, found, plan)

    coarse = ready(Outline.COARSE)
    # the fit moves these masks (thin parts, weak borders): passing them over is a difference
    assert not np.array_equal(coarse["Furniture"].union, exact["Furniture"])
    assert all(m.outline is Outline.FITTED for m in coarse.values())
    for outline in (Outline.FITTED, Outline.EXACT):
        kept = ready(outline)
        for name in ("Furniture", "Window"):
            assert np.array_equal(kept[name].union, exact[name]), (outline, name)
            assert kept[name].outline is outline


def test_the_file_segmenter_reads_the_outline_and_drops_it_when_it_scales(tmp_path, room):
    rgb, exact = room
    folder = tmp_path / "inputs/u_abc/job_123/0"
    folder.mkdir(parents=True)
    (folder / "Wall.png").write_bytes(encode_mask(exact["Wall"], Outline.EXACT))
    (folder / "Floor.png").write_bytes(encode_mask(exact["Floor"]))
    segmenter = FileMaskSegmenter(tmp_path)
    concepts = [INTERIOR.concepts["Wall"], INTERIOR.concepts["Floor"]]

    same = segmenter.segment([SegmentRequest(rgb, "inputs/u_abc/job_123/0.jpg")], concepts)[0]
    half = segmenter.segment([SegmentRequest(rgb[::2, ::2].copy(), "inputs/u_abc/job_123/0.jpg")], concepts)[0]

    assert same["Wall"].outline is Outline.EXACT and same["Floor"].outline is Outline.COARSE
    assert half["Wall"].outline is Outline.COARSE  # scaled: no longer on the photo's pixels


async def test_apply_on_the_masks_a_full_run_stored_edits_the_same_pixels(tmp_path, room):
    """``full`` fits the segmenter's masks, edits and stores them; ``apply`` with the same rules
    loads them and must give the same result, not fit them a second time."""
    rgb, exact = room
    coarse = segmenter_like(exact, seed=4)
    settings = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"))
    storage = LocalStorage(settings.storage_local_dir)
    storage._put("inputs/u_abc/job_123/0.jpg", jpeg_bytes(rgb), "image/jpeg", {})
    folder = tmp_path / "masks" / "inputs/u_abc/job_123/0"
    folder.mkdir(parents=True)
    for name in ("Wall", "Floor", "Frame_Molding", "Window"):
        (folder / f"{name}.png").write_bytes(encode_mask(coarse[name]))
    pipeline = Pipeline(settings, storage, FileMaskSegmenter(tmp_path / "masks"), RecordingCallbackSender())
    item = {"idx": 0, "input_key": "inputs/u_abc/job_123/0.jpg", "preview_key": "previews/u_abc/job_123/0_thumb.jpg"}

    full = await pipeline.run_job(make_job(items=[{**item, "output_key": "outputs/u_abc/job_123/0_full.png"}]))
    applied = await pipeline.run_job(make_job(stage="apply", items=[
        {**item, "output_key": "outputs/u_abc/job_123/0_apply.png"}]))

    assert full.to_dict()["status"] == applied.to_dict()["status"] == "completed"

    def pixels(key: str) -> np.ndarray:
        return np.asarray(Image.open(storage.path_of(key)).convert("RGB"))

    assert np.array_equal(pixels("outputs/u_abc/job_123/0_full.png"), pixels("outputs/u_abc/job_123/0_apply.png"))
    stored_wall = storage.path_of("masks/u_abc/job_123/0_Wall.png").read_bytes()
    wall, outline = decode_mask(stored_wall, (W, H))
    assert outline is Outline.FITTED
    # fitting the stored (fitted) wall again would move it: the check above is not vacuous
    plan = Plan(INTERIOR, (PlannedRule("Wall", Recolor((32, 64, 160)), None),), ())
    refit = fit_masks(rgb, {"Wall": ConceptMasks("Wall", wall)}, plan)["Wall"].union
    assert not np.array_equal(refit, wall)


def test_the_device_fit_passes_a_fitted_mask_over_too(room):
    import torch

    from engine.edits.device.handover import DeviceFitter

    rgb, exact = room
    plan = Plan(INTERIOR, (PlannedRule("Furniture", Recolor((200, 80, 60)), None),), ("Window",))
    found = {n: ConceptMasks(n, exact[n], instances_from_union(exact[n], n == "Furniture"), outline=Outline.FITTED)
             for n in ("Furniture", "Window")}
    fitter = DeviceFitter(rgb, torch.device("cpu"))

    ready = fitter.hand_over(fit_masks(rgb, found, plan, fitter))

    for name in ("Furniture", "Window"):
        assert ready[name].outline is Outline.FITTED
        assert torch.equal(ready[name].on_device, torch.from_numpy(exact[name]))
