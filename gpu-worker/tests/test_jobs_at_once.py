"""Several jobs at once on one worker: one segmentation batcher, one memory budget; a job
waiting only for its callbacks holds nothing and holds nobody up."""

from __future__ import annotations

import asyncio
import threading

from engine.segmenter import FileMaskSegmenter
from tests.jobs_doubles import WAIT, TimedSender, pipeline_on, small_job, until


class FirstCallWaits(FileMaskSegmenter):
    """The file double; its first call waits until ``go`` is set (the device busy meanwhile)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.go = threading.Event()
        self.batches: list[list[str]] = []

    def segment(self, requests, concepts):
        self.batches.append([r.image_id for r in requests])
        if len(self.batches) == 1:
            self.go.wait(WAIT)
        return super().segment(requests, concepts)


async def test_photos_of_different_jobs_share_a_segmentation_batch(tmp_path):
    segmenter = FirstCallWaits(tmp_path / "masks")
    jobs = ("job_a", "job_b", "job_c")
    pipeline, _, sender = pipeline_on(tmp_path, jobs=jobs, segmenter=segmenter)
    running = [asyncio.create_task(pipeline.run_job(small_job(j))) for j in jobs]
    await until(lambda: len(segmenter.batches) == 1 and len(segmenter.batches[0]) + len(pipeline.batcher._pending) == 3,
                "every photo to be on the device or waiting for it")
    segmenter.go.set()
    results = await asyncio.wait_for(asyncio.gather(*running), WAIT)
    assert [r.status for r in results] == ["completed"] * 3
    assert sorted(sum(segmenter.batches, [])) == [f"inputs/u_abc/{j}/0.jpg" for j in jobs]
    assert len(segmenter.batches) < 3
    shared = max(segmenter.batches, key=len)
    assert len({key.split("/")[2] for key in shared}) >= 2, "one batch, photos of several jobs"


async def test_photos_held_decoded_across_jobs_stay_within_one_budget(tmp_path):
    # A 240x160 photo costs about 0.7 MB decoded: 2 MB holds two of them, not three.
    jobs = ("job_a", "job_b", "job_c", "job_d")
    pipeline, _, _ = pipeline_on(tmp_path, photos=3, jobs=jobs, decoded_budget_mb=2)
    one_photo = 240 * 160 * (3 + 16)
    results = await asyncio.wait_for(
        asyncio.gather(*(pipeline.run_job(small_job(j, 3, batch_concurrency=3)) for j in jobs)), 4 * WAIT)
    assert [r.status for r in results] == ["completed"] * 4
    assert pipeline.budget.peak <= pipeline.budget.capacity
    assert pipeline.budget.peak >= 2 * one_photo, "photos of several jobs were decoded side by side"
    assert pipeline.budget.in_use == 0


async def test_a_job_waiting_only_for_callbacks_holds_no_budget_and_holds_up_no_one(tmp_path):
    sender = TimedSender(held_jobs=("job_a",))  # job_a's receiver does not answer yet
    pipeline, _, _ = pipeline_on(tmp_path, photos=2, jobs=("job_a", "job_b"), sender=sender)
    slow = asyncio.create_task(pipeline.run_job(small_job("job_a", 2)))
    await until(lambda: pipeline.jobs_delivering == 1, "job_a to be left with its callbacks only")
    assert pipeline.jobs_working == 0 and pipeline.budget.in_use == 0

    other = await asyncio.wait_for(pipeline.run_job(small_job("job_b", 2)), WAIT)
    assert other.status == "completed" and not slow.done()
    assert (pipeline.jobs_working, pipeline.jobs_delivering, pipeline.jobs_running) == (0, 1, 1)
    assert not await pipeline.wait_idle(0.05)

    sender.release_jobs()
    assert (await asyncio.wait_for(slow, WAIT)).status == "completed"
    assert await pipeline.wait_idle(WAIT) and pipeline.jobs_running == 0


async def test_a_jobs_batch_concurrency_is_capped_by_the_setting(tmp_path):
    pipeline, storage, _ = pipeline_on(tmp_path, photos=5, max_batch_concurrency=2)
    in_flight = peak = 0
    get = storage.get

    async def counting_get(key, max_bytes):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.05)
            return await get(key, max_bytes)
        finally:
            in_flight -= 1

    storage.get = counting_get
    result = await pipeline.run_job(small_job("job_123", 5, batch_concurrency=8))
    assert result.status == "completed" and peak == 2
