"""Test doubles for whole jobs: storage that records (and can hold) writes, parts that block
until released, and a builder for a pipeline over photos with known masks."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from engine.callback import RecordingCallbackSender
from engine.pipeline import Pipeline
from engine.segmenter import FileMaskSegmenter
from engine.storage import LocalStorage
from tests.conftest import jpeg_bytes, make_settings, room_photo, write_masks

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
    """Records each callback with the monotonic time it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[int, float] = {}

    async def send(self, url: str, payload: dict[str, Any], idempotency_key: str):
        self.times.setdefault(payload["idx"], time.monotonic())
        return await super().send(url, payload, idempotency_key)


def seed_photos(storage: LocalStorage, masks_dir: Path, count: int, job_id: str = "job_123",
                start: int = 0) -> None:
    """``count`` room photos stored at ``inputs/u_abc/{job_id}/{i}.jpg`` with their masks."""
    for i in range(start, start + count):
        rgb, masks = room_photo(seed=i)
        key = f"inputs/u_abc/{job_id}/{i}.jpg"
        storage._put(key, jpeg_bytes(rgb), "image/jpeg", {})
        write_masks(masks_dir, key, masks)


def pipeline_on(tmp_path: Path, *, photos: int = 1, segmenter=None, sender=None, storage=None,
                **settings_overrides: Any) -> tuple[Pipeline, RecordingStorage, Any]:
    settings = make_settings(storage_local_dir=str(tmp_path / "store"), **settings_overrides)
    storage = storage or RecordingStorage(tmp_path / "store")
    seed_photos(storage, tmp_path / "masks", photos)
    if isinstance(storage, RecordingStorage):
        storage.writes.clear()  # the inputs are not the job's writes
    sender = sender if sender is not None else TimedSender()
    segmenter = segmenter or FileMaskSegmenter(tmp_path / "masks")
    return Pipeline(settings, storage, segmenter, sender), storage, sender
