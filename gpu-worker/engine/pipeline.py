"""One job from message to stored results and signed callbacks.

An item's stages, in the order of ``Pipeline._process``: check its keys -> reuse a finished
result (redelivery) -> download -> decode -> masks (segmented, or the stored ones; the stage's
recipe decides, engine/stages.py) -> edit -> encode -> upload, the marker object last. The
stages fall into three bounded phases (engine/phases.py): fetch (download), pixels (decode to
encode) and store (upload); ``batch_concurrency`` items at most are in each, so while the device
segments some photos the next ones download and decode and the previous ones upload. A photo
decoded holds a lease on the memory budget every job shares (engine/budget.py) from its decode
to its encode. The job around the items (each reported once, its callback, stops) is
engine/jobrun.py. Every exception is mapped to a contract error code in one place
(``errors.error_code_of``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from engine.applier import Edit
from engine.batching import SegmentBatcher
from engine.budget import Lease, MemoryBudget, estimate_decoded_bytes, run_held
from engine.callback import CallbackSender
from engine.edits.structure_fill import StructureInpainter
from engine.editor import Editor, NumpyEditor
from engine.errors import (DeviceFailure, InputNotFound, InputTooLarge, InvalidMessage, JobParseError,
                           MasksNotFound, WorkerError)
from engine.job import Item, check_item_keys, instances_key, mask_key, parse_envelope, parse_job, unwrap_event
from engine.jobrun import ItemListener, JobRun, JobTracker, WriteGate
from engine.logs import StageClock, Stopwatch, job_id_var
from engine.phases import ItemPlace, Phase
from engine.postprocess import (DecodedImage, decode_image, decode_instances, decode_mask, encode_instances,
                                encode_mask, encode_png, encode_thumbnail)
from engine.report import ItemReport, JobResult
from engine.rules import Plan
from engine.segmenter import ConceptMasks, Outline, Segmentation, SegmentRequest, Segmenter, instances_from_union
from engine.settings import Settings
from engine.stages import Encoded, PlannedJob, StoredObject, plan_job
from engine.storage import Storage
from engine.stored_masks import MAX_INSTANCES_FILE_BYTES
from presets import Concept

log = logging.getLogger("worker.pipeline")

T = TypeVar("T")


def edits_for(plan: Plan, masks: dict[str, ConceptMasks]) -> tuple[list[Edit], np.ndarray | None]:
    """Each rule's mask (limited to its instances) and the union of the protect masks."""
    edits = []
    for rule in plan.rules:
        concept = masks[rule.concept]
        if rule.instances is None:
            region = concept.edit_mask
        else:
            region = np.zeros_like(concept.union)
            for inst in concept.instances:
                if inst.id in rule.instances:
                    x0, y0, x1, y1 = inst.bbox
                    region[y0:y1, x0:x1] |= inst.crop
        edits.append(Edit(rule.op, region))
    protect = None
    for name in plan.protect:
        mask = masks[name].edit_mask
        protect = mask if protect is None else protect | mask
    return edits, protect


@dataclass
class Handoff:
    """An item's place in the phases and its deadline: time spent waiting for a slot in the next
    phase (other items' work) does not count against ``ITEM_TIMEOUT_SEC``."""

    place: ItemPlace
    deadline: asyncio.Timeout

    async def enter(self, phase: Phase) -> None:
        await self.paused(self.place.enter(phase))

    async def paused(self, waiting: Awaitable[T]) -> T:
        """Await ``waiting`` (a slot, a memory lease) with the item's deadline paused."""
        loop, when = asyncio.get_running_loop(), self.deadline.when()
        if when is None:
            return await waiting
        left = when - loop.time()
        self.deadline.reschedule(None)
        try:
            return await waiting
        finally:
            self.deadline.reschedule(loop.time() + left)


