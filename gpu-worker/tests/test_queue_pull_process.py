"""The queue-pull adapter: shutdown, the process entry point, and the real pipeline behind it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import httpx

from adapters import queue_pull
from engine.settings import Settings
from engine.report import JobResult
from tests.fake_queue import (API, TOKEN, FakeQueue, FakeRunner, cf_response, completed, job, message,
                              public_resolver, run, settings, undelivered_second_item)


# -- shutdown ------------------------------------------------------------------------------------


async def test_stop_during_a_pull_retries_what_it_brought_at_once(caplog):
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    stop = asyncio.Event()
    queue.on_pull = stop.set  # the signal arrives while the pull is on the wire
    runner = FakeRunner()
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        stats = await run(queue, runner, settings(queue_pull_batch_size=3), once=False, stop=stop)
    assert runner.jobs == []
    assert sorted(queue.retried) == [("m0", 0), ("m1", 0), ("m2", 0)] and queue.acked == []
    assert stats.returned == 3 and len(queue.pull_bodies) == 1
    assert any(r.getMessage() == "shutdown.returning" for r in caplog.records)


async def test_stop_mid_batch_finishes_and_settles_the_jobs_in_flight():
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(6)])
    stop = asyncio.Event()

    def answer(raw: dict[str, Any]) -> JobResult:
        stop.set()  # SIGTERM while the first jobs run
        return undelivered_second_item(raw) if raw["job_id"] == "job_1" else completed(raw)

    runner = FakeRunner(answer)
    stats = await run(queue, runner, settings(queue_pull_batch_size=2), once=False, stop=stop)
    assert [j["job_id"] for j in runner.jobs] == ["job_0", "job_1"]  # both in flight finished
    assert queue.acked == ["m0"] and queue.retried == [("m1", 60)]
    assert len(queue.pull_bodies) == 1 and len(queue.pending) == 4  # nothing more leased
    assert (stats.acked, stats.retried) == (1, 1)


async def test_stop_while_idle_ends_at_once():
    queue = FakeQueue()
    stop = asyncio.Event()

    async def never_returns(seconds: float) -> None:
        stop.set()
        await asyncio.Event().wait()

    await asyncio.wait_for(run(queue, FakeRunner(), once=False, stop=stop, sleep=never_returns), timeout=5)


# -- the process entry point ---------------------------------------------------------------------


def test_main_stops_on_sigterm_then_settles_and_exits_zero():
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    built: list[Settings] = []

    class SignalledRunner(FakeRunner):
        async def run_job(self, raw: Any) -> JobResult:
            os.kill(os.getpid(), signal.SIGTERM)  # must reach the adapter's handler
            for _ in range(50):  # let the loop run the handler
                await asyncio.sleep(0)
            self.handler_after_first_signal = signal.getsignal(signal.SIGTERM)
            return await super().run_job(raw)

    runner = SignalledRunner()

    def factory(cfg: Settings) -> FakeRunner:
        built.append(cfg)
        return runner

    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))  # a safety net
    try:
        cfg = settings(queue_pull_batch_size=1)
        # --once would drain all 3 without the signal
        code = queue_pull.main(cfg, factory, once=True, transport=queue.transport, resolver=public_resolver)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert caught == [] and code == 0 and built == [cfg]
    assert queue.acked == ["m0"] and len(queue.pull_bodies) == 1 and len(queue.pending) == 2
    assert runner.handler_after_first_signal == signal.SIG_DFL  # so a second signal ends the process


def test_main_once_drains_and_exits_zero():
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    assert queue_pull.main(settings(), lambda cfg: FakeRunner(), once=True, transport=queue.transport,
                           resolver=public_resolver) == 0
    assert sorted(queue.acked) == ["m0", "m1", "m2"]


def test_main_exits_one_when_the_token_is_refused():
    queue = FakeQueue()
    queue.pull_faults = [cf_response(None, 401, [{"code": 10000, "message": "Authentication error"}])]
    assert queue_pull.main(settings(), lambda cfg: FakeRunner(), once=False, transport=queue.transport) == 1


def test_main_needs_the_queue_settings(caplog):
    built = []
    with caplog.at_level(logging.ERROR, logger="worker.queue_pull"):
        code = queue_pull.main(settings(cf_api_token=None, cf_queue_id=None), built.append, once=True)
    assert code == 2 and built == []
    assert caplog.records[-1].missing == ["CF_QUEUE_ID", "CF_API_TOKEN"]


# -- with the real pipeline ----------------------------------------------------------------------


async def test_the_real_pipeline_behind_the_adapter_acks_and_redelivers(tmp_path):
    from engine.callback import HttpCallbackSender, verify_callback
    from engine.pipeline import Pipeline
    from engine.segmenter import FileMaskSegmenter
    from engine.storage import LocalStorage
    from tests.conftest import SECRET, jpeg_bytes, make_job, make_settings, room_photo, write_masks

    cfg = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"),
                        callback_allowed_hosts="receiver.test", cf_api_base=API, cf_account_id="acc123",
                        cf_queue_id="q456", cf_api_token=TOKEN)
    storage = LocalStorage(cfg.storage_local_dir)
    for i in range(2):
        rgb, masks = room_photo(seed=i)
        storage._put(f"inputs/u_abc/job_123/{i}.jpg", jpeg_bytes(rgb), "image/jpeg", {})
        write_masks(tmp_path / "masks", f"inputs/u_abc/job_123/{i}.jpg", masks)
    received: list[tuple[str, bool]] = []
    refuse = {"job_123:1:0"}  # the receiver refuses idx 1 once (a final 400: undelivered)

    def receiver(request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        received.append((key, verify_callback(request.content, request.headers["Authorization"], SECRET)))
        if key in refuse:
            refuse.discard(key)
            return httpx.Response(400)
        return httpx.Response(200)

    callbacks = HttpCallbackSender(SECRET, allowed_hosts=cfg.callback_allowed_hosts,
                                   transport=httpx.MockTransport(receiver))
    pipeline = Pipeline(cfg, storage, FileMaskSegmenter(tmp_path / "masks"), callbacks)
    sent = message("m", make_job(2, callback_url="http://receiver.test/jobs/job_123/callback"))
    queue = FakeQueue([sent])

    await run(queue, pipeline, cfg)
    assert queue.retried == [("m", cfg.queue_pull_retry_delay_sec)] and queue.acked == []  # idx 1 unreported
    assert sorted(received) == [("job_123:0:0", True), ("job_123:1:0", True)]
    assert storage.path_of("outputs/u_abc/job_123/1_result.png").is_file()

    queue.pending.append(sent)  # the queue delivers it again after the delay
    await run(queue, pipeline, cfg)
    assert queue.acked == ["m"]
    assert sorted(received[2:]) == [("job_123:0:0", True), ("job_123:1:0", True)]  # same keys, signed afresh
