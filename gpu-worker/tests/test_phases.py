"""Items overlap across the fetch / pixels / store phases, each bounded by batch_concurrency."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engine.callback import RecordingCallbackSender
from engine.phases import PhaseGates
from engine.segmenter import SegmenterBase
from tests.conftest import make_job
from tests.test_pipeline import build


async def test_an_item_takes_its_next_slot_before_giving_back_the_one_it_holds():
    gates = PhaseGates(1)
    first, second = gates.place(), gates.place()
    await first.enter("fetch")
    await first.enter("pixels")
    await second.enter("fetch")  # first's fetch slot was given back
    moving = asyncio.create_task(second.enter("pixels"))
    await asyncio.sleep(0.01)
    assert not moving.done(), "pixels is full: second waits, still holding its fetch slot"
    third = gates.place()
    blocked = asyncio.create_task(third.enter("fetch"))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    first.leave()
    await asyncio.wait_for(moving, 1)
    await asyncio.wait_for(blocked, 1)
    assert (first.phase, second.phase, third.phase) == (None, "pixels", "fetch")


async def test_a_cancelled_wait_keeps_the_held_slot_until_leave():
    gates = PhaseGates(1)
    holder, waiter = gates.place(), gates.place()
    await holder.enter("pixels")
    await waiter.enter("fetch")
    waiting = asyncio.create_task(waiter.enter("pixels"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert waiter.phase == "fetch"
    waiter.leave()
    await asyncio.wait_for(gates.place().enter("fetch"), 1)  # the slot came back


async def test_phases_only_move_forward():
    place = PhaseGates(2).place()
    await place.enter("pixels")
    with pytest.raises(ValueError, match="forward"):
        await place.enter("fetch")


class GatedSegmenter(SegmenterBase):
    """The file double, but each call waits until ``downloads`` reaches what the test expects
    (or a second passes), recording how many inputs had been downloaded while it ran."""

    def __init__(self, inner, downloads: list[str]) -> None:
        self.inner, self.downloads = inner, downloads
        self.seen: list[int] = []
        self.active = self.peak_active = 0
        self.lock = threading.Lock()

    def segment(self, requests, concepts):
        with self.lock:
            self.active += len(requests)
            self.peak_active = max(self.peak_active, self.active)
        deadline = time.monotonic() + 1.0
        while len(self.downloads) < len(self.seen) + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        self.seen.append(len(self.downloads))
        try:
            return self.inner.segment(requests, concepts)
        finally:
            with self.lock:
                self.active -= len(requests)


async def test_the_next_photo_downloads_while_the_device_segments(tmp_path):
    """One item per phase: while photo 0 is segmented, photo 1 downloads (prefetch) and photo 2
    does not (bounded)."""
    pipeline, storage, segmenter, _ = build(tmp_path, photos=3, callbacks=RecordingCallbackSender())
    downloads: list[str] = []
    get = storage.get

    async def recording_get(key, max_bytes):
        downloads.append(key)
        return await get(key, max_bytes)

    storage.get = recording_get
    pipeline.batcher.segmenter = gated = GatedSegmenter(segmenter, downloads)
    result = (await pipeline.run_job(make_job(3, batch_concurrency=1))).to_dict()
    assert result["status"] == "completed"
    assert gated.seen[0] == 2, f"photo 1 should download during photo 0's segmentation: {gated.seen}"
    assert gated.peak_active == 1


async def test_a_slow_upload_holds_decoding_back(tmp_path):
    """Uploads take long: the store phase fills, items wait in pixels, and no more than
    batch_concurrency photos are ever decoded at once, nor uploading."""
    pipeline, storage, _, _ = build(tmp_path, photos=5, callbacks=RecordingCallbackSender())
    decoded: set[str] = set()  # items segmented whose uploads have not begun
    peak = 0
    put, inner = storage.put, pipeline.batcher.segmenter

    class Counting(SegmenterBase):
        def segment(self, requests, concepts):
            nonlocal peak
            for r in requests:
                decoded.add(r.image_id.rsplit("/", 1)[1].split(".")[0])
            peak = max(peak, len(decoded))
            return inner.segment(requests, concepts)

    uploading: dict[str, int] = {}  # item -> its puts under way
    peak_uploading = 0

    async def slow_put(key, data, content_type, metadata=None):
        nonlocal peak_uploading
        item = key.rsplit("/", 1)[1].split("_")[0]
        decoded.discard(item)
        uploading[item] = uploading.get(item, 0) + 1
        peak_uploading = max(peak_uploading, len(uploading))
        try:
            await asyncio.sleep(0.3)  # slower than an item's pixels work, even on a loaded host
            return await put(key, data, content_type, metadata)
        finally:
            uploading[item] -= 1
            if not uploading[item]:
                del uploading[item]

    storage.put, pipeline.batcher.segmenter = slow_put, Counting()
    result = (await pipeline.run_job(make_job(5, batch_concurrency=2))).to_dict()
    assert result["status"] == "completed"
    assert peak == 2 and peak_uploading == 2


class SlowSegmenter(SegmenterBase):
    def __init__(self, inner, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def segment(self, requests, concepts):
        time.sleep(self.seconds)
        return self.inner.segment(requests, concepts)


async def test_waiting_for_a_slot_does_not_count_against_the_item_timeout(tmp_path):
    """One photo at a time, each segmentation 1.5 s, ITEM_TIMEOUT_SEC 2.4: photo 1 waits about
    1.5 s for photo 0 before its own 1.5 s of work, and still finishes."""
    pipeline, _, segmenter, _ = build(tmp_path, photos=2, callbacks=RecordingCallbackSender(),
                                      item_timeout_sec=2.4, segment_max_batch=1)
    pipeline.batcher.segmenter = SlowSegmenter(segmenter, 1.5)
    result = (await pipeline.run_job(make_job(2, batch_concurrency=1))).to_dict()
    assert [i["status"] for i in result["items"]] == ["done", "done"], result


async def test_an_item_whose_own_work_is_too_slow_still_times_out(tmp_path):
    pipeline, _, segmenter, _ = build(tmp_path, photos=1, callbacks=RecordingCallbackSender(), item_timeout_sec=0.2)
    pipeline.batcher.segmenter = SlowSegmenter(segmenter, 0.5)
    result = (await pipeline.run_job(make_job(1))).to_dict()
    assert result["items"][0]["error_code"] == "TIMEOUT"
