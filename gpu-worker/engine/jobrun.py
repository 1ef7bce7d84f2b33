"""One job's run: its items through the phases, each reported exactly once, each report's callback.

Each item's callback is sent in its own task as soon as the item is reported, so a receiver
that needs retries never holds up the other items; the job ends when every callback has ended.
While a job only waits for callbacks it counts as delivering: it holds no photo, no memory
budget and no device time.

Stops. When the job's handler is cancelled (a platform stop, an execution timeout) or the worker
is told to shut down (``Pipeline.begin_shutdown``), every item not yet reported ends ``failed``
with ``TIMEOUT`` ("stopped before this item finished; send the job again"):

1. each unreported item's writes are shut (nothing of it is written from then on) and its work
   is cancelled;
2. writes already under way (an upload cannot be taken back) are waited for, then those items
   are reported;
3. every callback not yet ended gets what is left of ``STOP_GRACE_SEC``; one still running then
   is given up (``undelivered``).

A cancelled job then raises ``CancelledError`` again; a shut-down one returns its result. Work
that cannot be interrupted (a decode, an edit, a segmentation batch in a thread) runs on with
nothing to write to, holding its memory budget until it returns (engine/budget.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from engine.callback import CallbackSender, Delivery
from engine.errors import ItemStopped
from engine.job import Envelope, Item, idempotency_key
from engine.logs import Stopwatch, idx_var
from engine.phases import ItemPlace, PhaseGates
from engine.report import ItemReport, ItemResult, JobResult
from engine.storage import Metadata, Storage

log = logging.getLogger("worker.jobrun")

ItemListener = Callable[[ItemReport, Delivery], None]


class WriteGate:
    """An item's writes to storage. Shut before the item is reported failed: later writes are
    refused, and the ones under way can be waited for (they are not cancelled: a thread
    uploading cannot be stopped, so its end is what the report waits for)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.shut = False
        self._under_way: set[asyncio.Future[None]] = set()

    async def put(self, key: str, data: bytes, content_type: str, metadata: Metadata | None = None) -> None:
        if self.shut:
            raise ItemStopped()
        write = asyncio.ensure_future(self.storage.put(key, data, content_type, metadata))
        self._under_way.add(write)
        write.add_done_callback(self._under_way.discard)
        await asyncio.shield(write)

    def under_way(self) -> set[asyncio.Future[None]]:
        return set(self._under_way)


ItemWork = Callable[[Item, ItemPlace, WriteGate], Awaitable[ItemReport]]


