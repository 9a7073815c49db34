"""Starting or joining Ray, once per process, with settings that suit many small actors."""

from __future__ import annotations

import logging
import os

import ray

LOCAL_RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray's task event buffer: two threads and ~10 wake-ups/s per worker process; our ledger and summary
    # already record what each agent did. Costs `ray list tasks` and `ray.timeline()`.
    "RAY_task_events_report_interval_ms": "0",
    "RAY_enable_task_events": "0",
    # Periodic event-loop statistics dumps in every process.
    "RAY_event_stats": "0",
    # The log monitor re-scans the log folder; with 100+ worker logs it used ~4% of a core, 1.3% with
    # these (a new worker's first prints may show up to 5 s late).
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "1",
    "LOG_NAME_UPDATE_INTERVAL_S": "5",
}
"""Set (unless already set) before a local Ray starts; measured in docs/benchmarks.md, "Ray settings"."""


def ensure_ray(address: str | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``), or start a local Ray; no-op if this process already did.

    The dashboard is off (it costs start-up time and memory on small machines); usage statistics are
    not sent unless the user opted in through Ray's own setting; :data:`LOCAL_RAY_ENVIRONMENT` trims
    Ray's idle work (a variable the user set wins). Token authentication keeps Ray's default (enabled
    for local clusters since Ray 2.60).
    """
    if ray.is_initialized():
        return
    for key, value in LOCAL_RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
