"""Several photos share one segmentation call when more than one is in flight.

Requests that arrive while the device is busy wait in a queue; when it frees up, up to
``max_batch`` of them with the same concepts go in one ``Segmenter.segment`` call. Nothing
waits on a timer: a lone photo is segmented at once. Photos of every job the worker runs share
the queue, so small jobs' photos share batches. ``Segmenter.segment_each`` hands over each
photo's masks as soon as they are ready, and its photo moves on (edits, encoding) while the
rest of the batch finishes. When a batch fails (out of GPU memory, or a photo the model chokes
on) the photos it had not finished are retried one at a time, so only a photo that fails alone
is reported failed and its batch mates are not; a ``DeviceFailure`` (the GPU context is gone)
fails the whole batch at once, as retrying on that device cannot help. A photo whose item was
stopped while it waited is dropped from the queue; one stopped during its batch keeps its
memory lease (engine/budget.py) until the batch's thread returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from engine.budget import Lease
from engine.errors import DeviceFailure, GpuOutOfMemory, SegmentationError
from engine.segmenter import Segmentation, SegmentRequest, Segmenter
from presets import Concept

log = logging.getLogger("worker.batching")


@dataclass
class _Pending:
    request: SegmentRequest
    concepts: tuple[Concept, ...]
    future: asyncio.Future[Segmentation]
    lease: Lease | None


class SegmentBatcher:
    def __init__(self, segmenter: Segmenter, max_batch: int = 4) -> None:
        self.segmenter = segmenter
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # what ran, for tests and benchmarks

    async def segment(self, request: SegmentRequest, concepts: Sequence[Concept], lease: Lease | None = None) -> Segmentation:
        """The photo's masks; ``lease`` (its memory) is held while a batch holding it runs."""
        future: asyncio.Future[Segmentation] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(request, tuple(concepts), future, lease))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[_Pending]:
        self._pending = [p for p in self._pending if not p.future.done()]  # stopped while waiting
        if not self._pending:
            return []
        first = self._pending[0]
        batch = [p for p in self._pending if p.concepts == first.concepts][: self.max_batch]
        for p in batch:
            self._pending.remove(p)
        return batch

    async def _drain(self) -> None:
        while batch := self._next_batch():
            self.batch_sizes.append(len(batch))
            try:
                await self._run(batch)
            except DeviceFailure as exc:
                raise_into(batch, exc)
            except Exception as exc:  # noqa: BLE001 - handed to the items that wait, or retried alone
                unfinished = [p for p in batch if not p.future.done()]
                if len(batch) == 1:
                    raise_into(batch, GpuOutOfMemory("the photo does not fit in GPU memory")
                               if isinstance(exc, GpuOutOfMemory) else exc)
                    continue
                log.warning("segment.batch_failed_retry_single",
                            extra={"batch": len(batch), "unfinished": len(unfinished), "error": type(exc).__name__})
                for one in unfinished:
                    try:
                        await self._run([one])
                    except Exception as alone:  # noqa: BLE001 - handed to the item that waits
                        raise_into([one], alone)

    async def _run(self, batch: list[_Pending]) -> None:
        """Segment ``batch`` in a worker thread, resolving each photo's future as its masks arrive."""
        loop = asyncio.get_running_loop()
        requests = [p.request for p in batch]
        concepts = batch[0].concepts

        def work() -> None:
            results = self.segmenter.segment_each(requests, concepts)
            handed = 0
            try:
                for pending, result in zip(batch, results):
                    loop.call_soon_threadsafe(_set_result, pending.future, result)
                    handed += 1
            finally:  # a generator left suspended would hold the segmenter's lock until collected
                close = getattr(results, "close", None)  # any iterator will do; generators close
                if close is not None:
                    close()
            if handed != len(batch):
                raise SegmentationError(f"the segmenter returned {handed} results for {len(batch)} photos")

        leases = [p.lease for p in batch if p.lease is not None]
        for lease in leases:
            lease.hold()
        try:
            await asyncio.to_thread(work)
        finally:
            for lease in leases:
                lease.let_go()


def _set_result(future: asyncio.Future[Segmentation], result: Segmentation) -> None:
    if not future.done():
        future.set_result(result)


def raise_into(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
