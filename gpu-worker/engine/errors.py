"""The worker's exceptions, one tree; each class carries the contract's error code.

    WorkerError                      INTERNAL_ERROR
    ├── JobParseError                INVALID_MESSAGE    no usable envelope: {"error": ...}, no callbacks
    ├── InvalidMessage               INVALID_MESSAGE    usable envelope, bad job or rules
    ├── InvalidKey                   INVALID_KEY        a key outside the caller's prefixes
    ├── InputError                   UNSUPPORTED_IMAGE
    │   ├── InputNotFound            INPUT_NOT_FOUND
    │   ├── InputTooLarge            INPUT_TOO_LARGE
    │   └── UnsupportedImage         UNSUPPORTED_IMAGE
    ├── StorageError                 STORAGE_ERROR
    ├── SegmentationError            SEGMENTATION_ERROR
    │   ├── SegmentationUnavailable  SEGMENTATION_UNAVAILABLE
    │   ├── GpuOutOfMemory           GPU_OUT_OF_MEMORY
    │   └── DeviceFailure            SEGMENTATION_ERROR, and the process needs a fresh GPU
    ├── MasksNotFound                MASKS_NOT_FOUND
    ├── WorkerTimeout                TIMEOUT
    │   └── ItemStopped              TIMEOUT            the job was stopped (platform stop, cancelled
    │                                                   handler, shutdown) before the item finished
    └── QueueApiError                INTERNAL_ERROR     (adapters/queue_pull.py) the queue API failed;
                                                        never an item's outcome

Python's own ``TimeoutError`` (``ITEM_TIMEOUT_SEC``) maps to ``TIMEOUT`` and any other exception
to ``INTERNAL_ERROR`` without its text. Adapters (storage, segmenter, callback, platform) turn
their libraries' errors into these at their edge with ``raise ... from exc``; the pipeline maps
any exception to a code in one place, ``error_code_of``. Messages are short and for humans: no
stack traces, secrets or paths.
"""

from __future__ import annotations


class WorkerError(Exception):
    code = "INTERNAL_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobParseError(WorkerError):
    code = "INVALID_MESSAGE"


class InvalidMessage(WorkerError):
    code = "INVALID_MESSAGE"


class InvalidKey(WorkerError):
    code = "INVALID_KEY"


class InputError(WorkerError):
    code = "UNSUPPORTED_IMAGE"


class InputNotFound(InputError):
    code = "INPUT_NOT_FOUND"


class InputTooLarge(InputError):
    code = "INPUT_TOO_LARGE"


class UnsupportedImage(InputError):
    code = "UNSUPPORTED_IMAGE"


class StorageError(WorkerError):
    code = "STORAGE_ERROR"


class SegmentationError(WorkerError):
    code = "SEGMENTATION_ERROR"


class SegmentationUnavailable(SegmentationError):
    code = "SEGMENTATION_UNAVAILABLE"


class GpuOutOfMemory(SegmentationError):
    code = "GPU_OUT_OF_MEMORY"


class DeviceFailure(SegmentationError):
    """An unrecoverable CUDA error: this process's GPU context is unusable from now on."""


class MasksNotFound(WorkerError):
    code = "MASKS_NOT_FOUND"


class WorkerTimeout(WorkerError):
    code = "TIMEOUT"


class ItemStopped(WorkerTimeout):
    """The job was stopped before this item finished; sending the job again finishes it."""

    def __init__(self, message: str = "stopped before this item finished; send the job again") -> None:
        super().__init__(message)


def error_code_of(exc: BaseException) -> tuple[str, str]:
    """(code, human message) for any exception; unknown ones never leak their text."""
    if isinstance(exc, WorkerError):
        return exc.code, exc.message
    if isinstance(exc, TimeoutError):
        return "TIMEOUT", "the item did not finish in time"
    return "INTERNAL_ERROR", "internal error while processing the item"
