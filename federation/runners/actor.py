"""The ``actor`` isolation tier: one dedicated Ray actor (own process) per agent.

A crash, a leak or a hang stays in that process. The supervisor enforces the call deadline from outside:
an actor that does not answer in time is killed; :meth:`ActorRunner.restart` and
:meth:`ActorRunner.recover` bring its agent back in a fresh process (Ray itself restarts nothing:
``max_restarts=0``, since a Ray restart would re-run ``__init__`` and lose the agent's state).
"""

from __future__ import annotations

from typing import Any

import ray

from agents.base import Agent, HookError
from agents.model import BarBatch, FillRow
from federation.runners.base import AgentErrors, ReplayCall
from federation.runners.host import AgentBlockResult, AgentHost, flush_budgets
from federation.runners.usage import AgentUsage, process_usage


class _AgentService:
    def __init__(self, agent_class: type[Agent], kwargs: dict[str, Any]) -> None:
        self.host = AgentHost(agent_class, **kwargs)

    def start(self) -> AgentErrors:
        error = self.host.start()
        return [(self.host.name, error)] if error else []

    def process(
        self, block: BarBatch, fills: list[FillRow], hold: bool | None, checkpoint: bool = False
    ) -> list[AgentBlockResult]:
        if hold is not None:
            return [self.host.hold(block, fills, keep_bars=hold)]
        result = self.host.process(block, fills, checkpoint)
        flush_budgets([self.host])
        return [result]

    def recover(self, snapshot: bytes | None, calls: list[ReplayCall]) -> AgentErrors:
        errors = [(self.host.name, e) for e in recover_host(self.host, snapshot, calls)]
        flush_budgets([self.host])
        return errors

    def stop(self, fills: list[FillRow]) -> AgentErrors:
        errors = [(self.host.name, e) for e in self.host.stop(fills)]
        flush_budgets([self.host])
        return errors

    def usage(self) -> list[AgentUsage]:
        return process_usage([self.host.name])


def recover_host(host: AgentHost, snapshot: bytes | None, calls: list[ReplayCall]) -> list[HookError]:
    """``on_start``, restore ``snapshot`` (if any), replay ``calls``; the errors (none: recovered). A
    failed ``on_start`` or restore replays nothing: the agent's state would not be the one it had."""
    error = host.start()
    if error is None and snapshot is not None:
        error = host.restore_snapshot(snapshot)
    if error is not None:
        return [error]
    host.replay(calls)
    return []


_AgentActor: Any = ray.remote(_AgentService)
_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_concurrency": 1}


class ActorRunner:
    """Creates the agent's actor at construction (asynchronously; ``start()`` waits for it)."""

    isolation = "actor"

    def __init__(
        self, agent_class: type[Agent], kwargs: dict[str, Any], options: dict[str, Any] | None = None
    ) -> None:
        """``kwargs``: the :class:`AgentHost` arguments (``name``, ``symbols``, ``params``, ...)."""
        self.names: tuple[str, ...] = (kwargs["name"],)
        self._class, self._kwargs, self._options = agent_class, kwargs, options or {}
        self.restarts = 0
        """How often :meth:`restart` replaced the actor."""
        self._actor = self._create()

    def _create(self) -> Any:
        kwargs = {**self._kwargs, "incarnation": self.restarts}
        return _AgentActor.options(**_ACTOR_OPTIONS, **self._options).remote(self._class, kwargs)

    def start(self) -> Any:
        return self._actor.start.remote()

    def process(
        self,
        block: Any,
        fills: dict[str, list[FillRow]],
        hold: dict[str, bool] | None = None,
        checkpoint: set[str] | None = None,
    ) -> Any:
        name = self.names[0]
        wanted = checkpoint is not None and name in checkpoint
        return self._actor.process.remote(block, fills.get(name, []), (hold or {}).get(name), wanted)

    def stop(self, fills: dict[str, list[FillRow]]) -> Any:
        return self._actor.stop.remote(fills.get(self.names[0], []))

    def usage(self) -> Any:
        return self._actor.usage.remote()

    def kill(self) -> None:
        ray.kill(self._actor, no_restart=True)

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self._actor = self._create()

    def recover(self, snapshots: dict[str, bytes | None], replay: dict[str, list[ReplayCall]]) -> Any:
        name = self.names[0]
        if name not in snapshots:  # quarantined: nothing to bring back
            return ray.put([])
        calls = select_calls(replay.get(name, []), self._kwargs["symbols"])
        return self._actor.recover.remote(snapshots[name], calls)

    def suspend(self, names: set[str]) -> None:
        if self.names[0] in names:
            self.kill()


def select_calls(calls: list[ReplayCall], symbols: tuple[str, ...]) -> list[ReplayCall]:
    """The calls with only ``symbols``' columns: a replay ships what the agent reads, not the universe."""
    return [(batch.select(symbols), fills) for batch, fills in calls]
