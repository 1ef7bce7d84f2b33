"""The pipeline end to end on the local store, the file segmenter and a loopback receiver."""

from __future__ import annotations

import asyncio
import random
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.callback import HttpCallbackSender, RecordingCallbackSender
from engine.pipeline import Pipeline
from engine.postprocess import rle_decode
from engine.segmenter import FileMaskSegmenter
from engine.storage import LocalStorage
from tests.conftest import SECRET, decode_png, jpeg_bytes, make_job, make_settings, room_photo, write_masks


def build(tmp_path: Path, photos: int = 1, receiver=None, callbacks=None, **settings_overrides):
    settings = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"),
                             **settings_overrides)
    storage = LocalStorage(settings.storage_local_dir)
    segmenter = FileMaskSegmenter(tmp_path / "masks")
    truth = {}
    for i in range(photos):
        rgb, masks = room_photo(seed=i)
        key = f"inputs/u_abc/job_123/{i}.jpg"
        storage._put(key, jpeg_bytes(rgb), "image/jpeg", {})
        write_masks(tmp_path / "masks", key, masks)
        truth[i] = (rgb, masks)
    if callbacks is None:
        callbacks = HttpCallbackSender(SECRET, backoff=[0.01, 0.02], allowed_hosts=["127.0.0.1"])
    return Pipeline(settings, storage, segmenter, callbacks), storage, segmenter, truth


def job_for(receiver, n=1, **overrides):
    return make_job(n, callback_url=f"{receiver.url}/jobs/job_123/callback", **overrides)


def read(storage: LocalStorage, key: str) -> bytes:
    return storage.path_of(key).read_bytes()


async def test_full_job_writes_every_object_and_signed_callbacks(tmp_path, receiver):
    pipeline, storage, _, truth = build(tmp_path, photos=2)
    result = (await pipeline.run_job({"input": job_for(receiver, 2)})).to_dict()

    assert result["job_id"] == "job_123" and result["status"] == "completed"
    assert sorted(i["idx"] for i in result["items"]) == [0, 1]
    for item in result["items"]:
        assert item["status"] == "done" and item["callback"] == "delivered" and item["error_code"] is None
        idx = item["idx"]
        original = decode_png(read(storage, f"inputs/u_abc/job_123/{idx}.jpg"))  # decoded JPEG input
        out = decode_png(read(storage, item["output_key"]))
        assert out.shape == original.shape
        masks = truth[idx][1]
        protect = masks["Frame_Molding"] | masks["Window"]
        assert np.array_equal(out[protect], original[protect]), "protected pixels must be byte-identical"
        wall = masks["Wall"]
        blue_minus_red = lambda px: px[:, 2].astype(float).mean() - px[:, 0].astype(float).mean()  # noqa: E731
        assert blue_minus_red(original[wall]) < 0 and blue_minus_red(out[wall]) > 60, "wall should turn blue"
        thumb = Image.open(io.BytesIO(read(storage, item["preview_key"])))
        assert thumb.format == "JPEG" and max(thumb.size) == 240  # input is smaller than 300 px
        for concept in ("Wall", "Floor", "Frame_Molding", "Window"):
            mask = np.asarray(Image.open(io.BytesIO(read(storage, f"masks/u_abc/job_123/{idx}_{concept}.png"))))
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask > 0, masks[concept])
        doc = json.loads(read(storage, f"masks/u_abc/job_123/{idx}_instances.json"))
        assert (doc["width"], doc["height"]) == (240, 160)
        wall_inst = doc["concepts"]["Wall"][0]
        assert np.array_equal(rle_decode(wall_inst["rle"], 240, 160), masks["Wall"])
        assert wall_inst["area"] == int(masks["Wall"].sum())

    assert len(receiver.received) == 2 and all(cb.verified for cb in receiver.received)
    payloads = {cb.payload["idx"]: cb for cb in receiver.received}
    cb = payloads[1]
    assert cb.headers["Idempotency-Key"] == "job_123:1:0" and cb.headers["Content-Type"] == "application/json"
    assert cb.payload == {
        "job_id": "job_123", "idx": 1, "status": "done",
        "output_key": "outputs/u_abc/job_123/1_result.png", "preview_key": "previews/u_abc/job_123/1_thumb.jpg",
        "mask_keys": {c: f"masks/u_abc/job_123/1_{c}.png" for c in ("Wall", "Floor", "Frame_Molding", "Window")},
        "instances_key": "masks/u_abc/job_123/1_instances.json",
        "error": None, "error_code": None, "idempotency_key": "job_123:1:0",
    }


