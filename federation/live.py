"""Pieces of live mode: the tick clock, coalesced results reduced to the newest signal, latency stats.

In live mode the supervisor sends every tick's bar to each runner that is idle. A runner still busy with an
earlier call keeps its missed bars in a backlog; when it is free again it gets them in one batch (fewer,
fresher calls instead of a growing queue). Each tick waits at most ``decision_timeout_ms`` for the runners
it called, then aggregates whatever answers have arrived (late answers count on the tick they arrive) and
sends the targets to the execution actor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from federation.runners.host import AgentBlockResult


class TickClock:
    """Paces ticks ``interval_s`` apart (no catch-up burst after a slow tick: the schedule slips)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = time.monotonic()

    def wait(self) -> None:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next, time.monotonic()) + self.interval_s


def newest(result: AgentBlockResult) -> AgentBlockResult:
    """A one-row result holding each symbol's newest signal of a (possibly coalesced) result."""
    w = result.weights
    if w.shape[0] <= 1:
        return result
    present = ~np.isnan(w)
    last = w.shape[0] - 1 - np.argmax(present[::-1], axis=0)
    cols = np.arange(w.shape[1])
    has = present.any(axis=0)
    weights = np.where(has, w[last, cols], np.nan)[None, :]
    confidences = np.where(has, result.confidences[last, cols], 1.0)[None, :]
    out = AgentBlockResult(result.name, weights, confidences)
    for name in (
        "bars",
        "signals",
        "rejected",
        "rejections",
        "errors",
        "error_details",
        "cpu_s",
        "wall_s",
        "held",
        "dropped_bars",
        "spent",
    ):
        setattr(out, name, getattr(result, name))
    out.suspended = result.suspended
    return out


@dataclass(slots=True)
class LiveStats:
    """What live mode measured over a run."""

    ticks: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    coalesced_bars: int = 0
    """Bars delivered inside a coalesced batch (they arrived while the runner was busy)."""
    dropped_bars: int = 0
    late_answers: int = 0
    """Runner answers that arrived after the tick that asked for them."""
    agent_latency_ns: dict[str, list[int]] = field(default_factory=dict)
    """Per agent, each answer's tick-to-orders: from the start of the tick its call was sent on to the
    execution actor receiving the targets it counted in (a late answer counts its lateness). The first
    answer after a restart is left out (it carries the backlog of the restart)."""

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ns:
            return 0.0
        return round(float(np.percentile(np.asarray(self.latencies_ns), q)) / 1e6, 3)
