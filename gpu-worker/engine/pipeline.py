"""One job from message to stored results and signed callbacks.

Per item, in stages: check keys -> reuse a finished result (redelivery) -> download -> decode
-> masks (segment, or load the stored ones for ``apply``) -> apply rules -> encode -> upload
-> callback. The stages fall into three bounded phases (``engine.phases``): fetch (download),
pixels (decode to encode) and store (upload); ``batch_concurrency`` items at most are in each,
so while the device segments some photos the next ones download and decode and the previous
ones upload, and memory stays bounded by the pixels phase. Each item's callback is sent in its
own task so a receiver that needs retries never holds up the other items. Every exception is
mapped to a contract error code in one place (``errors.error_code_of``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine.applier import Edit, apply_edits_with
from engine.batching import SegmentBatcher
from engine.edits.backend import choose_backend
from engine.edits.remove import choose_inpainter
from engine.callback import CallbackSender, Delivery
from engine.errors import (DeviceFailure, InputNotFound, InputTooLarge, JobParseError, MasksNotFound, ShuttingDown, WorkerError,
                           error_code_of)
from engine.job import (Envelope, Item, Job, check_item_keys, idempotency_key, instances_key,
                        mask_key, parse_envelope, parse_job, unwrap_event)
from engine.logs import StageClock, Stopwatch, idx_var, job_id_var
from engine.phases import ItemPlace, Phase, PhaseGates
from engine.postprocess import (DecodedImage, decode_image, decode_instances, decode_mask, encode_instances,
                                encode_mask, encode_png, encode_thumbnail, gpu_jpeg_device)
from engine.rules import Plan, make_plan
from engine.segmenter import ConceptMasks, Segmentation, SegmentRequest, Segmenter, instances_from_union
from engine.settings import Settings
from engine.storage import Storage
from engine.stored_masks import MAX_INSTANCES_FILE_BYTES
from presets import Concept

log = logging.getLogger("worker.pipeline")

PNG = "image/png"
JPEG = "image/jpeg"
JSON = "application/json"


@dataclass
class ItemReport:
    idx: int
    status: Literal["done", "failed"]
    output_key: str | None = None
    preview_key: str | None = None
    mask_keys: dict[str, str] = field(default_factory=dict)
    instances_key: str | None = None
    error: str | None = None
    error_code: str | None = None

    @classmethod
    def failure(cls, idx: int, exc: BaseException) -> ItemReport:
        code, message = error_code_of(exc)
        return cls(idx, "failed", error=message, error_code=code)

    def callback_payload(self, job_id: str, key: str) -> dict[str, Any]:
        return {
            "job_id": job_id, "idx": self.idx, "status": self.status,
            "output_key": self.output_key, "preview_key": self.preview_key,
            "mask_keys": self.mask_keys, "instances_key": self.instances_key,
            "error": self.error, "error_code": self.error_code, "idempotency_key": key,
        }

    def summary(self, delivery: Delivery) -> dict[str, Any]:
        return {
            "idx": self.idx, "status": self.status, "output_key": self.output_key,
            "preview_key": self.preview_key, "error": self.error, "error_code": self.error_code,
            "callback": "delivered" if delivery.delivered else "undelivered",
        }


ItemListener = Callable[[ItemReport, Delivery], None]
StoredObject = tuple[str, bytes, str, "dict[str, str] | None"]  # key, data, content type, metadata


def job_status(reports: Sequence[ItemReport]) -> str:
    done = sum(r.status == "done" for r in reports)
    return "completed" if done == len(reports) else ("failed" if done == 0 else "partial")


def edits_for(plan: Plan, masks: dict[str, ConceptMasks]) -> tuple[list[Edit], np.ndarray | None]:
    """Each rule's mask (limited to its instances) and the union of the protect masks."""
    edits = []
    for rule in plan.rules:
        concept = masks[rule.concept]
        if rule.instances is None:
            region = concept.union
        else:
            region = np.zeros_like(concept.union)
            for inst in concept.instances:
                if inst.id in rule.instances:
                    x0, y0, x1, y1 = inst.bbox
                    region[y0:y1, x0:x1] |= inst.crop
        edits.append(Edit(rule.op, region))
    protect = None
    for name in plan.protect:
        protect = masks[name].union.copy() if protect is None else protect | masks[name].union
    return edits, protect


