"""The one retry policy for outgoing HTTP calls: the callbacks and the queue API.

Which answers are worth another try (connection errors and timeouts, 408, 425, 429, 5xx) and
how long to wait before each retry (a list of base delays, optionally full-jittered, with
``Retry-After`` honoured up to the largest delay) are decided here and nowhere else.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

RETRYABLE_STATUS = frozenset({408, 425, 429})  # and every 5xx


def is_retryable(status: int | None) -> bool:
    """``None`` stands for no answer at all (a connection error or a timeout): retryable."""
    return status is None or status in RETRYABLE_STATUS or 500 <= status <= 599


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds; None when absent or an HTTP date (the backoff then applies)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None  # NaN is not a delay


@dataclass(frozen=True)
class RetryPolicy:
    """``delays[n]`` is the base delay before retry ``n`` (0-based); past the end the last repeats.

    ``max_retries``: how many retries at most (None: as many delays as listed; use
    ``unbounded`` for a loop that never gives up on its own). ``jitter``: full jitter, a
    uniform draw in ``[0, base]``, so that many clients failing together do not retry together.
    """

    delays: tuple[float, ...]
    jitter: bool = False
    max_retries: int | None = None
    unbounded: bool = False

    def __post_init__(self) -> None:
        if not self.delays or min(self.delays) < 0:
            raise ValueError("a retry policy needs at least one non-negative delay")

    @classmethod
    def exponential(cls, first: float, cap: float, **kwargs: object) -> RetryPolicy:
        """``first``, doubling, up to ``cap``."""
        delays = [first]
        while delays[-1] * 2 < cap:
            delays.append(delays[-1] * 2)
        delays.append(cap)
        return cls(tuple(delays), **kwargs)  # type: ignore[arg-type]

    @property
    def retries(self) -> int | None:
        if self.unbounded:
            return None
        return len(self.delays) if self.max_retries is None else self.max_retries

    def may_retry(self, retries_done: int) -> bool:
        limit = self.retries
        return limit is None or retries_done < limit

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        base = self.delays[min(retry, len(self.delays) - 1)]
        delay = (rng or random).uniform(0, base) if self.jitter else base
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(self.delays)))
        return delay
