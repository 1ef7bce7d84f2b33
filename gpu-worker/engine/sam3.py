"""SAM3 text-prompted segmentation (transformers ``Sam3Model``), one vision pass per photo.

How a ``segment`` call runs, for B photos and the job's concepts (K distinct prompts):

1. Text: each prompt string is encoded once by the text encoder and cached on the device for the
   life of the process, so later photos and jobs reuse it (``_text_features``).
2. Vision: the photos are uploaded once (uint8), preprocessed on the device by the checkpoint's
   own image processor, and the vision encoder (the expensive ViT) runs ONCE over the B photos.
3. Prompts: the vision features are repeated K times and all B x K (photo, prompt) rows go
   through the DETR encoder/decoder and mask decoder in ONE batched forward
   (``Sam3Model(vision_embeds=..., text_embeds=...)``), never one full forward per prompt.
4. Post-processing, on the device: score = sigmoid(query logit) x sigmoid(presence logit);
   queries above the concept's threshold are kept (best first, at most ``max_instances``);
   their low-resolution mask logits are upsampled and refined with a fast guided filter driven
   by the photo (``refine_masks``), so mask edges follow image edges instead of SAM3's coarse
   mask grid; unions, boxes and areas are computed there too, and each photo's masks come back
   to the host in one transfer.
5. Hand-over: each photo's masks are handed over as soon as they are assembled
   (``segment_each``); on a GPU the host assembles one photo's masks while the device refines
   the next one's. With an editor on the same GPU (``keep_masks_on``) each concept's union stays
   there, with no host copy: it is fitted and edited on the device (engine/edits/device/handover.py),
   and the one transfer carries only the instances' box parts, which the host lists, merges
   (engine/dedupe.py) and stores.

Multi-instance concepts list every instance (id by descending score; instances whose mask
comes out empty are dropped). A single-instance concept has at most one instance, id 0: its
kept detections merged (max of their logits) into one mask before refinement, which is also
its union, with the best score.

Photos are grouped so that a group holds at most ``max_rows_per_pass`` (photo, prompt) rows,
which bounds GPU memory; a single photo is never split, so one vision pass per photo holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import Sam3Model, Sam3Processor
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from engine.checkpoint import FETCH_COMMAND, is_hub_id, resolve_checkpoint
from engine.dedupe import merge_duplicates
from engine.device_faults import is_device_failure
from engine.errors import DeviceFailure, GpuOutOfMemory, SegmentationError, SegmentationUnavailable
from engine.mask_refine import luma, mask_boxes, refine_masks
from engine.segmenter import ConceptMasks, Instance, Segmentation, SegmenterBase, SegmentRequest
from engine.settings import Settings
from presets import Concept

log = logging.getLogger("worker.sam3")



# -- loading -----------------------------------------------------------------------------------


def load_sam3_segmenter(settings: Settings, *, warmup: bool = True) -> Sam3Segmenter:
    """Load ``SAM3_MODEL`` once (cold start): weights, processor, device, dtype, warm-up pass.

    Raises ``SegmentationUnavailable`` (naming the settings and the fetch command, never a path
    or a token) when the weights are missing or cannot be loaded.
    """
    started = time.perf_counter()
    device = pick_device(settings.sam3_device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    folder = resolve_checkpoint(settings)
    try:
        model = Sam3Model.from_pretrained(folder, dtype=dtype).to(device).eval()
        processor = Sam3Processor.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - any broken or partial checkpoint
        raise SegmentationUnavailable(
            "SAM3 weights could not be loaded from SAM3_MODEL / MODEL_CACHE_DIR (missing or incomplete "
            f"checkpoint); fetch them again with `{FETCH_COMMAND}`"
        ) from exc
    load_s = time.perf_counter() - started
    segmenter = Sam3Segmenter(model, processor, device)
    try:
        warmup_s = segmenter.warm_up() if warmup else 0.0
    except SegmentationError as exc:
        raise SegmentationUnavailable(
            "SAM3 loaded from SAM3_MODEL but its warm-up pass failed (GPU memory or a broken checkpoint); "
            f"check the device, or fetch the weights again with `{FETCH_COMMAND}`"
        ) from exc
    log.info(
        "sam3.loaded",
        extra={
            "model": settings.sam3_model if is_hub_id(settings.sam3_model) else "local folder",
            "device": device_name(device),
            "dtype": str(dtype).removeprefix("torch."),
            "load_s": round(load_s, 3),
            "warmup_s": round(warmup_s, 3),
            "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        },
    )
    return segmenter


def pick_device(requested: str | None) -> torch.device:
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise SegmentationUnavailable("SAM3_DEVICE is not a device name torch knows (cpu, cuda, cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SegmentationUnavailable("SAM3_DEVICE asks for a GPU but none is visible to the worker")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


# -- the segmenter -----------------------------------------------------------------------------


@dataclass
class Detections:
    """Raw SAM3 output for one photo: one row per prompt."""

    scores: torch.Tensor  # (K, Q) float32, sigmoid(logit) x sigmoid(presence)
    mask_logits: torch.Tensor  # (K, Q, h, w) low resolution


@dataclass
class _Kept:
    """What one concept keeps of one photo's detections, best first: one mask row per instance.
    A single-instance concept's detections are merged (max of logits) into one row, its union."""

    concept: Concept
    scores: list[float]  # per row; a merged row has the best score of the detections it merges
    logits: torch.Tensor  # (rows, h, w) low-resolution mask logits


