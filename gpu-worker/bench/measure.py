"""What a benchmark process reads of itself: CPU time and memory figures from /proc."""

from __future__ import annotations

import resource
from pathlib import Path


def cpu_seconds() -> float:
    """Host CPU time (user + system, all threads) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory figure (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Resets the process's peak RSS (VmHWM) to its current RSS, so the job's peak excludes the
    model set-up (building full-size random weights on the host in float32 alone takes 3.4 GB).
    Returns the RSS after set-up in MB, or 0 where Linux's clear_refs is not available."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return status_mb("VmRSS")
    except OSError:
        return 0.0
