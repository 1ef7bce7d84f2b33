"""Test doubles for whole jobs: storage that records (and can hold) writes, parts that block
until released, and a builder for a pipeline over photos with known masks."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from engine.edits.structure_fill import StructureInpainter
from engine.editor import NumpyEditor
from engine.callback import Delivery, RecordingCallbackSender
from engine.edits.backend import NumpyBackend
from engine.pipeline import Pipeline
from engine.segmenter import FileMaskSegmenter
from engine.storage import LocalStorage
from tests.conftest import jpeg_bytes, make_job, make_settings, room_photo, write_masks

WAIT = 10.0  # seconds any test waits for an event before failing: generous, never reached when it works


class RecordingStorage(LocalStorage):
    """The local store, recording each write (key, metadata, monotonic time) when it lands.

    ``hold(fragment)`` makes writes to keys containing ``fragment`` wait until ``release()``;
    ``holding`` is set once one such write is waiting."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[tuple[str, dict[str, str] | None, float]] = []
        self.lock = threading.Lock()
        self._hold: str | None = None
        self.holding = threading.Event()
        self._released = threading.Event()

    def hold(self, fragment: str) -> None:
        self._hold = fragment
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def _put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None:
        if self._hold is not None and self._hold in key:
            self.holding.set()
            self._released.wait(WAIT)
        super()._put(key, data, content_type, metadata)
        with self.lock:
            self.writes.append((key, metadata or None, time.monotonic()))

    def keys(self) -> list[str]:
        with self.lock:
            return [key for key, _, _ in self.writes]


class TimedSender(RecordingCallbackSender):
    """Records each callback with the monotonic time it was sent. Callbacks of jobs in
    ``held_jobs`` wait until ``release_jobs()`` (a receiver that does not answer yet)."""

    def __init__(self, held_jobs: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.times: dict[tuple[str, int], float] = {}
        self.held_jobs = set(held_jobs)
        self._released: asyncio.Event | None = None
        self.first_sent = threading.Event()

    def release_jobs(self) -> None:
        self.held_jobs.clear()
        if self._released is not None:
            self._released.set()

    async def send(self, url: str, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        self.times.setdefault((payload["job_id"], payload["idx"]), time.monotonic())
        self.first_sent.set()
        if payload["job_id"] in self.held_jobs:
            self._released = self._released or asyncio.Event()
            await self._released.wait()
        return await super().send(url, payload, idempotency_key)

    def payloads(self, job_id: str = "job_123") -> list[dict[str, Any]]:
        return [p for _, p, _ in self.sent if p["job_id"] == job_id]


class BlockingBackend(NumpyBackend):
    """The numpy edit back end, but every edit waits until ``release`` is set: an edit thread
    the item cannot interrupt. ``entered`` is set once one is waiting; ``returned_at`` holds
    when each blocked call returned."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned_at: list[float] = []

    def _wait(self) -> None:
        self.entered.set()
        self.release.wait(WAIT)
        self.returned_at.append(time.monotonic())

    def recolor(self, rgb8, params, material):
        self._wait()
        return super().recolor(rgb8, params, material)

    def tone(self, rgb8, params):
        self._wait()
        return super().tone(rgb8, params)


async def until(condition, what: str, timeout: float = WAIT) -> None:
    """Wait (polling the loop) until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def in_thread_wait(event: threading.Event, what: str, timeout: float = WAIT) -> None:
    if not await asyncio.to_thread(event.wait, timeout):
        raise AssertionError(f"timed out waiting for {what}")


def small_job(job_id: str, n_items: int = 1, **overrides: Any) -> dict[str, Any]:
    """A job whose keys sit under its own job id (``inputs/u_abc/{job_id}/{i}.jpg``)."""
    items = [{"idx": i, "input_key": f"inputs/u_abc/{job_id}/{i}.jpg",
              "output_key": f"outputs/u_abc/{job_id}/{i}_result.png",
              "preview_key": f"previews/u_abc/{job_id}/{i}_thumb.jpg"} for i in range(n_items)]
    return make_job(n_items, job_id=job_id, idempotency_prefix=job_id, items=items, **overrides)


def seed_photos(storage: LocalStorage, masks_dir: Path, count: int, job_id: str = "job_123",
                start: int = 0) -> None:
    """``count`` room photos stored at ``inputs/u_abc/{job_id}/{i}.jpg`` with their masks."""
    for i in range(start, start + count):
        rgb, masks = room_photo(seed=i)
        key = f"inputs/u_abc/{job_id}/{i}.jpg"
        storage._put(key, jpeg_bytes(rgb), "image/jpeg", {})
        write_masks(masks_dir, key, masks)


def pipeline_on(tmp_path: Path, *, photos: int = 1, jobs: tuple[str, ...] = ("job_123",), segmenter=None,
                sender=None, storage=None, edit_backend=None,
                **settings_overrides: Any) -> tuple[Pipeline, RecordingStorage, Any]:
    """A pipeline on the local store with ``photos`` photos seeded for each job id in ``jobs``."""
    settings = make_settings(storage_local_dir=str(tmp_path / "store"), **settings_overrides)
    storage = storage or RecordingStorage(tmp_path / "store")
    for job_id in jobs:
        seed_photos(storage, tmp_path / "masks", photos, job_id=job_id)
    if isinstance(storage, RecordingStorage):
        storage.writes.clear()  # the inputs are not the job's writes
    sender = sender if sender is not None else TimedSender()
    segmenter = segmenter or FileMaskSegmenter(tmp_path / "masks")
    editor = None if edit_backend is None else NumpyEditor(StructureInpainter(), settings.render_concurrency, edit_backend)
    return Pipeline(settings, storage, segmenter, sender, editor=editor), storage, sender
