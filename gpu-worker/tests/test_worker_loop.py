"""WorkerLoop (the SDK's JobScaler with the worker's rules) in this process, with the SDK's own
test hooks: a jobs fetcher, a jobs handler and a stop-signal fetcher given in its config (the SDK
honours them when no ``RUNPOD_WEBHOOK_GET_JOB`` is set, as in this test process)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from adapters.runpod_loop import WorkerLoop

pytestmark = pytest.mark.skipif(bool(os.environ.get("RUNPOD_WEBHOOK_GET_JOB")), reason="the SDK's test hooks are off")


class Engine:
    def __init__(self) -> None:
        self.needs_fresh_worker = False
        self.shutdowns = 0

    def begin_shutdown(self) -> None:
        self.shutdowns += 1


class JobSource:
    """Hands out queued jobs as the SDK's fetcher does; records how many each take asked for."""

    def __init__(self, count: int) -> None:
        self.queue = [{"id": f"rp-{n}", "input": {}} for n in range(count)]
        self.asked: list[tuple[float, int]] = []

    async def fetch(self, session: Any, wanted: int) -> list[dict[str, Any]] | None:
        self.asked.append((time.monotonic(), wanted))
        taken, self.queue = self.queue[:wanted], self.queue[wanted:]
        if not taken:
            await asyncio.sleep(0.05)
        return taken or None


class Jobs:
    """A jobs handler whose jobs end when the test says so; records when each began and ended."""

    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = {}
        self.began: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.cancelled: list[str] = []

    async def handle(self, session: Any, config: dict, job: dict[str, Any]) -> None:
        self.began[job["id"]] = time.monotonic()
        event = self.release.setdefault(job["id"], asyncio.Event())
        try:
            await event.wait()
        except asyncio.CancelledError:
            self.cancelled.append(job["id"])
            raise
        self.ended[job["id"]] = time.monotonic()

    def finish(self, job_id: str) -> None:
        self.release.setdefault(job_id, asyncio.Event()).set()


def make_loop(source: JobSource, jobs: Jobs, engine: Engine, concurrency: list[int], stops: list[str] | None = None
              ) -> WorkerLoop:
    async def stop_signals(session: Any) -> list[str]:
        await asyncio.sleep(0.05)
        taken = list(stops or [])
        if stops:
            stops.clear()
        return taken

    config = {"handler": lambda job: None, "jobs_fetcher": source.fetch, "jobs_handler": jobs.handle,
              "stop_signals_fetcher": stop_signals, "concurrency_modifier": lambda current: concurrency[0]}
    return WorkerLoop(config, engine)


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_jobs_run_at_once_and_a_higher_concurrency_applies_while_jobs_run() -> None:
    source, jobs, engine, concurrency = JobSource(5), Jobs(), Engine(), [2]
    loop = make_loop(source, jobs, engine, concurrency)
    running = asyncio.create_task(loop.run())
    await until(lambda: len(jobs.began) == 2)
    await asyncio.sleep(0.2)
    assert len(jobs.began) == 2  # two slots, both busy
    concurrency[0] = 4  # the SDK would wait for both jobs to end before using it
    await until(lambda: len(jobs.began) == 4, timeout=2.0)
    assert not jobs.ended
    loop.kill_worker()
    for job_id in list(jobs.began):
        jobs.finish(job_id)
    await asyncio.wait_for(running, 10)


async def test_a_freed_slot_is_taken_at_once() -> None:
    source, jobs, engine = JobSource(2), Jobs(), Engine()
    loop = make_loop(source, jobs, engine, [1])
    running = asyncio.create_task(loop.run())
    await until(lambda: "rp-0" in jobs.began)
    jobs.finish("rp-0")
    await until(lambda: "rp-1" in jobs.began)
    assert jobs.began["rp-1"] - jobs.ended["rp-0"] < 0.5  # the SDK polls a full worker once a second
    loop.kill_worker()
    jobs.finish("rp-1")
    await asyncio.wait_for(running, 10)


async def test_a_signal_stops_taking_shuts_the_engine_down_and_waits_for_the_jobs() -> None:
    source, jobs, engine = JobSource(3), Jobs(), Engine()
    loop = make_loop(source, jobs, engine, [2])
    running = asyncio.create_task(loop.run())
    await until(lambda: len(jobs.began) == 2)
    os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler, not the process's default
    await until(lambda: engine.shutdowns == 1)
    await asyncio.sleep(0.2)
    assert not running.done()  # the jobs in hand are still posting their results
    jobs.finish("rp-0")
    jobs.finish("rp-1")
    await asyncio.wait_for(running, 10)
    assert set(jobs.ended) == {"rp-0", "rp-1"} and "rp-2" not in jobs.began and not jobs.cancelled


async def test_a_stop_signal_cancels_that_job_only() -> None:
    source, jobs, engine, stops = JobSource(2), Jobs(), Engine(), []
    loop = make_loop(source, jobs, engine, [2], stops)
    running = asyncio.create_task(loop.run())
    await until(lambda: len(jobs.began) == 2)
    stops.append("rp-1")
    await until(lambda: jobs.cancelled == ["rp-1"])
    assert "rp-0" not in jobs.ended
    loop.kill_worker()
    jobs.finish("rp-0")
    await asyncio.wait_for(running, 10)
    assert "rp-0" in jobs.ended


async def test_a_broken_gpu_stops_the_taking_and_the_loop_ends_with_its_jobs() -> None:
    source, jobs, engine = JobSource(4), Jobs(), Engine()
    loop = make_loop(source, jobs, engine, [2])
    running = asyncio.create_task(loop.run())
    await until(lambda: len(jobs.began) == 2)
    engine.needs_fresh_worker = True
    jobs.finish("rp-0")
    await asyncio.sleep(0.3)
    assert set(jobs.began) == {"rp-0", "rp-1"}  # the freed slot is not refilled
    jobs.finish("rp-1")
    await asyncio.wait_for(running, 10)
    assert engine.shutdowns == 0 and len(source.queue) == 2
