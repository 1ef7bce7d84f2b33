"""A GPU that breaks, simulated on the CPU: from the moment it fails, every forward pass of the
model raises the CUDA error torch raises after a sticky fault, as a real context would.

    gpu = BrokenGpu(segmenter.model)      # healthy until told otherwise
    gpu.fail()                            # the next forward raises, and every one after it
    gpu.calls_after_failure               # forwards attempted once broken (a worker must stop)
"""

from __future__ import annotations

import torch

ILLEGAL_ADDRESS = (
    "CUDA error: an illegal memory access was encountered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
    "below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1"
)
DEVICE_ASSERT = "CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."
ECC = "CUDA error: uncorrectable ECC error encountered"
LAUNCH_FAILURE = "CUDA error: unspecified launch failure"
OUT_OF_MEMORY = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB"


class BrokenGpu:
    def __init__(self, model: torch.nn.Module, error: str = ILLEGAL_ADDRESS) -> None:
        self.error = error
        self.failed = False
        self.calls_after_failure = 0
        self._handles = [m.register_forward_pre_hook(self._pre_forward) for m in model.modules()]

    def fail(self) -> None:
        self.failed = True

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _pre_forward(self, module: torch.nn.Module, args: tuple) -> None:
        if self.failed:
            self.calls_after_failure += 1
            raise torch.AcceleratorError(self.error)


class OutOfMemoryOnce:
    """The model's first forward after ``fail()`` runs out of GPU memory; later ones work."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.armed = False
        self._handle = model.register_forward_pre_hook(self._pre_forward)

    def fail(self) -> None:
        self.armed = True

    def remove(self) -> None:
        self._handle.remove()

    def _pre_forward(self, module: torch.nn.Module, args: tuple) -> None:
        if self.armed:
            self.armed = False
            raise torch.cuda.OutOfMemoryError(OUT_OF_MEMORY)


def main() -> int:
    """``python -m tests.broken_gpu``: the worker exactly as ``python main.py`` runs it, except
    that its SAM3 sits on a GPU that fails at the first segmentation after the warm-up."""
    import engine.sam3
    import main as worker_main

    load = engine.sam3.load_sam3_segmenter

    def load_on_a_failing_gpu(*args: object, **kwargs: object) -> engine.sam3.Sam3Segmenter:
        segmenter = load(*args, **kwargs)
        BrokenGpu(segmenter.model).fail()
        return segmenter

    engine.sam3.load_sam3_segmenter = load_on_a_failing_gpu
    return worker_main.main([])


if __name__ == "__main__":
    raise SystemExit(main())
