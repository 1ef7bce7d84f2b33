"""Queue-pull adapter: lease jobs from a Cloudflare Queue over its HTTP pull API (contract section 8).

For GPU hosts that are not Runpod: ``python main.py --adapter queue_pull [--once]``.

    POST .../messages/pull {batch_size, visibility_timeout_ms}   lease up to that many messages
    run each message's job through the pipeline                  (the same code as on Runpod)
    POST .../messages/ack  {acks: [{lease_id}], retries: [{lease_id, delay_seconds}]}

The choices, and why:

- **How many jobs at once.** Up to ``QUEUE_PULL_BATCH_SIZE`` jobs run side by side, as a sliding
  window: a pull asks for exactly as many messages as there are free slots, and every message
  pulled starts at once. No message waits here with its lease running out, so the visibility
  timeout only has to cover one job (``QUEUE_PULL_VISIBILITY_TIMEOUT_MS``, default one hour: set
  it above your longest job). A few jobs side by side overlap one job's downloads, uploads and
  callback retries with another's GPU work, while the GPU itself stays shared (the pipeline puts
  the photos waiting for segmentation into one batched call). ``QUEUE_PULL_BATCH_SIZE=1`` runs
  strictly one job at a time.
- **Ack** a message only once every item of its job has been reported: every item of the
  pipeline's answer (contract section 5) says ``"callback": "delivered"``. An item that failed
  with an error code counts as reported; its callback says so.
- **Retry** with a delay of ``QUEUE_PULL_RETRY_DELAY_SEC`` a message whose job could not be run
  (the runner raised) or whose callbacks were not all delivered. Redelivery is safe: the pipeline
  skips items whose result is already stored and resends the same idempotent callbacks (contract
  section 6). The queue counts the attempts; past its ``max_retries`` the message goes to the
  queue's dead-letter queue, if it has one.
- **Drop** (ack, logged at error level with the message id and the reason) a message whose body
  cannot be decoded, or whose job the pipeline cannot parse (it answers ``{"error": ...}``): no
  retry can change either.
- **Bodies.** ``metadata["CF-Content-Type"]`` says how to read ``body``: ``json`` and ``bytes``
  arrive base64-encoded, ``text`` as the string itself (also assumed when the field is absent);
  the decoded text must be the job's JSON. ``v8`` bodies cannot be read outside Workers: the
  producer must send jobs with ``contentType: "json"`` (the default) or ``"text"``.
- **API errors.** Connection errors, timeouts, 408, 425, 429 and 5xx are logged and retried: a
  pull after a back-off of 1 s doubling up to 60 s (``--once`` gives up after 5 failed pulls in a
  row), an ack 3 times in place. An ack that still fails is logged; the lease then runs out and
  the queue delivers the message again, which is safe. Any other answer (401, 403, 404, 400) is a
  configuration error (token, its permissions, account or queue id): no more pulls, the jobs in
  flight finish, then ``QueueApiError`` ends the run with exit code 1.
- **Shutdown** (first SIGTERM or SIGINT): stop pulling, let the jobs in flight finish and ack or
  retry them; messages that arrive from a pull under way when the signal comes are not started
  but retried with delay 0, so another consumer can take them at once. Nothing is left unacked
  without a log line. A second signal ends the process at once: its unfinished messages come back
  after their visibility timeout, and the redelivery skips the items already finished. Unlike the
  Runpod adapter, a signal here does not cut a job short (``Pipeline.begin_shutdown``): items
  reported failed for that reason would be acked with their job, and a later run's callbacks
  would reuse the same idempotency keys and be dropped by the receiver. So give the process time
  to finish a job when stopping it (systemd ``TimeoutStopSec``, ``docker stop -t``).
- **--once** pulls until a pull comes back empty, finishes what is in flight, and exits.

The API token is sent as a bearer token and never logged; errors carry the status and
Cloudflare's own error messages only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import httpx

from engine.errors import JobParseError, WorkerError
from engine.settings import Settings

log = logging.getLogger("worker.queue_pull")

HTTP_TIMEOUT_SEC = 30.0
RETRYABLE_STATUS = {408, 425, 429}  # and every 5xx
PULL_BACKOFF_BASE_SEC = 1.0
PULL_BACKOFF_MAX_SEC = 60.0
ONCE_MAX_PULL_FAILURES = 5
ACK_ATTEMPTS = 3
ACK_BACKOFF_SEC = 1.0

Sleep = Callable[[float], Awaitable[None]]


class JobRunner(Protocol):
    """What the adapter needs from the pipeline: one job in, contract section 5's answer out."""

    async def run_job(self, raw: Any) -> dict[str, Any]: ...


