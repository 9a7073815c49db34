"""What a runner's process costs: memory (RSS, USS) and where it runs, per hosted agent."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil
import ray

_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AgentUsage:
    """One agent's share of its runner process.

    In the ``actor`` tier the process is the agent's own (``sharing`` 1). In the ``shared`` tier the host
    process's memory is split evenly among its ``sharing`` agents: Python cannot attribute heap memory to
    the objects of one agent cheaply, so the figure is a share, not a measurement of that agent alone.
    """

    name: str
    node_id: str
    pid: int
    rss_mb: float
    uss_mb: float
    process_cpu_s: float
    """CPU seconds of the whole process (Ray's own threads included), split like the memory."""
    sharing: int


def process_usage(names: list[str]) -> list[AgentUsage]:
    """Measure this process now and split it among ``names``."""
    proc = psutil.Process(os.getpid())
    mem = proc.memory_full_info()
    times = proc.cpu_times()
    n = max(len(names), 1)
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return [
        AgentUsage(
            name,
            node,
            proc.pid,
            round(mem.rss / _MB / n, 2),
            round(mem.uss / _MB / n, 2),
            round((times.user + times.system) / n, 3),
            n,
        )
        for name in names
    ]
