"""Sam3Segmenter on CPU with a tiny random-weight checkpoint, loaded by the production loader.

The checkpoint (tests/sam3_tiny.py) has SAM3's architecture at toy sizes, so these tests check
the plumbing for real: shapes and dtypes, one vision pass per photo whatever the number of
prompts, text features cached across calls, masks that agree with each other, batching that
does not change results, mask refinement that follows image edges, and the error mapping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st
from hypothesis.extra.numpy import arrays

from engine.dedupe import merge_duplicates
from engine.errors import GpuOutOfMemory, SegmentationError, SegmentationUnavailable
from engine.sam3 import (
    Sam3Segmenter, _Kept, _OnDevice, load_sam3_segmenter,
)
from engine.mask_refine import box_mean, box_mean_running_sums, luma, mask_boxes, refine_masks
from engine.segmenter import Instance, SegmentRequest, bbox_of
from engine.settings import Settings
from presets import Concept
from tests.sam3_tiny import save_tiny_sam3

SIX = [
    Concept("Wall", "wall", 0.30, multi_instance=False),
    Concept("Floor", "floor", 0.30, multi_instance=False),
    Concept("Door", "door", 0.30, multi_instance=True),
    Concept("Window", "window", 0.30, multi_instance=True),
    Concept("Furniture", "furniture", 0.30, multi_instance=True),
    Concept("Grout", "tile grout lines", 0.30, multi_instance=False),
]


def sam3_settings(model: str | Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, sam3_model=str(model), sam3_device="cpu", **overrides)  # type: ignore[call-arg]


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A shaded two-tone 'room' with noise: a wall above a floor, a darker door on the left."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.where((yy < height * 0.6)[..., None], [205, 195, 175], [140, 100, 60]).astype(np.float32)
    door = (xx > width * 0.15) & (xx < width * 0.35) & (yy > height * 0.2) & (yy < height * 0.75)
    img[door] = [90, 70, 50]
    img *= (0.8 + 0.2 * xx / width)[..., None]
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sam3(tmp_path_factory.mktemp("sam3_tiny"))


@pytest.fixture(scope="session")
def segmenter(tiny_checkpoint: Path) -> Sam3Segmenter:
    return load_sam3_segmenter(sam3_settings(tiny_checkpoint))


class CallCounter:
    """Counts forward calls of a module and the batch size of each (its first tensor input)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        for value in [*args, *kwargs.values()]:
            if isinstance(value, (list, tuple)) and value:
                value = value[0]
            if isinstance(value, torch.Tensor):
                self.batches.append(int(value.shape[0]))
                return
        self.batches.append(-1)

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def counters(segmenter: Sam3Segmenter) -> Iterator[dict[str, CallCounter]]:
    model = segmenter.model
    found = {
        "vision": CallCounter(model.vision_encoder),
        "text": CallCounter(model.text_encoder),
        "prompts": CallCounter(model.detr_decoder),
    }
    yield found
    for counter in found.values():
        counter.remove()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def requests_of(*images: np.ndarray) -> list[SegmentRequest]:
    return [SegmentRequest(img, f"inputs/u/j/{i}.jpg") for i, img in enumerate(images)]


# -- loading -----------------------------------------------------------------------------------


def test_loader_puts_the_model_on_cpu_in_float32_eval_mode_and_logs_load_time(
    tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="worker.sam3"):
        seg = load_sam3_segmenter(sam3_settings(tiny_checkpoint))
    assert seg.device.type == "cpu"
    assert all(p.dtype == torch.float32 for p in seg.model.parameters())
    assert not seg.model.training
    loaded = [r for r in caplog.records if r.getMessage() == "sam3.loaded"]
    assert len(loaded) == 1
    assert loaded[0].load_s >= 0 and loaded[0].warmup_s > 0  # type: ignore[attr-defined]
    assert loaded[0].dtype == "float32" and loaded[0].device == "cpu"  # type: ignore[attr-defined]
    assert str(tiny_checkpoint) not in caplog.text


def test_missing_local_folder_is_unavailable_and_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(SegmentationUnavailable) as info:
        load_sam3_segmenter(sam3_settings(missing))
    message = info.value.message
    assert "SAM3_MODEL" in message and "python -m scripts.fetch_weights" in message
    assert str(tmp_path) not in message
    assert info.value.code == "SEGMENTATION_UNAVAILABLE"