class QueueApiError(WorkerError):
    """The queue API could not be reached or refused a call. ``retryable``: trying again may help."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


# -- the API client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueMessage:
    id: str
    lease_id: str
    body: Any
    attempts: int
    content_type: str | None
    timestamp_ms: int | None

    @classmethod
    def from_api(cls, raw: Any) -> QueueMessage | None:
        """One entry of ``result.messages``; None when it has no lease (it cannot be acked)."""
        if not isinstance(raw, dict) or not raw.get("lease_id"):
            return None
        metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        return cls(
            id=str(raw.get("id", "")),
            lease_id=str(raw["lease_id"]),
            body=raw.get("body"),
            attempts=int(raw.get("attempts") or 0),
            content_type=metadata.get("CF-Content-Type"),
            timestamp_ms=raw.get("timestamp_ms"),
        )


def missing_settings(settings: Settings) -> list[str]:
    """The settings the adapter cannot run without, by environment variable name."""
    wanted = {"CF_ACCOUNT_ID": settings.cf_account_id, "CF_QUEUE_ID": settings.cf_queue_id,
              "CF_API_TOKEN": settings.cf_api_token.get_secret_value() if settings.cf_api_token else None}
    return [name for name, value in wanted.items() if not value]


class QueueClient:
    """A thin wrapper over the two calls of the pull API; httpx errors become ``QueueApiError``."""

    def __init__(self, http: httpx.AsyncClient, *, api_base: str, account_id: str, queue_id: str,
                 token: str) -> None:
        self._http = http
        self._url = f"{api_base.rstrip('/')}/accounts/{account_id}/queues/{queue_id}/messages"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> QueueClient:
        missing = missing_settings(settings)
        if missing:
            raise ValueError(f"the queue_pull adapter needs {', '.join(missing)}")
        assert settings.cf_account_id and settings.cf_queue_id and settings.cf_api_token
        return cls(http, api_base=settings.cf_api_base, account_id=settings.cf_account_id,
                   queue_id=settings.cf_queue_id, token=settings.cf_api_token.get_secret_value())

    def __repr__(self) -> str:  # never the headers: they hold the token
        return f"QueueClient({self._url})"

    async def pull(self, batch_size: int, visibility_timeout_ms: int) -> list[QueueMessage]:
        result = await self._post("pull", {"batch_size": batch_size, "visibility_timeout_ms": visibility_timeout_ms})
        messages = []
        for raw in result.get("messages") or []:
            message = QueueMessage.from_api(raw)
            if message is None:
                log.error("message.no_lease", extra={"message_id": raw.get("id") if isinstance(raw, dict) else None})
            else:
                messages.append(message)
        return messages

    async def ack(self, acks: Sequence[str] = (), retries: Sequence[tuple[str, float]] = ()) -> dict[str, Any]:
        body = {"acks": [{"lease_id": lease} for lease in acks],
                "retries": [{"lease_id": lease, "delay_seconds": delay} for lease, delay in retries]}
        result = await self._post("ack", body)
        if result.get("warnings"):
            log.warning("ack.warnings", extra={"warnings": result["warnings"]})
        return result

    async def _post(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        what = f"queue {verb}"
        try:
            response = await self._http.post(f"{self._url}/{verb}", json=body, headers=self._headers)
        except httpx.TimeoutException as exc:
            raise QueueApiError(f"{what} timed out", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise QueueApiError(f"{what} failed ({type(exc).__name__})", retryable=True) from exc
        status = response.status_code
        if not 200 <= status < 300:
            retryable = status in RETRYABLE_STATUS or status >= 500
            raise QueueApiError(f"{what} answered {status}{_cloudflare_errors(response)}", status=status,
                                retryable=retryable)
        try:
            payload = response.json()
        except ValueError as exc:
            raise QueueApiError(f"{what} answered {status} with a body that is not JSON", status=status,
                                retryable=True) from exc
        if not isinstance(payload, dict) or payload.get("success") is False:
            raise QueueApiError(f"{what} was not successful{_cloudflare_errors(response)}", status=status,
                                retryable=True)
        result = payload.get("result")
        return result if isinstance(result, dict) else {}


def _cloudflare_errors(response: httpx.Response) -> str:
    """Cloudflare's ``errors`` list as ': 10000 Authentication error; ...' (never request headers)."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        return ""
    return f": {text[:300]}" if text else ""


