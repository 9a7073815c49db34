"""Turning the fleet into runners: one actor per ``actor``-tier agent, shared-tier agents packed on hosts.

Every runner's actor is created with Ray's ``SPREAD`` strategy, so on a cluster agents spread over the
nodes (on one machine it changes nothing). Actors reserve no CPU (``num_cpus=0``): agents are mostly idle
and a CPU reservation per agent would cap a fleet at the cluster's core count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from federation.fleet import AgentSpec
from federation.runners.actor import ActorRunner
from federation.runners.base import Runner, RunnerLimits
from federation.runners.shared import SharedRunner, pack

SPREAD: dict[str, Any] = {"scheduling_strategy": "SPREAD"}


def default_host_count() -> int:
    """The cluster's CPU count (at least 1): one host process per core keeps every core busy."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


def build_runners(
    fleet: Sequence[AgentSpec], limits: RunnerLimits, shared_hosts: int, runners: list[Runner]
) -> None:
    """Create every runner (asynchronously) and append it to ``runners`` as soon as it exists, so the
    caller can release what was created even if a later creation fails."""
    shared = [s for s in fleet if s.isolation == "shared"]
    for spec in fleet:
        if spec.isolation == "actor":
            runners.append(
                ActorRunner(
                    spec.agent_class,
                    name=spec.name,
                    symbols=spec.symbols,
                    params=spec.params,
                    capital=float(spec.capital),
                    options=SPREAD,
                )
            )
    if not shared:
        return
    groups = pack([len(s.symbols) for s in shared], shared_hosts or default_host_count())
    for group in groups:
        agents = [(shared[i].agent_class, _kwargs(shared[i])) for i in group]
        runners.append(SharedRunner(agents, limits, options=SPREAD))


def _kwargs(spec: AgentSpec) -> dict[str, Any]:
    return {"name": spec.name, "symbols": spec.symbols, "params": spec.params, "capital": float(spec.capital)}