async def test_one_bad_item_does_not_affect_the_others(tmp_path, receiver):
    pipeline, storage, _, _ = build(tmp_path, photos=2)
    job = job_for(receiver, 3)  # item 2 has no input object
    job["items"].append({"idx": 7, "input_key": "inputs/u_other/job_123/7.jpg",
                         "output_key": "outputs/u_abc/job_123/7.png", "preview_key": "previews/u_abc/job_123/7.jpg"})
    result = (await pipeline.run_job(job)).to_dict()

    by_idx = {i["idx"]: i for i in result["items"]}
    assert result["status"] == "partial"
    assert by_idx[0]["status"] == by_idx[1]["status"] == "done"
    assert by_idx[2]["error_code"] == "INPUT_NOT_FOUND" and by_idx[2]["output_key"] is None
    assert by_idx[7]["error_code"] == "INVALID_KEY"
    assert sorted(cb.payload["idx"] for cb in receiver.received) == [0, 1, 2, 7]
    failed = next(cb.payload for cb in receiver.received if cb.payload["idx"] == 2)
    assert failed["status"] == "failed" and failed["preview_key"] is None and failed["error"]


async def test_segment_then_apply_matches_full_and_makes_no_segmenter_call(tmp_path):
    pipeline, storage, segmenter, _ = build(tmp_path, callbacks=RecordingCallbackSender())
    full = (await pipeline.run_job(make_job())).to_dict()
    full_png = decode_png(read(storage, "outputs/u_abc/job_123/0_result.png"))

    pipeline2, storage2, segmenter2, _ = build(tmp_path / "two", callbacks=RecordingCallbackSender())
    seg = (await pipeline2.run_job(make_job(stage="segment"))).to_dict()
    assert seg["items"][0]["status"] == "done" and seg["items"][0]["output_key"] is None
    assert not storage2.path_of("outputs/u_abc/job_123/0_result.png").exists()
    calls = segmenter2.calls
    applied = (await pipeline2.run_job(make_job(stage="apply"))).to_dict()
    assert applied["status"] == "completed" and full["status"] == "completed"
    assert segmenter2.calls == calls, "apply must not segment"
    assert np.array_equal(decode_png(read(storage2, "outputs/u_abc/job_123/0_result.png")), full_png)


async def test_apply_honours_instances(tmp_path):
    pipeline, storage, _, truth = build(tmp_path, callbacks=RecordingCallbackSender())
    await pipeline.run_job(make_job(stage="segment", concepts={"Furniture": {"action": "recolor", "value": "#FF0000"}}))
    job = make_job(stage="apply", concepts={"Furniture": {"action": "recolor", "value": "#FF0000", "instances": [1]}},
                   protect=[])
    result = (await pipeline.run_job(job)).to_dict()
    assert result["status"] == "completed"
    out = decode_png(read(storage, "outputs/u_abc/job_123/0_result.png"))
    original = decode_png(read(storage, "inputs/u_abc/job_123/0.jpg"))
    furniture = truth[0][1]["Furniture"]
    left, right = furniture.copy(), furniture.copy()
    left[:, 180:] = False
    right[:, :180] = False
    assert out[right][:, 0].mean() > original[right][:, 0].mean() + 40, "instance 1 recolored"
    inner_left = np.zeros_like(left)
    inner_left[104:136, 144:166] = True  # away from the soft edge
    assert np.array_equal(out[inner_left], original[inner_left]), "instance 0 untouched"


async def test_apply_without_stored_masks_fails_with_masks_not_found(tmp_path):
    pipeline, _, _, _ = build(tmp_path, callbacks=RecordingCallbackSender())
    result = (await pipeline.run_job(make_job(stage="apply"))).to_dict()
    assert result["items"][0]["error_code"] == "MASKS_NOT_FOUND"


