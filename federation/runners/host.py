"""``AgentHost``: runs one agent's hooks, meters their CPU time, contains their exceptions, checks signals.

Every isolation tier wraps hosts: the actor tier puts one host in a dedicated Ray actor. For recovery the
host also checkpoints its agent (:meth:`AgentHost.snapshot`), restores it in a fresh process
(:meth:`AgentHost.restore_snapshot`) and feeds it again the calls it saw since (:meth:`AgentHost.replay`).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.base import Agent, HookError, UnlimitedBudget
from agents.budget import BudgetBackend, Refusal
from agents.model import BarBatch, Fill, FillRow, FloatArray
from federation.runners.base import trim_backlog

if TYPE_CHECKING:  # not at run time: federation.chaos may import the supervisor, which imports runners
    from federation.chaos.hooks import FaultInjector, HookFaults

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
    held: bool = False
    """The agent was not called in this step (its budget state); see :meth:`AgentHost.hold`."""
    dropped_bars: int = 0
    """Held bars dropped in this step (live mode keeps at most ``max_backlog_bars``)."""
    spent: dict[str, int] = field(default_factory=dict)
    """Meter -> amount (1e-8 units) the agent settled in this call, when the run has no budget authority
    (with one, the authority has it already)."""
    checkpoint: bytes | None = None
    """The agent's snapshot after this call, when one was asked for (:meth:`AgentHost.snapshot`); None
    if not asked, or if ``state()`` failed (its error is in ``error_details``)."""
    injected: dict[str, int] = field(default_factory=dict)
    """Faults the chaos harness injected in this call (``raise``, ``hang``, ``slow`` -> count)."""


class _ReplayBudget:
    """The budget backend while bars are replayed: grants every reservation and charges nothing, so a
    bar paid for before the restart is not paid for twice (agents skip the call itself: ``replaying``)."""

    def reserve(self, agent: str, kind: str, amount_e8: int, ts: int) -> int | Refusal:
        return 0

    def settle(self, reservation_id: int, actual_e8: int) -> None:
        """Nothing is charged."""

    def cancel(self, reservation_id: int) -> None:
        """Nothing was reserved."""

    def remaining(self, agent: str, kind: str) -> int | None:
        return None

    def flush(self) -> None:
        """Nothing is in flight."""


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
        budget: BudgetBackend | None = None,
        max_held_rows: int | None = None,
        faults: HookFaults | None = None,
        incarnation: int = 0,
    ) -> None:
        """``faults``: hook faults the chaos harness injects around ``on_batch``; ``incarnation``: how
        often this agent's process was restarted (seeds the faults' random stream afresh)."""
        self.agent = agent_class(name=name, symbols=symbols, params=params, capital=capital)
        if budget is not None:
            self.agent._budget = budget
        self.name = name
        self.clock = clock
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self._reported_cpu = self._reported_wall = 0.0
        self.max_held_rows = max_held_rows
        self._held: list[BarBatch] = []
        self._held_fills: list[Fill | FillRow] = []
        self._faults: FaultInjector | None = None if faults is None else faults.injector(name, incarnation)

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
        """Deliver the last ``fills`` (and any held back), then call ``on_stop``; the errors raised."""
        fills, self._held_fills, self._held = [*self._held_fills, *fills], [], []
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

    def hold(self, batch: BarBatch, fills: Sequence[Fill | FillRow], keep_bars: bool) -> AgentBlockResult:
        """Do not call the agent in this step (its budget state): keep its fills for the next call, and
        its bars too if ``keep_bars`` (throttled: they are delivered with the next call; suspended: not).
        With ``max_held_rows`` (live mode) only that many of the newest bars are kept; the result counts
        the bars dropped."""
        self._held_fills.extend(fills)
        dropped = 0
        if keep_bars:
            self._held.append(batch)
            if self.max_held_rows is not None:
                dropped = trim_backlog(self._held, self.max_held_rows)
        empty = np.zeros((0, len(self.agent.symbols)))
        return AgentBlockResult(self.name, empty, empty, held=True, dropped_bars=dropped)

    def process(
        self, batch: BarBatch, fills: Sequence[Fill | FillRow], checkpoint: bool = False
    ) -> AgentBlockResult:
        """Deliver ``fills`` (``on_fill``), then the agent's columns of ``batch`` (``on_batch``).

        Bars and fills held back in earlier steps (:meth:`hold`) come first, in the same call; their
        newest signal per symbol counts on the first row of ``batch``. With ``checkpoint`` the result
        carries the agent's :meth:`snapshot` taken after the call.
        """
        agent = self.agent
        held_rows = 0
        if self._held or self._held_fills:
            held_rows = sum(len(b) for b in self._held)
            batch = BarBatch.concat([*self._held, batch])
            fills = [*self._held_fills, *fills]
            self._held, self._held_fills = [], []
        errors = self._deliver(fills)
        view = batch.select(agent.symbols)
        shape = (len(view), len(agent.symbols))
        if len(view):
            agent._now = int(view.ts[-1])
        out, error = self._call("on_batch", int(view.ts[0]) if len(view) else 0, lambda: self._on_batch(view))
        if error:
            errors.append(error)
        data = None
        if checkpoint:
            data, error = self._snapshot()
            if error:
                errors.append(error)
        errors += agent._errors
        agent._errors.clear()
        result = AgentBlockResult(self.name, np.full(shape, np.nan), np.ones(shape), checkpoint=data)
        if self._faults is not None:
            result.injected = self._faults.take()
        result.rejections = agent._rejected[:MAX_MESSAGES]
        result.rejected = len(agent._rejected)
        agent._rejected.clear()
        if out is not None:
            self._accept(out, shape, result, errors)
        if held_rows:
            _fold_held_rows(result, held_rows)
        if isinstance(agent._budget, UnlimitedBudget):
            result.spent = agent._budget.collect()
        result.bars = int(view.valid.sum())
        result.errors = len(errors)
        result.error_details = errors[:MAX_MESSAGES]
        # Since the last report: on_start's time counts with the first block.
        result.cpu_s, self._reported_cpu = self.cpu_s - self._reported_cpu, self.cpu_s
        result.wall_s, self._reported_wall = self.wall_s - self._reported_wall, self.wall_s
        return result

    def _on_batch(self, view: BarBatch) -> Any:
        if self._faults is not None:
            self._faults.before_call()
        return self.agent.on_batch(view)

    # -------------------------------------------------------------------------------------- recovery
    def snapshot(self) -> bytes | None:
        """The agent's checkpoint: a pickle of its ``state()``, positions and clock; None if ``state()``
        raised or returned something that does not pickle (the error is reported with the next
        :meth:`process` result). Bars and fills held back (:meth:`hold`) are not in it: the supervisor
        takes checkpoints through ``process(..., checkpoint=True)``, which delivers them first."""
        data, error = self._snapshot()
        if error:
            self.agent._errors.append(error)
        return data

    def _snapshot(self) -> tuple[bytes | None, HookError | None]:
        agent = self.agent

        def take() -> bytes:
            content = {"state": agent.state(), "positions": dict(agent._positions), "now": agent._now}
            return pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL)

        data, error = self._call("state", agent._now, take)
        return data, error

    def restore_snapshot(self, data: bytes) -> HookError | None:
        """Continue from a :meth:`snapshot` (after :meth:`start`, which called ``on_start``): the agent's
        ``restore(state)``, then its positions and clock; the error if that failed."""
        agent = self.agent

        def restore() -> None:
            content = pickle.loads(data)
            agent.restore(content["state"])
            agent._positions = dict(content["positions"])
            agent._now = int(content["now"])

        return self._call("restore", agent._now, restore)[1]

    def replay(self, calls: Sequence[tuple[BarBatch, Sequence[Fill | FillRow]]]) -> int:
        """Feed the agent again the calls it got since its snapshot, as :meth:`process` did (fills, then
        bars), with ``agent.replaying`` True and a budget that charges nothing; outputs and errors are
        discarded (they were reported the first time) and no fault is injected. Returns the bars (valid
        agent-symbol bars) replayed."""
        agent = self.agent
        budget, agent._budget, agent._replaying = agent._budget, _ReplayBudget(), True
        bars = 0
        try:
            for batch, fills in calls:
                self._deliver(fills)
                view = batch.select(agent.symbols)
                if not len(view):
                    continue
                agent._now = int(view.ts[-1])
                self._call("on_batch", int(view.ts[0]), partial(agent.on_batch, view))
                bars += int(view.valid.sum())
        finally:
            agent._budget, agent._replaying = budget, False
            agent._errors.clear()
            agent._rejected.clear()
        return bars

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


def _fold_held_rows(result: AgentBlockResult, held_rows: int) -> None:
    """Keep the rows of the current step; a symbol without a signal on its first row takes the newest
    signal from the held rows (decided on earlier bars, acted on now)."""
    w, c = result.weights, result.confidences
    past_w, past_c = w[:held_rows], c[:held_rows]
    w, c = w[held_rows:].copy(), c[held_rows:].copy()
    if len(w) and len(past_w):
        present = ~np.isnan(past_w)
        last = held_rows - 1 - np.argmax(present[::-1], axis=0)
        cols = np.arange(w.shape[1])
        take = present.any(axis=0) & np.isnan(w[0])
        w[0, take] = past_w[last, cols][take]
        c[0, take] = past_c[last, cols][take]
    result.weights, result.confidences = w, c


def flush_budgets(hosts: Iterable[AgentHost]) -> None:
    """Wait until the budget authority handled every settle the hosts' agents sent (each backend once):
    runners call it at the end of each step, so a step's charges are in before the supervisor's next."""
    backends = {id(h.agent._budget): h.agent._budget for h in hosts}
    for backend in backends.values():
        backend.flush()
