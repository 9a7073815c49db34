"""The ``actor`` isolation tier: one dedicated Ray actor (own process) per agent."""

from __future__ import annotations

from typing import Any

import ray

from agents.base import Agent, HookError
from agents.model import BarBatch, Fill
from federation.runners.host import AgentBlockResult, AgentHost


class _AgentService:
    def __init__(self, agent_class: type[Agent], kwargs: dict[str, Any]) -> None:
        self.host = AgentHost(agent_class, **kwargs)

    def start(self) -> list[HookError]:
        error = self.host.start()
        return [error] if error else []

    def process(self, block: BarBatch, fills: list[Fill]) -> list[AgentBlockResult]:
        return [self.host.process(block, fills)]

    def stop(self, fills: list[Fill]) -> list[HookError]:
        return self.host.stop(fills)


_AgentActor: Any = ray.remote(_AgentService).options(num_cpus=0, max_restarts=0, max_concurrency=1)


class ActorRunner:
    """Creates the agent's actor at construction (asynchronously; ``start()`` waits for it)."""

    isolation = "actor"

    def __init__(
        self,
        agent_class: type[Agent],
        *,
        name: str,
        symbols: tuple[str, ...],
        params: dict[str, Any],
        capital: float,
    ) -> None:
        self.names: tuple[str, ...] = (name,)
        kwargs = {"name": name, "symbols": symbols, "params": params, "capital": capital}
        self._actor = _AgentActor.remote(agent_class, kwargs)

    def start(self) -> Any:
        return self._actor.start.remote()

    def process(self, block: Any, fills: dict[str, list[Fill]]) -> Any:
        return self._actor.process.remote(block, fills.get(self.names[0], []))

    def stop(self, fills: dict[str, list[Fill]]) -> Any:
        return self._actor.stop.remote(fills.get(self.names[0], []))

    def kill(self) -> None:
        ray.kill(self._actor, no_restart=True)