async def test_redelivery_reuses_the_result_and_resends_the_same_callback(tmp_path):
    sender = RecordingCallbackSender()
    pipeline, storage, segmenter, _ = build(tmp_path, callbacks=sender)
    first = (await pipeline.run_job(make_job())).to_dict()
    mtime = storage.path_of("outputs/u_abc/job_123/0_result.png").stat().st_mtime_ns
    calls = segmenter.calls
    second = (await pipeline.run_job(make_job())).to_dict()
    assert first == second
    assert segmenter.calls == calls
    assert storage.path_of("outputs/u_abc/job_123/0_result.png").stat().st_mtime_ns == mtime
    assert sender.sent[0][1] == sender.sent[1][1] and sender.sent[1][2] == "job_123:0:0"
    # Different rules for the same keys are new work, not a redelivery.
    third = (await pipeline.run_job(make_job(concepts={"Wall": {"action": "recolor", "value": "sage"}}))).to_dict()
    assert third["status"] == "completed" and segmenter.calls == calls + 1


async def test_slow_callback_does_not_hold_up_other_items(tmp_path, receiver):
    """Item 0's receiver answers 503 twice; items 1 and 2 still finish without waiting for it."""
    order: list[int] = []
    sender = HttpCallbackSender(SECRET, backoff=[1.0, 1.0], allowed_hosts=["127.0.0.1"], rng=random.Random(0))
    pipeline, storage, _, _ = build(tmp_path, photos=3, callbacks=sender)
    receiver.statuses["job_123:0:0"] = [503, 503]
    result = await pipeline.run_job(job_for(receiver, 3, batch_concurrency=1),
                                    on_item_done=lambda report, delivery: order.append(report.idx))
    assert result.status == "completed"
    assert result.undelivered == []
    assert order[-1] == 0, f"item 0's retried callback should end last, got {order}"
    first = [cb.payload["idx"] for cb in receiver.received]
    assert first.count(0) == 3


async def test_batch_concurrency_bounds_items_in_flight(tmp_path):
    pipeline, _, segmenter, _ = build(tmp_path, photos=5, callbacks=RecordingCallbackSender())
    in_flight = peak = 0
    original_get = pipeline.storage.get

    async def slow_get(key, max_bytes):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        try:
            return await original_get(key, max_bytes)
        finally:
            in_flight -= 1

    pipeline.storage.get = slow_get
    result = (await pipeline.run_job(make_job(5, batch_concurrency=2))).to_dict()
    assert result["status"] == "completed"
    assert peak == 2


@pytest.mark.parametrize("stage", ["full", "segment"])
async def test_items_needing_segmentation_fail_clearly_without_a_model(tmp_path, stage):
    from engine.segmenter import UnavailableSegmenter

    pipeline, _, _, _ = build(tmp_path, callbacks=RecordingCallbackSender())
    pipeline.batcher.segmenter = UnavailableSegmenter("SAM3 weights not found; set SAM3_MODEL")
    result = (await pipeline.run_job(make_job(stage=stage))).to_dict()
    assert result["items"][0]["error_code"] == "SEGMENTATION_UNAVAILABLE"
    assert "SAM3_MODEL" in result["items"][0]["error"]


async def test_photos_in_flight_share_a_segmentation_call(tmp_path):
    pipeline, _, segmenter, _ = build(tmp_path, photos=6, callbacks=RecordingCallbackSender())
    result = (await pipeline.run_job(make_job(6, batch_concurrency=6))).to_dict()
    assert result["status"] == "completed"
    sizes = pipeline.batcher.batch_sizes
    assert sum(sizes) == 6 and max(sizes) > 1 and segmenter.calls == len(sizes) < 6


async def test_a_batch_out_of_memory_is_retried_one_photo_at_a_time(tmp_path):
    from engine.errors import GpuOutOfMemory

    pipeline, _, segmenter, _ = build(tmp_path, photos=4, callbacks=RecordingCallbackSender())
    real = segmenter.segment

    def picky(requests, concepts):
        if len(requests) > 1 or requests[0].image_id.endswith("3.jpg"):
            raise GpuOutOfMemory("CUDA out of memory")
        return real(requests, concepts)

    segmenter.segment = picky
    result = (await pipeline.run_job(make_job(4, batch_concurrency=4))).to_dict()
    codes = {i["idx"]: i["error_code"] for i in result["items"]}
    assert codes == {0: None, 1: None, 2: None, 3: "GPU_OUT_OF_MEMORY"}
