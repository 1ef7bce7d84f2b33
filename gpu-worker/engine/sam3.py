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
   the next one's.

Multi-instance concepts list every instance (id by descending score; instances whose mask
comes out empty are dropped). A single-instance concept has at most one instance, id 0: its
kept detections merged (max of their logits) into one mask before refinement, which is also
its union, with the best score.

Photos are grouped so that a group holds at most ``max_rows_per_pass`` (photo, prompt) rows,
which bounds GPU memory; a single photo is never split, so one vision pass per photo holds.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam3Model, Sam3Processor
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from engine.dedupe import merge_duplicates
from engine.device_faults import is_device_failure
from engine.errors import DeviceFailure, GpuOutOfMemory, SegmentationError, SegmentationUnavailable
from engine.segmenter import ConceptMasks, Instance, Segmentation, SegmenterBase, SegmentRequest
from engine.settings import Settings
from presets import Concept

log = logging.getLogger("worker.sam3")

FETCH_COMMAND = "python -m scripts.fetch_weights"
# What a transformers SAM3 checkpoint needs; the hub repo also holds the original .pt weights.
WEIGHT_FILE_PATTERNS = ["*.json", "*.safetensors", "*.txt"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

MASK_THRESHOLD = 0.5  # on the refined mask probability, as in SAM3's own post-processing
LOGIT_CLAMP = 12.0  # mask logits beyond this are certain either way


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
            "model": settings.sam3_model if _is_hub_id(settings.sam3_model) else "local folder",
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


def resolve_checkpoint(settings: Settings) -> Path:
    """The local folder holding the checkpoint: ``SAM3_MODEL`` itself, or its hub snapshot."""
    source = settings.sam3_model.strip()
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    if not _is_hub_id(source):
        raise SegmentationUnavailable(
            "SAM3 weights are not available: SAM3_MODEL names a folder that does not exist; point it at "
            f"a checkpoint folder, or at a hub id and run `{FETCH_COMMAND}` to fetch it into MODEL_CACHE_DIR"
        )
    return _hub_snapshot(source, settings)


def _is_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "~"))


