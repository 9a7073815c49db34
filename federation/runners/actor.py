"""The ``actor`` isolation tier: one dedicated Ray actor (own process) per agent.

A crash, a leak or a hang stays in that process. The supervisor enforces the call deadline from outside:
an actor that does not answer in time is killed and its agent suspended.
"""

from __future__ import annotations

from typing import Any

import ray

from agents.base import Agent
from agents.model import BarBatch, FillRow
from federation.runners.base import AgentErrors
from federation.runners.host import AgentBlockResult, AgentHost, flush_budgets
from federation.runners.usage import AgentUsage, process_usage


class _AgentService:
    def __init__(self, agent_class: type[Agent], kwargs: dict[str, Any]) -> None:
        self.host = AgentHost(agent_class, **kwargs)

    def start(self) -> AgentErrors:
        error = self.host.start()
        return [(self.host.name, error)] if error else []

    def process(self, block: BarBatch, fills: list[FillRow], hold: bool | None) -> list[AgentBlockResult]:
        if hold is not None:
            return [self.host.hold(block, fills, keep_bars=hold)]
        result = self.host.process(block, fills)
        flush_budgets([self.host])
        return [result]

    def stop(self, fills: list[FillRow]) -> AgentErrors:
        errors = [(self.host.name, e) for e in self.host.stop(fills)]
        flush_budgets([self.host])
        return errors

    def usage(self) -> list[AgentUsage]:
        return process_usage([self.host.name])


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
        self._actor = _AgentActor.options(**_ACTOR_OPTIONS, **(options or {})).remote(agent_class, kwargs)

    def start(self) -> Any:
        return self._actor.start.remote()

    def process(
        self, block: Any, fills: dict[str, list[FillRow]], hold: dict[str, bool] | None = None
    ) -> Any:
        name = self.names[0]
        return self._actor.process.remote(block, fills.get(name, []), (hold or {}).get(name))

    def stop(self, fills: dict[str, list[FillRow]]) -> Any:
        return self._actor.stop.remote(fills.get(self.names[0], []))

    def usage(self) -> Any:
        return self._actor.usage.remote()

    def kill(self) -> None:
        ray.kill(self._actor, no_restart=True)
