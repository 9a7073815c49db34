"""Starting or joining Ray, once per process, with settings that suit many small actors."""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray(address: str | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``), or start a local Ray; no-op if this process already did.

    The dashboard is off (it costs start-up time and memory on small machines); usage statistics are
    not sent unless the user opted in through Ray's own setting. Token authentication keeps Ray's
    default (enabled for local clusters since Ray 2.60).
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
