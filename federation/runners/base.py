"""The handle every isolation tier presents to the supervisor.

A runner hosts one or more agents (the ``actor`` tier: exactly one, in its own Ray actor; the ``shared``
tier: many, in one host actor). All methods are asynchronous and return Ray object references, so the
supervisor drives every runner in parallel and nothing above the runner knows the tier.

Recovery (the supervisor's bookkeeping is :class:`federation.recovery.AgentRecovery`): ``process`` takes
checkpoints of the agents named in ``checkpoint``; when a runner's process dies, ``restart`` replaces it
and ``recover`` brings its agents back from their snapshots and the calls they got since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from agents.base import HookError
from agents.model import BarBatch, FillRow

AgentErrors = list[tuple[str, HookError]]
"""``(agent name, error)`` pairs returned by ``start``, ``stop`` and ``recover``."""
ReplayCall = tuple[BarBatch, list[FillRow]]
"""One call an agent got: its block (any columns; the runner selects the agent's) and its fills."""


@dataclass(frozen=True, slots=True)
class RunnerLimits:
    """How long an agent's call may take before the runner stops waiting for it.

    Backtest (``live`` False): a call running past ``call_timeout_s`` suspends the agent for the rest of
    the run. Live: a call running past ``decision_timeout_s`` no longer holds up the others; the agent's
    result arrives later and the bars it missed meanwhile are coalesced into its next batch; it is
    suspended only when one call exceeds ``call_timeout_s``.
    """

    call_timeout_s: float = 60.0
    live: bool = False
    decision_timeout_s: float = 0.05
    max_backlog_rows: int = 1024
    """Live mode: bars kept for an agent that is still busy (the oldest are dropped beyond this)."""


def trim_backlog(backlog: list[BarBatch], max_rows: int) -> int:
    """Drop the oldest batches beyond ``max_rows`` rows (the newest always stays); rows dropped."""
    dropped = 0
    rows = sum(len(b) for b in backlog)
    while len(backlog) > 1 and rows > max_rows:
        first = len(backlog.pop(0))
        rows -= first
        dropped += first
    return dropped


class Runner(Protocol):
    names: tuple[str, ...]
    """The agents this runner hosts."""
    isolation: str

    def start(self) -> Any:
        """ObjectRef -> :data:`AgentErrors` of ``on_start`` (empty when all started)."""

    def process(
        self,
        block: Any,
        fills: dict[str, list[FillRow]],
        hold: dict[str, bool] | None = None,
        checkpoint: set[str] | None = None,
    ) -> Any:
        """ObjectRef -> ``list[AgentBlockResult]`` for the hosted agents that finished (all of them in
        backtests). ``block`` is an ObjectRef of a :class:`~agents.model.BarBatch`. Agents named in
        ``hold`` are not called (budget state): their fills, and their bars if the value is True, wait
        for their next call (:meth:`~federation.runners.host.AgentHost.hold`). Agents named in
        ``checkpoint`` return their snapshot after the call (``AgentBlockResult.checkpoint``); a result
        that comes back late (a shared host's overrun call, live mode) never carries one."""

    def stop(self, fills: dict[str, list[FillRow]]) -> Any:
        """Deliver the last ``fills``, call ``on_stop``; ObjectRef -> :data:`AgentErrors`."""

    def usage(self) -> Any:
        """ObjectRef -> ``list[AgentUsage]`` (memory, CPU and node of each hosted agent)."""

    def kill(self) -> None:
        """Release the runner's processes now."""

    def restart(self, spare: Any = None) -> None:
        """Kill the runner's process (if still there) and create a fresh one with the same agents and
        options (or, actor tier, take the idle process ``spare`` from a :class:`SparePool`); does not
        wait. Follow with :meth:`recover` (not :meth:`start`)."""

    def recover(self, snapshots: dict[str, bytes | None], replay: dict[str, list[ReplayCall]]) -> Any:
        """After :meth:`restart`: for each agent named in ``snapshots``, ``on_start``, then its snapshot
        restored (None: none yet, it starts afresh), then its ``replay`` calls fed again. Agents not named
        stay suspended (quarantined). ObjectRef -> :data:`AgentErrors` (a failed ``on_start`` or restore
        is an error of that agent, which then replays nothing)."""

    def suspend(self, names: set[str]) -> None:
        """Stop calling these hosted agents for the rest of the run (quarantine); the others go on. The
        actor tier kills its process."""
