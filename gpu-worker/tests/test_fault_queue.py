"""Fault-matrix cases for the queue-pull adapter: poison messages, malformed API answers,
refused callback URLs, 4xx answers to an ack, and a job outliving its lease (README, "Faults").

Every message ends acked or retried with a log line naming it, and the consumer keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import httpx
import pytest

from adapters import queue_pull
from adapters.queue_pull import QueueApiError, QueueClient, serve
from tests.fake_queue import FakeQueue, FakeRunner, cf_response, job, message, public_resolver, run, settings

NESTED = "[" * 100_000 + "]" * 100_000
HUGE_INT = '{"job_id": "job_x", "items": [{"idx": ' + "9" * 5000 + "}]}"

POISON = {
    "body_nested_100k_deep": message("poison", NESTED, "text"),
    "base64_body_5000_digit_integer": message("poison", base64.b64encode(HUGE_INT.encode()).decode(), "json"),
    "base64_body_nested_100k_deep": message("poison", base64.b64encode(NESTED.encode()).decode(), "bytes"),
}


def named(caplog: pytest.LogCaptureFixture, event: str, message_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event and getattr(r, "message_id", None) == message_id]


@pytest.mark.parametrize("name", POISON)
async def test_poison_message_is_acked_with_a_log_line_and_the_consumer_goes_on(caplog, name):
    queue = FakeQueue([POISON[name], message("m", job("job_1"))])
    runner = FakeRunner()
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        stats = await run(queue, runner, settings(queue_pull_batch_size=1))
    assert sorted(queue.acked) == ["m", "poison"] and queue.retried == []
    assert [j["job_id"] for j in runner.jobs] == ["job_1"]
    [dropped] = named(caplog, "message.dropped", "poison")
    assert dropped.levelno == logging.ERROR and stats.dropped == 1


@pytest.mark.parametrize("name", POISON)
def test_once_exits_zero_after_a_poison_message(name):
    queue = FakeQueue([POISON[name]])
    assert queue_pull.main(settings(), lambda cfg: FakeRunner(), once=True, transport=queue.transport,
                           resolver=public_resolver) == 0
    assert queue.acked == ["poison"]


@pytest.mark.parametrize("raw", [NESTED, HUGE_INT, NESTED.encode()], ids=["nested", "huge_int", "nested_bytes"])
async def test_pipeline_given_a_string_answers_an_error(tmp_path, raw):
    from engine.callback import RecordingCallbackSender
    from engine.pipeline import Pipeline
    from engine.segmenter import FileMaskSegmenter
    from engine.storage import LocalStorage
    from tests.conftest import make_settings

    cfg = make_settings(storage_local_dir=str(tmp_path / "store"))
    sender = RecordingCallbackSender()
    pipeline = Pipeline(cfg, LocalStorage(tmp_path / "store"), FileMaskSegmenter(tmp_path / "masks"), sender)
    result = await pipeline.run_job(raw)
    answer = result if isinstance(result, dict) else result.to_dict()
    assert answer.get("error") and sender.sent == []


@pytest.mark.parametrize("field,value", [("attempts", "two"), ("attempts", -1), ("timestamp_ms", "soon"),
                                         ("id", {"nested": 1}), ("attempts", [1])])
async def test_malformed_field_in_a_pull_answer_is_logged_and_survived(caplog, field, value):
    queue = FakeQueue()
    odd = {**message("m", job("job_1")), "lease_id": "lease-odd", "attempts": 1, "timestamp_ms": 1}
    odd[field] = value
    queue.leases["lease-odd"] = "m"
    queue.pull_faults = [cf_response({"messages": [odd]})]
    queue.pending = [message("m2", job("job_2"))]
    runner = FakeRunner()
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        await run(queue, runner, settings(queue_pull_batch_size=1))
    assert [j["job_id"] for j in runner.jobs] == ["job_1", "job_2"]
    assert sorted(queue.acked) == ["m", "m2"]
    assert any(r.getMessage() == "message.malformed_fields" and field in r.fields for r in caplog.records)


async def test_refused_callback_url_is_acked_without_running(caplog):
    """A callback URL the policy refuses can never be reported to: not run, not sent round the
    queue's retries to the dead-letter queue, but acked and logged."""
    queue = FakeQueue([message("private", job("job_p") | {"callback_url": "https://10.0.0.7/cb"}),
                       message("nat64", job("job_n") | {"callback_url": "https://[64:ff9b::7f00:1]/cb"}),
                       message("ok", job("job_ok"))])
    runner = FakeRunner()
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        stats = await run(queue, runner, settings(queue_pull_batch_size=1))
    assert [j["job_id"] for j in runner.jobs] == ["job_ok"]
    assert sorted(queue.acked) == ["nat64", "ok", "private"] and queue.retried == []
    for msg_id in ("private", "nat64"):
        [line] = named(caplog, "message.dropped", msg_id)
        assert "callback_url refused" in line.reason
    assert stats.dropped == 2


async def test_an_unresolvable_callback_host_still_runs_the_job():
    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError("temporary failure in name resolution")

    queue = FakeQueue([message("m", job("job_1"))])
    runner = FakeRunner()
    cfg = settings()
    async with httpx.AsyncClient(transport=queue.transport) as http:
        await serve(runner, QueueClient.from_settings(cfg, http), cfg, once=True, stop=asyncio.Event(),
                    resolver=nowhere)
    assert [j["job_id"] for j in runner.jobs] == ["job_1"] and queue.acked == ["m"]


@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_ack_answered_4xx_keeps_the_consumer_running(caplog, status):
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    queue.ack_faults = [cf_response(None, status, [{"code": 11000, "message": "lease not found"}])]
    runner = FakeRunner()
    with caplog.at_level(logging.WARNING, logger="worker.queue_pull"):
        stats = await run(queue, runner, settings(queue_pull_batch_size=1))
    assert len(runner.jobs) == 3 and sorted(queue.acked) == ["m1", "m2"] and stats.ack_errors == 1
    [failed] = named(caplog, "ack.failed", "m0")
    assert failed.status == status and failed.giving_up


@pytest.mark.parametrize("status", [401, 403])
async def test_ack_refused_credentials_still_stops(status):
    queue = FakeQueue([message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    queue.ack_faults = [cf_response(None, status)]
    with pytest.raises(QueueApiError):
        await run(queue, FakeRunner(), settings(queue_pull_batch_size=1), once=False)
    assert len(queue.pending) == 2


async def test_job_longer_than_its_lease_is_logged_when_the_lease_runs_out(caplog):
    """The pull API cannot extend a lease: the moment it runs out, while the job still runs, the
    operator hears of it (the queue may hand the message to another consumer meanwhile)."""
    seen_while_running: list[bool] = []

    class LongJob(FakeRunner):
        async def run_job(self, raw: Any) -> dict[str, Any]:
            for _ in range(60):  # up to 3 s for a 1 s lease
                if named(caplog, "job.lease_expired", "m"):
                    break
                await asyncio.sleep(0.05)
            seen_while_running.append(bool(named(caplog, "job.lease_expired", "m")))
            return await super().run_job(raw)

    queue = FakeQueue([message("m", job("job_1"))])
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        await run(queue, LongJob(), settings(queue_pull_visibility_timeout_ms=1000))
    assert seen_while_running == [True]
    [line] = named(caplog, "job.lease_expired", "m")
    assert line.levelno == logging.ERROR and line.job_id == "job_1"
