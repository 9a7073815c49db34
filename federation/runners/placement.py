"""Turning the fleet into runners: one actor per ``actor``-tier agent, shared-tier agents packed on hosts.

On a cluster, actor-tier agents and shared hosts are each dealt to the nodes in proportion to their
CPUs (one slot per CPU, round robin) with a hard node affinity: Ray's ``SPREAD`` strategy and soft
affinity both left all of them on one node in our two-node tests. A node lost between listing and
creation fails the start-up, naming the agents concerned. On one machine none of this changes anything.
Actors reserve no CPU (``num_cpus=0``): agents are mostly idle and a CPU reservation per agent would cap
a fleet at the cluster's core count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agents.budget import BudgetBackend
from federation.fleet import AgentSpec
from federation.runners.actor import ActorRunner
from federation.runners.base import Runner, RunnerLimits
from federation.runners.shared import SharedRunner, pack

if TYPE_CHECKING:  # not at run time: federation.chaos may import the supervisor, which imports runners
    from federation.chaos.hooks import HookFaults


def default_host_count() -> int:
    """The cluster's CPU count (at least 1): one host process per core keeps every core busy."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


def host_slots() -> list[str]:
    """Node ids, each repeated once per CPU (at least once), interleaved: host ``k`` goes to slot ``k``."""
    listed: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    nodes = sorted(
        ((n["NodeID"], max(1, int(n.get("Resources", {}).get("CPU", 0)))) for n in listed if n["Alive"]),
        key=lambda n: n[0],
    )
    slots: list[str] = []
    for round_ in range(max((cpus for _, cpus in nodes), default=0)):
        slots += [node for node, cpus in nodes if cpus > round_]
    return slots


def build_runners(
    fleet: Sequence[AgentSpec],
    limits: RunnerLimits,
    shared_hosts: int,
    runners: list[Runner],
    budget: BudgetBackend | None = None,
    hook_faults: Mapping[str, HookFaults] | None = None,
) -> None:
    """Create every runner (asynchronously) and append it to ``runners`` as soon as it exists, so the
    caller can release what was created even if a later creation fails. ``budget`` is installed in every
    agent (its ``spend`` goes there); ``hook_faults``: agent name -> the faults the chaos harness injects
    into its hooks."""
    faults = hook_faults or {}
    shared = [s for s in fleet if s.isolation == "shared"]
    slots = host_slots()

    def placed(k: int) -> dict[str, Any]:
        if len(slots) < 2:
            return {}
        node = slots[k % len(slots)]
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False)}

    actors = [s for s in fleet if s.isolation == "actor"]
    for k, spec in enumerate(actors):
        kwargs = _kwargs(spec, limits, budget, faults.get(spec.name))
        runners.append(ActorRunner(spec.agent_class, kwargs, options=placed(k)))
    if not shared:
        return
    groups = pack([len(s.symbols) for s in shared], shared_hosts or default_host_count())
    for k, group in enumerate(groups):
        agents = [
            (shared[i].agent_class, _kwargs(shared[i], limits, budget, faults.get(shared[i].name)))
            for i in group
        ]
        runners.append(SharedRunner(agents, limits, options=placed(k)))


def _kwargs(
    spec: AgentSpec, limits: RunnerLimits, budget: BudgetBackend | None, faults: HookFaults | None
) -> dict[str, Any]:
    """:class:`~federation.runners.host.AgentHost` arguments of one agent."""
    return {
        "name": spec.name,
        "symbols": spec.symbols,
        "params": spec.params,
        "capital": float(spec.capital),
        "budget": budget,
        "max_held_rows": limits.max_backlog_rows if limits.live else None,  # backtests keep every bar
        "faults": faults,
    }
