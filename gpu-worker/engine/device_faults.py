"""Which GPU errors leave the process's CUDA context unusable (and so need a fresh worker).

After a sticky CUDA error (an illegal memory access, a device-side assert, an uncorrectable ECC
error, a failed or timed-out kernel launch...) every later CUDA call in the process fails with
the same error: the only cure is a new process on a healthy GPU. Running out of memory is not
one of them: the allocator gives the memory back and the next (smaller) call can succeed.

torch reports these as ``torch.AcceleratorError`` (older versions: ``RuntimeError``) whose text
is ``CUDA error: <the CUDA runtime's description>``; libraries on top of CUDA (cuBLAS, cuDNN)
report the same failures as an execution failure of their own. Plain string matching keeps this
module free of torch, so any caller can ask.
"""

from __future__ import annotations

# Lower-case fragments of the CUDA runtime's error strings (cudaGetErrorString) for the errors
# that corrupt the context, and of cuBLAS/cuDNN's "the kernel failed" statuses.
STICKY_CUDA_ERRORS = (
    "illegal memory access",  # cudaErrorIllegalAddress
    "device-side assert",  # cudaErrorAssert
    "ecc error",  # cudaErrorECCUncorrectable
    "nvlink error",  # cudaErrorNvlinkUncorrectable
    "unspecified launch failure",  # cudaErrorLaunchFailure
    "launch timed out",  # cudaErrorLaunchTimeout
    "illegal instruction",  # cudaErrorIllegalInstruction
    "misaligned address",  # cudaErrorMisalignedAddress
    "invalid program counter",  # cudaErrorInvalidPc
    "hardware stack error",  # cudaErrorHardwareStackError
    "invalid address space",  # cudaErrorInvalidAddressSpace
    "context is destroyed",  # cudaErrorContextIsDestroyed
    "busy or unavailable",  # cudaErrorDevicesUnavailable: the GPU has gone away
    "cuda error: unknown error",  # cudaErrorUnknown, what a GPU fallen off the bus reports
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
    "cudnn_status_internal_error",
)
CUDA_MARKERS = ("cuda", "cublas", "cudnn")


def is_device_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a CUDA error after which the
    device cannot be used again in this process; False for out-of-memory and anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_sticky(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_sticky(exc: BaseException) -> bool:
    if type(exc).__name__ == "OutOfMemoryError" or not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    if "out of memory" in text or not any(marker in text for marker in CUDA_MARKERS):
        return False
    return any(fragment in text for fragment in STICKY_CUDA_ERRORS)
