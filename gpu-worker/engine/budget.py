"""One memory budget for the photos held decoded, shared by every job the worker runs.

A photo takes a ``Lease`` on its estimated decoded cost in bytes (``estimate_decoded_bytes``,
read from the image header before any pixel is decoded) before it is decoded, and gives it back
once it is encoded. Work on the photo that cannot be interrupted (a decode, an edit, a
segmentation batch, all in threads) holds the lease too: a photo whose item timed out or was
stopped keeps its share until that work has returned, so abandoned threads cannot push memory
past the budget. Leases are granted first come, first served; a photo larger than the whole
budget is let in alone.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import threading
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

from PIL import Image

from engine.postprocess import decoded_cost_bytes

T = TypeVar("T")

# At the result's size: RGB and alpha, the edited copy, the concepts' masks and the encoders'
# buffers; the edits' float planes are bounded separately (RENDER_CONCURRENCY).
RESULT_BYTES_PER_PIXEL = 16


def estimate_decoded_bytes(data: bytes, max_side: int) -> int:
    """What decoding ``data`` and working on the result costs in memory, from its header alone:
    the decode's peak (``decoded_cost_bytes``: the source as its mode holds it, after JPEG's
    reduced-size decode, with the 8-bit and rotated copies it needs) and the work on the fitted
    result. Bytes that are not a readable image cost their own length (their decode fails at once)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Exception:  # noqa: BLE001 - the decoder reports what is wrong with it
        return max(1, len(data))
    scale = min(1.0, max_side / max(width, height, 1))
    result = round(width * scale) * round(height * scale) * RESULT_BYTES_PER_PIXEL
    return max(1, decoded_cost_bytes(data, max_side) + result)


class MemoryBudget:
    """Bytes of decoded photos held at once, across jobs and event loops (thread-safe)."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.in_use = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, nbytes: int) -> Lease:
        """Wait until ``nbytes`` fit (or nothing else is held), in arrival order."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._waiting and self._fits(nbytes):
                self._take(nbytes)
                return Lease(self, nbytes)
            granted: asyncio.Future[None] = loop.create_future()
            self._waiting.append((nbytes, granted))
        try:
            await granted
        except asyncio.CancelledError:
            with self._lock:
                if (nbytes, granted) in self._waiting:
                    self._waiting.remove((nbytes, granted))
                    wake = self._grant_waiting()
                    given = False
                else:
                    given, wake = True, []
            _wake(wake)
            if given:  # granted just as it was cancelled: give it back
                self._give_back(nbytes)
            raise
        return Lease(self, nbytes)

    def _fits(self, nbytes: int) -> bool:
        return self.in_use == 0 or self.in_use + nbytes <= self.capacity

    def _take(self, nbytes: int) -> None:
        self.in_use += nbytes
        self.peak = max(self.peak, self.in_use)

    def _grant_waiting(self) -> list[asyncio.Future[None]]:
        """Under the lock: take the budget for each waiter at the head that now fits."""
        woken = []
        while self._waiting and self._fits(self._waiting[0][0]):
            nbytes, granted = self._waiting.popleft()
            self._take(nbytes)
            woken.append(granted)
        return woken

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self.in_use -= nbytes
            wake = self._grant_waiting()
        _wake(wake)


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for granted in futures:
        granted.get_loop().call_soon_threadsafe(_resolve, granted)


def _resolve(granted: asyncio.Future[None]) -> None:
    if not granted.done():
        granted.set_result(None)


class Lease:
    """One photo's share of the budget. Its owner and each thread working on the photo hold it;
    the bytes go back to the budget when the last of them lets go."""

    def __init__(self, budget: MemoryBudget, nbytes: int) -> None:
        self.budget = budget
        self.nbytes = nbytes
        self._holders = 1  # the owner
        self._owner_gone = False
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                raise RuntimeError("the lease was already given back")
            self._holders += 1

    def let_go(self) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            self.budget._give_back(self.nbytes)

    def release(self) -> None:
        """The owner is done with the photo (idempotent)."""
        with self._lock:
            if self._owner_gone:
                return
            self._owner_gone = True
        self.let_go()

    @property
    def given_back(self) -> bool:
        with self._lock:
            return self._holders == 0


@lru_cache(maxsize=1)
def _pixel_pool() -> ThreadPoolExecutor:
    # Threads that may be abandoned by a stopped item: a pool of their own, apart from
    # engine.threads.cpu_pool (which this work submits its parts to) and asyncio's default one.
    return ThreadPoolExecutor(max_workers=32, thread_name_prefix="pixels")


async def run_held(lease: Lease | None, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a thread, holding ``lease`` until the thread returns, also when the
    caller is cancelled meanwhile (the thread runs on; its result is dropped)."""
    if lease is not None:
        lease.hold()
    context = contextvars.copy_context()  # the job id and item idx for the thread's log lines
    try:
        future: Future[T] = _pixel_pool().submit(context.run, fn, *args)
    except BaseException:
        if lease is not None:
            lease.let_go()
        raise
    if lease is not None:
        future.add_done_callback(lambda _: lease.let_go())
    return await asyncio.wrap_future(future)
