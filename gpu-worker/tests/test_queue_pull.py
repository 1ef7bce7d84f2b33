"""The queue-pull adapter against a fake of the Cloudflare Queues HTTP pull API (respx).

The fake answers with the documented shapes: ``POST .../messages/pull`` takes
``{batch_size, visibility_timeout_ms}`` and answers ``{success, errors, messages, result:
{message_backlog_count, messages: [{id, body, attempts, lease_id, timestamp_ms, metadata}]}}``;
``POST .../messages/ack`` takes ``{acks: [{lease_id}], retries: [{lease_id, delay_seconds}]}`` and
answers ``result: {ackCount, retryCount, warnings}``. The runner is a fake with the pipeline's
``run_job`` answer shape; sleeps are recorded, never waited.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

from adapters import queue_pull
from adapters.queue_pull import (QueueApiError, QueueClient, QueueMessage, decode_body, decide, serve)
from engine.errors import JobParseError
from engine.settings import Settings

TOKEN = "cf-token-SECRET-do-not-log-0123456789"
API = "https://api.cloudflare.test/client/v4"
BASE = f"{API}/accounts/acc123/queues/q456/messages"
PULL_URL, ACK_URL = f"{BASE}/pull", f"{BASE}/ack"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "cf_api_base": API, "cf_account_id": "acc123", "cf_queue_id": "q456", "cf_api_token": TOKEN,
        "queue_pull_batch_size": 2, "queue_pull_visibility_timeout_ms": 600_000,
        "queue_pull_retry_delay_sec": 60, "queue_pull_idle_sleep_sec": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


def job(job_id: str, n_items: int = 2) -> dict[str, Any]:
    return {"job_id": job_id, "user_id": "u_abc", "preset": "interior", "concepts": {},
            "items": [{"idx": i} for i in range(n_items)], "callback_url": "https://example.test/cb",
            "idempotency_prefix": job_id}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def message(msg_id: str, body: Any, content_type: str | None = "json") -> dict[str, Any]:
    """A message as the producer left it; the fake adds lease_id, attempts and timestamp_ms."""
    if content_type in ("json", "bytes") and not isinstance(body, str):
        body = b64(json.dumps(body).encode())
    metadata = {"CF-sourceMessageSource": "api"}
    if content_type is not None:
        metadata["CF-Content-Type"] = content_type
    return {"id": msg_id, "body": body, "metadata": metadata}


def cf_response(result: Any, status: int = 200, errors: list | None = None) -> httpx.Response:
    return httpx.Response(status, json={"success": status < 300, "errors": errors or [], "messages": [],
                                        "result": result})


class FakeQueue:
    """The two endpoints of the pull API, keeping what was pulled, acked and retried."""

    def __init__(self, router: respx.MockRouter, messages: list[dict[str, Any]] = ()) -> None:
        self.pending = list(messages)
        self.leases: dict[str, str] = {}  # lease_id -> message id
        self.pull_bodies: list[dict[str, Any]] = []
        self.ack_bodies: list[dict[str, Any]] = []
        self.acked: list[str] = []
        self.retried: list[tuple[str, float]] = []
        self.auth: list[str | None] = []
        self.pull_faults: list[httpx.Response | Exception] = []
        self.ack_faults: list[httpx.Response | Exception] = []
        self.on_pull: Callable[[], None] | None = None
        self.on_ack: Callable[[str], None] | None = None
        self._lease_no = 0
        router.post(PULL_URL).mock(side_effect=self._pull)
        router.post(ACK_URL).mock(side_effect=self._ack)

    def _pull(self, request: httpx.Request) -> httpx.Response:
        self.auth.append(request.headers.get("Authorization"))
        body = json.loads(request.content)
        assert set(body) == {"batch_size", "visibility_timeout_ms"}, body
        self.pull_bodies.append(body)
        if self.on_pull:
            self.on_pull()
        if self.pull_faults:
            fault = self.pull_faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        batch, self.pending = self.pending[:body["batch_size"]], self.pending[body["batch_size"]:]
        out = []
        for msg in batch:
            self._lease_no += 1
            lease = f"eyJhbGciOiJkaXIi..lease-{self._lease_no}"
            self.leases[lease] = msg["id"]
            out.append({**msg, "lease_id": lease, "attempts": 1, "timestamp_ms": 1710950954154})
        return cf_response({"message_backlog_count": len(self.pending), "messages": out})

    def _ack(self, request: httpx.Request) -> httpx.Response:
        self.auth.append(request.headers.get("Authorization"))
        body = json.loads(request.content)
        assert set(body) <= {"acks", "retries"}, body
        self.ack_bodies.append(body)
        if self.ack_faults:
            fault = self.ack_faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        for ack in body.get("acks", []):
            assert set(ack) == {"lease_id"}, ack
            self.acked.append(self.leases[ack["lease_id"]])
            if self.on_ack:
                self.on_ack(self.leases[ack["lease_id"]])
        for retry in body.get("retries", []):
            assert set(retry) == {"lease_id", "delay_seconds"}, retry
            self.retried.append((self.leases[retry["lease_id"]], retry["delay_seconds"]))
        return cf_response({"ackCount": len(body.get("acks", [])), "retryCount": len(body.get("retries", [])),
                            "warnings": []})


def completed(raw: dict[str, Any], callback: str = "delivered", status: str = "done") -> dict[str, Any]:
    items = [{"idx": item["idx"], "status": status, "output_key": None, "preview_key": None, "error": None,
              "error_code": None, "callback": callback} for item in raw["items"]]
    return {"job_id": raw["job_id"], "status": "completed" if status == "done" else "failed", "items": items}


class FakeRunner:
    """Stands in for the pipeline: records each job, how many ran at once, and when each was reported."""

    def __init__(self, answer: Callable[[Any], dict[str, Any]] = completed) -> None:
        self.answer = answer
        self.jobs: list[Any] = []
        self.reported: list[str] = []
        self.running = 0
        self.max_running = 0

    async def run_job(self, raw: Any) -> dict[str, Any]:
        self.jobs.append(raw)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            for _ in range(3):  # let the other jobs in flight start
                await asyncio.sleep(0)
            result = self.answer(raw)
        finally:
            self.running -= 1
        self.reported.append(raw["job_id"] if isinstance(raw, dict) else repr(raw))
        return result


class Sleeps:
    def __init__(self, then: Callable[[list[float]], None] | None = None) -> None:
        self.delays: list[float] = []
        self.then = then

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.then:
            self.then(self.delays)
        await asyncio.sleep(0)


async def run(queue_router: respx.MockRouter, runner: Any, cfg: Settings | None = None, *, once: bool = True,
              stop: asyncio.Event | None = None, sleep: Sleeps | None = None) -> queue_pull.ServeStats:
    cfg = cfg or settings()
    async with httpx.AsyncClient() as http:
        client = QueueClient.from_settings(cfg, http)
        return await serve(runner, client, cfg, once=once, stop=stop or asyncio.Event(), sleep=sleep or Sleeps())


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


# -- ack and retry -------------------------------------------------------------------------------


async def test_every_message_acked_exactly_once_after_its_items_are_reported(router):
    jobs = [job(f"job_{i}") for i in range(5)]
    queue = FakeQueue(router, [message(f"m{i}", j) for i, j in enumerate(jobs)])
    runner = FakeRunner()
    acked_after: dict[str, bool] = {}
    queue.on_ack = lambda msg_id: acked_after.setdefault(msg_id, f"job_{msg_id[1:]}" in runner.reported)

    stats = await run(router, runner, settings(queue_pull_batch_size=2))

    assert sorted(queue.acked) == [f"m{i}" for i in range(5)]  # each once
    assert acked_after == {f"m{i}": True for i in range(5)}  # never before the job was reported
    assert queue.retried == []
    assert sorted(runner.jobs, key=lambda j: j["job_id"]) == jobs  # decoded bodies, as sent
    assert runner.max_running == 2  # a window of QUEUE_PULL_BATCH_SIZE jobs
    assert all(1 <= b["batch_size"] <= 2 and b["visibility_timeout_ms"] == 600_000 for b in queue.pull_bodies)
    assert queue.pull_bodies[-1]["batch_size"] >= 1 and queue.pending == []
    assert (stats.acked, stats.retried, stats.dropped) == (5, 0, 0)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_each_pull_asks_for_exactly_the_free_slots(router):
    queue = FakeQueue(router, [message(f"m{i}", job(f"job_{i}")) for i in range(5)])
    gates = {f"job_{i}": asyncio.Event() for i in range(5)}

    class GatedRunner(FakeRunner):
        async def run_job(self, raw: Any) -> dict[str, Any]:
            await gates[raw["job_id"]].wait()
            return await super().run_job(raw)

    runner = GatedRunner()
    serving = asyncio.ensure_future(run(router, runner, settings(queue_pull_batch_size=3)))
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


async def test_one_job_at_a_time_with_batch_size_one(router):
    queue = FakeQueue(router, [message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    runner = FakeRunner()
    await run(router, runner, settings(queue_pull_batch_size=1))
    assert runner.max_running == 1 and sorted(queue.acked) == ["m0", "m1", "m2"]
    assert {b["batch_size"] for b in queue.pull_bodies} == {1}


def undelivered_second_item(raw: dict[str, Any]) -> dict[str, Any]:
    result = completed(raw)
    result["items"][1]["callback"] = "undelivered"
    return result


def crash(raw: Any) -> dict[str, Any]:
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.mark.parametrize("answer", [undelivered_second_item, crash], ids=["undelivered-callback", "runner-raised"])
async def test_failed_jobs_are_retried_with_the_delay_and_not_acked(router, answer):
    queue = FakeQueue(router, [message("bad", job("job_bad")), message("good", job("job_good"))])

    def mixed(raw: dict[str, Any]) -> dict[str, Any]:
        return answer(raw) if raw["job_id"] == "job_bad" else completed(raw)

    stats = await run(router, FakeRunner(mixed), settings(queue_pull_retry_delay_sec=45))

    assert queue.retried == [("bad", 45)]
    assert queue.acked == ["good"]
    assert (stats.acked, stats.retried) == (1, 1)


async def test_failed_items_whose_callbacks_were_delivered_are_acked(router):
    queue = FakeQueue(router, [message("m", job("job_1"))])
    await run(router, FakeRunner(lambda raw: completed(raw, status="failed")))
    assert queue.acked == ["m"] and queue.retried == []


# -- bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type,body", [
    ("json", b64(json.dumps(job("job_1")).encode())),
    ("bytes", b64(json.dumps(job("job_1")).encode())),
    ("text", json.dumps(job("job_1"))),
    (None, json.dumps(job("job_1"))),
])
async def test_bodies_are_decoded_per_content_type(router, content_type, body):
    queue = FakeQueue(router, [message("m", body, content_type)])
    runner = FakeRunner()
    await run(router, runner)
    assert runner.jobs == [job("job_1")]
    assert queue.acked == ["m"]


@pytest.mark.parametrize("content_type,body,reason", [
    ("json", "not base64 !!", "not valid base64"),
    ("bytes", b64(b"\xff\xfe\x00garbage"), "not UTF-8"),
    ("json", b64(b"{\"job_id\": "), "not JSON"),
    ("text", "job_1 please", "not JSON"),
    ("v8", b64(b"\xff\x0fo\"\x06job_id"), "cannot be read"),
])
async def test_undecodable_bodies_are_acked_and_logged_without_running(router, caplog, content_type, body, reason):
    queue = FakeQueue(router, [message("junk", body, content_type), message("m", job("job_1"))])
    runner = FakeRunner()
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        stats = await run(router, runner)
    assert [j["job_id"] for j in runner.jobs] == ["job_1"]
    assert sorted(queue.acked) == ["junk", "m"] and queue.retried == []
    dropped = [r for r in caplog.records if r.getMessage() == "message.dropped"]
    assert len(dropped) == 1 and dropped[0].message_id == "junk" and reason in dropped[0].reason
    assert dropped[0].levelno == logging.ERROR
    assert stats.dropped == 1


async def test_a_job_the_pipeline_cannot_parse_is_acked(router, caplog):
    queue = FakeQueue(router, [message("m", {"job_id": "job_1"})])
    runner = FakeRunner(lambda raw: {"error": "invalid job envelope: items: field required"})
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        stats = await run(router, runner)
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
    assert decide({"error": "job is not valid JSON"})[0] == "drop"
    assert decide({"job_id": "j", "status": "completed"})[0] == "retry"
    assert decide(None)[0] == "retry"


# -- the wire ------------------------------------------------------------------------------------


async def test_bearer_token_is_sent_and_never_logged(router, caplog):
    queue = FakeQueue(router, [message("m", job("job_1")), message("x", "???", "json")])
    queue.pull_faults = [cf_response(None, 500, [{"code": 10001, "message": "Internal error"}])]
    with caplog.at_level(logging.DEBUG):
        await run(router, FakeRunner())
    assert queue.auth and set(queue.auth) == {f"Bearer {TOKEN}"}
    assert len(queue.auth) == len(queue.pull_bodies) + len(queue.ack_bodies)
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(value) for record in caplog.records for value in vars(record).values())
    assert TOKEN not in repr(QueueClient.from_settings(settings(), httpx.AsyncClient()))


async def test_messages_without_a_lease_are_skipped(router):
    queue = FakeQueue(router)
    lease_less = {"id": "nolease", "body": "{}", "attempts": 1, "metadata": {"CF-Content-Type": "text"}}
    queue.pull_faults = [cf_response({"message_backlog_count": 0, "messages": [lease_less]})]
    runner = FakeRunner()
    await run(router, runner)
    assert runner.jobs == [] and queue.ack_bodies == []


# -- --once and errors ---------------------------------------------------------------------------


async def test_once_exits_when_the_queue_is_empty(router):
    queue = FakeQueue(router)
    sleeps = Sleeps()
    stats = await run(router, FakeRunner(), once=True, sleep=sleeps)
    assert len(queue.pull_bodies) == 1 and queue.ack_bodies == [] and sleeps.delays == []
    assert stats == queue_pull.ServeStats()


async def test_pull_errors_back_off_and_continue(router):
    queue = FakeQueue(router, [message("m", job("job_1"))])
    queue.pull_faults = [cf_response(None, 500), httpx.ConnectError("connection refused"),
                         httpx.ReadTimeout("timed out"), cf_response(None, 429)]
    stop = asyncio.Event()
    # Served forever (once=False) until the message is acked and the consumer goes idle.
    sleeps = Sleeps(then=lambda delays: stop.set() if queue.acked else None)
    stats = await run(router, FakeRunner(), once=False, stop=stop, sleep=sleeps)
    assert sleeps.delays[:4] == [1.0, 2.0, 4.0, 8.0]  # back-off ...
    assert sleeps.delays[4:] and set(sleeps.delays[4:]) == {2.0}  # ... then the idle sleep
    assert queue.acked == ["m"] and stats.pull_errors == 4


async def test_backoff_is_capped_and_resets_after_a_good_pull(router):
    queue = FakeQueue(router)
    queue.pull_faults = [cf_response(None, 503)] * 8 + [cf_response({"messages": []})] + [cf_response(None, 502)]
    stop = asyncio.Event()
    sleeps = Sleeps(then=lambda delays: stop.set() if len(delays) == 10 else None)
    await run(router, FakeRunner(), once=False, stop=stop, sleep=sleeps)
    assert sleeps.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 2.0, 1.0]


async def test_once_gives_up_after_repeated_pull_failures(router):
    FakeQueue(router).pull_faults = [httpx.ConnectError("down")] * 10
    sleeps = Sleeps()
    with pytest.raises(QueueApiError) as err:
        await run(router, FakeRunner(), once=True, sleep=sleeps)
    assert err.value.retryable and len(sleeps.delays) == queue_pull.ONCE_MAX_PULL_FAILURES - 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_configuration_errors_stop_the_consumer(router, status):
    queue = FakeQueue(router, [message("m", job("job_1"))])
    queue.pull_faults = [cf_response(None, status, [{"code": 10000, "message": "Authentication error"}])]
    sleeps = Sleeps()
    with pytest.raises(QueueApiError) as err:
        await run(router, FakeRunner(), once=False, sleep=sleeps)
    assert err.value.status == status and not err.value.retryable
    assert "10000 Authentication error" in err.value.message and TOKEN not in err.value.message
    assert len(queue.pull_bodies) == 1 and sleeps.delays == []


async def test_a_failing_ack_is_retried_in_place(router):
    queue = FakeQueue(router, [message("m", job("job_1"))])
    queue.ack_faults = [cf_response(None, 503), httpx.ConnectError("reset")]
    sleeps = Sleeps()
    stats = await run(router, FakeRunner(), sleep=sleeps)
    assert queue.acked == ["m"] and len(queue.ack_bodies) == 3
    assert sleeps.delays == [1.0, 2.0] and stats.ack_errors == 0


async def test_an_ack_that_keeps_failing_is_logged_and_left_to_the_lease(router, caplog):
    queue = FakeQueue(router, [message("m", job("job_1"))])
    queue.ack_faults = [cf_response(None, 500)] * queue_pull.ACK_ATTEMPTS
    with caplog.at_level(logging.WARNING, logger="worker.queue_pull"):
        stats = await run(router, FakeRunner())
    assert queue.acked == [] and stats.ack_errors == 1 and stats.acked == 0
    final = [r for r in caplog.records if r.getMessage() == "ack.failed" and r.giving_up]
    assert len(final) == 1 and final[0].message_id == "m" and final[0].levelno == logging.ERROR


async def test_an_ack_refused_for_permissions_stops_pulling(router):
    queue = FakeQueue(router, [message(f"m{i}", job(f"job_{i}")) for i in range(4)])
    queue.ack_faults = [cf_response(None, 403, [{"code": 10000, "message": "Authentication error"}])]
    with pytest.raises(QueueApiError) as err:
        await run(router, FakeRunner(), settings(queue_pull_batch_size=1), once=False)
    assert err.value.status == 403
    assert len(queue.pull_bodies) == 1 and len(queue.pending) == 3  # no more leases taken


# -- shutdown ------------------------------------------------------------------------------------


async def test_stop_during_a_pull_retries_what_it_brought_at_once(router, caplog):
    queue = FakeQueue(router, [message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    stop = asyncio.Event()
    queue.on_pull = stop.set  # the signal arrives while the pull is on the wire
    runner = FakeRunner()
    with caplog.at_level(logging.INFO, logger="worker.queue_pull"):
        stats = await run(router, runner, settings(queue_pull_batch_size=3), once=False, stop=stop)
    assert runner.jobs == []
    assert sorted(queue.retried) == [("m0", 0), ("m1", 0), ("m2", 0)] and queue.acked == []
    assert stats.returned == 3 and len(queue.pull_bodies) == 1
    assert any(r.getMessage() == "shutdown.returning" for r in caplog.records)


async def test_stop_mid_batch_finishes_and_settles_the_jobs_in_flight(router):
    queue = FakeQueue(router, [message(f"m{i}", job(f"job_{i}")) for i in range(6)])
    stop = asyncio.Event()

    def answer(raw: dict[str, Any]) -> dict[str, Any]:
        stop.set()  # SIGTERM while the first jobs run
        return undelivered_second_item(raw) if raw["job_id"] == "job_1" else completed(raw)

    runner = FakeRunner(answer)
    stats = await run(router, runner, settings(queue_pull_batch_size=2), once=False, stop=stop)
    assert [j["job_id"] for j in runner.jobs] == ["job_0", "job_1"]  # both in flight finished
    assert queue.acked == ["m0"] and queue.retried == [("m1", 60)]
    assert len(queue.pull_bodies) == 1 and len(queue.pending) == 4  # nothing more leased
    assert (stats.acked, stats.retried) == (1, 1)


async def test_stop_while_idle_ends_at_once(router):
    FakeQueue(router)
    stop = asyncio.Event()

    async def never_returns(seconds: float) -> None:
        stop.set()
        await asyncio.Event().wait()

    await asyncio.wait_for(run(router, FakeRunner(), once=False, stop=stop, sleep=never_returns), timeout=5)


# -- the process entry point ---------------------------------------------------------------------


def test_main_stops_on_sigterm_then_settles_and_exits_zero(router):
    queue = FakeQueue(router, [message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    built: list[Settings] = []

    class SignalledRunner(FakeRunner):
        async def run_job(self, raw: Any) -> dict[str, Any]:
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
        code = queue_pull.main(cfg, factory, once=True)  # --once would drain all 3 without the signal
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert caught == [] and code == 0 and built == [cfg]
    assert queue.acked == ["m0"] and len(queue.pull_bodies) == 1 and len(queue.pending) == 2
    assert runner.handler_after_first_signal == signal.SIG_DFL  # so a second signal ends the process


def test_main_once_drains_and_exits_zero(router):
    queue = FakeQueue(router, [message(f"m{i}", job(f"job_{i}")) for i in range(3)])
    assert queue_pull.main(settings(), lambda cfg: FakeRunner(), once=True) == 0
    assert sorted(queue.acked) == ["m0", "m1", "m2"]


def test_main_exits_one_when_the_token_is_refused(router):
    FakeQueue(router).pull_faults = [cf_response(None, 401, [{"code": 10000, "message": "Authentication error"}])]
    assert queue_pull.main(settings(), lambda cfg: FakeRunner(), once=False) == 1


def test_main_needs_the_queue_settings(caplog):
    built = []
    with caplog.at_level(logging.ERROR, logger="worker.queue_pull"):
        code = queue_pull.main(settings(cf_api_token=None, cf_queue_id=None), built.append, once=True)
    assert code == 2 and built == []
    assert caplog.records[-1].missing == ["CF_QUEUE_ID", "CF_API_TOKEN"]


# -- with the real pipeline ----------------------------------------------------------------------


async def test_the_real_pipeline_behind_the_adapter_acks_and_redelivers(router, tmp_path):
    from engine.callback import verify_callback
    from engine.storage import LocalStorage
    from engine.wiring import build_pipeline
    from tests.conftest import SECRET, jpeg_bytes, make_job, make_settings, room_photo, write_masks

    cfg = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"),
                        callback_allowed_hosts="receiver.test", cf_api_base=API, cf_account_id="acc123",
                        cf_queue_id="q456", cf_api_token=TOKEN)
    storage = LocalStorage(cfg.storage_local_dir)
    for i in range(2):
        rgb, masks = room_photo(seed=i)
        storage._put(f"inputs/u_abc/job_123/{i}.jpg", jpeg_bytes(rgb), "image/jpeg", {})
        write_masks(tmp_path / "masks", f"inputs/u_abc/job_123/{i}.jpg", masks)
    pipeline = build_pipeline(cfg)

    received: list[tuple[str, bool]] = []
    refuse = {"job_123:1:0"}  # the receiver refuses idx 1 once (a final 400: undelivered)

    def receiver(request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        received.append((key, verify_callback(request.content, request.headers["Authorization"], SECRET)))
        if key in refuse:
            refuse.discard(key)
            return httpx.Response(400)
        return httpx.Response(200)

    router.post("http://receiver.test/jobs/job_123/callback").mock(side_effect=receiver)
    sent = message("m", make_job(2, callback_url="http://receiver.test/jobs/job_123/callback"))
    queue = FakeQueue(router, [sent])

    await run(router, pipeline, cfg)
    assert queue.retried == [("m", cfg.queue_pull_retry_delay_sec)] and queue.acked == []  # idx 1 unreported
    assert sorted(received) == [("job_123:0:0", True), ("job_123:1:0", True)]
    assert storage.path_of("outputs/u_abc/job_123/1_result.png").is_file()

    queue.pending.append(sent)  # the queue delivers it again after the delay
    await run(router, pipeline, cfg)
    assert queue.acked == ["m"]
    assert sorted(received[2:]) == [("job_123:0:0", True), ("job_123:1:0", True)]  # same keys, signed afresh
