"""Where a photo's edits run, chosen once (``APPLY_BACKEND``): ``NumpyEditor`` on the host's
CPUs, or ``TorchEditor`` on a torch device (engine/edits/device/), which gives the same pixels
within one level and protected pixels byte for byte.

Each editor also says where a photo's masks are fitted to it (``fit_masks``): on the host, or on
the editor's device, where they then stay for the edits (engine/edits/device/handover.py).

Each editor also owns the gate photos pass before their edits: on the host, at most
``RENDER_CONCURRENCY`` photos at a time (their float planes are host memory); on a device, as
many as fit in ``EDIT_GPU_MEMORY_MB`` by the per-pixel estimate below.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ContextManager, Protocol

import numpy as np

from engine.applier import Edit, apply_edits_with
from engine.edits.backend import Backend, NumpyBackend
from engine.edits.remove import Inpainter
from engine.plan_masks import fit_masks
from engine.rules import Plan
from engine.segmenter import Segmentation

# Device memory one photo holds at its peak in the editor's slot (mask fit and edits), per pixel
# of the photo: the photo, its original and the result (uint8), masks, the fit's band planes, the
# window's matte and guided-filter planes, the per-pixel kernels' bands (float32) and the
# structure fill's exact decision planes. Measured with torch on the CPU, four edits on 65% masks
# at 12 MP: 437 bytes a pixel before the structure fill's memory cut, 126 after it; the mask fit
# of the same job's concepts 195 (bench/results/device_edits_12mp_*). Held at the higher figure
# until the slot is measured on a GPU, whose allocator keeps what it freed cached.
DEVICE_BYTES_PER_PIXEL = 448


class Editor(Protocol):
    name: str

    def apply(self, image: np.ndarray, edits: Sequence[Edit], protect: Any) -> np.ndarray: ...

    def fit_masks(self, image: np.ndarray, masks: Segmentation, plan: Plan) -> Segmentation:
        """``plan_masks.fit_masks`` where this editor wants the masks."""
        ...

    def slot(self, pixels: int) -> ContextManager[None]:
        """Held while a photo of ``pixels`` pixels is edited."""
        ...

    def attach(self, segmenter: Any) -> None:
        """Lets a segmenter on the editor's device hand its masks over there."""
        ...


class NumpyEditor:
    name = "numpy"

    def __init__(self, inpainter: Inpainter, concurrency: int, backend: Backend | None = None) -> None:
        self.inpainter = inpainter
        self.backend = backend or NumpyBackend()
        self.slots = threading.BoundedSemaphore(concurrency)

    def apply(self, image: np.ndarray, edits: Sequence[Edit], protect: Any) -> np.ndarray:
        return apply_edits_with(image, edits, protect, backend=self.backend, inpainter=self.inpainter)

    def fit_masks(self, image: np.ndarray, masks: Segmentation, plan: Plan) -> Segmentation:
        return fit_masks(image, masks, plan)

    @contextmanager
    def slot(self, pixels: int) -> Iterator[None]:
        with self.slots:
            yield

    def attach(self, segmenter: Any) -> None:
        return None


class MemoryBudget:
    """A semaphore counted in bytes: a holder of more than the whole budget waits for it all."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self.changed = threading.Condition()

    @contextmanager
    def reserve(self, amount: int) -> Iterator[None]:
        amount = min(amount, self.total)
        with self.changed:
            self.changed.wait_for(lambda: self.used + amount <= self.total)
            self.used += amount
        try:
            yield
        finally:
            with self.changed:
                self.used -= amount
                self.changed.notify_all()


class TorchEditor:
    name = "torch"

    def __init__(self, device: str, inpainter: Inpainter, memory_mb: int) -> None:
        import torch

        from engine.actions import Tools
        from engine.edits.device.fill import device_fill
        from engine.edits.device.registry import DeviceTools

        self.device = torch.device(device)
        self.tools = DeviceTools(device_fill(inpainter), Tools(NumpyBackend(), inpainter))
        self.budget = MemoryBudget(memory_mb << 20)

    def apply(self, image: np.ndarray, edits: Sequence[Edit], protect: Any) -> np.ndarray:
        from engine.edits.device.editor import apply_on_device

        return apply_on_device(image, edits, protect, self.device, self.tools)

    def fit_masks(self, image: np.ndarray, masks: Segmentation, plan: Plan) -> Segmentation:
        from engine.edits.device.handover import DeviceFitter

        with self.slot(image.shape[0] * image.shape[1]):
            fitter = DeviceFitter(image, self.device)
            return fitter.hand_over(fit_masks(image, masks, plan, fitter))

    def slot(self, pixels: int) -> ContextManager[None]:
        return self.budget.reserve(pixels * DEVICE_BYTES_PER_PIXEL)

    def attach(self, segmenter: Any) -> None:
        keep = getattr(segmenter, "keep_masks_on", None)
        if keep is not None:
            keep(self.device)


def choose_editor(choice: str, inpainter: Inpainter, render_concurrency: int, gpu_memory_mb: int) -> Editor:
    """``numpy``: the host; ``torch``: torch on CUDA when present, else on the CPU (for parity
    checks and benchmarks); ``auto``: torch on CUDA when present, else numpy."""
    if choice != "numpy":
        try:
            import torch
        except ImportError:
            torch = None
        cuda = torch is not None and torch.cuda.is_available()
        if cuda or (choice == "torch" and torch is not None):
            return TorchEditor("cuda" if cuda else "cpu", inpainter, gpu_memory_mb)
    return NumpyEditor(inpainter, render_concurrency)