class Pipeline:
    """The worker's parts (built by engine/wiring.py, or test doubles) and what every job the
    process runs shares: one segmentation batcher, one memory budget, one edit gate."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        segmenter: Segmenter,
        callbacks: CallbackSender,
        *,
        editor: Editor | None = None,
        jpeg_device: str | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.callbacks = callbacks
        # One segmentation call on the device at a time; photos waiting meanwhile share the next.
        self.batcher = SegmentBatcher(segmenter, settings.segment_max_batch)
        # Where edits run (host or device) and how many photos' edits at once (engine/editor.py).
        self.editor = editor or NumpyEditor(StructureInpainter(), settings.render_concurrency)
        self.editor.attach(segmenter)
        self.jpeg_device = jpeg_device
        self.budget = MemoryBudget(settings.decoded_budget_mb * 1024 * 1024)
        # Set after an unrecoverable CUDA error; the platform adapter then asks for a fresh worker.
        self.needs_fresh_worker = False
        self.stopping = False
        self.jobs = JobTracker()
        self._shutdown_lock = threading.Lock()
        self._shutdown_events: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self.stages = StageClock()  # cumulative seconds per stage, over the process's life

    def begin_shutdown(self) -> None:
        """Stop every job now and refuse new ones (SIGTERM). Thread-safe: may be called from a
        signal handler or another thread. Each job reports its unfinished items ``TIMEOUT``
        within ``STOP_GRACE_SEC`` and returns (engine/jobrun.py)."""
        with self._shutdown_lock:
            self.stopping = True
            events = list(self._shutdown_events.items())
        for loop, event in events:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def _shutdown_event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        with self._shutdown_lock:
            event = self._shutdown_events.get(loop)
            if event is None:
                event = self._shutdown_events[loop] = asyncio.Event()
            if self.stopping:
                event.set()
        return event

    @property
    def jobs_working(self) -> int:
        """Jobs with an item not yet reported."""
        return self.jobs.working

    @property
    def jobs_delivering(self) -> int:
        """Jobs whose items are all reported, waiting only for callbacks (no memory, no device)."""
        return self.jobs.delivering

    @property
    def jobs_running(self) -> int:
        return self.jobs.running

    async def wait_idle(self, timeout: float | None) -> bool:
        """True once no job runs; False if one still does after ``timeout`` seconds."""
        return await self.jobs.wait_idle(timeout)

    # -- job ---------------------------------------------------------------------------------

    async def run_job(self, raw: Any, on_item_done: ItemListener | None = None) -> JobResult:
        """Run one job; ``JobResult.rejected`` when it cannot be parsed far enough to report on
        its items. ``on_item_done`` hears each item's report once its callback has ended."""
        try:
            event = unwrap_event(raw)
            envelope = parse_envelope(event)
        except JobParseError as exc:
            log.warning("job.rejected", extra={"reason": exc.message})
            return JobResult.rejected(exc.message)
        job_id_var.set(envelope.job_id)
        run = JobRun(envelope, self.callbacks, self.jobs, stop=self._shutdown_event(),
                     grace_sec=self.settings.stop_grace_sec, on_item_done=on_item_done)
        refused = await self.callbacks.refusal(envelope.callback_url)
        if refused is not None:  # no result could be reported: nothing is read, nothing segmented
            log.warning("job.callback_refused", extra={"reason": refused})
            problem = InvalidMessage(f"callback_url refused: {refused}")
            return await run.report_all([ItemReport.failure(item.idx, problem) for item in envelope.items])
        try:
            planned = plan_job(parse_job(event))
        except WorkerError as exc:
            log.warning("job.invalid", extra={"reason": exc.message})
            return await run.report_all([ItemReport.failure(item.idx, exc) for item in envelope.items])

        job = planned.job
        log.info("job.start", extra={"items": len(job.items), "stage": job.stage, "preset": job.preset})

        async def work(item: Item, place: ItemPlace, gate: WriteGate) -> ItemReport:
            return await self._run_item(planned, item, place, gate)

        concurrency = min(job.batch_concurrency or self.settings.batch_concurrency, self.settings.max_batch_concurrency)
        return await run.run(list(job.items), work, concurrency, self.storage)

    # -- item --------------------------------------------------------------------------------

    async def _run_item(self, planned: PlannedJob, item: Item, place: ItemPlace, gate: WriteGate) -> ItemReport:
        watch = Stopwatch()
        try:
            async with asyncio.timeout(self.settings.item_timeout_sec) as deadline:
                report = await self._process(planned, item, Handoff(place, deadline), gate)
        except Exception as exc:
            report = ItemReport.failure(item.idx, exc)
            if isinstance(exc, DeviceFailure):
                self.needs_fresh_worker = True
            known = isinstance(exc, (WorkerError, TimeoutError))
            log.log(logging.WARNING if known else logging.ERROR, "item.failed",
                    extra={"error_code": report.error_code, "error": report.error, "ms": watch.ms()},
                    exc_info=None if known else exc)
            return report
        log.info("item.done", extra={"ms": watch.ms()})
        return report

    async def _process(self, planned: PlannedJob, item: Item, place: Handoff, gate: WriteGate) -> ItemReport:
        """The item's stages; ``place`` is in the fetch phase on entry, every write goes
        through ``gate``."""
        job, plan, recipe = planned.job, planned.plan, planned.recipe
        check_item_keys(job, item)
        fingerprint = planned.fingerprint(item, {"max_output_side": self.settings.max_output_side,
                                                 "thumbnail_side": self.settings.thumbnail_side})
        marker = recipe.marker(job, item)
        previous = await self.storage.head(marker)
        if previous is not None and previous.get("fingerprint") == fingerprint:
            log.info("item.reused", extra={"key": marker})
            return recipe.report(job, plan, item)
        with self.stages.timed("download"):
            data = await self.storage.get(item.input_key, self.settings.max_input_bytes)

        await place.enter("pixels")
        lease = await place.paused(self.budget.acquire(estimate_decoded_bytes(data, self.settings.max_output_side)))
        try:
            image = await self._decode(lease, data)
            del data
            if recipe.segments:
                masks = await self._segment(lease, image, item.input_key, plan.concepts_to_prompt())
            else:
                masks = await self._load_masks(lease, planned, item.idx, image.size)
            masks = await self._fit_masks(lease, plan, image, masks)
            # The edit and the masks' encoding run side by side; the result is encoded after it.
            edited = asyncio.create_task(self._edit(lease, plan, image, masks)) if recipe.renders else None
            try:
                encoded = (await self._encode_masks(lease, masks, image.size) if recipe.writes_masks
                           else Encoded())
                if edited is not None:
                    encoded.result, encoded.preview = await self._encode_result(lease, await edited, image)
            finally:
                if edited is not None and not edited.done():
                    edited.cancel()
            del image, masks, edited
        finally:
            lease.release()  # the budget gets it back once the threads working on it have returned

        await place.enter("store")
        await self._store(gate, recipe.objects(job, item, encoded, {"fingerprint": fingerprint}))
        return recipe.report(job, plan, item)

    async def _decode(self, lease: Lease, data: bytes) -> DecodedImage:
        def decode() -> DecodedImage:
            with self.stages.timed("decode"):
                return decode_image(data, max_pixels=self.settings.max_input_pixels,
                                    max_side=self.settings.max_output_side, jpeg_device=self.jpeg_device)

        return await run_held(lease, decode)

    async def _segment(self, lease: Lease, image: DecodedImage, image_id: str, concepts: list[Concept]) -> Segmentation:
        with self.stages.timed("segment"):
            return await self.batcher.segment(SegmentRequest(image.rgb, image_id), concepts, lease)

    async def _fit_masks(self, lease: Lease, plan: Plan, image: DecodedImage, masks: Segmentation) -> Segmentation:
        def fit() -> Segmentation:
            with self.stages.timed("fit_masks"):
                return self.editor.fit_masks(image.rgb, masks, plan)

        return await run_held(lease, fit)

    async def _edit(self, lease: Lease, plan: Plan, image: DecodedImage, masks: Segmentation) -> np.ndarray:
        if not any(masks[rule.concept].holds_pixels() for rule in plan.rules):
            return image.rgb  # no rule has a pixel to edit: the result is the photo (only read from here on)

        def edit() -> np.ndarray:
            with self.editor.slot(image.rgb.shape[0] * image.rgb.shape[1]), self.stages.timed("apply"):
                edits, protect = edits_for(plan, masks)
                return self.editor.apply(image.rgb, edits, protect)

        return await run_held(lease, edit)

    async def _encode_masks(self, lease: Lease, masks: Segmentation, size: tuple[int, int]) -> Encoded:
        def encode() -> Encoded:
            with self.stages.timed("encode"):
                return Encoded(masks={n: encode_mask(m.union, m.outline) for n, m in masks.items()},
                               instances=encode_instances(masks, size))

        return await run_held(lease, encode)

    async def _encode_result(self, lease: Lease, result: np.ndarray, image: DecodedImage) -> tuple[bytes, bytes]:
        def encode() -> tuple[bytes, bytes]:
            with self.stages.timed("encode"):
                png = encode_png(result, image.alpha, image.icc_profile, self.settings.png_compress_level)
                return png, encode_thumbnail(result, self.settings.thumbnail_side)

        return await run_held(lease, encode)

    async def _store(self, gate: WriteGate, objects: list[StoredObject]) -> None:
        """Every object; the marker (last) only once the others are stored."""
        with self.stages.timed("upload"):
            *first, last = objects
            await asyncio.gather(*(gate.put(*obj) for obj in first))
            await gate.put(*last)

    # -- stored masks (stage apply) ----------------------------------------------------------

    async def _load_masks(self, lease: Lease, planned: PlannedJob, idx: int, size: tuple[int, int]) -> Segmentation:
        job, concepts = planned.job, planned.concepts
        with self.stages.timed("load_masks"):
            async def load(concept: Concept) -> tuple[Concept, tuple[np.ndarray, Outline]]:
                key = mask_key(job, idx, concept.name)
                data = await self._get_stored(key)
                return concept, await run_held(lease, lambda: decode_mask(data, size, key=key))

            loaded = await asyncio.gather(*(load(c) for c in concepts))
            if not planned.recipe.loads_instances(planned.plan):
                return {c.name: ConceptMasks(c.name, mask, outline=outline) for c, (mask, outline) in loaded}
            key = instances_key(job, idx)
            data = await self._get_stored(key, MAX_INSTANCES_FILE_BYTES)
            instances = await run_held(lease, lambda: decode_instances(data, size, key=key))
            return {
                c.name: ConceptMasks(c.name, mask, instances.get(c.name) or instances_from_union(mask, c.multi_instance),
                                     outline=outline)
                for c, (mask, outline) in loaded
            }

    async def _get_stored(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            return await self.storage.get(key, min(max_bytes or self.settings.max_input_bytes,
                                                   self.settings.max_input_bytes))
        except InputNotFound as exc:
            raise MasksNotFound(f"no stored mask at {key}; run stage segment or full first") from exc
        except InputTooLarge as exc:
            raise MasksNotFound(f"stored {key} is too large to be a mask") from exc
