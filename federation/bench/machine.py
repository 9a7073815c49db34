"""Machine facts and whole-machine CPU measurement for benchmarks."""

from __future__ import annotations

import os
import platform
import sys
import time

import psutil
import ray


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores) since boot."""
    t = psutil.cpu_times()
    return float(
        sum(getattr(t, f) for f in ("user", "nice", "system", "irq", "softirq", "steal") if hasattr(t, f))
    )


def machine_cpu_pct(window_s: float) -> float:
    """Busy CPU of the whole machine over ``window_s`` seconds, in % of ONE core (200 = two cores busy)."""
    before, start = busy_seconds(), time.perf_counter()
    time.sleep(window_s)
    return round((busy_seconds() - before) / (time.perf_counter() - start) * 100, 2)


def machine_facts() -> dict[str, object]:
    return {
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": sys.version.split()[0],
        "ray": ray.__version__,
        "platform": platform.platform(),
    }
