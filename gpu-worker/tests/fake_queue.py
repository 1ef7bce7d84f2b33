"""A fake of the Cloudflare Queues HTTP pull API, served as an ``httpx.MockTransport``.

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
from collections.abc import Callable
from typing import Any

import httpx

from adapters import queue_pull
from adapters.queue_pull import QueueClient, serve
from engine.report import ItemReport, ItemResult, JobResult
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
    """The two endpoints of the pull API, keeping what was pulled, acked and retried.

    ``transport`` is the network to hand the client; ``routes`` answers other URLs (a receiver)."""

    def __init__(self, messages: list[dict[str, Any]] = ()) -> None:
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
        self.routes: dict[str, Callable[[httpx.Request], httpx.Response]] = {PULL_URL: self._pull, ACK_URL: self._ack}
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        route = self.routes.get(str(request.url).split("?")[0])
        assert route is not None and request.method == "POST", f"unexpected request {request.method} {request.url}"
        return route(request)

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


def completed(raw: dict[str, Any], status: str = "done", undelivered: tuple[int, ...] = ()) -> JobResult:
    items = [ItemResult(ItemReport(item["idx"], status, error_code=None if status == "done" else "TIMEOUT"),
                        item["idx"] not in undelivered) for item in raw["items"]]
    return JobResult.of(raw["job_id"], items)


class FakeRunner:
    """Stands in for the pipeline: records each job, how many ran at once, and when each was reported."""

    def __init__(self, answer: Callable[[Any], JobResult] = completed) -> None:
        self.answer = answer
        self.jobs: list[Any] = []
        self.reported: list[str] = []
        self.running = 0
        self.max_running = 0

    async def run_job(self, raw: Any) -> JobResult:
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


async def public_resolver(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


async def run(queue: FakeQueue, runner: Any, cfg: Settings | None = None, *, once: bool = True,
              stop: asyncio.Event | None = None, sleep: Sleeps | None = None) -> queue_pull.ServeStats:
    cfg = cfg or settings()
    async with httpx.AsyncClient(transport=queue.transport) as http:
        client = QueueClient.from_settings(cfg, http)
        return await serve(runner, client, cfg, once=once, stop=stop or asyncio.Event(), sleep=sleep or Sleeps(),
                           resolver=public_resolver)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def undelivered_second_item(raw: dict[str, Any]) -> JobResult:
    return completed(raw, undelivered=(raw["items"][1]["idx"],))
