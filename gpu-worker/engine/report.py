"""What a job reports: each item's terminal outcome (its callback body) and the job's result
(contract section 5), as typed values; ``JobResult.to_dict`` is the handler's return shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.errors import error_code_of

ItemStatus = Literal["done", "failed"]
JobStatus = Literal["completed", "partial", "failed"]


@dataclass(frozen=True)
class ItemReport:
    """One item's terminal outcome."""

    idx: int
    status: ItemStatus
    output_key: str | None = None
    preview_key: str | None = None
    mask_keys: dict[str, str] = field(default_factory=dict)
    instances_key: str | None = None
    error: str | None = None
    error_code: str | None = None

    @classmethod
    def failure(cls, idx: int, exc: BaseException) -> ItemReport:
        code, message = error_code_of(exc)
        return cls(idx, "failed", error=message, error_code=code)

    def callback_payload(self, job_id: str, key: str) -> dict[str, Any]:
        return {
            "job_id": job_id, "idx": self.idx, "status": self.status,
            "output_key": self.output_key, "preview_key": self.preview_key,
            "mask_keys": self.mask_keys, "instances_key": self.instances_key,
            "error": self.error, "error_code": self.error_code, "idempotency_key": key,
        }


@dataclass(frozen=True)
class ItemResult:
    """One line of the job's result: the item's outcome and whether its callback got through."""

    report: ItemReport
    delivered: bool

    @property
    def idx(self) -> int:
        return self.report.idx

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {
            "idx": r.idx, "status": r.status, "output_key": r.output_key, "preview_key": r.preview_key,
            "error": r.error, "error_code": r.error_code,
            "callback": "delivered" if self.delivered else "undelivered",
        }


def job_status(reports: Sequence[ItemReport]) -> JobStatus:
    done = sum(r.status == "done" for r in reports)
    return "completed" if done == len(reports) else ("failed" if done == 0 else "partial")


@dataclass(frozen=True)
class JobResult:
    """A job's answer: every item once, in the job's order; or ``error`` alone when the job
    could not be parsed far enough to report on any item (no callbacks were sent)."""

    job_id: str | None
    items: tuple[ItemResult, ...] = ()
    error: str | None = None

    @classmethod
    def rejected(cls, message: str) -> JobResult:
        return cls(None, (), message)

    @classmethod
    def of(cls, job_id: str, items: Sequence[ItemResult]) -> JobResult:
        return cls(job_id, tuple(items))

    @property
    def status(self) -> JobStatus | None:
        return None if self.error is not None else job_status([i.report for i in self.items])

    @property
    def undelivered(self) -> list[int]:
        """idx of each item whose callback did not get through."""
        return [i.idx for i in self.items if not i.delivered]

    @property
    def all_done(self) -> bool:
        return self.error is None and all(i.report.status == "done" for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return {"job_id": self.job_id, "status": self.status, "items": [i.to_dict() for i in self.items]}
