"""Fault-matrix cases for ITEM_TIMEOUT_SEC: a timed-out item's work that cannot be interrupted
runs on, but writes nothing after the TIMEOUT report and keeps its memory budget until it
returns."""

from __future__ import annotations

import asyncio
import threading
import time

from engine.segmenter import FileMaskSegmenter
from tests.conftest import make_job
from tests.jobs_doubles import WAIT, BlockingBackend, in_thread_wait, pipeline_on, until


async def test_fault_timed_out_item_writes_nothing_after_its_report(tmp_path):
    timeout = 3.0
    pipeline, storage, sender = pipeline_on(tmp_path, item_timeout_sec=timeout)
    storage.hold("outputs/")  # the result's upload hangs past the item's deadline
    running = asyncio.create_task(pipeline.run_job(make_job(1)))
    await in_thread_wait(storage.holding, "the result's upload to start")
    # Released once the item was reported, or one second after its deadline has surely passed.
    releaser = threading.Thread(target=lambda: (sender.first_sent.wait(timeout + 1.0), storage.release()))
    releaser.start()
    result = await asyncio.wait_for(running, WAIT + timeout)
    releaser.join()
    assert result.items[0].report.error_code == "TIMEOUT"
    (payload,) = sender.payloads()
    assert payload["status"] == "failed" and payload["error_code"] == "TIMEOUT"
    await asyncio.sleep(0.2)
    written = [at for _, _, at in storage.writes]
    assert written and max(written) < sender.times[("job_123", 0)], "a write landed after the TIMEOUT report"


class RecordingSegmenter(FileMaskSegmenter):
    def __init__(self, root) -> None:
        super().__init__(root)
        self.started_at: list[float] = []

    def segment(self, requests, concepts):
        self.started_at.append(time.monotonic())
        return super().segment(requests, concepts)


async def test_fault_timed_out_item_keeps_its_memory_until_its_work_returns(tmp_path):
    # One photo fits the 1 MB budget, two do not; the first photo's edit hangs past its deadline.
    backend = BlockingBackend()
    segmenter = RecordingSegmenter(tmp_path / "masks")
    pipeline, storage, sender = pipeline_on(tmp_path, photos=2, segmenter=segmenter, edit_backend=backend,
                                            item_timeout_sec=1.0, decoded_budget_mb=1)
    running = asyncio.create_task(pipeline.run_job(make_job(2, batch_concurrency=1)))
    try:
        await until(lambda: ("job_123", 0) in sender.times, "the first item's TIMEOUT report", WAIT)
        try:  # the next photo must not be decoded and segmented while the first's edit runs on
            await until(lambda: len(segmenter.started_at) > 1, "", 2.0)
        except AssertionError:
            pass
        assert pipeline.budget.in_use == pipeline.budget.peak > 0
    finally:
        backend.release.set()
    result = await asyncio.wait_for(running, WAIT)
    codes = [i.report.error_code for i in result.items]
    assert codes == ["TIMEOUT", None], "waiting for memory does not count against the deadline"
    assert len(segmenter.started_at) == 2 and segmenter.started_at[1] > backend.returned_at[0]
    assert pipeline.budget.peak <= pipeline.budget.capacity
    assert not any(key.startswith(("outputs/u_abc/job_123/0", "masks/u_abc/job_123/0")) for key in storage.keys())