class Sam3Segmenter(SegmenterBase):
    """The ``Segmenter`` protocol on a loaded ``Sam3Model``. Thread-safe (one call at a time)."""

    def __init__(
        self,
        model: Sam3Model,
        processor: Sam3Processor,
        device: torch.device,
        *,
        max_rows_per_pass: int = 48,
        max_photos_per_pass: int = 8,
        max_instances: int = 32,
        refine_side: int = 1024,
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.max_rows_per_pass = max_rows_per_pass
        self.max_photos_per_pass = max_photos_per_pass
        self.max_instances = max_instances
        self.refine_side = refine_side
        self.overlap_host_work = device.type == "cuda"
        self.hand_over_on_device = False
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()
        # Set by a CUDA error that leaves the context unusable: every later call fails at once.
        self.broken = False

    def keep_masks_on(self, device: torch.device) -> None:
        """Hand each concept's union over on the device too (``ConceptMasks.on_device``) when an
        editor works on this segmenter's device, so the masks never travel back up."""
        self.hand_over_on_device = device.type == "cuda" and torch.device(device) == self.device

    # The Segmenter protocol.
    def segment(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> list[Segmentation]:
        return list(self.segment_each(requests, concepts))

    def segment_each(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> Iterator[Segmentation]:
        """Each photo's masks, in order, as soon as they are ready: the vision and prompt passes
        run once for the batch, then each photo's masks are refined and handed over in turn, so
        the caller can edit and encode the first photo while the device refines the next."""
        if not concepts:
            yield from ({} for _ in requests)
            return
        with self._lock:
            if self.broken:  # the CUDA context is unusable: touching the device again may hang
                raise DeviceFailure("the GPU failed earlier in this worker; send the job again")
            try:
                yield from self._segment(requests, concepts)
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                raise GpuOutOfMemory("the photos do not fit in GPU memory") from exc
            except Exception as exc:  # noqa: BLE001 - any model/runtime failure
                if is_device_failure(exc):
                    self.broken = True
                    log.error("sam3.device_failure", extra={"error_type": type(exc).__name__})
                    raise DeviceFailure("the GPU failed (an unrecoverable CUDA error); send the job again") from exc
                raise SegmentationError("SAM3 inference failed") from exc

    def warm_up(self) -> float:
        """One tiny end-to-end call (kernels, allocator, autotuning); returns its seconds."""
        started = time.perf_counter()
        yy, xx = np.mgrid[0:96, 0:128]
        image = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)
        self.segment([SegmentRequest(image, "warmup")], [Concept("warmup", "object", 0.0, True)])
        return time.perf_counter() - started

    def _segment(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> Iterator[Segmentation]:
        prompts = list(dict.fromkeys(c.prompt for c in concepts))
        for group in self._photo_groups(requests, len(prompts)):
            with torch.inference_mode():
                images = [self._upload(r.image) for r in group]
                detections = self.detect(images, prompts)
            # On a GPU, pipelined: the host assembles one photo's masks (counting, packing) while
            # the device refines the next one's, instead of the device waiting for the host. On
            # the CPU there is nothing to overlap, only a second photo's masks to hold.
            previous: _OnHost | None = None
            for image, found in zip(images, detections):
                with torch.inference_mode():
                    current = self._launch_masks(image, found, concepts, prompts)
                if previous is not None:
                    yield previous.assemble()
                with torch.inference_mode():
                    previous = current.to_host()
                if not self.overlap_host_work:
                    yield previous.assemble()
                    previous = None
            if previous is not None:
                yield previous.assemble()

    def _photo_groups(self, requests: Sequence[SegmentRequest], prompt_count: int) -> list[Sequence[SegmentRequest]]:
        per_pass = max(1, min(self.max_photos_per_pass, self.max_rows_per_pass // prompt_count))
        return [requests[i : i + per_pass] for i in range(0, len(requests), per_pass)]

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        """uint8 H x W x 3 on the host -> uint8 3 x H x W on the device."""
        host = np.ascontiguousarray(image) if image.flags.writeable else np.array(image)  # torch wants writable
        return torch.from_numpy(host).to(self.device).permute(2, 0, 1)

    # -- the model ------------------------------------------------------------------------------

    @torch.inference_mode()
    def detect(self, images: Sequence[torch.Tensor], prompts: Sequence[str]) -> list[Detections]:
        """One vision pass over ``images`` (uint8 3xHxW on the device), then every prompt in one pass."""
        vision = self.model.get_vision_features(pixel_values=self._pixel_values(images))
        text, text_mask = self._text_features(prompts)
        photos, k = len(images), len(prompts)
        outputs = self.model(
            vision_embeds=_repeat_vision(vision, k),
            text_embeds=BaseModelOutputWithPooling(pooler_output=text.repeat(photos, 1, 1)),
            attention_mask=text_mask.repeat(photos, 1),
        )
        scores = outputs.pred_logits.float().sigmoid() * outputs.presence_logits.float().sigmoid()
        masks = outputs.pred_masks
        return [
            Detections(scores.view(photos, k, -1)[b], masks.view(photos, k, *masks.shape[1:])[b])
            for b in range(photos)
        ]

    def _pixel_values(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """The checkpoint's own preprocessing (resize, rescale, normalise), run on the device."""
        encoded = self.processor.image_processor(
            images=list(images), device=self.device, input_data_format="channels_first", return_tensors="pt"
        )
        return encoded["pixel_values"].to(self.device, self.dtype)

    def _text_features(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, L, C) prompt features and (K, L) token mask; each prompt is encoded once per process."""
        missing = [p for p in prompts if p not in self._text_cache]
        if missing:
            tokens = self.processor(text=missing, return_tensors="pt").to(self.device)
            features = self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            ).pooler_output
            for i, prompt in enumerate(missing):
                self._text_cache[prompt] = (features[i], tokens["attention_mask"][i])
        cached = [self._text_cache[p] for p in prompts]
        return torch.stack([f for f, _ in cached]), torch.stack([m for _, m in cached])

    # -- post-processing ------------------------------------------------------------------------

    def _launch_masks(
        self, image: torch.Tensor, detections: Detections, concepts: Sequence[Concept], prompts: list[str]
    ) -> _OnDevice:
        """Queue the photo's mask refinement on the device (asynchronous on a GPU)."""
        kept = self._keep(detections, concepts, prompts)
        refined = refine_masks(torch.cat([k.logits for k in kept]), luma(image), work_side=self.refine_side)
        # One stack for the photo: per concept its union, then (multi-instance) its instances.
        stack: list[torch.Tensor] = []
        for k, rows in zip(kept, refined.split([len(k.scores) for k in kept])):
            stack.append(rows.any(0))
            if k.concept.multi_instance:
                stack.extend(rows)
        masks = torch.stack(stack)
        return _OnDevice(kept, masks, mask_boxes(masks), self.hand_over_on_device)

    def _keep(self, detections: Detections, concepts: Sequence[Concept], prompts: list[str]) -> list[_Kept]:
        """Per concept: the detections of its prompt scoring above its threshold, best first."""
        ranked_scores, ranked_queries = detections.scores.sort(dim=1, descending=True)
        top_scores = ranked_scores[:, : self.max_instances].cpu().tolist()
        top_queries = ranked_queries[:, : self.max_instances].cpu().tolist()
        kept = []
        for concept in concepts:
            row = prompts.index(concept.prompt)
            pairs = [(q, s) for q, s in zip(top_queries[row], top_scores[row]) if s > concept.threshold]
            scores = [s for _, s in pairs]
            logits = detections.mask_logits[row, [q for q, _ in pairs]]
            if pairs and not concept.multi_instance:
                scores, logits = scores[:1], logits.amax(0, keepdim=True)
            kept.append(_Kept(concept, scores, logits))
        return kept


@dataclass
class _OnDevice:
    """A photo's refined masks, still on the device: per concept its union, then its instances."""

    kept: list[_Kept]
    masks: torch.Tensor  # (rows, H, W) bool
    boxes: torch.Tensor  # (rows, 4)
    keep_on_device: bool = False

    def to_host(self) -> _OnHost:
        """Waits for the device, then one transfer: the whole stack, or, when the unions are
        handed over on the device, only the instances' box parts (what the instances file holds)."""
        boxes = [(x0, y0, x1, y1) for x0, y0, x1, y1 in self.boxes.cpu().tolist()]
        shape = (int(self.masks.shape[1]), int(self.masks.shape[2]))
        rows = [r for r in _instance_rows(self.kept) if _box_holds_pixels(boxes[r])]
        if not self.keep_on_device:
            stack = self.masks.cpu().numpy()
            return _OnHost(self.kept, boxes, shape, {r: _in_box(stack[r], boxes[r]) for r in rows}, stack)
        parts = [_in_box(self.masks[r], boxes[r]).reshape(-1) for r in rows]
        packed = torch.cat(parts).cpu().numpy() if parts else np.zeros(0, bool)
        crops, at = {}, 0
        for r in rows:
            x0, y0, x1, y1 = boxes[r]
            crops[r] = packed[at : at + (y1 - y0) * (x1 - x0)].reshape(y1 - y0, x1 - x0)
            at += crops[r].size
        return _OnHost(self.kept, boxes, shape, crops, None, self.masks)


def _instance_rows(kept: list[_Kept]) -> Iterator[int]:
    """The stack's rows that are instances: a multi-instance concept's rows after its union, a
    single-instance concept's union (its one instance)."""
    at = 0
    for k in kept:
        if k.concept.multi_instance:
            yield from range(at + 1, at + 1 + len(k.scores))
            at += 1 + len(k.scores)
        else:
            yield at
            at += 1


@dataclass
class _OnHost:
    kept: list[_Kept]
    boxes: list[tuple[int, int, int, int]]
    shape: tuple[int, int]
    crops: dict[int, np.ndarray]  # each instance row with pixels: its part inside its box
    stack: np.ndarray | None  # the whole stack; None when the unions stay on the device
    on_device: torch.Tensor | None = None  # the stack on the device, for an editor there

    def assemble(self) -> Segmentation:
        """Host-side ``ConceptMasks`` from the photo's stack (each union, then its instances).
        Instances whose refined mask came out empty (an empty box) are dropped; ids count the
        ones listed. Each instance keeps only its box's part of the mask."""
        result: Segmentation = {}
        at = 0
        for k in self.kept:
            union_at, at = at, at + 1
            if k.concept.multi_instance:
                rows = [(at + i, score) for i, score in enumerate(k.scores) if at + i in self.crops]
                at += len(k.scores)
            else:
                rows = [(union_at, k.scores[0])] if union_at in self.crops else []
            instances = [Instance.from_crop(i, score, self.boxes[r], self.crops[r], self.shape)
                         for i, (r, score) in enumerate(rows)]
            if k.concept.multi_instance:  # the same object proposed twice, or whole and in part
                instances = merge_duplicates(instances)
            # Copies: a view would keep the photo's whole stack of masks alive. A union handed
            # over on the device gets no host copy (``ConceptMasks.union`` makes one if read).
            if self.stack is not None:
                result[k.concept.name] = ConceptMasks(k.concept.name, self.stack[union_at].copy(), instances)
            else:
                result[k.concept.name] = ConceptMasks(k.concept.name, None, instances, self.on_device[union_at].clone())
        return result


def _box_holds_pixels(box: tuple[int, int, int, int]) -> bool:
    return box[2] > box[0]  # mask_boxes gives an empty mask the box (0, 0, 0, 0)


def _in_box(mask: np.ndarray | torch.Tensor, box: tuple[int, int, int, int]) -> np.ndarray | torch.Tensor:
    x0, y0, x1, y1 = box
    return mask[y0:y1, x0:x1]


def _repeat_vision(vision: Sam3VisionEncoderOutput, times: int) -> Sam3VisionEncoderOutput:
    """Each photo's features repeated for its ``times`` prompt rows (photo-major order)."""
    return Sam3VisionEncoderOutput(
        fpn_hidden_states=tuple(_repeat_rows(t, times) for t in vision.fpn_hidden_states),
        # Position encodings depend on the feature map's size only: the same for every photo.
        fpn_position_encoding=tuple(_repeat_rows(t[:1], times * t.shape[0]) for t in vision.fpn_position_encoding),
    )


def _repeat_rows(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """Repeat each batch row ``times`` times; a single row is expanded as a view, without a copy."""
    if tensor.shape[0] == 1:
        return tensor.expand(times, *tensor.shape[1:])
    return tensor.repeat_interleave(times, dim=0)
