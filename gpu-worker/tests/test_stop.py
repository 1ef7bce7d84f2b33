"""A job cut short (its handler cancelled, the worker shut down) reports every item exactly once,
sends the callbacks within STOP_GRACE_SEC, and writes nothing of an item after its report."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.conftest import make_job
from tests.jobs_doubles import (WAIT, BlockingBackend, TimedSender, in_thread_wait, pipeline_on, small_job,
                                until)

STOPPED = "stopped before this item finished; send the job again"


def assert_stopped(payload: dict) -> None:
    assert payload["status"] == "failed" and payload["error_code"] == "TIMEOUT"
    assert payload["error"] == STOPPED
    assert payload["idempotency_key"].endswith(":failed")
    assert payload["output_key"] is None and payload["preview_key"] is None


async def test_a_cancelled_job_reports_every_item_once_and_writes_nothing_after(tmp_path):
    backend = BlockingBackend()
    pipeline, storage, sender = pipeline_on(tmp_path, photos=4, edit_backend=backend)
    running = asyncio.create_task(pipeline.run_job(make_job(4, batch_concurrency=2)))
    try:
        await in_thread_wait(backend.entered, "an edit to start")
        running.cancel()  # the platform stops the job while edits run
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, WAIT)
        reported_at = time.monotonic()
        payloads = sender.payloads()
        assert sorted(p["idx"] for p in payloads) == [0, 1, 2, 3], "each item exactly once"
        for payload in payloads:
            assert_stopped(payload)
        assert pipeline.budget.in_use > 0, "the edit still running keeps its photo's memory"
    finally:
        backend.release.set()
    await until(lambda: pipeline.budget.in_use == 0, "the abandoned edits to return")
    await asyncio.sleep(0.2)  # anything they could still write would land now
    assert storage.writes == [], "nothing of a stopped item is written"
    assert min(backend.returned_at) > reported_at
    assert len(sender.sent) == 4 and pipeline.jobs_running == 0


async def test_an_upload_under_way_lands_before_its_item_is_reported(tmp_path):
    pipeline, storage, sender = pipeline_on(tmp_path, photos=1)
    storage.hold("outputs/")  # the result's upload (the marker) hangs
    running = asyncio.create_task(pipeline.run_job(make_job(1)))
    await in_thread_wait(storage.holding, "the result's upload to start")
    running.cancel()
    # the upload cannot be taken back: it ends (here released after 0.5 s) before the report
    threading.Timer(0.5, storage.release).start()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, WAIT)
    (payload,) = sender.payloads()
    assert_stopped(payload)
    written = {key: at for key, _, at in storage.writes}
    assert "outputs/u_abc/job_123/0_result.png" in written
    assert max(written.values()) < sender.times[("job_123", 0)], "every write precedes the report"


async def test_shutdown_from_another_thread_ends_running_jobs_and_refuses_new_ones(tmp_path):
    backend = BlockingBackend()
    pipeline, storage, sender = pipeline_on(tmp_path, photos=3, jobs=("job_a", "job_b"), edit_backend=backend)
    jobs = [asyncio.create_task(pipeline.run_job(small_job(j, 3))) for j in ("job_a", "job_b")]
    try:
        await in_thread_wait(backend.entered, "an edit to start")
        assert pipeline.jobs_working == 2
        signal_thread = threading.Thread(target=pipeline.begin_shutdown)  # as a signal handler would
        signal_thread.start()
        results = await asyncio.wait_for(asyncio.gather(*jobs), WAIT)
        signal_thread.join()
    finally:
        backend.release.set()
    for result in results:
        assert result.status == "failed" and result.undelivered == []
        assert [i.report.error for i in result.items] == [STOPPED] * 3
    for job_id in ("job_a", "job_b"):
        assert sorted(p["idx"] for p in sender.payloads(job_id)) == [0, 1, 2]
    assert await pipeline.wait_idle(WAIT) and pipeline.jobs_running == 0

    later = await asyncio.wait_for(pipeline.run_job(small_job("job_a", 2)), WAIT)
    assert [i.report.error_code for i in later.items] == ["TIMEOUT", "TIMEOUT"]
    await until(lambda: pipeline.budget.in_use == 0, "the abandoned edits to return")
    assert storage.writes == []


async def test_the_callbacks_of_a_stopped_job_get_the_grace_and_no_more(tmp_path):
    sender = TimedSender(held_jobs=("job_123",))  # the receiver never answers
    backend = BlockingBackend()
    pipeline, _, _ = pipeline_on(tmp_path, photos=2, sender=sender, edit_backend=backend, stop_grace_sec=0.5)
    running = asyncio.create_task(pipeline.run_job(make_job(2)))
    try:
        await in_thread_wait(backend.entered, "an edit to start")
        started = time.monotonic()
        running.cancel()
        running.cancel()  # a second cancel does not cut the wind-down short
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, WAIT)
        waited = time.monotonic() - started
    finally:
        backend.release.set()
    assert 0.4 < waited < 5, waited
    assert {key[1] for key in sender.times} == {0, 1}, "both callbacks were attempted"
    assert pipeline.jobs_running == 0


async def test_a_stop_while_only_callbacks_remain_bounds_them_by_the_grace(tmp_path):
    sender = TimedSender(held_jobs=("job_123",))
    pipeline, storage, _ = pipeline_on(tmp_path, photos=1, sender=sender, stop_grace_sec=0.3)
    running = asyncio.create_task(pipeline.run_job(make_job(1)))
    await until(lambda: pipeline.jobs_delivering == 1, "the job to wait only for its callback")
    pipeline.begin_shutdown()
    result = await asyncio.wait_for(running, WAIT)
    assert result.items[0].report.status == "done" and result.undelivered == [0]
    assert "outputs/u_abc/job_123/0_result.png" in storage.keys()
