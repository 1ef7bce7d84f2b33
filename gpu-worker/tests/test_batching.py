"""The segment batcher hands each photo its masks as soon as a streaming segmenter has them."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from engine.batching import SegmentBatcher
from engine.errors import DeviceFailure, GpuOutOfMemory, SegmentationError
from engine.segmenter import SegmenterBase, SegmentRequest
from presets import Concept

CONCEPTS = [Concept("Wall", "wall", 0.5, False)]


def request(name: str) -> SegmentRequest:
    return SegmentRequest(np.zeros((4, 4, 3), np.uint8), name)


class Streaming:
    """Yields photo 0's result at once; photo 1's only when ``release`` is set (or OOMs)."""

    def __init__(self, fail_second: bool = False) -> None:
        self.release = threading.Event()
        self.fail_second = fail_second
        self.calls: list[list[str]] = []

    def segment_each(self, requests, concepts):
        self.calls.append([r.image_id for r in requests])
        for i, r in enumerate(requests):
            if i == 1:
                if self.fail_second:
                    raise GpuOutOfMemory("CUDA out of memory")
                self.release.wait(3)
            yield {"photo": r.image_id}


async def test_the_first_photo_moves_on_while_the_batch_is_still_running():
    segmenter = Streaming()
    batcher = SegmentBatcher(segmenter, max_batch=2)
    first = asyncio.create_task(batcher.segment(request("a"), CONCEPTS))
    second = asyncio.create_task(batcher.segment(request("b"), CONCEPTS))
    assert await asyncio.wait_for(first, 2) == {"photo": "a"}
    assert not second.done(), "photo b is still being segmented"
    segmenter.release.set()
    assert await asyncio.wait_for(second, 3) == {"photo": "b"}
    assert batcher.batch_sizes == [2] and segmenter.calls == [["a", "b"]]


async def test_out_of_memory_mid_batch_retries_only_the_unfinished_photos():
    segmenter = Streaming(fail_second=True)
    batcher = SegmentBatcher(segmenter, max_batch=3)
    tasks = [asyncio.create_task(batcher.segment(request(n), CONCEPTS)) for n in "abc"]
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert results[0] == {"photo": "a"}
    # b and c retried alone: alone, each is the batch's first photo and goes through
    assert results[1] == {"photo": "b"} and results[2] == {"photo": "c"}
    assert segmenter.calls == [["a", "b", "c"], ["b"], ["c"]]


async def test_a_segmenter_that_returns_too_few_results_fails_the_rest_clearly():
    class Short(SegmenterBase):
        """Drops the last photo's result (alone: the photo's only one)."""

        def segment(self, requests, concepts):
            return [{"photo": r.image_id} for r in requests[:-1]]

    batcher = SegmentBatcher(Short(), max_batch=2)
    tasks = [asyncio.create_task(batcher.segment(request(n), CONCEPTS)) for n in "ab"]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == {"photo": "a"}
    assert "returned 0 results for 1 photos" in str(results[1])


class ChokesOn(SegmenterBase):
    """Fails any call that holds the photo named ``bad`` with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[list[str]] = []

    def segment(self, requests, concepts):
        self.calls.append([r.image_id for r in requests])
        if any(r.image_id == "bad" for r in requests):
            raise self.error
        return [{"photo": r.image_id} for r in requests]


async def test_a_photo_the_model_chokes_on_does_not_fail_its_batch_mates():
    segmenter = ChokesOn(SegmentationError("SAM3 inference failed"))
    batcher = SegmentBatcher(segmenter, max_batch=3)
    tasks = [asyncio.create_task(batcher.segment(request(n), CONCEPTS)) for n in ("a", "bad", "c")]
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert results[0] == {"photo": "a"} and results[2] == {"photo": "c"}
    assert isinstance(results[1], SegmentationError) and not isinstance(results[1], GpuOutOfMemory)
    assert segmenter.calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


async def test_a_device_failure_fails_the_whole_batch_without_retrying_on_that_device():
    segmenter = ChokesOn(DeviceFailure("CUDA error: an illegal memory access was encountered"))
    batcher = SegmentBatcher(segmenter, max_batch=3)
    tasks = [asyncio.create_task(batcher.segment(request(n), CONCEPTS)) for n in ("a", "bad", "c")]
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert all(isinstance(r, DeviceFailure) for r in results)
    assert segmenter.calls == [["a", "bad", "c"]]


async def test_a_photo_stopped_while_waiting_is_dropped_from_the_queue():
    class HoldsFirst(ChokesOn):
        def __init__(self) -> None:
            super().__init__(RuntimeError("unused"))
            self.release = threading.Event()

        def segment(self, requests, concepts):
            if not self.calls:
                self.release.wait(5)
            return super().segment(requests, concepts)

    segmenter = HoldsFirst()
    batcher = SegmentBatcher(segmenter, max_batch=1)
    first = asyncio.create_task(batcher.segment(request("a"), CONCEPTS))
    waiting = asyncio.create_task(batcher.segment(request("b"), CONCEPTS))
    third = asyncio.create_task(batcher.segment(request("c"), CONCEPTS))
    await asyncio.sleep(0)
    waiting.cancel()  # while photo a holds the device
    segmenter.release.set()
    assert await asyncio.wait_for(first, 5) == {"photo": "a"}
    assert await asyncio.wait_for(third, 5) == {"photo": "c"}
    assert segmenter.calls == [["a"], ["c"]]
