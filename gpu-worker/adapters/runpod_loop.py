"""The runpod SDK's production job loop, with the worker's rules for concurrency, stops and exit.

What the SDK (runpod 1.12, ``serverless/modules/rp_scale.JobScaler``) does on its own, and what
this subclass changes:

- Taking jobs: a long-poll GET on ``RUNPOD_WEBHOOK_GET_JOB`` (``job-take``, or ``job-take-batch``
  with ``batch_size`` when more than one slot is free); each result is POSTed to
  ``RUNPOD_WEBHOOK_POST_OUTPUT`` (``job-done``), progress too (``status: IN_PROGRESS``); a separate
  process pings ``RUNPOD_WEBHOOK_PING`` with the ids of the jobs in hand. The SDK re-reads its
  ``concurrency_modifier`` before each take but, when the answer changes, waits until no job is
  in flight before using it, and with every slot full it polls once a second. Here a new
  concurrency applies at once and a freed slot (a job that ended, or one left with callbacks
  only) is taken within ``tick`` seconds.
- Stopping one job: the SDK long-polls a stop channel (``job-stop``, derived from the job-take
  URL) and cancels that job's task. Unchanged: the handler's engine answers the cancel (its
  unfinished items end ``TIMEOUT`` with their callbacks), and the SDK then posts nothing.
- SIGTERM/SIGINT: the SDK replaces any handler installed before it starts and, on a signal,
  stops taking jobs and waits for the running ones to finish in full. Here the loop installs its
  own handlers on the event loop: it stops taking jobs (a take still waiting is abandoned, no
  job having been handed over), tells the engine ``begin_shutdown()`` (every unfinished item ends
  ``TIMEOUT`` and its callback is sent), waits for the jobs to post their results, and returns,
  so the process exits 0 on its own.
- A broken GPU (``engine.needs_fresh_worker``): no more jobs are taken; the jobs in hand end (the
  segmenter fails them at once) and the loop returns. Each such job's result carries
  ``refresh_worker``, which the SDK posts as ``stopPod`` so Runpod replaces the worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Protocol

from runpod.http_client import AsyncClientSession, TooManyRequests
from runpod.serverless.modules.rp_scale import JobScaler

log = logging.getLogger("worker.runpod")


class LoopEngine(Protocol):
    """What the loop needs of the engine."""

    @property
    def needs_fresh_worker(self) -> bool: ...

    def begin_shutdown(self) -> None: ...


class WorkerLoop(JobScaler):
    def __init__(self, config: dict[str, Any], engine: LoopEngine, *, tick: float = 0.05,
                 drain_timeout: float | None = None) -> None:
        super().__init__(config)
        self.engine = engine
        self.tick = tick
        self.drain_timeout = drain_timeout  # a last resort: the engine bounds its own shutdown
        self.jobs_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # started as soon as taken
        self._running: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Event | None = None
        self.signalled = False

    # -- the SDK's entry points ----------------------------------------------------------------

    def start(self) -> None:
        asyncio.run(self.run())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_shutdown, sig, None)
        try:
            async with AsyncClientSession() as session:
                taking = asyncio.create_task(self.get_jobs(session))
                stops = asyncio.create_task(self.monitor_stop_signals(session))
                await self._shutdown_event.wait()
                if self.signalled:
                    self.engine.begin_shutdown()
                for task in (taking, stops):
                    task.cancel()
                await asyncio.gather(taking, stops, return_exceptions=True)
                await self._drain()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("worker.loop_end", extra={"signalled": self.signalled,
                                           "fresh_worker": self.engine.needs_fresh_worker})

    def handle_shutdown(self, signum: int, frame: object) -> None:
        if not self.signalled:
            log.info("worker.signal", extra={"signal": signal.Signals(signum).name, "jobs": len(self._running)})
        self.signalled = True
        self.kill_worker()

    async def set_scale(self) -> None:
        self.current_concurrency = max(0, int(self.concurrency_modifier(self.current_concurrency)))

    def current_occupancy(self) -> int:
        return self.job_progress.get_job_count()  # taken and not yet reported (queued ones included)

    # -- taking jobs -----------------------------------------------------------------------------

    async def get_jobs(self, session: Any) -> None:
        while self.is_alive():
            if self.engine.needs_fresh_worker:
                await self._leave_for_a_fresh_worker()
                return
            await self.set_scale()
            free = self.current_concurrency - self.current_occupancy()
            if free <= 0:
                await self._wait_for_change()
                continue
            try:
                taken = await asyncio.wait_for(self.jobs_fetcher(session, free), timeout=self.jobs_fetcher_timeout)
            except TooManyRequests:
                await asyncio.sleep(5)
                continue
            except asyncio.TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - the job API is unreachable or answered nonsense
                log.warning("worker.take_failed", extra={"error_type": type(exc).__name__})
                await asyncio.sleep(1)
                continue
            for job in taken or []:
                self._start(session, job)

    def _start(self, session: Any, job: dict[str, Any]) -> None:
        self.job_progress.add(job)
        self.jobs_queue.put_nowait(job)  # the SDK's bookkeeping: handle_job marks it task_done
        self.jobs_queue.get_nowait()
        task = asyncio.create_task(self.handle_job(session, job))
        self.jobs_tasks[job["id"]] = task
        self._running.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker.job_task_failed", extra={"error_type": type(task.exception()).__name__})
        self.slot_changed()

    def slot_changed(self) -> None:
        """A job ended or needs fewer resources: look again for free slots now."""
        if self._changed is not None:
            self._changed.set()

    async def _wait_for_change(self) -> None:
        assert self._changed is not None
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=self.tick)
        except asyncio.TimeoutError:
            pass

    async def _leave_for_a_fresh_worker(self) -> None:
        log.error("worker.device_failed", extra={"jobs": len(self._running)})
        while self._running:
            await asyncio.wait(set(self._running))
        self.kill_worker()

    # -- stopping ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Wait for every job in hand to post its result."""
        if not self._running:
            return
        done, pending = await asyncio.wait(set(self._running), timeout=self.drain_timeout)
        for task in pending:  # the engine overran its own bound: cancel what is left
            log.error("worker.drain_timeout", extra={"jobs": len(pending)})
            task.cancel()
        if pending:
            await asyncio.wait(pending)
