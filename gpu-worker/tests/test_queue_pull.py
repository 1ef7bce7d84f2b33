"""The queue-pull adapter: ack, retry and drop, bodies, the wire, --once and API errors.

Run against ``tests.fake_queue``, a fake of the Cloudflare Queues HTTP pull API injected as the
client's transport.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from adapters import queue_pull
from adapters.queue_pull import QueueApiError, QueueClient, QueueMessage, decide, decode_body
from engine.errors import JobParseError
from engine.report import JobResult
from tests.fake_queue import (TOKEN, FakeQueue, FakeRunner, Sleeps, b64, cf_response, completed, job, message, run,
                              settings, undelivered_second_item, until)


# -- ack and retry -------------------------------------------------------------------------------


async def test_every_message_acked_exactly_once_after_its_items_are_reported():
    jobs = [job(f"job_{i}") for i in range(5)]
    queue = FakeQueue([message(f"m{i}", j) for i, j in enumerate(jobs)])
    runner = FakeRunner()
    acked_after: dict[str, bool] = {}
    queue.on_ack = lambda msg_id: acked_after.setdefault(msg_id, f"job_{msg_id[1:]}" in runner.reported)

    stats = await run(queue, runner, settings(queue_pull_batch_size=2))

    assert sorted(queue.acked) == [f"m{i}" for i in range(5)]  # each once
    assert acked_after == {f"m{i}": True for i in range(5)}  # never before the job was reported
    assert queue.retried == []
    assert sorted(runner.jobs, key=lambda j: j["job_id"]) == jobs  # decoded bodies, as sent
    assert runner.max_running == 2  # a window of QUEUE_PULL_BATCH_SIZE jobs
    assert all(1 <= b["batch_size"] <= 2 and b["visibility_timeout_ms"] == 600_000 for b in queue.pull_bodies)
    assert queue.pull_bodies[-1]["batch_size"] >= 1 and queue.pending == []
    assert (stats.acked, stats.retried, stats.dropped) == (5, 0, 0)


async def test_each_pull_asks_for_exactly_the_free_slots():
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(5)])
    gates = {f"job_{i}": asyncio.Event() for i in range(5)}

    class GatedRunner(FakeRunner):
        async def run_job(self, raw: Any) -> JobResult:
            await gates[raw["job_id"]].wait()
            return await super().run_job(raw)

    runner = GatedRunner()
    serving = asyncio.ensure_future(run(queue, runner, settings(queue_pull_batch_size=3)))
    await until(lambda: len(queue.pending) == 2)
    for _ in range(20):
        await asyncio.sleep(0)
    assert [b["batch_size"] for b in queue.pull_bodies] == [3]  # three leased, no pull while all slots busy
    gates["job_0"].set()
    await until(lambda: len(queue.pull_bodies) == 2)
    assert queue.pull_bodies[1]["batch_size"] == 1 and queue.acked == ["m0"]
    for gate in gates.values():
        gate.set()
    await serving
    assert sorted(queue.acked) == [f"m{i}" for i in range(5)] and runner.max_running <= 3


async def test_one_job_at_a_time_with_batch_size_one():
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    runner = FakeRunner()
    await run(queue, runner, settings(queue_pull_batch_size=1))
    assert runner.max_running == 1 and sorted(queue.acked) == ["m0", "m1", "m2"]
    assert {b["batch_size"] for b in queue.pull_bodies} == {1}


def crash(raw: Any) -> JobResult:
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.mark.parametrize("answer", [undelivered_second_item, crash], ids=["undelivered-callback", "runner-raised"])
async def test_failed_jobs_are_retried_with_the_delay_and_not_acked(answer):
    queue = FakeQueue([message("bad", job("job_bad")), message("good", job("job_good"))])

    def mixed(raw: dict[str, Any]) -> JobResult:
        return answer(raw) if raw["job_id"] == "job_bad" else completed(raw)

    stats = await run(queue, FakeRunner(mixed), settings(queue_pull_retry_delay_sec=45))

    assert queue.retried == [("bad", 45)]
    assert queue.acked == ["good"]
    assert (stats.acked, stats.retried) == (1, 1)


async def test_failed_items_whose_callbacks_were_delivered_are_acked():
    queue = FakeQueue([message("m", job("job_1"))])
    await run(queue, FakeRunner(lambda raw: completed(raw, status="failed")))
    assert queue.acked == ["m"] and queue.retried == []


# -- bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type,body", [
    ("json", b64(json.dumps(job("job_1")).encode())),
    ("bytes", b64(json.dumps(job("job_1")).encode())),
    ("text", json.dumps(job("job_1"))),
    (None, json.dumps(job("job_1"))),
])
async def test_bodies_are_decoded_per_content_type(content_type, body):
    queue = FakeQueue([message("m", body, content_type)])
    runner = FakeRunner()
    await run(queue, runner)
    assert runner.jobs == [job("job_1")]
    assert queue.acked == ["m"]


@pytest.mark.parametrize("content_type,body,reason", [
    ("json", "not base64 !!", "not valid base64"),
    ("bytes", b64(b"\xff\xfe\x00garbage"), "not UTF-8"),
    ("json", b64(b"{\"job_id\": "), "not valid JSON"),
    ("text", "job_1 please", "not valid JSON"),
    ("v8", b64(b"\xff\x0fo\"\x06job_id"), "cannot be read"),
])
async def test_undecodable_bodies_are_acked_and_logged_without_running(caplog, content_type, body, reason):
    queue = FakeQueue([message("junk", body, content_type), message("m", job("job_1"))])
    runner = FakeRunner()
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        stats = await run(queue, runner)
    assert [j["job_id"] for j in runner.jobs] == ["job_1"]
    assert sorted(queue.acked) == ["junk", "m"] and queue.retried == []
    dropped = [r for r in caplog.records if r.getMessage() == "message.dropped"]
    assert len(dropped) == 1 and dropped[0].message_id == "junk" and reason in dropped[0].reason
    assert dropped[0].levelno == logging.ERROR
    assert stats.dropped == 1


async def test_a_job_the_pipeline_cannot_parse_is_acked(caplog):
    queue = FakeQueue([message("m", {"job_id": "job_1"})])
    runner = FakeRunner(lambda raw: JobResult.rejected("invalid job envelope: items: field required"))
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        stats = await run(queue, runner)
    assert queue.acked == ["m"] and stats.dropped == 1
    assert any(r.getMessage() == "job.drop" and r.job_id == "job_1" and "items" in r.reason for r in caplog.records)


def test_decode_body_units():
    def msg(body: Any, content_type: str | None) -> QueueMessage:
        return QueueMessage("m", "l", body, 1, content_type, None)

    assert decode_body(msg(b64(b'{"a": [1, "\xc3\xa9"]}'), "json")) == {"a": [1, "é"]}
    assert decode_body(msg('{"a": 1}', "text")) == {"a": 1}
    with pytest.raises(JobParseError):
        decode_body(msg({"a": 1}, "json"))  # the API sends strings only
    with pytest.raises(JobParseError):
        decode_body(msg('{"a": 1}', "json"))  # plain JSON where base64 is due


def test_decide():
    assert decide(completed(job("j")))[0] == "ack"
    assert decide(undelivered_second_item(job("j"))) == ("retry", "1 of 2 callbacks undelivered")
    assert decide(JobResult.rejected("job is not valid JSON")) == ("drop", "job is not valid JSON")


# -- the wire ------------------------------------------------------------------------------------


async def test_bearer_token_is_sent_and_never_logged(caplog):
    queue = FakeQueue([message("m", job("job_1")), message("x", "???", "json")])
    queue.pull_faults = [cf_response(None, 500, [{"code": 10001, "message": "Internal error"}])]
    with caplog.at_level(logging.DEBUG):
        await run(queue, FakeRunner())
    assert queue.auth and set(queue.auth) == {f"Bearer {TOKEN}"}
    assert len(queue.auth) == len(queue.pull_bodies) + len(queue.ack_bodies)
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(value) for record in caplog.records for value in vars(record).values())
    assert TOKEN not in repr(QueueClient.from_settings(settings(), httpx.AsyncClient()))


async def test_messages_without_a_lease_are_skipped():
    queue = FakeQueue()
    lease_less = {"id": "nolease", "body": "{}", "attempts": 1, "metadata": {"CF-Content-Type": "text"}}
    queue.pull_faults = [cf_response({"message_backlog_count": 0, "messages": [lease_less]})]
    runner = FakeRunner()
    await run(queue, runner)
    assert runner.jobs == [] and queue.ack_bodies == []


# -- --once and errors ---------------------------------------------------------------------------


async def test_once_exits_when_the_queue_is_empty():
    queue = FakeQueue()
    sleeps = Sleeps()
    stats = await run(queue, FakeRunner(), once=True, sleep=sleeps)
    assert len(queue.pull_bodies) == 1 and queue.ack_bodies == [] and sleeps.delays == []
    assert stats == queue_pull.ServeStats()


async def test_pull_errors_back_off_and_continue():
    queue = FakeQueue([message("m", job("job_1"))])
    queue.pull_faults = [cf_response(None, 500), httpx.ConnectError("connection refused"),
                         httpx.ReadTimeout("timed out"), cf_response(None, 429)]
    stop = asyncio.Event()
    # Served forever (once=False) until the message is acked and the consumer goes idle.
    sleeps = Sleeps(then=lambda delays: stop.set() if queue.acked else None)
    stats = await run(queue, FakeRunner(), once=False, stop=stop, sleep=sleeps)
    assert sleeps.delays[:4] == [1.0, 2.0, 4.0, 8.0]  # back-off ...
    assert sleeps.delays[4:] and set(sleeps.delays[4:]) == {2.0}  # ... then the idle sleep
    assert queue.acked == ["m"] and stats.pull_errors == 4


async def test_backoff_is_capped_and_resets_after_a_good_pull():
    queue = FakeQueue()
    queue.pull_faults = [cf_response(None, 503)] * 8 + [cf_response({"messages": []})] + [cf_response(None, 502)]
    stop = asyncio.Event()
    sleeps = Sleeps(then=lambda delays: stop.set() if len(delays) == 10 else None)
    await run(queue, FakeRunner(), once=False, stop=stop, sleep=sleeps)
    assert sleeps.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 2.0, 1.0]


async def test_once_gives_up_after_repeated_pull_failures():
    queue = FakeQueue()
    queue.pull_faults = [httpx.ConnectError("down")] * 10
    sleeps = Sleeps()
    with pytest.raises(QueueApiError) as err:
        await run(queue, FakeRunner(), once=True, sleep=sleeps)
    assert err.value.retryable and len(sleeps.delays) == queue_pull.ONCE_MAX_PULL_FAILURES - 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_configuration_errors_stop_the_consumer(status):
    queue = FakeQueue([message("m", job("job_1"))])
    queue.pull_faults = [cf_response(None, status, [{"code": 10000, "message": "Authentication error"}])]
    sleeps = Sleeps()
    with pytest.raises(QueueApiError) as err:
        await run(queue, FakeRunner(), once=False, sleep=sleeps)
    assert err.value.status == status and not err.value.retryable
    assert "10000 Authentication error" in err.value.message and TOKEN not in err.value.message
    assert len(queue.pull_bodies) == 1 and sleeps.delays == []


async def test_a_failing_ack_is_retried_in_place():
    queue = FakeQueue([message("m", job("job_1"))])
    queue.ack_faults = [cf_response(None, 503), httpx.ConnectError("reset")]
    sleeps = Sleeps()
    stats = await run(queue, FakeRunner(), sleep=sleeps)
    assert queue.acked == ["m"] and len(queue.ack_bodies) == 3
    assert sleeps.delays == [1.0, 2.0] and stats.ack_errors == 0


async def test_an_ack_that_keeps_failing_is_logged_and_left_to_the_lease(caplog):
    queue = FakeQueue([message("m", job("job_1"))])
    queue.ack_faults = [cf_response(None, 500)] * queue_pull.ACK_ATTEMPTS
    with caplog.at_level(logging.WARNING, logger="worker.queue_pull"):
        stats = await run(queue, FakeRunner())
    assert queue.acked == [] and stats.ack_errors == 1 and stats.acked == 0
    final = [r for r in caplog.records if r.getMessage() == "ack.failed" and r.giving_up]
    assert len(final) == 1 and final[0].message_id == "m" and final[0].levelno == logging.ERROR


async def test_an_ack_refused_for_permissions_stops_pulling():
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(4)])
    queue.ack_faults = [cf_response(None, 403, [{"code": 10000, "message": "Authentication error"}])]
    with pytest.raises(QueueApiError) as err:
        await run(queue, FakeRunner(), settings(queue_pull_batch_size=1), once=False)
    assert err.value.status == 403
    assert len(queue.pull_bodies) == 1 and len(queue.pending) == 3  # no more leases taken
