"""A GPU that breaks mid-job: the real Sam3Segmenter (tiny checkpoint, CPU) with a simulated
sticky CUDA error raises DeviceFailure, touches the device no more, and the Runpod handler asks
for a fresh worker; out-of-memory and other errors do neither."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.runpod_serverless import make_handler
from engine.device_faults import is_device_failure
from engine.errors import DeviceFailure, GpuOutOfMemory, SegmentationError
from engine.sam3 import Sam3Segmenter, load_sam3_segmenter
from engine.segmenter import SegmentRequest
from engine.settings import Settings
from engine.storage import LocalStorage
from engine.wiring import build_pipeline
from presets import Concept
from tests import broken_gpu
from tests.broken_gpu import BrokenGpu, OutOfMemoryOnce
from tests.conftest import jpeg_bytes, make_job, make_settings, room_photo
from tests.sam3_tiny import save_tiny_sam3

WALL = [Concept("Wall", "wall", 0.3, multi_instance=False)]


@pytest.fixture
def segmenter(tmp_path: Path) -> Sam3Segmenter:
    """A segmenter of its own per test: a broken one stays broken."""
    folder = save_tiny_sam3(tmp_path / "tiny")
    return load_sam3_segmenter(Settings(_env_file=None, sam3_model=str(folder), sam3_device="cpu"))  # type: ignore[call-arg]


def requests() -> list[SegmentRequest]:
    return [SegmentRequest(np.full((40, 50, 3), 120, np.uint8), "p0")]


@pytest.mark.parametrize("error", [broken_gpu.ILLEGAL_ADDRESS, broken_gpu.DEVICE_ASSERT, broken_gpu.ECC,
                                   broken_gpu.LAUNCH_FAILURE])
def test_sticky_cuda_error_raises_device_failure_and_the_device_is_not_touched_again(segmenter, error):
    assert segmenter.segment(requests(), WALL)  # healthy first
    gpu = BrokenGpu(segmenter.model, error)
    gpu.fail()
    with pytest.raises(DeviceFailure) as info:
        segmenter.segment(requests(), WALL)
    assert info.value.code == "SEGMENTATION_ERROR" and error.splitlines()[0] not in info.value.message
    assert isinstance(info.value.__cause__, torch.AcceleratorError)
    assert segmenter.broken
    touched = gpu.calls_after_failure
    with pytest.raises(DeviceFailure):
        segmenter.segment(requests(), WALL)
    assert gpu.calls_after_failure == touched  # refused before any device call


def test_out_of_memory_is_not_a_device_failure(segmenter):
    oom = OutOfMemoryOnce(segmenter.model)
    oom.fail()
    with pytest.raises(GpuOutOfMemory):
        segmenter.segment(requests(), WALL)
    assert not segmenter.broken
    assert len(segmenter.segment(requests(), WALL)) == 1  # the next call works


def test_other_model_errors_are_segmentation_errors_and_leave_the_segmenter_usable(segmenter):
    gpu = BrokenGpu(segmenter.model, "shape mismatch: expected 4 dims")
    gpu.fail()
    with pytest.raises(SegmentationError) as info:
        segmenter.segment(requests(), WALL)
    assert type(info.value) is SegmentationError and not segmenter.broken
    gpu.remove()
    assert len(segmenter.segment(requests(), WALL)) == 1


@pytest.mark.parametrize("exc, expected", [
    (torch.AcceleratorError(broken_gpu.ILLEGAL_ADDRESS), True),
    (RuntimeError("CUDA error: unspecified launch failure"), True),
    (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, m, n, k)`"), True),
    (RuntimeError("CUDA error: uncorrectable NVLink error detected during the execution"), True),
    (torch.cuda.OutOfMemoryError(broken_gpu.OUT_OF_MEMORY), False),
    (RuntimeError("CUDA error: out of memory"), False),
    (RuntimeError("illegal memory access"), False),  # not from CUDA
    (ValueError("CUDA error: an illegal memory access was encountered"), False),  # not a runtime error
    (RuntimeError("Expected all tensors to be on the same device, cuda:0 and cpu"), False),
    (KeyError("x"), False),
])
def test_is_device_failure(exc, expected):
    assert is_device_failure(exc) is expected


def test_is_device_failure_follows_the_cause_chain():
    try:
        try:
            raise torch.AcceleratorError(broken_gpu.DEVICE_ASSERT)
        except RuntimeError as inner:
            raise SegmentationError("SAM3 inference failed") from inner
    except SegmentationError as outer:
        assert is_device_failure(outer)


async def test_handler_reports_the_items_and_asks_for_a_fresh_worker(segmenter, tmp_path, receiver):
    settings = make_settings(segmenter="sam3", storage_local_dir=tmp_path / "store")
    storage = LocalStorage(settings.storage_local_dir)
    for idx in (0, 1):
        storage._put(f"inputs/u_abc/job_123/{idx}.jpg", jpeg_bytes(room_photo(120, 80, seed=idx)[0]), "image/jpeg", {})
    BrokenGpu(segmenter.model).fail()
    handler = make_handler(build_pipeline(settings, segmenter=segmenter))

    result = await handler({"id": "rp-1", "input": make_job(2, callback_url=f"{receiver.url}/cb")})

    assert result["refresh_worker"] is True
    assert result["status"] == "failed"
    assert [i["error_code"] for i in result["items"]] == ["SEGMENTATION_ERROR"] * 2
    assert sorted(cb.payload["idx"] for cb in receiver.received) == [0, 1]
    assert all(cb.payload["error_code"] == "SEGMENTATION_ERROR" for cb in receiver.received)
    assert not (storage.root / "outputs").exists() and not (storage.root / "masks").exists()
