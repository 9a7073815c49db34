"""``AgentHost``: runs one agent's hooks, meters their CPU time, contains their exceptions, checks signals.

Every isolation tier wraps hosts: the actor tier puts one host in a dedicated Ray actor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.base import Agent, HookError
from agents.model import BarBatch, Fill, FillRow, FloatArray

MAX_MESSAGES = 20
"""Rejection reasons and error tracebacks kept per agent per block (all are counted)."""


@dataclass(slots=True)
class AgentBlockResult:
    """What one agent did with one block: its signals as (T, S) arrays (NaN = none) and its meters."""

    name: str
    weights: FloatArray
    confidences: FloatArray
    bars: int = 0
    signals: int = 0
    rejected: int = 0
    rejections: list[str] = field(default_factory=list)
    errors: int = 0
    error_details: list[HookError] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    suspended: bool = False
    """The agent's call ran past its deadline and the agent gets no more bars this run."""


class AgentHost:
    """Owns an agent instance inside whatever process the tier chose."""

    def __init__(
        self,
        agent_class: type[Agent],
        *,
        name: str,
        symbols: tuple[str, ...],
        params: dict[str, Any],
        capital: float,
        clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.agent = agent_class(name=name, symbols=symbols, params=params, capital=capital)
        self.name = name
        self.clock = clock
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def _call(self, hook: str, ts: int, fn: Callable[[], Any]) -> tuple[Any, HookError | None]:
        start, wall = self.clock(), time.perf_counter()
        try:
            return fn(), None
        except Exception as exc:
            return None, HookError.capture(hook, ts, exc)
        finally:
            self.cpu_s += self.clock() - start
            self.wall_s += time.perf_counter() - wall

    def start(self) -> HookError | None:
        """Call ``on_start``; the error, if it raised."""
        return self._call("on_start", 0, self.agent.on_start)[1]

    def stop(self, fills: Sequence[Fill | FillRow]) -> list[HookError]:
        """Deliver the last ``fills``, then call ``on_stop``; the errors raised."""
        errors = self._deliver(fills)
        error = self._call("on_stop", 0, self.agent.on_stop)[1]
        return [*errors, error] if error else errors

    def _deliver(self, fills: Sequence[Fill | FillRow]) -> list[HookError]:
        """Update the agent's positions and call ``on_fill`` per fill (metered once for all fills)."""
        errors: list[HookError] = []
        if not fills:
            return errors
        agent = self.agent
        hook = agent.on_fill if type(agent).on_fill is not Agent.on_fill else None
        start, wall = self.clock(), time.perf_counter()
        try:
            for item in fills:
                fill = item if isinstance(item, Fill) else Fill(*item)
                agent._apply_fill(fill)
                if hook is None:
                    continue
                try:
                    hook(fill)
                except Exception as exc:
                    errors.append(HookError.capture("on_fill", fill.ts, exc))
        finally:
            self.cpu_s += self.clock() - start
            self.wall_s += time.perf_counter() - wall
        return errors

    def process(self, batch: BarBatch, fills: Sequence[Fill | FillRow]) -> AgentBlockResult:
        """Deliver ``fills`` (``on_fill``), then the agent's columns of ``batch`` (``on_batch``)."""
        agent = self.agent
        cpu_before, wall_before = self.cpu_s, self.wall_s
        errors = self._deliver(fills)
        view = batch.select(agent.symbols)
        shape = (len(view), len(agent.symbols))
        out, error = self._call("on_batch", int(view.ts[0]) if len(view) else 0, lambda: agent.on_batch(view))
        if error:
            errors.append(error)
        errors += agent._errors
        agent._errors.clear()
        result = AgentBlockResult(self.name, np.full(shape, np.nan), np.ones(shape))
        result.rejections = agent._rejected[:MAX_MESSAGES]
        result.rejected = len(agent._rejected)
        agent._rejected.clear()
        if out is not None:
            self._accept(out, shape, result, errors)
        result.bars = int(view.valid.sum())
        result.errors = len(errors)
        result.error_details = errors[:MAX_MESSAGES]
        result.cpu_s = self.cpu_s - cpu_before
        result.wall_s = self.wall_s - wall_before
        return result

    @staticmethod
    def suspension(
        name: str, hook: str, ts: int, deadline_s: float, why: str | None = None
    ) -> AgentBlockResult:
        """The result standing in for a call that ran past ``deadline_s`` (or failed for ``why``): the
        agent is suspended; its one error is in ``error_details[0]``."""
        empty = np.zeros((0, 0))
        why = why or f"{hook} did not return within {deadline_s:g} s"
        error = HookError(hook, ts, f"{why}; suspended for the rest of the run", "")
        return AgentBlockResult(
            name, empty, empty, errors=1, error_details=[error], wall_s=deadline_s, suspended=True
        )

    def _accept(
        self, out: Any, shape: tuple[int, int], result: AgentBlockResult, errors: list[HookError]
    ) -> None:
        """Check a batch hook's output; drop and count invalid entries."""
        weights, confidences = out if isinstance(out, tuple) else (out, None)
        try:
            w = np.asarray(weights, dtype=np.float64)
            c = np.ones(shape) if confidences is None else np.asarray(confidences, dtype=np.float64)
            if w.shape != shape or c.shape != shape:
                raise ValueError(f"expected arrays of shape {shape}, got {w.shape} and {c.shape}")
        except (TypeError, ValueError) as exc:
            errors.append(HookError("on_batch", 0, f"invalid on_batch result: {exc}", ""))
            return
        present = ~np.isnan(w)
        bad = present & ~(np.isfinite(w) & (np.abs(w) <= 1.0) & (c >= 0.0) & (c <= 1.0))
        if bad.any():
            rows, cols = np.nonzero(bad)
            for r, col in zip(rows[:MAX_MESSAGES].tolist(), cols[:MAX_MESSAGES].tolist(), strict=True):
                result.rejections.append(
                    f"{self.agent.symbols[col]} row {r}: weight {w[r, col]} / confidence {c[r, col]} "
                    "outside [-1, 1] / [0, 1]"
                )
            result.rejected += int(bad.sum())
            w = np.where(bad, np.nan, w)
        result.weights, result.confidences = w, c
        result.signals = int((present & ~bad).sum())