@dataclass
class Handoff:
    """An item's place in the phases and its deadline: time spent waiting for a slot in the next
    phase (other items' work) does not count against ``ITEM_TIMEOUT_SEC``."""

    place: ItemPlace
    deadline: asyncio.Timeout

    async def enter(self, phase: Phase) -> None:
        loop, when = asyncio.get_running_loop(), self.deadline.when()
        if when is None:
            await self.place.enter(phase)
            return
        left = when - loop.time()
        self.deadline.reschedule(None)
        await self.place.enter(phase)
        self.deadline.reschedule(loop.time() + left)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        segmenter: Segmenter,
        callbacks: CallbackSender,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.callbacks = callbacks
        # One segmentation call on the device at a time; photos waiting meanwhile share the next.
        self.batcher = SegmentBatcher(segmenter, settings.segment_max_batch)
        self.edit_backend = choose_backend(settings.apply_backend)
        self.inpainter = choose_inpainter(settings.inpaint_model, settings.model_cache_dir)
        self.jpeg_device = gpu_jpeg_device(settings.gpu_jpeg_decode)
        # Edits hold several full-size float planes per photo (about 0.5 GB at 12 MP); photos
        # segmented in one batch would otherwise all be edited at once. A thread semaphore: edits
        # run in worker threads, and it holds across jobs and event loops.
        self.render_slots = threading.BoundedSemaphore(settings.render_concurrency)
        # Set after an unrecoverable CUDA error; the platform adapter then asks for a fresh worker.
        self.needs_fresh_worker = False
        self.stopping = False
        self.jobs_running = 0
        self.stages = StageClock()  # cumulative seconds per stage, over the process's life

    def begin_shutdown(self) -> None:
        """On SIGTERM: items already running finish; items not yet started are reported failed."""
        self.stopping = True

    # -- job ---------------------------------------------------------------------------------

    async def run_job(self, raw: Any, on_item_done: ItemListener | None = None) -> dict[str, Any]:
        """Run one job; returns contract section 5's shape, or ``{"error": ...}`` when unparseable.

        ``on_item_done`` hears each item's report once its callback has ended (for progress).
        """
        try:
            event = unwrap_event(raw)
            envelope = parse_envelope(event)
        except JobParseError as exc:
            log.warning("job.rejected", extra={"reason": exc.message})
            return {"error": exc.message}
        job_id_var.set(envelope.job_id)
        watch = Stopwatch()
        try:
            job = parse_job(event)
            plan = make_plan(job)
        except WorkerError as exc:
            log.warning("job.invalid", extra={"reason": exc.message})
            reports = [ItemReport.failure(item.idx, exc) for item in envelope.items]
            deliveries = await asyncio.gather(*(self._deliver(envelope, r, on_item_done) for r in reports))
            return self._result(envelope, reports, deliveries, watch)

        log.info("job.start", extra={"items": len(job.items), "stage": job.stage, "preset": job.preset})
        gates = PhaseGates(job.batch_concurrency or self.settings.batch_concurrency)
        callback_tasks: dict[int, asyncio.Task[Delivery]] = {}

        async def run_item(item: Item) -> ItemReport:
            idx_var.set(item.idx)
            place = gates.place()
            try:
                await place.enter("fetch")
                if self.stopping:
                    report = ItemReport.failure(item.idx, ShuttingDown(
                        "the worker shut down before this item started; resubmit the job"))
                else:
                    report = await self._run_item(job, plan, item, place)
            finally:
                place.leave()
            callback_tasks[item.idx] = asyncio.create_task(self._deliver(envelope, report, on_item_done))
            return report

        self.jobs_running += 1
        try:
            reports = await asyncio.gather(*(run_item(item) for item in job.items))
            deliveries = [await callback_tasks[r.idx] for r in reports]
        finally:
            self.jobs_running -= 1
        return self._result(envelope, reports, deliveries, watch)

    def _result(self, envelope: Envelope, reports: Sequence[ItemReport], deliveries: Sequence[Delivery],
                watch: Stopwatch) -> dict[str, Any]:
        status = job_status(reports)
        undelivered = sum(not d.delivered for d in deliveries)
        log.info("job.end", extra={"status": status, "ms": watch.ms(), "undelivered_callbacks": undelivered})
        return {"job_id": envelope.job_id, "status": status,
                "items": [r.summary(d) for r, d in zip(reports, deliveries)]}

    async def _deliver(self, envelope: Envelope, report: ItemReport, on_item_done: ItemListener | None) -> Delivery:
        idx_var.set(report.idx)
        key = idempotency_key(envelope.idempotency_prefix, report.idx, report.status)
        try:
            delivery = await self.callbacks.send(envelope.callback_url, report.callback_payload(envelope.job_id, key), key)
        except Exception as exc:  # a sender bug must not lose the item's report
            log.error("callback.error", exc_info=exc)
            delivery = Delivery(False, 0, reason="internal error while sending the callback")
        level = logging.INFO if delivery.delivered else logging.WARNING
        log.log(level, "callback.end", extra={"delivered": delivery.delivered, "attempts": delivery.attempts,
                                              "http_status": delivery.status, "reason": delivery.reason})
        if on_item_done is not None:
            on_item_done(report, delivery)
        return delivery

    # -- item --------------------------------------------------------------------------------

    async def _run_item(self, job: Job, plan: Plan, item: Item, place: ItemPlace) -> ItemReport:
        watch = Stopwatch()
        try:
            async with asyncio.timeout(self.settings.item_timeout_sec) as deadline:
                report = await self._process(job, plan, item, Handoff(place, deadline))
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

    async def _process(self, job: Job, plan: Plan, item: Item, place: Handoff) -> ItemReport:
        """The item's stages; ``place`` is in the fetch phase on entry."""
        check_item_keys(job, item)
        fingerprint = hashlib.sha256(f"{job.fingerprint()}|{item.input_key}".encode()).hexdigest()
        marker = instances_key(job, item.idx) if job.stage == "segment" else item.output_key
        previous = await self.storage.head(marker)
        if previous is not None and previous.get("fingerprint") == fingerprint:
            log.info("item.reused", extra={"key": marker})
            return self._report(job, item, previous)
        with self.stages.timed("download"):
            data = await self.storage.get(item.input_key, self.settings.max_input_bytes)

        await place.enter("pixels")
        with self.stages.timed("decode"):
            image = await asyncio.to_thread(
                decode_image, data, max_pixels=self.settings.max_input_pixels, max_side=self.settings.max_output_side,
                jpeg_device=self.jpeg_device,
            )
        del data
        concepts = plan.concepts_to_find()
        needs_instances = job.stage == "segment" or any(r.instances is not None for r in plan.rules)
        if job.stage == "apply":
            with self.stages.timed("load_masks"):
                masks = await self._load_masks(job, item.idx, concepts, image.size, needs_instances)
        else:
            with self.stages.timed("segment"):
                masks = await self._segment(image, item.input_key, concepts)
        meta = {"fingerprint": fingerprint, "mask-concepts": ",".join(c.name for c in concepts),
                "instances": "1" if (job.stage != "apply" or needs_instances) else "0"}
        # Every object's bytes, the result (if any) last: its presence marks the item finished.
        objects = await self._encode(job, plan, item, image, masks, meta)
        del image, masks

        await place.enter("store")
        with self.stages.timed("upload"):
            *first, (last_key, last_data, last_type, last_meta) = objects
            await asyncio.gather(*(self.storage.put(*obj) for obj in first))
            await self.storage.put(last_key, last_data, last_type, last_meta)
        return self._report(job, item, meta)

    async def _encode(self, job: Job, plan: Plan, item: Item, image: DecodedImage, masks: Segmentation,
                      meta: dict[str, str]) -> list[StoredObject]:
        """(key, bytes, content type, metadata) of every object the item writes; the one that
        marks the item finished last. Masks and the instances file are encoded while the result
        renders."""
        if job.stage == "segment":
            found, marker = await asyncio.gather(
                self._encode_masks(job, item.idx, masks),
                self._encode_instances(instances_key(job, item.idx), masks, image.size, meta))
            return [*found, marker]
        rendering = asyncio.to_thread(self._render, plan, image, masks)
        if job.stage == "apply":  # its masks are already stored
            png, thumb = await rendering
            return [(item.preview_key, thumb, JPEG, None), (item.output_key, png, PNG, meta)]
        found, instances, (png, thumb) = await asyncio.gather(
            self._encode_masks(job, item.idx, masks),
            self._encode_instances(instances_key(job, item.idx), masks, image.size), rendering)
        return [*found, instances, (item.preview_key, thumb, JPEG, None), (item.output_key, png, PNG, meta)]

    def _report(self, job: Job, item: Item, meta: dict[str, str]) -> ItemReport:
        concepts = [c for c in meta.get("mask-concepts", "").split(",") if c]
        has_result = job.stage != "segment"
        return ItemReport(
            idx=item.idx, status="done",
            output_key=item.output_key if has_result else None,
            preview_key=item.preview_key if has_result else None,
            mask_keys={c: mask_key(job, item.idx, c) for c in concepts},
            instances_key=instances_key(job, item.idx) if meta.get("instances") == "1" else None,
        )

    def _render(self, plan: Plan, image: DecodedImage, masks: Segmentation) -> tuple[bytes, bytes]:
        with self.render_slots, self.stages.timed("apply"):
            edits, protect = edits_for(plan, masks)
            result = apply_edits_with(image.rgb, edits, protect, backend=self.edit_backend, inpainter=self.inpainter)
        with self.stages.timed("encode"):  # outside the gate: encoding holds little beyond the result
            png = encode_png(result, image.alpha, image.icc_profile, self.settings.png_compress_level)
            return png, encode_thumbnail(result, self.settings.thumbnail_side)

    # -- masks -------------------------------------------------------------------------------

    async def _segment(self, image: DecodedImage, image_id: str, concepts: list[Concept]) -> Segmentation:
        return await self.batcher.segment(SegmentRequest(image.rgb, image_id), concepts)

    async def _encode_masks(self, job: Job, idx: int, masks: Segmentation) -> list[StoredObject]:
        with self.stages.timed("encode"):
            encoded = await asyncio.to_thread(lambda: {n: encode_mask(m.union) for n, m in masks.items()})
        return [(mask_key(job, idx, n), data, PNG, None) for n, data in encoded.items()]

    async def _encode_instances(self, key: str, masks: Segmentation, size: tuple[int, int],
                                meta: dict[str, str] | None = None) -> StoredObject:
        with self.stages.timed("encode"):
            return key, await asyncio.to_thread(encode_instances, masks, size), JSON, meta

    async def _load_masks(self, job: Job, idx: int, concepts: list[Concept], size: tuple[int, int],
                          needs_instances: bool) -> Segmentation:
        async def load(concept: Concept) -> tuple[Concept, np.ndarray]:
            key = mask_key(job, idx, concept.name)
            data = await self._get_stored(key)
            return concept, await asyncio.to_thread(decode_mask, data, size, key=key)

        loaded = await asyncio.gather(*(load(c) for c in concepts))
        if not needs_instances:  # no rule names instances and no instances file is written
            return {c.name: ConceptMasks(c.name, mask) for c, mask in loaded}
        key = instances_key(job, idx)
        data = await self._get_stored(key, MAX_INSTANCES_FILE_BYTES)
        instances = await asyncio.to_thread(decode_instances, data, size, key=key)
        return {
            c.name: ConceptMasks(c.name, mask, instances.get(c.name) or instances_from_union(mask, c.multi_instance))
            for c, mask in loaded
        }

    async def _get_stored(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            return await self.storage.get(key, min(max_bytes or self.settings.max_input_bytes,
                                                   self.settings.max_input_bytes))
        except InputNotFound as exc:
            raise MasksNotFound(f"no stored mask at {key}; run stage segment or full first") from exc
        except InputTooLarge as exc:
            raise MasksNotFound(f"stored {key} is too large to be a mask") from exc