# -- message bodies ------------------------------------------------------------------------------


def decode_body(message: QueueMessage) -> Any:
    """The job a message carries, read per its CF-Content-Type; ``JobParseError`` when unreadable."""
    content_type = message.content_type or "text"
    body = message.body
    if not isinstance(body, str):
        raise JobParseError("message body is not a string")
    if content_type in ("json", "bytes"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise JobParseError(f"{content_type} message body is not valid base64") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JobParseError(f"{content_type} message body is not UTF-8 text") from exc
    elif content_type == "text":
        text = body
    else:
        raise JobParseError(f"message content type {content_type!r} cannot be read here; send jobs as json or text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobParseError(f"message body is not JSON ({exc.msg} at position {exc.pos})") from exc


def job_id_of(job: Any) -> str | None:
    if isinstance(job, dict):
        inner = job.get("input") if isinstance(job.get("input"), dict) else job
        value = inner.get("job_id")
        return value if isinstance(value, str) else None
    return None


# -- what to do with a message after its job -----------------------------------------------------


Action = Literal["ack", "retry", "drop"]


def decide(result: Any) -> tuple[Action, str]:
    """ack: every item reported; drop: the job cannot be parsed; retry: anything else."""
    if not isinstance(result, dict):
        return "retry", "the runner gave no answer"
    items = result.get("items")
    if "error" in result and items is None:
        return "drop", str(result["error"])
    if not isinstance(items, list):
        return "retry", "the runner's answer has no items"
    undelivered = sum(1 for item in items if not isinstance(item, dict) or item.get("callback") != "delivered")
    if undelivered:
        return "retry", f"{undelivered} of {len(items)} callbacks undelivered"
    return "ack", f"job {result.get('status', 'finished')}, every callback delivered"


@dataclass
class ServeStats:
    acked: int = 0       # jobs run and every item reported
    retried: int = 0     # jobs to run again after QUEUE_PULL_RETRY_DELAY_SEC
    dropped: int = 0     # messages that cannot be decoded or parsed (acked, never run)
    returned: int = 0    # pulled while stopping: retried with delay 0, never started
    pull_errors: int = 0
    ack_errors: int = 0


class _Consumer:
    def __init__(self, runner: JobRunner, client: QueueClient, settings: Settings, stop: asyncio.Event,
                 sleep: Sleep) -> None:
        self.runner = runner
        self.client = client
        self.settings = settings
        self.stop = stop
        self.sleep = sleep
        self.slots = settings.queue_pull_batch_size
        self.stats = ServeStats()
        self.fatal: QueueApiError | None = None

    async def run(self, once: bool) -> ServeStats:
        in_flight: set[asyncio.Task[None]] = set()
        failures = 0
        while not self.stop.is_set():
            free = await self._free_slots(in_flight)
            if free == 0:
                break
            try:
                messages = await self.client.pull(free, self.settings.queue_pull_visibility_timeout_ms)
            except QueueApiError as exc:
                self.stats.pull_errors += 1
                failures += 1
                if not exc.retryable or (once and failures >= ONCE_MAX_PULL_FAILURES):
                    log.error("pull.failed", extra={"reason": exc.message, "status": exc.status, "giving_up": True})
                    self._give_up(exc)
                    break
                delay = min(PULL_BACKOFF_MAX_SEC, PULL_BACKOFF_BASE_SEC * 2 ** (failures - 1))
                log.warning("pull.failed", extra={"reason": exc.message, "status": exc.status, "retry_in_s": delay})
                await self._pause(delay)
                continue
            failures = 0
            if self.stop.is_set():  # the signal came while this pull was under way
                await self._return_unstarted(messages)
                break
            if not messages:
                if once:
                    log.info("queue.drained", extra={"in_flight": len(in_flight)})
                    break
                await self._pause(self.settings.queue_pull_idle_sleep_sec)
                continue
            for message in messages:
                in_flight.add(asyncio.create_task(self._handle(message)))
        if in_flight:
            log.info("serve.finishing", extra={"in_flight": len(in_flight)})
            await asyncio.gather(*in_flight)
        log.info("serve.end", extra=asdict(self.stats))
        if self.fatal is not None:
            raise self.fatal
        return self.stats

    async def _free_slots(self, in_flight: set[asyncio.Task[None]]) -> int:
        """Wait until fewer than ``slots`` jobs are in flight; 0 when asked to stop meanwhile."""
        while True:
            in_flight.difference_update([task for task in in_flight if task.done()])
            if self.stop.is_set():
                return 0
            if len(in_flight) < self.slots:
                return self.slots - len(in_flight)
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({*in_flight, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up as soon as a stop is asked for."""
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        sleeping.cancel()
        stopping.cancel()

    def _give_up(self, exc: QueueApiError) -> None:
        """A configuration error: no more pulls; the jobs in flight finish, then ``run`` raises it."""
        if self.fatal is None:
            self.fatal = exc
        self.stop.set()

    async def _handle(self, message: QueueMessage) -> None:
        fields: dict[str, Any] = {"message_id": message.id, "attempts": message.attempts}
        try:
            job = decode_body(message)
        except JobParseError as exc:
            log.error("message.dropped", extra={**fields, "reason": exc.message})
            await self._settle(message, "drop", fields)
            return
        fields["job_id"] = job_id_of(job)
        log.info("job.received", extra=fields)
        started = time.monotonic()
        try:
            result = await self.runner.run_job(job)
        except Exception as exc:  # the pipeline answers item failures itself: this is a crash
            log.error("job.crashed", extra={**fields, "error": type(exc).__name__}, exc_info=exc)
            action, reason = "retry", "the job could not be run"
        else:
            action, reason = decide(result)
        elapsed = time.monotonic() - started
        if elapsed * 1000 > self.settings.queue_pull_visibility_timeout_ms:
            log.warning("job.lease_expired", extra={**fields, "seconds": round(elapsed, 1),
                                                    "hint": "raise QUEUE_PULL_VISIBILITY_TIMEOUT_MS"})
        level = logging.ERROR if action == "drop" else logging.WARNING if action == "retry" else logging.INFO
        log.log(level, f"job.{action}", extra={**fields, "reason": reason, "seconds": round(elapsed, 1)})
        await self._settle(message, action, fields)

    async def _settle(self, message: QueueMessage, action: Action, fields: dict[str, Any]) -> None:
        if action == "retry":
            sent = await self._send_ack([], [(message.lease_id, self.settings.queue_pull_retry_delay_sec)], fields)
        else:
            sent = await self._send_ack([message.lease_id], [], fields)
        if sent:
            if action == "ack":
                self.stats.acked += 1
            elif action == "drop":
                self.stats.dropped += 1
            else:
                self.stats.retried += 1

    async def _return_unstarted(self, messages: list[QueueMessage]) -> None:
        if not messages:
            return
        log.info("shutdown.returning", extra={"messages": len(messages)})
        if await self._send_ack([], [(m.lease_id, 0) for m in messages], {"message_ids": [m.id for m in messages]}):
            self.stats.returned += len(messages)

    async def _send_ack(self, acks: list[str], retries: list[tuple[str, float]], fields: dict[str, Any]) -> bool:
        for attempt in range(1, ACK_ATTEMPTS + 1):
            try:
                await self.client.ack(acks, retries)
                return True
            except QueueApiError as exc:
                final = not exc.retryable or attempt == ACK_ATTEMPTS
                log.log(logging.ERROR if final else logging.WARNING, "ack.failed",
                        extra={**fields, "reason": exc.message, "status": exc.status, "attempt": attempt,
                               "giving_up": final})
                if final:
                    self.stats.ack_errors += 1
                    if not exc.retryable:
                        self._give_up(exc)
                    return False  # the lease runs out and the queue delivers the message again
                await self.sleep(ACK_BACKOFF_SEC * attempt)
        return False


async def serve(runner: JobRunner, client: QueueClient, settings: Settings, *, once: bool,
                stop: asyncio.Event, sleep: Sleep = asyncio.sleep) -> ServeStats:
    """Pull, run, ack or retry until ``stop`` is set (or, with ``once``, until the queue is empty).

    Raises ``QueueApiError`` after finishing the jobs in flight when the queue API refuses the
    configuration (or, with ``once``, stays unreachable).
    """
    return await _Consumer(runner, client, settings, stop, sleep).run(once)


# -- process entry point -------------------------------------------------------------------------


def install_signal_handlers(stop: asyncio.Event) -> None:
    """First SIGTERM/SIGINT: set ``stop`` (finish and settle what is in flight). Second: exit now."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def request_stop(signum: int) -> None:
        log.warning("shutdown.requested", extra={"signal": signal.Signals(signum).name})
        stop.set()
        for sig in signals:
            loop.remove_signal_handler(sig)  # back to the defaults: a second signal ends the process

    for sig in signals:
        try:
            loop.add_signal_handler(sig, request_stop, sig)
        except NotImplementedError:  # not on a Unix event loop: stop on the signal, no second-signal exit
            signal.signal(sig, lambda _signum, _frame: loop.call_soon_threadsafe(stop.set))


async def _serve_process(settings: Settings, runner: JobRunner, once: bool) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SEC, follow_redirects=False) as http:
        client = QueueClient.from_settings(settings, http)
        log.info("queue_pull.start", extra={"once": once, "batch_size": settings.queue_pull_batch_size,
                                            "visibility_timeout_ms": settings.queue_pull_visibility_timeout_ms})
        try:
            await serve(runner, client, settings, once=once, stop=stop)
        except QueueApiError as exc:
            log.error("queue_pull.stopped", extra={"reason": exc.message, "status": exc.status})
            return 1
    return 0


def main(settings: Settings, runner_factory: Callable[[Settings], JobRunner], once: bool = False) -> int:
    """``python main.py --adapter queue_pull [--once]``: returns the process exit code.

    ``runner_factory`` builds the pipeline (``engine.wiring.build_pipeline``); it runs before any
    message is leased, so a slow model load or a signal during it costs no lease.
    """
    missing = missing_settings(settings)
    if missing:
        log.error("queue_pull.not_configured", extra={"missing": missing})
        return 2
    runner = runner_factory(settings)
    return asyncio.run(_serve_process(settings, runner, once))
