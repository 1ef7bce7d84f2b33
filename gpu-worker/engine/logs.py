"""Log lines tagged with the job id and item idx in context: one JSON object per line (the
default, for log collectors), or one readable line per record (``LOG_FORMAT=text``, the default
of a local run)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
idx_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("idx", default=None)

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's context and extra fields; of an exception, its type only (tracebacks can
    carry paths and values that must not reach shared logs)."""
    fields: dict[str, Any] = {}
    job_id, idx = job_id_var.get(), idx_var.get()
    if job_id is not None:
        fields["job_id"] = job_id
    if idx is not None:
        fields["idx"] = idx
    for key, value in vars(record).items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            fields[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        fields["exc_type"] = record.exc_info[0].__name__
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_fields(record))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``12:00:01 warning segmenter.unavailable job_id=job_demo reason='...'``"""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        pairs = " ".join(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
                         for key, value in _fields(record).items())
        return f"{clock} {record.levelname.lower():7} {record.getMessage()} {pairs}".rstrip()


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}


def configure_logging(level: str = "info", stream: Any = None, fmt: str = "json") -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(FORMATTERS[fmt]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "httpx", "httpcore", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class StageClock:
    """Seconds spent per pipeline stage, summed over items (for benchmarks and job logs)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def timed(self, stage: str) -> _Timed:
        return _Timed(self, stage)


class _Timed:
    def __init__(self, clock: StageClock, stage: str) -> None:
        self.clock, self.stage = clock, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.clock.add(self.stage, time.perf_counter() - self.start)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000, 1)
