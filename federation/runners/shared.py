"""The ``shared`` isolation tier: many agents in one host actor (one process), for density.

What is contained per agent: exceptions (as in every tier), and calls that run too long. The host runs
its agents' calls on a worker thread (:class:`~federation.runners.lane.LaneRunner`); when an agent's call
passes its deadline the host stops waiting for it and carries on with the others, so a slow agent costs
the others at most one deadline. CPU seconds are measured per thread, so each agent is charged its own.
What is not contained: memory, and a crash of the process (a segfault in a C extension takes the host and
all its agents down). Use the ``actor`` tier for code that needs that. After such a crash
:meth:`SharedRunner.restart` replaces the whole host and :meth:`SharedRunner.recover` brings its agents
back from their snapshots.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

import ray

from agents.base import Agent
from agents.model import BarBatch, FillRow
from federation.runners.actor import recover_host, select_calls
from federation.runners.base import AgentErrors, ReplayCall, RunnerLimits, trim_backlog
from federation.runners.host import AgentBlockResult, AgentHost, flush_budgets
from federation.runners.lane import LaneRunner
from federation.runners.usage import AgentUsage, process_usage


class _Busy:
    """A live-mode agent whose call overran the decision deadline and is still running."""

    __slots__ = ("backlog", "fills", "since")

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.backlog: list[BarBatch] = []
        self.fills: list[FillRow] = []


class _HostService:
    def __init__(self, agents: list[tuple[type[Agent], dict[str, Any]]], limits: RunnerLimits) -> None:
        self.limits = limits
        self.hosts = {kw["name"]: AgentHost(cls, **kw) for cls, kw in agents}
        self.suspended: set[str] = set()
        self.busy: dict[str, _Busy] = {}
        self._late: list[AgentBlockResult] = []
        self._ready: dict[str, _Busy] = {}
        """Agents back from an overrun call, with the bars and fills they missed meanwhile."""
        self._returned: set[str] = set()
        self._late_lock = threading.Lock()
        self.lanes = LaneRunner(self._on_late)

    def _on_late(self, name: str, result: Any) -> None:
        with self._late_lock:
            if name in self.suspended or not self.limits.live:
                return  # a backtest never takes late answers: their rows belong to an earlier block
            if isinstance(result, AgentBlockResult):
                result.checkpoint = None  # it covers bars of an earlier call: the caller cannot place it
                self._late.append(result)
            busy = self.busy.pop(name, None)
            if busy is None:  # returned before process() could mark it busy
                self._returned.add(name)
            elif busy.backlog or busy.fills:
                self._ready[name] = busy

    def _active(self) -> list[str]:
        return [n for n in self.hosts if n not in self.suspended and n not in self.busy]

    def start(self) -> AgentErrors:
        calls = [(n, self.hosts[n].start) for n in self._active()]
        done, overran = self.lanes.run(calls, self.limits.call_timeout_s)
        errors: AgentErrors = [(n, e) for n, e in done.items() if e is not None]
        return errors + self._overran(overran, "on_start")

    def _overran(self, names: list[str], hook: str) -> AgentErrors:
        """Suspend agents whose ``hook`` ran past the call timeout; their errors."""
        timeout = self.limits.call_timeout_s
        for name in names:
            self._suspend(name)
        return [(n, AgentHost.suspension(n, hook, 0, timeout).error_details[0]) for n in names]

    def recover(self, snapshots: dict[str, bytes | None], replay: dict[str, list[ReplayCall]]) -> AgentErrors:
        for name in self.hosts.keys() - snapshots.keys():
            self._suspend(name)
        calls = [
            (n, partial(recover_host, self.hosts[n], snapshots[n], replay.get(n, []))) for n in self._active()
        ]
        done, overran = self.lanes.run(calls, self.limits.call_timeout_s)
        flush_budgets(self.hosts.values())
        errors: AgentErrors = [(n, e) for n, errs in done.items() for e in errs]
        return errors + self._overran(overran, "recover")

    def suspend(self, names: list[str]) -> None:
        for name in names:
            if name in self.hosts:
                self._suspend(name)

    def process(
        self,
        block: BarBatch,
        fills: dict[str, list[FillRow]],
        hold: dict[str, bool] | None = None,
        checkpoint: frozenset[str] = frozenset(),
    ) -> list[AgentBlockResult]:
        limits = self.limits
        out: list[AgentBlockResult] = []
        ts = int(block.ts[0]) if len(block) else 0
        with self._late_lock:
            late, self._late = self._late, []
            ready, self._ready = self._ready, {}
            for name, busy in self.busy.items():
                busy.backlog.append(block)
                busy.fills += fills.get(name, [])
                trim_backlog(busy.backlog, self.limits.max_backlog_rows)
        out += late
        for name, busy in list(self.busy.items()):
            if time.monotonic() - busy.since > limits.call_timeout_s:
                self._suspend(name)
                out.append(AgentHost.suspension(name, "on_batch", ts, limits.call_timeout_s))
        calls = []
        for name in self._active():
            batch, agent_fills = block, fills.get(name, [])
            if name in ready:  # coalesce what it missed while busy into one fresher batch
                batch = BarBatch.concat([*ready[name].backlog, block])
                agent_fills = ready[name].fills + agent_fills
            if hold and name in hold:  # its budget says not now: the host keeps what it would get
                out.append(self.hosts[name].hold(batch, agent_fills, keep_bars=hold[name]))
                continue
            calls.append((name, partial(self.hosts[name].process, batch, agent_fills, name in checkpoint)))
        deadline = limits.decision_timeout_s if limits.live else limits.call_timeout_s
        done, overran = self.lanes.run(calls, deadline)
        flush_budgets(self.hosts.values())
        out += done.values()
        for name in overran:
            if limits.live:
                with self._late_lock:
                    if name in self._returned:
                        self._returned.discard(name)
                    else:
                        self.busy.setdefault(name, _Busy())
            else:
                self._suspend(name)
                out.append(AgentHost.suspension(name, "on_batch", ts, deadline))
        return out

    def _suspend(self, name: str) -> None:
        self.suspended.add(name)
        with self._late_lock:
            self.busy.pop(name, None)
        lane = self.lanes.abandoned.get(name)
        if lane is not None:
            lane.interrupt()

    def stop(self, fills: dict[str, list[FillRow]]) -> AgentErrors:
        calls = [(n, partial(self.hosts[n].stop, fills.get(n, []))) for n in self._active()]
        done, overran = self.lanes.run(calls, self.limits.call_timeout_s)
        errors: AgentErrors = [(n, e) for n, errs in done.items() for e in errs]
        errors += self._overran(overran, "on_stop")
        flush_budgets(self.hosts.values())
        self.lanes.close()
        return errors

    def usage(self) -> list[AgentUsage]:
        return process_usage(list(self.hosts))


_HostActor: Any = ray.remote(_HostService)
_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_concurrency": 1}


class SharedRunner:
    """One host actor for several agents; created at construction, ``start()`` waits for it."""

    isolation = "shared"

    def __init__(
        self,
        agents: list[tuple[type[Agent], dict[str, Any]]],
        limits: RunnerLimits,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.names: tuple[str, ...] = tuple(kw["name"] for _, kw in agents)
        self._names = frozenset(self.names)
        self._agents, self._limits, self._options = agents, limits, options or {}
        self._symbols = {kw["name"]: tuple(kw["symbols"]) for _, kw in agents}
        self.restarts = 0
        """How often :meth:`restart` replaced the host."""
        self._actor = self._create()

    def _create(self) -> Any:
        agents = [(cls, {**kw, "incarnation": self.restarts}) for cls, kw in self._agents]
        return _HostActor.options(**_ACTOR_OPTIONS, **self._options).remote(agents, self._limits)

    def start(self) -> Any:
        return self._actor.start.remote()

    def process(
        self,
        block: Any,
        fills: dict[str, list[FillRow]],
        hold: dict[str, bool] | None = None,
        checkpoint: set[str] | None = None,
    ) -> Any:
        mine = {n: fills[n] for n in self.names if n in fills}
        held = {n: keep for n, keep in (hold or {}).items() if n in self._names}
        wanted = self._names.intersection(checkpoint or ())
        return self._actor.process.remote(block, mine, held or None, wanted)

    def stop(self, fills: dict[str, list[FillRow]]) -> Any:
        return self._actor.stop.remote({n: fills[n] for n in self.names if n in fills})

    def usage(self) -> Any:
        return self._actor.usage.remote()

    def kill(self) -> None:
        ray.kill(self._actor, no_restart=True)

    def restart(self, spare: Any = None) -> None:
        """A fresh host for all the agents: the crash of its process took them all (``spare`` is for
        the actor tier's single agents and is not used here)."""
        self.kill()
        self.restarts += 1
        self._actor = self._create()

    def recover(self, snapshots: dict[str, bytes | None], replay: dict[str, list[ReplayCall]]) -> Any:
        mine = {n: data for n, data in snapshots.items() if n in self._names}
        calls = {n: select_calls(replay.get(n, []), self._symbols[n]) for n in mine}
        return self._actor.recover.remote(mine, calls)

    def suspend(self, names: set[str]) -> None:
        self._actor.suspend.remote(sorted(self._names.intersection(names)))


def pack(costs: list[int], hosts: int) -> list[list[int]]:
    """Indices of ``costs`` split into ``hosts`` groups of near-equal total cost (greedy, largest first).

    Deterministic; each group keeps its indices in ascending order. Empty groups are dropped.
    """
    groups: list[list[int]] = [[] for _ in range(max(1, min(hosts, len(costs))))]
    load = [0] * len(groups)
    for i in sorted(range(len(costs)), key=lambda k: (-costs[k], k)):
        g = min(range(len(groups)), key=lambda k: (load[k], k))
        groups[g].append(i)
        load[g] += costs[i]
    return [sorted(g) for g in groups if g]