class JobTracker:
    """How many jobs the worker runs: ``working`` (some item not yet reported) and
    ``delivering`` (only callbacks left). Thread-safe to read and to wait on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.working = 0
        self.delivering = 0
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def running(self) -> int:
        return self.working + self.delivering

    def started(self) -> None:
        with self._lock:
            self.working += 1

    def now_delivering(self) -> None:
        with self._lock:
            self.working -= 1
            self.delivering += 1

    def ended(self, delivering: bool) -> None:
        with self._lock:
            if delivering:
                self.delivering -= 1
            else:
                self.working -= 1
            waiters = self._idle_waiters if self.running == 0 else []
            if waiters:
                self._idle_waiters = []
        for waiter in waiters:
            waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    async def wait_idle(self, timeout: float | None) -> bool:
        """True once no job runs (at once when none does); False after ``timeout`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self.running == 0:
                return True
            self._idle_waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class JobRun:
    def __init__(self, envelope: Envelope, callbacks: CallbackSender, tracker: JobTracker, *,
                 stop: asyncio.Event, grace_sec: float, on_item_done: ItemListener | None = None) -> None:
        self.envelope = envelope
        self.callbacks = callbacks
        self.tracker = tracker
        self.stop = stop
        self.grace_sec = grace_sec
        self.on_item_done = on_item_done
        self.watch = Stopwatch()
        self.cancelled = False
        self._reports: dict[int, ItemReport] = {}
        self._callbacks: dict[int, asyncio.Task[Delivery]] = {}
        self._items: dict[int, asyncio.Task[None]] = {}
        self._gates: dict[int, WriteGate] = {}

    async def report_all(self, reports: list[ItemReport]) -> JobResult:
        """Every item already decided (a job whose rules are invalid): send the callbacks."""
        return await self._guarded(self._deliver_all, reports)

    async def run(self, items: list[Item], work: ItemWork, concurrency: int, storage: Storage) -> JobResult:
        gates = PhaseGates(concurrency)
        for item in items:
            self._gates[item.idx] = WriteGate(storage)
            self._items[item.idx] = asyncio.create_task(self._run_item(item, gates, work))
        return await self._guarded(self._until_reported)

    async def _guarded(self, body: Callable[..., Awaitable[None]], *args: Any) -> JobResult:
        self.tracker.started()
        delivering = False
        try:
            try:
                await body(*args)
                if not self.stopping:
                    self.tracker.now_delivering()
                    delivering = True
                    await self._until_delivered()
            except asyncio.CancelledError:
                await self._wind_down_despite_cancel()
                raise
            if self.stopping:
                await self._wind_down()
            return self._result()
        finally:
            self.tracker.ended(delivering)

    @property
    def stopping(self) -> bool:
        return self.cancelled or self.stop.is_set()

    # -- the normal course -------------------------------------------------------------------

    async def _deliver_all(self, reports: list[ItemReport]) -> None:
        for report in reports:
            self._report(report)

    async def _run_item(self, item: Item, gates: PhaseGates, work: ItemWork) -> None:
        idx_var.set(item.idx)
        place, gate = gates.place(), self._gates[item.idx]
        try:
            await place.enter("fetch")
            if self.stopping:
                report = ItemReport.failure(item.idx, ItemStopped())
            else:
                report = await work(item, place, gate)
        finally:
            place.leave()
        if report.status == "failed":
            gate.shut = True
            await _wait(gate.under_way(), self.grace_sec)  # a write under way lands before the report
        self._report(report)

    async def _until_reported(self) -> None:
        """Until every item is reported or the job is told to stop."""
        await self._until_done(set(self._items.values()))
        if self.stopping:
            return
        for idx, task in self._items.items():
            if idx not in self._reports:  # the item's own task failed: a bug, still reported
                log.error("item.crashed", extra={"idx": idx}, exc_info=task.exception())
                self._report(ItemReport.failure(idx, RuntimeError()))

    async def _until_delivered(self) -> None:
        await self._until_done(set(self._callbacks.values()))

    async def _until_done(self, tasks: set[asyncio.Task[Any]]) -> None:
        """Until every task has ended or the shutdown event fires."""
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            pending: set[Any] = set(tasks)
            while pending and not stopping.done():
                _, pending = await asyncio.wait({*pending, stopping}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stopping)
        finally:
            stopping.cancel()

    def _report(self, report: ItemReport) -> None:
        """The item's one terminal outcome: later reports of the same item are ignored."""
        if report.idx in self._reports:
            return
        self._reports[report.idx] = report
        self._callbacks[report.idx] = asyncio.create_task(self._deliver(report))

    def _result(self) -> JobResult:
        results = [ItemResult(self._reports[item.idx], _delivered(self._callbacks[item.idx]))
                   for item in self.envelope.items]
        result = JobResult.of(self.envelope.job_id, results)
        log.info("job.end", extra={"status": result.status, "ms": self.watch.ms(),
                                   "undelivered_callbacks": len(result.undelivered),
                                   "stopped": self.stopping})
        return result

    async def _deliver(self, report: ItemReport) -> Delivery:
        idx_var.set(report.idx)
        envelope = self.envelope
        key = idempotency_key(envelope.idempotency_prefix, report.idx, report.status)
        try:
            delivery = await self.callbacks.send(envelope.callback_url, report.callback_payload(envelope.job_id, key), key)
        except Exception as exc:  # a sender bug must not lose the item's report
            log.error("callback.error", exc_info=exc)
            delivery = Delivery(False, 0, reason="internal error while sending the callback")
        level = logging.INFO if delivery.delivered else logging.WARNING
        log.log(level, "callback.end", extra={"delivered": delivery.delivered, "attempts": delivery.attempts,
                                              "http_status": delivery.status, "reason": delivery.reason})
        if self.on_item_done is not None:
            self.on_item_done(report, delivery)
        return delivery

    # -- stops -------------------------------------------------------------------------------

    async def _wind_down_despite_cancel(self) -> None:
        """The wind-down runs to its end (it is bounded by the grace) even if cancelled again."""
        self.cancelled = True
        winding = asyncio.ensure_future(self._wind_down())
        while not winding.done():
            try:
                await asyncio.shield(winding)
            except asyncio.CancelledError:
                continue

    async def _wind_down(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_sec
        unreported = [idx for idx in self._items if idx not in self._reports]
        if unreported:
            log.warning("job.stopping", extra={"unreported_items": len(unreported), "grace_s": self.grace_sec})
        for idx in unreported:
            self._gates[idx].shut = True
            self._items[idx].cancel()
        under_way = set().union(*(self._gates[idx].under_way() for idx in unreported)) if unreported else set()
        await _wait({*under_way, *(self._items[idx] for idx in unreported)}, deadline - loop.time())
        for idx in unreported:
            self._report(ItemReport.failure(idx, ItemStopped()))
        sending = [t for t in self._callbacks.values() if not t.done()]
        await _wait(set(sending), deadline - loop.time())
        for task in sending:
            if not task.done():
                task.cancel()
        await _wait(set(sending), 1.0)


async def _wait(aws: set[Any], timeout: float) -> None:
    if aws:
        await asyncio.wait(aws, timeout=max(0.0, timeout))


def _delivered(task: asyncio.Task[Delivery]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None and task.result().delivered