def test_hub_id_not_in_cache_while_offline_is_unavailable_without_leaking_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    token = "hf_SECRET_token_must_not_leak"
    settings = sam3_settings("facebook/sam3", model_cache_dir=tmp_path / "models", hf_token=token)
    with pytest.raises(SegmentationUnavailable) as info:
        load_sam3_segmenter(settings)
    message = info.value.message
    assert "SAM3_MODEL" in message and "MODEL_CACHE_DIR" in message and "python -m scripts.fetch_weights" in message
    assert token not in message and str(tmp_path) not in message


def test_broken_checkpoint_folder_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "sam3", "vision_config": ')
    with pytest.raises(SegmentationUnavailable) as info:
        load_sam3_segmenter(sam3_settings(tmp_path))
    assert "SAM3_MODEL" in info.value.message and str(tmp_path) not in info.value.message


# -- results -----------------------------------------------------------------------------------


def test_shapes_and_dtypes_at_each_photos_own_size(segmenter: Sam3Segmenter) -> None:
    images = [photo(90, 130, seed=1), photo(120, 64, seed=2)]
    results = segmenter.segment(requests_of(*images), SIX)
    assert len(results) == 2
    for img, result in zip(images, results):
        assert list(result) == [c.name for c in SIX]
        for concept in SIX:
            masks = result[concept.name]
            assert masks.concept == concept.name
            assert masks.union.shape == img.shape[:2] and masks.union.dtype == np.bool_
            for inst in masks.instances:
                assert inst.mask.shape == img.shape[:2] and inst.mask.dtype == np.bool_
                assert isinstance(inst.score, float) and concept.threshold < inst.score <= 1.0
                assert all(isinstance(v, int) for v in inst.bbox)
    assert any(m.instances for r in results for m in r.values()), "the tiny model should find something"


def test_instances_and_union_agree(segmenter: Sam3Segmenter) -> None:
    concepts = [Concept(c.name, c.prompt, 0.05, c.multi_instance) for c in SIX]
    [result] = segmenter.segment(requests_of(photo(100, 150, seed=3)), concepts)
    for concept in concepts:
        masks = result[concept.name]
        if not masks.instances:
            assert not masks.union.any()
            continue
        assert np.array_equal(masks.union, np.logical_or.reduce([i.mask for i in masks.instances]))
        assert [i.id for i in masks.instances] == list(range(len(masks.instances)))
        scores = [i.score for i in masks.instances]
        assert scores == sorted(scores, reverse=True)
        if not concept.multi_instance:
            assert len(masks.instances) == 1
        for inst in masks.instances:
            assert inst.area > 0
            assert inst.bbox == bbox_of(inst.mask)
            x0, y0, x1, y1 = inst.bbox
            assert inst.mask[y0:y1, x0:x1].sum() == inst.area  # nothing outside the box


def test_thresholds_keep_exactly_the_detections_above_them(segmenter: Sam3Segmenter) -> None:
    img = photo(80, 120, seed=4)
    pixels = torch.from_numpy(img).permute(2, 0, 1)
    [raw] = segmenter.detect([pixels], ["door"])
    scores, queries = raw.scores[0].sort(descending=True)
    cut = float(scores[2] + scores[3]) / 2  # between the 3rd and 4th best: 3 detections pass
    top3_masks = refine_masks(raw.mask_logits[0, queries[:3]], luma(pixels))
    # empty masks are dropped, duplicates of one object merged (the better score kept)
    found = [Instance(i, float(s), bbox_of(m.numpy()), m.numpy()) for i, (s, m) in enumerate(zip(scores[:3], top3_masks)) if m.any()]
    expected = [inst.score for inst in merge_duplicates(found)]
    assert len(expected) >= 1

    keep = Concept("Door", "door", cut, multi_instance=True)
    none = Concept("Door_none", "door", 1.0, multi_instance=True)
    single = Concept("Door_single", "door", cut, multi_instance=False)
    [result] = segmenter.segment(requests_of(img), [keep, none, single])
    assert [i.score for i in result["Door"].instances] == pytest.approx(expected, abs=1e-6)
    assert result["Door_none"].instances == [] and not result["Door_none"].union.any()
    [one] = result["Door_single"].instances  # its detections merged into one mask: their union
    assert one.score == pytest.approx(float(scores[0]), abs=1e-6)
    assert np.array_equal(one.mask, result["Door_single"].union)
    assert iou(one.mask, result["Door"].union) > 0.95