def _offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def _hub_snapshot(repo_id: str, settings: Settings) -> Path:
    """Find ``repo_id`` in MODEL_CACHE_DIR; download it there only when not offline."""
    from huggingface_hub import snapshot_download

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    kwargs = {"repo_id": repo_id, "cache_dir": str(settings.model_cache_dir), "token": token,
              "allow_patterns": WEIGHT_FILE_PATTERNS}
    try:
        return Path(snapshot_download(**kwargs, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - not in the cache (or the cache is unreadable)
        if _offline():
            raise SegmentationUnavailable(_not_fetched(repo_id)) from exc
    try:
        return Path(snapshot_download(**kwargs))
    except Exception as exc:  # noqa: BLE001 - network, gated repo, bad token, disk
        raise SegmentationUnavailable(_not_fetched(repo_id)) from exc


def _not_fetched(repo_id: str) -> str:
    return (
        f"SAM3 weights are not available: SAM3_MODEL '{repo_id}' is not in MODEL_CACHE_DIR and could not "
        f"be downloaded; run `{FETCH_COMMAND}` (with HF_TOKEN set and the model licence accepted on the hub)"
    )


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
        """Waits for the device, then one transfer of the masks."""
        boxes = [(x0, y0, x1, y1) for x0, y0, x1, y1 in self.boxes.cpu().tolist()]
        return _OnHost(self.kept, self.masks.cpu().numpy(), boxes, self.masks if self.keep_on_device else None)


@dataclass
class _OnHost:
    kept: list[_Kept]
    masks: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    on_device: torch.Tensor | None = None  # the same stack on the device, for an editor there

    def assemble(self) -> Segmentation:
        """Host-side ``ConceptMasks`` from the photo's stack (each union, then its instances).
        Instances whose refined mask came out empty (an empty box) are dropped; ids count the
        ones listed. Each instance keeps only its box's part of the mask."""
        masks, boxes = self.masks, self.boxes
        result: Segmentation = {}
        at = 0
        for k in self.kept:
            union_at, at = at, at + 1
            if k.concept.multi_instance:
                rows = [(at + i, score) for i, score in enumerate(k.scores) if _box_holds_pixels(boxes[at + i])]
                at += len(k.scores)
            else:
                rows = [(union_at, k.scores[0])] if _box_holds_pixels(boxes[union_at]) else []
            instances = [Instance.from_crop(i, score, boxes[r], _in_box(masks[r], boxes[r]), masks.shape[1:])
                         for i, (r, score) in enumerate(rows)]
            if k.concept.multi_instance:  # the same object proposed twice, or whole and in part
                instances = merge_duplicates(instances)
            # A copy: a view would keep the photo's whole stack of masks alive.
            # Cloned on the device too: a view would keep the whole stack there.
            device_union = None if self.on_device is None else self.on_device[union_at].clone()
            result[k.concept.name] = ConceptMasks(k.concept.name, masks[union_at].copy(), instances, device_union)
        return result


def _box_holds_pixels(box: tuple[int, int, int, int]) -> bool:
    return box[2] > box[0]  # mask_boxes gives an empty mask the box (0, 0, 0, 0)


def _in_box(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
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


# -- mask refinement ---------------------------------------------------------------------------


def luma(image: torch.Tensor) -> torch.Tensor:
    """uint8 3 x H x W RGB -> float32 H x W in [0, 1] (Rec. 601 luma), the guide image.
    One channel at a time: a float copy of the whole photo would be 12 bytes a pixel."""
    red, green, blue = image.unbind(0)
    out = red.float().mul_(0.299 / 255.0)
    out.add_(green.float().mul_(0.587 / 255.0))
    return out.add_(blue.float().mul_(0.114 / 255.0))


def refine_masks(
    mask_logits: torch.Tensor,
    guide: torch.Tensor,
    *,
    work_side: int = 1024,
    radius_cells: float = 2.0,
    eps: float = 1e-3,
    pixel_budget: int = 16_000_000,
) -> torch.Tensor:
    """Low-resolution mask logits (N, h, w) -> boolean masks (N, H, W) whose edges follow ``guide``.

    ``guide`` is the photo's brightness (H, W) in [0, 1]. Two candidates are blended per pixel:

    - plain: the logits upsampled bilinearly (SAM3's own post-processing), and
    - snapped: a guided filter (He et al.) of that mask, which fits it in every window as a
      linear function of the photo's brightness, so a mask edge near a photo edge moves onto it.

    The blend weight is the photo's local structure, var / (var + eps), box-averaged: where the
    photo has an edge the snapped mask wins; where it is flat the plain mask is kept, so thin
    masks (grout, frames) are not blurred away. The window radius covers ``radius_cells`` cells
    of SAM3's mask grid, about the error of its edges. Statistics are computed at a working
    resolution (longest side ``work_side``) and their coefficients upsampled bilinearly (the
    "fast guided filter"), so full resolution costs a few multiply-adds per pixel. Masks are
    processed in chunks of at most ``pixel_budget`` output pixels to bound memory.
    """
    count, (height, width) = mask_logits.shape[0], guide.shape
    if count == 0:
        return torch.zeros((0, height, width), dtype=torch.bool, device=guide.device)
    full = (height, width)
    scale = min(1.0, work_side / max(height, width))
    work = (max(1, round(height * scale)), max(1, round(width * scale)))
    guide_full = guide[None, None].float()
    guide_work = F.interpolate(guide_full, size=work, mode="area") if work != full else guide_full
    radius = max(1, math.ceil(radius_cells * max(work) / max(mask_logits.shape[-2:])))

    def box(x: torch.Tensor) -> torch.Tensor:
        return box_mean(x, radius)

    def to_full(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=full, mode="bilinear", align_corners=False) if work != full else x

    def to_full_probability(logits: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=full, mode="bilinear", align_corners=False).sigmoid()

    mean_i = box(guide_work)
    var_i = box(guide_work * guide_work) - mean_i * mean_i
    structure = to_full(box(var_i / (var_i + eps)))  # 0 where the photo is flat, ~1 at its edges
    chunk = max(1, pixel_budget // (height * width))
    out = []
    for start in range(0, count, chunk):
        # Clamped: probabilities that far from 0.5 change nothing, and on CPUs the tiny values
        # a sigmoid of large logits gives (denormal floats) make every later op many times slower.
        logits = mask_logits[start : start + chunk, None].float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        prob_work = F.interpolate(logits, size=work, mode="bilinear", align_corners=False).sigmoid()
        mean_p = box(prob_work)
        a = (box(guide_work * prob_work) - mean_i * mean_p) / (var_i + eps)
        b = mean_p - a * mean_i
        snapped = to_full(box(a)).mul_(guide_full).add_(to_full(box(b)))  # in place: full-size floats add up
        plain = to_full_probability(logits) if work != full else prob_work
        out.append(plain.lerp_(snapped, structure)[:, 0] > MASK_THRESHOLD)
    return torch.cat(out)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of ``x`` (N, C, H, W) over each (2r+1)^2 window clipped to the image, in O(1) per pixel
    (running sums along each axis; exact enough in float32 at the working resolution)."""
    if x.device.type == "cpu":
        return _box_mean_cv2(x, radius)
    return box_mean_running_sums(x, radius)


def box_mean_running_sums(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``box_mean`` on any device (used on the GPU), from running sums along each axis."""
    return _box_mean_1d(_box_mean_1d(x, radius, -1), radius, -2)


def _box_mean_cv2(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The same on the host through OpenCV's box filter, about ten times faster there than
    running sums in torch. Zero padding divided by the window's in-image share = clipped mean."""
    size = (2 * radius + 1, 2 * radius + 1)
    planes = x.detach().float().contiguous().numpy().reshape(-1, *x.shape[-2:])

    def window_mean(plane: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(plane, -1, size, normalize=True, borderType=cv2.BORDER_CONSTANT)

    share = window_mean(np.ones(x.shape[-2:], np.float32))
    out = np.stack([window_mean(plane) for plane in planes]) / share
    return torch.from_numpy(out.reshape(x.shape)).to(x.dtype)


def _box_mean_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Window means along ``dim`` (-1 or -2) of a 4-D tensor, from running sums.

    With S[k] = sum of x[:k], the window around i sums S[min(i + r + 1, n)] - S[max(i - r, 0)].
    Padding the running sums with r + 1 zeros in front and r copies of the total behind turns
    both clamped lookups into two shifted slices of one tensor.
    """
    size = x.shape[dim]
    running = x.cumsum(dim)
    if dim == -1:
        front, back = (radius + 1, 0, 0, 0), (0, radius, 0, 0)
    else:
        front, back = (0, 0, radius + 1, 0), (0, 0, 0, radius)
    padded = F.pad(F.pad(running, front), back, mode="replicate")
    sums = padded.narrow(dim, 2 * radius + 1, size) - padded.narrow(dim, 0, size)
    pos = torch.arange(size, device=x.device)
    counts = ((pos + radius + 1).clamp(max=size) - (pos - radius).clamp(min=0)).to(x.dtype)
    return sums / (counts if dim == -1 else counts[:, None])


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) int64 boxes x0, y0, x1, y1 (exclusive); empty masks give zeros."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.long, device=masks.device)
    height, width = masks.shape[-2:]
    rows, cols = masks.any(2).to(torch.uint8), masks.any(1).to(torch.uint8)
    y0, x0 = rows.argmax(1), cols.argmax(1)
    y1, x1 = height - rows.flip(1).argmax(1), width - cols.flip(1).argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(rows.any(1, keepdim=True).bool(), boxes, torch.zeros_like(boxes))
