"""The segmenters a benchmark runs: SAM3 (a checkpoint, or the full-size config with random
weights), a simulated device that costs a device's time and no host CPU, and wrappers that keep
every detection or time the device's work."""

from __future__ import annotations

import argparse
import contextlib
import threading
import tempfile
import time
from pathlib import Path

import numpy as np


def load_segmenter(args: argparse.Namespace, settings):
    from engine.sam3 import Sam3Segmenter, device_name, load_sam3_segmenter, pick_device

    if args.checkpoint == "simulated":
        return SimulatedDevice(args.device_ms / 1000, args.device_shared,
                               args.sim_coverage if args.sim_masks == "blobs" else 0.0)
    if args.checkpoint != "full-random":
        segmenter = load_sam3_segmenter(settings)
    else:
        import torch
        from transformers import Sam3Config, Sam3Model, Sam3Processor
        from tests.sam3_tiny import save_tiny_sam3

        device = pick_device(None)
        model = Sam3Model(Sam3Config()).to(device, torch.bfloat16).eval()
        with tempfile.TemporaryDirectory() as tmp:  # tokenizer only; the image processor at full size
            processor = Sam3Processor.from_pretrained(save_tiny_sam3(Path(tmp)))
        processor.image_processor.size = {"height": 1008, "width": 1008}
        segmenter = Sam3Segmenter(model, processor, device)
        segmenter.warm_up()
    segmenter.device_label = device_name(segmenter.device)
    if args.keep_top:
        segmenter.max_instances = args.keep_top
        return KeepTop(segmenter)
    return segmenter


class SimulatedDevice:
    """A segmenter that costs a device's time and no host CPU: each call sleeps ``seconds`` per
    photo (releasing the GIL, as a CUDA wait does) and finds nothing, or, with ``coverage``, a
    blob over that share of the frame per concept (made once per photo size, outside the timing,
    as a device would make them)."""

    def __init__(self, seconds: float, shared: float, coverage: float = 0.0) -> None:
        self.seconds, self.shared, self.coverage = seconds, shared, coverage
        self.device_label = f"simulated device, {seconds * 1000:g} ms a photo ({shared:.0%} of it batch-wide)"
        self._found: dict[tuple, dict] = {}

    def segment(self, requests, concepts):
        return list(self.segment_each(requests, concepts))

    def segment_each(self, requests, concepts):
        time.sleep(self.seconds * self.shared * len(requests))  # the batch's vision and prompt passes
        for r in requests:  # then, as SAM3 does, one photo's masks at a time (refinement, transfer)
            time.sleep(self.seconds * (1 - self.shared))
            yield self.found(r.image.shape[:2], concepts)

    def found(self, shape: tuple[int, int], concepts) -> dict:
        key = (shape, tuple(c.name for c in concepts))
        if key not in self._found:
            self._found[key] = {c.name: blob_masks(c, shape, self.coverage, seed=i) for i, c in enumerate(concepts)}
        return self._found[key]


def blob_masks(concept, shape: tuple[int, int], coverage: float, seed: int):
    """A smooth random blob (low-frequency noise above its quantile) over ``coverage`` of the
    frame, split into instances as the segmenter would list them."""
    import cv2

    from engine.segmenter import ConceptMasks, instances_from_union

    if coverage <= 0:
        return ConceptMasks(concept.name, np.zeros(shape, bool))
    noise = np.random.default_rng(seed).standard_normal((6, 8)).astype(np.float32)
    field = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    union = field > np.quantile(field[::16, ::16], 1.0 - coverage)
    return ConceptMasks(concept.name, union, instances_from_union(union, concept.multi_instance))


def keep_masks_on(inner, device) -> None:
    """A wrapper passes the editor's hand-over request to the segmenter it wraps."""
    keep = getattr(inner, "keep_masks_on", None)
    if keep is not None:
        keep(device)


class KeepTop:
    """The segmenter with every concept's threshold at 0, so each prompt keeps its
    ``max_instances`` best detections whatever random weights score."""

    def __init__(self, inner) -> None:
        self.inner, self.device, self.device_label = inner, inner.device, inner.device_label

    def keep_masks_on(self, device) -> None:
        keep_masks_on(self.inner, device)

    def segment(self, requests, concepts):
        return list(self.segment_each(requests, concepts))

    def segment_each(self, requests, concepts):
        from dataclasses import replace

        return self.inner.segment_each(requests, [replace(c, threshold=0.0) for c in concepts])


class BusyClock:
    """The segmenter, timing its calls: the share of the job's wall time the device was at work
    (a call runs from its start until its last photo is handed over)."""

    def __init__(self, inner) -> None:
        self.inner, self.busy_s = inner, 0.0

    def keep_masks_on(self, device) -> None:
        keep_masks_on(self.inner, device)

    def segment(self, requests, concepts):
        return list(self.segment_each(requests, concepts))

    def segment_each(self, requests, concepts):
        started = time.perf_counter()
        try:
            each = getattr(self.inner, "segment_each", None)
            yield from each(requests, concepts) if each else self.inner.segment(requests, concepts)
        finally:
            self.busy_s += time.perf_counter() - started


class EditorClock:
    """The editor, counting what its mask fits and edits cost the host: thread CPU seconds
    inside them (with torch at one intra-op thread, a torch op's CPU is on the calling thread)
    and, for a torch editor, the torch calls made (each one a kernel launch or more on a GPU)."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.cpu_s, self.torch_calls = 0.0, 0
        self._lock = threading.Lock()

    def slot(self, pixels):
        return self.inner.slot(pixels)

    def attach(self, segmenter) -> None:
        self.inner.attach(segmenter)

    def fit_masks(self, image, masks, plan):
        return self._timed(self.inner.fit_masks, image, masks, plan)

    def apply(self, image, edits, protect):
        return self._timed(self.inner.apply, image, edits, protect)

    def _timed(self, call, *args):
        counter = _TorchCalls() if self.name == "torch" else contextlib.nullcontext()
        started = time.thread_time()
        try:
            with counter:
                return call(*args)
        finally:
            with self._lock:
                self.cpu_s += time.thread_time() - started
                self.torch_calls += getattr(counter, "calls", 0)


def _TorchCalls():
    from torch.overrides import TorchFunctionMode

    class TorchCalls(TorchFunctionMode):
        """Counts torch functions and tensor methods called on this thread."""

        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    return TorchCalls()
