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
  cannot be decoded (not base64, not UTF-8, not JSON, nested too deeply, numbers past Python's
  digit limit), whose job the pipeline cannot parse (it answers ``{"error": ...}``), or whose
  ``callback_url`` the callback policy refuses (``CALLBACK_ALLOWED_HOSTS``, public https only):
  no retry can change any of these, so they do not wander to the dead-letter queue. The job is
  not run: nobody could be told its outcome.
- **Every message ends acked or retried** with a log line naming its id: an unexpected error
  while handling one is logged (``message.failed``) and the message retried; a malformed field
  in the API's answer (``"attempts": "two"``) is logged and read as absent.
- **Bodies.** ``metadata["CF-Content-Type"]`` says how to read ``body``: ``json`` and ``bytes``
  arrive base64-encoded, ``text`` as the string itself (also assumed when the field is absent);
  the decoded text must be the job's JSON. ``v8`` bodies cannot be read outside Workers: the
  producer must send jobs with ``contentType: "json"`` (the default) or ``"text"``.
- **API errors.** Connection errors, timeouts, 408, 425, 429 and 5xx (``engine.retry``) are
  logged and retried: a pull after a back-off of 1 s doubling up to 60 s (``--once`` gives up
  after 5 failed pulls in a row), an ack 3 times in place. An ack that still fails, or is
  refused with another 4xx (a lease the queue no longer knows), is logged; the lease then runs
  out and the queue delivers the message again, which is safe. A pull refused with any other
  4xx, or any call refused with 401 or 403, is a configuration error (token, its permissions,
  account or queue id): no more pulls, the jobs in flight finish, then ``QueueApiError`` ends
  the run with exit code 1.
- **Leases.** The pull API cannot extend a lease. A job still running when its lease
  (``QUEUE_PULL_VISIBILITY_TIMEOUT_MS``) runs out is logged at that moment
  (``job.lease_expired``, error level): the queue may hand the message to another consumer
  meanwhile (safe, the results and callbacks are idempotent, but the work is done twice).
  Set the visibility timeout above the longest job (``ITEM_TIMEOUT_SEC`` bounds each item).
- **Shutdown** (first SIGTERM or SIGINT): stop pulling, let the jobs in flight finish and ack or
  retry them; messages that arrive from a pull under way when the signal comes are not started
  but retried with delay 0, so another consumer can take them at once. Nothing is left unacked
  without a log line. A second signal ends the process at once: its unfinished messages come back
  after their visibility timeout, and the redelivery skips the items already finished. Unlike the
  Runpod adapter, a signal here does not cut a job short (``Pipeline.begin_shutdown``): items
  reported failed for that reason would be acked with their job and never run again. So give the process time
  to finish a job when stopping it (systemd ``TimeoutStopSec``, ``docker stop -t``).
- **--once** pulls until a pull comes back empty, finishes what is in flight, and exits (0, also
  when messages were dropped).

The HTTP calls themselves are ``adapters.queue_api``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import httpx

from adapters.queue_api import (HTTP_TIMEOUT_SEC, QueueApiError, QueueClient, QueueMessage, callback_url_of,
                                decode_body, job_id_of, missing_settings)
from engine.callback_policy import (CallbackRefused, CallbackUnresolvable, Resolver, check_callback_url,
                                    resolve_host)
from engine.errors import JobParseError
from engine.report import JobResult
from engine.retry import RetryPolicy
from engine.settings import Settings

log = logging.getLogger("worker.queue_pull")

PULL_RETRY = RetryPolicy.exponential(1.0, 60.0, unbounded=True)
ONCE_MAX_PULL_FAILURES = 5
ACK_RETRY = RetryPolicy((1.0, 2.0))
ACK_ATTEMPTS = 1 + len(ACK_RETRY.delays)
CREDENTIAL_STATUS = frozenset({401, 403})  # refused credentials: no call can succeed, stop

Sleep = Callable[[float], Awaitable[None]]
UrlCheck = Callable[[str], Awaitable[None]]

__all__ = ["QueueApiError", "QueueClient", "QueueMessage", "ServeStats", "decide", "decode_body", "main", "serve"]


class JobRunner(Protocol):
    """What the adapter needs from the pipeline: one job in, its typed result out."""

    async def run_job(self, raw: Any) -> JobResult: ...


# -- what to do with a message after its job -----------------------------------------------------


Action = Literal["ack", "retry", "drop"]


def decide(result: JobResult) -> tuple[Action, str]:
    """ack: every item reported; drop: the job cannot be parsed; retry: a callback undelivered."""
    if result.error is not None:
        return "drop", result.error
    undelivered = result.undelivered
    if undelivered:
        return "retry", f"{len(undelivered)} of {len(result.items)} callbacks undelivered"
    return "ack", f"job {result.status}, every callback delivered"


@dataclass
class ServeStats:
    acked: int = 0       # jobs run and every item reported
    retried: int = 0     # jobs to run again after QUEUE_PULL_RETRY_DELAY_SEC
    dropped: int = 0     # messages that cannot be decoded or parsed, or report nowhere (acked, never run)
    returned: int = 0    # pulled while stopping: retried with delay 0, never started
    pull_errors: int = 0
    ack_errors: int = 0


def _unexpected(exc: Exception) -> QueueApiError:
    """An answer the client did not foresee: logged with its traceback, then a retryable failure."""
    log.error("pull.unexpected", extra={"error": type(exc).__name__}, exc_info=exc)
    return QueueApiError(f"queue pull failed ({type(exc).__name__})", retryable=True)


