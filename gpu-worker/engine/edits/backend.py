"""Where the per-pixel kernels run: numpy on the CPU, or torch on a GPU when one is present.

The torch path moves only the touched pixels (uint8) to the device and brings back float sRGB;
region statistics and fitting stay on the CPU, they work on samples. Small regions stay on the
CPU, where the transfer would cost more than the maths.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from engine.edits import colour, kernels
from engine.threads import cpu_pool

GPU_MIN_PIXELS = 250_000


class Backend(Protocol):
    name: str

    def recolor(self, rgb8: np.ndarray, params: kernels.RecolorParams, material: np.ndarray | None) -> np.ndarray: ...

    def tone(self, rgb8: np.ndarray, params: kernels.ToneKernelParams) -> np.ndarray: ...


class NumpyBackend:
    """The kernels in numpy, over chunks of ``chunk`` pixels on a thread pool: numpy releases the
    GIL in its loops, so chunks run on several cores, and each chunk's temporaries (a dozen
    arrays the size of its pixels) stay small whatever the region's size."""

    name = "numpy"

    def __init__(self, chunk: int = 1 << 19) -> None:
        self.chunk = chunk

    def recolor(self, rgb8: np.ndarray, params: kernels.RecolorParams, material: np.ndarray | None) -> np.ndarray:
        def run(part: slice) -> np.ndarray:
            mat = None if material is None else material[part]
            return colour.to_srgb255(kernels.recolor(colour.to_linear(rgb8[part]), params, np, mat))

        return self._chunked(len(rgb8), run)

    def tone(self, rgb8: np.ndarray, params: kernels.ToneKernelParams) -> np.ndarray:
        def run(part: slice) -> np.ndarray:
            return colour.to_srgb255(kernels.tone(colour.to_linear(rgb8[part]), params, np))

        return self._chunked(len(rgb8), run)

    def _chunked(self, count: int, run: Callable[[slice], np.ndarray]) -> np.ndarray:
        parts = [slice(start, start + self.chunk) for start in range(0, count, self.chunk)] or [slice(0, 0)]
        if len(parts) == 1:
            return run(parts[0])
        out = np.empty((count, 3), np.float32)

        def fill(part: slice) -> None:
            out[part] = run(part)

        list(cpu_pool().map(fill, parts))
        return out


class TorchBackend:
    """The same kernels on a torch device (float32). Falls back to numpy below GPU_MIN_PIXELS."""

    name = "torch"

    def __init__(self, device: str, min_pixels: int = GPU_MIN_PIXELS) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.min_pixels = min_pixels
        self.decode = torch.from_numpy(colour.DECODE_LUT).to(self.device)
        self.cpu = NumpyBackend()

    def _run(self, rgb8: np.ndarray, kernel: Any) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            lin = self.decode[torch.from_numpy(np.ascontiguousarray(rgb8)).to(self.device).long()]
            out = kernel(lin).clip(0.0, 1.0)
            srgb = torch.where(out <= 0.0031308, out * 12.92, 1.055 * out.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
            return (srgb * 255.0).float().cpu().numpy()

    def recolor(self, rgb8: np.ndarray, params: kernels.RecolorParams, material: np.ndarray | None) -> np.ndarray:
        if rgb8.shape[0] < self.min_pixels:
            return self.cpu.recolor(rgb8, params, material)
        mat = None if material is None else self.torch.from_numpy(material).to(self.device)
        return self._run(rgb8, lambda lin: kernels.recolor(lin, params, self.torch, mat))

    def tone(self, rgb8: np.ndarray, params: kernels.ToneKernelParams) -> np.ndarray:
        if rgb8.shape[0] < self.min_pixels:
            return self.cpu.tone(rgb8, params)
        return self._run(rgb8, lambda lin: kernels.tone(lin, params, self.torch))


@lru_cache(maxsize=2)
def choose_backend(choice: str = "auto") -> Backend:
    """``auto``: torch on CUDA when available, else numpy; ``numpy`` forces the CPU path."""
    if choice == "numpy":
        return NumpyBackend()
    try:
        import torch
    except ImportError:
        return NumpyBackend()
    if torch.cuda.is_available():
        return TorchBackend("cuda")
    return NumpyBackend()
