"""One job's run: its items through the phases, each reported once, each report's callback.

Each item's callback is sent in its own task as soon as the item is reported, so a receiver
that needs retries never holds up the other items; the job ends when every callback has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from engine.callback import CallbackSender, Delivery
from engine.errors import ShuttingDown
from engine.job import Envelope, Item, idempotency_key
from engine.logs import Stopwatch, idx_var
from engine.phases import ItemPlace, PhaseGates
from engine.report import ItemReport, ItemResult, JobResult

log = logging.getLogger("worker.jobrun")

ItemListener = Callable[[ItemReport, Delivery], None]
ItemWork = Callable[[Item, ItemPlace], Awaitable[ItemReport]]


class JobRun:
    def __init__(self, envelope: Envelope, callbacks: CallbackSender, on_item_done: ItemListener | None = None) -> None:
        self.envelope = envelope
        self.callbacks = callbacks
        self.on_item_done = on_item_done
        self.watch = Stopwatch()
        self._callbacks: dict[int, asyncio.Task[Delivery]] = {}
        self._reports: dict[int, ItemReport] = {}

    async def report_all(self, reports: list[ItemReport]) -> JobResult:
        """Every item already decided (a job whose rules are invalid): send and wait."""
        for report in reports:
            self._report(report)
        return await self._finish()

    async def run(self, items: list[Item], work: ItemWork, concurrency: int,
                  stopping: Callable[[], bool]) -> JobResult:
        gates = PhaseGates(concurrency)

        async def run_item(item: Item) -> None:
            idx_var.set(item.idx)
            place = gates.place()
            try:
                await place.enter("fetch")
                if stopping():
                    report = ItemReport.failure(item.idx, ShuttingDown(
                        "the worker shut down before this item started; resubmit the job"))
                else:
                    report = await work(item, place)
            finally:
                place.leave()
            self._report(report)

        await asyncio.gather(*(run_item(item) for item in items))
        return await self._finish()

    def _report(self, report: ItemReport) -> None:
        """The item's one terminal outcome: later reports of the same item are ignored."""
        if report.idx in self._reports:
            return
        self._reports[report.idx] = report
        self._callbacks[report.idx] = asyncio.create_task(self._deliver(report))

    async def _finish(self) -> JobResult:
        results = [ItemResult(self._reports[item.idx], (await self._callbacks[item.idx]).delivered)
                   for item in self.envelope.items]
        result = JobResult.of(self.envelope.job_id, results)
        log.info("job.end", extra={"status": result.status, "ms": self.watch.ms(),
                                   "undelivered_callbacks": len(result.undelivered)})
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