class _Consumer:
    def __init__(self, runner: JobRunner, client: QueueClient, settings: Settings, stop: asyncio.Event,
                 sleep: Sleep, check_url: UrlCheck) -> None:
        self.runner = runner
        self.check_url = check_url
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
            except Exception as exc:  # noqa: BLE001 - whatever the answer held, the consumer goes on
                failure = exc if isinstance(exc, QueueApiError) else _unexpected(exc)
                self.stats.pull_errors += 1
                failures += 1
                if not failure.retryable or (once and failures >= ONCE_MAX_PULL_FAILURES):
                    log.error("pull.failed", extra={"reason": failure.message, "status": failure.status,
                                                    "giving_up": True})
                    self._give_up(failure)
                    break
                delay = PULL_RETRY.delay(failures - 1)
                log.warning("pull.failed", extra={"reason": failure.message, "status": failure.status,
                                                  "retry_in_s": delay})
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
        """Run one message's job and ack, retry or drop it; whatever happens, it is settled."""
        fields: dict[str, Any] = {"message_id": message.id, "attempts": message.attempts}
        try:
            action, reason = await self._run(message, fields)
        except Exception as exc:  # a bug here must not leave the message unsettled
            log.error("message.failed", extra={**fields, "error": type(exc).__name__}, exc_info=exc)
            action, reason = "retry", "the message could not be handled"
        await self._settle(message, action, fields)

    async def _run(self, message: QueueMessage, fields: dict[str, Any]) -> tuple[Action, str]:
        try:
            job = decode_body(message)
        except JobParseError as exc:
            log.error("message.dropped", extra={**fields, "reason": exc.message})
            return "drop", exc.message
        fields["job_id"] = job_id_of(job)
        url = callback_url_of(job)
        if url is not None:
            try:
                await self.check_url(url)
            except CallbackRefused as exc:
                log.error("message.dropped", extra={**fields, "reason": f"callback_url refused: {exc}"})
                return "drop", str(exc)
            except CallbackUnresolvable:
                pass  # may be transient: the job runs, and its callbacks retry
        log.info("job.received", extra=fields)
        started = time.monotonic()
        lease = self.settings.queue_pull_visibility_timeout_ms / 1000
        expired = asyncio.get_running_loop().call_later(
            lease, lambda: log.error("job.lease_expired", extra={
                **fields, "seconds": round(time.monotonic() - started, 1),
                "hint": "the queue may deliver this message again meanwhile; raise QUEUE_PULL_VISIBILITY_TIMEOUT_MS"}))
        try:
            result = await self.runner.run_job(job)
        except Exception as exc:  # the pipeline answers item failures itself: this is a crash
            log.error("job.crashed", extra={**fields, "error": type(exc).__name__}, exc_info=exc)
            action, reason = "retry", "the job could not be run"
        else:
            action, reason = decide(result)
        finally:
            expired.cancel()
        elapsed = time.monotonic() - started
        level = logging.ERROR if action == "drop" else logging.WARNING if action == "retry" else logging.INFO
        log.log(level, f"job.{action}", extra={**fields, "reason": reason, "seconds": round(elapsed, 1)})
        return action, reason

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
                final = not exc.retryable or not ACK_RETRY.may_retry(attempt - 1)
                log.log(logging.ERROR if final else logging.WARNING, "ack.failed",
                        extra={**fields, "reason": exc.message, "status": exc.status, "attempt": attempt,
                               "giving_up": final})
                if final:
                    self.stats.ack_errors += 1
                    if exc.status in CREDENTIAL_STATUS:
                        self._give_up(exc)
                    return False  # the lease runs out and the queue delivers the message again
                await self.sleep(ACK_RETRY.delay(attempt - 1))
        return False


async def serve(runner: JobRunner, client: QueueClient, settings: Settings, *, once: bool,
                stop: asyncio.Event, sleep: Sleep = asyncio.sleep, resolver: Resolver = resolve_host) -> ServeStats:
    """Pull, run, ack or retry until ``stop`` is set (or, with ``once``, until the queue is empty).

    Raises ``QueueApiError`` after finishing the jobs in flight when the queue API refuses the
    configuration (or, with ``once``, stays unreachable).
    """
    async def check_url(url: str) -> None:
        await check_callback_url(url, settings.callback_allowed_hosts, resolver)

    return await _Consumer(runner, client, settings, stop, sleep, check_url).run(once)


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


async def _serve_process(settings: Settings, runner: JobRunner, once: bool,
                         transport: httpx.AsyncBaseTransport | None, resolver: Resolver) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SEC, follow_redirects=False, transport=transport) as http:
        client = QueueClient.from_settings(settings, http)
        log.info("queue_pull.start", extra={"once": once, "batch_size": settings.queue_pull_batch_size,
                                            "visibility_timeout_ms": settings.queue_pull_visibility_timeout_ms})
        try:
            await serve(runner, client, settings, once=once, stop=stop, resolver=resolver)
        except QueueApiError as exc:
            log.error("queue_pull.stopped", extra={"reason": exc.message, "status": exc.status})
            return 1
    return 0


def main(settings: Settings, runner_factory: Callable[[Settings], JobRunner], once: bool = False, *,
         transport: httpx.AsyncBaseTransport | None = None, resolver: Resolver = resolve_host) -> int:
    """``python main.py --adapter queue_pull [--once]``: returns the process exit code.

    ``runner_factory`` builds the pipeline (``engine.wiring.build_pipeline``); it runs before any
    message is leased, so a slow model load or a signal during it costs no lease. ``transport``
    and ``resolver`` replace the network (tests).
    """
    missing = missing_settings(settings)
    if missing:
        log.error("queue_pull.not_configured", extra={"missing": missing})
        return 2
    runner = runner_factory(settings)
    return asyncio.run(_serve_process(settings, runner, once, transport, resolver))