def test_two_photos_in_one_call_equal_one_at_a_time(segmenter: Sam3Segmenter) -> None:
    a, b = photo(90, 130, seed=5), photo(70, 110, seed=6)
    together = segmenter.segment(requests_of(a, b), SIX)
    alone = [segmenter.segment(requests_of(img), SIX)[0] for img in (a, b)]
    for batched, single in zip(together, alone):
        for name in batched:
            x, y = batched[name], single[name]
            assert len(x.instances) == len(y.instances)
            assert np.mean(x.union != y.union) < 1e-3
            for i, j in zip(x.instances, y.instances):
                assert i.score == pytest.approx(j.score, abs=1e-5)
                assert np.mean(i.mask != j.mask) < 1e-3


def test_pipelined_host_assembly_gives_the_same_masks_in_the_same_order(
    segmenter: Sam3Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU each photo is assembled on the host while the next one refines on the device;
    forced on here, the results are those of the one-photo-at-a-time order."""
    images = [photo(80, 120, seed=s) for s in (7, 8, 9)]
    plain = segmenter.segment(requests_of(*images), SIX)
    monkeypatch.setattr(segmenter, "overlap_host_work", True)
    handed = list(segmenter.segment_each(requests_of(*images), SIX))
    assert len(handed) == 3
    for got, want in zip(handed, plain):
        for name in want:
            assert np.array_equal(got[name].union, want[name].union)
            assert [i.bbox for i in got[name].instances] == [i.bbox for i in want[name].instances]


def test_unions_handed_over_on_the_device_keep_only_the_instances_box_parts_on_the_host(
    segmenter: Sam3Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an editor on the segmenter's device (forced here on the CPU), each union stays a
    tensor and the one transfer to the host carries the instances' box parts alone: the same
    masks and instances as the host hand-over, without a copy of the whole stack."""
    concepts = [Concept(c.name, c.prompt, 0.05, c.multi_instance) for c in SIX]
    images = [photo(90, 130, seed=10), photo(70, 100, seed=11)]
    plain = segmenter.segment(requests_of(*images), concepts)
    monkeypatch.setattr(segmenter, "hand_over_on_device", True)
    handed = segmenter.segment(requests_of(*images), concepts)
    for got, want in zip(handed, plain):
        for name, masks in want.items():
            assert got[name]._union is None and isinstance(got[name].on_device, torch.Tensor)
            assert np.array_equal(got[name].on_device.numpy(), masks.union)
            assert [(i.id, i.score, i.bbox) for i in got[name].instances] == \
                [(i.id, i.score, i.bbox) for i in masks.instances]
            for mine, theirs in zip(got[name].instances, masks.instances):
                assert np.array_equal(mine.mask, theirs.mask)
    assert any(m.instances for r in handed for m in r.values())

    # the transfer: a whole-frame union and a small instance come down as the instance's box
    wall = Concept("Wall", "wall", 0.1, multi_instance=False)
    door = Concept("Door", "door", 0.1, multi_instance=True)
    stack = torch.zeros((3, 60, 80), dtype=torch.bool)
    stack[0] = True  # the wall's union, its one instance
    stack[1, 10:20, 5:15] = stack[2, 10:20, 5:15] = True  # the door's union and its instance
    logits = torch.zeros((1, 4, 4))
    kept = [_Kept(wall, [0.9], logits), _Kept(door, [0.8], logits)]
    on_host = _OnDevice(kept, stack, mask_boxes(stack), keep_on_device=True).to_host()
    assert on_host.stack is None and sorted(on_host.crops) == [0, 2]
    assert on_host.crops[2].shape == (10, 10) and on_host.crops[2].all()
    kept_whole = _OnDevice(kept, stack, mask_boxes(stack)).to_host()
    assert kept_whole.stack is not None and sorted(kept_whole.crops) == [0, 2]


# -- speed structure ---------------------------------------------------------------------------


def test_k_prompts_cost_one_vision_pass_per_photo(
    segmenter: Sam3Segmenter, counters: dict[str, CallCounter]
) -> None:
    segmenter.segment(requests_of(photo(60, 80, seed=7)), SIX)
    assert counters["vision"].batches == [1]  # one photo, one vision pass, despite 6 prompts
    assert counters["prompts"].batches == [6]  # all 6 prompts in one batched decoder pass

    for counter in counters.values():
        counter.batches.clear()
    segmenter.segment(requests_of(*(photo(60, 80, seed=s) for s in range(3))), SIX)
    assert counters["vision"].batches == [3]  # three photos share one batched vision pass
    assert counters["prompts"].batches == [18]


def test_photo_groups_bound_the_rows_but_never_split_a_photo(
    segmenter: Sam3Segmenter, counters: dict[str, CallCounter]
) -> None:
    segmenter.max_rows_per_pass, saved = 12, segmenter.max_rows_per_pass
    try:
        segmenter.segment(requests_of(*(photo(50, 60, seed=s) for s in range(5))), SIX)
    finally:
        segmenter.max_rows_per_pass = saved
    assert counters["vision"].batches == [2, 2, 1] and sum(counters["vision"].batches) == 5
    assert counters["prompts"].batches == [12, 12, 6]


def test_text_features_are_computed_once_per_prompt_across_calls(
    segmenter: Sam3Segmenter, counters: dict[str, CallCounter]
) -> None:
    first = [Concept("Label", "label", 0.3, True), Concept("Logo", "logo", 0.3, True)]
    segmenter.segment(requests_of(photo(50, 70, seed=8)), first)
    assert counters["text"].batches == [2]
    segmenter.segment(requests_of(photo(64, 64, seed=9), photo(40, 90, seed=10)), first)
    assert counters["text"].batches == [2]  # cached: no text pass for later photos or jobs
    segmenter.segment(requests_of(photo(50, 70, seed=8)), [*first, Concept("Prop", "prop", 0.3, True)])
    assert counters["text"].batches == [2, 1]  # only the new prompt is encoded


def test_concepts_sharing_a_prompt_share_its_row(
    segmenter: Sam3Segmenter, counters: dict[str, CallCounter]
) -> None:
    twins = [Concept("A", "shadow", 0.2, True), Concept("B", "shadow", 0.2, False)]
    [result] = segmenter.segment(requests_of(photo(50, 70, seed=11)), twins)
    assert counters["prompts"].batches == [1]
    assert iou(result["A"].union, result["B"].union) > 0.95  # OR of instances vs merged detections


def test_device_preprocessing_matches_the_checkpoint_processor(segmenter: Sam3Segmenter) -> None:
    img = photo(75, 133, seed=12)
    ours = segmenter._pixel_values([torch.from_numpy(img).permute(2, 0, 1)])
    theirs = segmenter.processor(images=[img], return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5)


# -- errors ------------------------------------------------------------------------------------


def test_out_of_memory_maps_to_gpu_out_of_memory(segmenter: Sam3Segmenter, monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(segmenter.model, "get_vision_features", oom)
    with pytest.raises(GpuOutOfMemory) as info:
        segmenter.segment(requests_of(photo(40, 40, seed=0)), SIX)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    assert "GiB" not in info.value.message


def test_other_inference_errors_map_to_segmentation_error(
    segmenter: Sam3Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("shape mismatch in /opt/secret/path")

    monkeypatch.setattr(segmenter.model, "get_vision_features", broken)
    with pytest.raises(SegmentationError) as info:
        segmenter.segment(requests_of(photo(40, 40, seed=0)), SIX)
    assert type(info.value) is SegmentationError and info.value.code == "SEGMENTATION_ERROR"
    assert isinstance(info.value.__cause__, RuntimeError) and "/opt" not in info.value.message


def test_no_photos_or_no_concepts_need_no_model(segmenter: Sam3Segmenter, counters: dict[str, CallCounter]) -> None:
    assert segmenter.segment([], SIX) == []
    assert segmenter.segment(requests_of(photo(30, 30, seed=0)), []) == [{}]
    assert counters["vision"].batches == []


# -- mask refinement and boxes -----------------------------------------------------------------


CELL = 8  # photo pixels per cell of the (coarse) mask grid in these cases: 200 px / 25 cells


def _coarse_logits(signed_distance: torch.Tensor, steepness: float = 3.0) -> torch.Tensor:
    """SAM-like (1, 25, 25) logits from a per-column signed distance (in photo pixels) to the mask
    edge, sampled at the cell centres: a soft, coarse mask."""
    return (signed_distance / CELL * steepness).expand(25, 25)[None].contiguous()


def _cell_centres() -> torch.Tensor:
    return (torch.arange(25) + 0.5) * CELL


def _step_photo(edge: int, low: float = 0.2, high: float = 0.8, noise: float = 0.01) -> torch.Tensor:
    """A 200 x 200 photo (brightness) with a sharp vertical edge at column ``edge``."""
    guide = torch.full((200, 200), low)
    guide[:, edge:] = high
    return guide + noise * torch.randn(guide.shape, generator=torch.Generator().manual_seed(0))


def _first_columns(mask: torch.Tensor) -> set[int]:
    return {int(row.to(torch.uint8).argmax()) for row in mask}


@pytest.mark.parametrize("work_side", [1024, 100])  # at full resolution, and the fast (upsampled) path
@pytest.mark.parametrize("mask_edge", [100, 108])  # SAM's edge half a cell left / right of the photo's
@pytest.mark.parametrize("steepness", [1.0, 3.0, 10.0])
def test_refined_edges_snap_to_the_photo_edge(work_side: int, mask_edge: int, steepness: float) -> None:
    logits = _coarse_logits(_cell_centres() - mask_edge, steepness)  # the mask is the right side
    plain = torch.nn.functional.interpolate(logits[:, None], size=(200, 200), mode="bilinear")[:, 0] > 0
    refined = refine_masks(logits, _step_photo(edge=104), work_side=work_side)
    assert _first_columns(plain[0]) == {mask_edge}
    assert _first_columns(refined[0]) <= {103, 104, 105}


def test_an_edge_a_whole_cell_off_moves_towards_the_photo_edge() -> None:
    logits = _coarse_logits(_cell_centres() - 96)  # 8 px (one cell) left of the photo's edge
    columns = _first_columns(refine_masks(logits, _step_photo(edge=104))[0])
    assert min(columns) >= 98 and max(columns) <= 104


@pytest.mark.parametrize("width_cells", [1.0, 1.5, 3.0])
def test_thin_masks_survive_where_the_photo_is_flat(width_cells: float) -> None:
    """A plain guided filter would blur a 1-cell-wide line (grout, a frame) below 0.5 and drop it."""
    half = width_cells * CELL / 2
    logits = _coarse_logits(half - (_cell_centres() - 100).abs())
    plain = torch.nn.functional.interpolate(logits[:, None], size=(200, 200), mode="bilinear")[:, 0] > 0
    refined = refine_masks(logits, torch.full((200, 200), 0.5))
    assert plain.sum() > 0 and torch.equal(refined, plain)


def test_refinement_is_a_no_op_on_an_empty_batch() -> None:
    assert refine_masks(torch.zeros((0, 25, 25)), torch.zeros((40, 30))).shape == (0, 40, 30)


@hsettings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 3), st.just(1), st.integers(1, 9), st.integers(1, 9)),
           elements=st.floats(0, 1, width=32)),
    st.integers(1, 5),
)
def test_box_mean_is_the_mean_of_each_clipped_window(values: np.ndarray, radius: int) -> None:
    # box_mean on the host goes through OpenCV; the running sums are what the GPU runs.
    for ours in (box_mean(torch.from_numpy(values), radius).numpy(),
                 box_mean_running_sums(torch.from_numpy(values), radius).numpy()):
        height, width = values.shape[-2:]
        for y in range(height):
            for x in range(width):
                window = values[..., max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
                assert np.allclose(ours[..., y, x], window.mean(axis=(-2, -1)), atol=1e-5)


@hsettings(max_examples=40, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12))))
def test_mask_boxes_match_bbox_of(masks: np.ndarray) -> None:
    boxes = mask_boxes(torch.from_numpy(masks)).tolist()
    assert [tuple(b) for b in boxes] == [bbox_of(m) for m in masks]
