"""The segment batcher hands each photo its masks as soon as a streaming segmenter has them."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from engine.batching import SegmentBatcher
from engine.errors import GpuOutOfMemory
from engine.segmenter import SegmentRequest
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
    class Short:
        def segment(self, requests, concepts):
            return [{"photo": requests[0].image_id}]

    batcher = SegmentBatcher(Short(), max_batch=2)
    tasks = [asyncio.create_task(batcher.segment(request(n), CONCEPTS)) for n in "ab"]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == {"photo": "a"}
    assert "returned 1 results for 2 photos" in str(results[1])
