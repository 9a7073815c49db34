"""``federation bench budget``: reservations per second through the budget authority, many agents at once.

Agents reserve before every paid call (``with self.spend(...)``), and every reservation of every agent goes
to the one authority actor, which serves one call at a time. This benchmark measures that path under load:

- **Main phase.** One authority with ``agents`` agents, each with an ``llm_tokens`` and a ``money`` budget
  large enough that nothing is refused, and a price table. ``processes`` caller actors (``num_cpus=0``)
  each run one thread per agent (agents dealt round-robin); every thread does ``reservations`` times
  what ``self.spend`` does in an agent: reserve 1,200 tokens through :class:`RayBudgetBackend` (one round
  trip), then settle 1,000 (sent without waiting). All threads start together at a set time.
  ``reservations_per_s`` is the pairs done divided by the wall time from that start until every caller's
  settles were processed (a last round trip per caller flushes them: the actor runs a caller's calls in
  the order they were sent). ``latency_p50_ms`` / ``_p99_ms``: one reserve -> settle pair as the agent's
  thread sees it. ``authority_cpu_pct``, ``callers_cpu_pct`` (all caller processes) and ``machine_cpu_pct``
  (% of one core, over the phase) show what was busy.
- **Baseline.** The same number of pairs through the same :func:`agents.budget.reserve` on an in-process
  :class:`LocalBudgetBackend` (the same accounting behind a lock, no Ray), one loop in this process:
  ``inprocess_reservations_per_s``; ``ratio`` = ``reservations_per_s`` / that.
- **Refusal phase.** A second authority where every agent may make ``refusal_cap`` API calls and tries
  ``refusal_attempts`` (more), all agents at once. ``overshoot`` counts calls granted beyond a cap (must be
  0); ``refusals`` the refused ones. ``accounting_exact`` says the authority's own report of both phases
  (usage, reservations, refusals per agent) equals what the callers did.

``authority``: ``actor`` (the default authority), ``redis`` (``[budgets] authority = "redis"``: every
caller thread reserves and settles against Redis itself through a
:class:`~federation.budget_redis.RedisBudgetBackend`, one round trip each; ``authority_cpu_pct`` is then
the Redis server's CPU, from its ``INFO``) or ``both`` (the actor's fields as above, and the same fields
for Redis under ``redis``, measured in the same run against the same baseline).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import ray
import redis

from agents.budget import BudgetBackend, BudgetExceeded, reserve
from federation.bench.machine import busy_seconds, machine_facts
from federation.budget_authority import (
    BudgetService,
    LocalBudgetBackend,
    RayBudgetBackend,
    start_budget_authority,
)
from federation.budget_redis import RedisBudgetBackend
from federation.config import BudgetSettings
from federation.ray_runtime import ensure_ray
from policies.budget import E8, BudgetLimit

PRICES = {"llm_tokens": Decimal("0.00001"), "api_calls": Decimal("0.002")}
ESTIMATE_TOKENS, ACTUAL_TOKENS = 1200, 1000
"""Each pair reserves an LLM call's ``max_tokens`` and settles what it used."""


def _cpu_seconds(_: object) -> float:
    """CPU seconds of the process running an actor (called through ``__ray_call__``)."""
    return time.process_time()


@ray.remote(num_cpus=0)
class _Callers:
    """One process of calling agents: one thread per agent, as agents in one runner process."""

    def __init__(self, agents: list[str]) -> None:
        self.agents = agents

    def connect(self, authority: Any) -> None:
        """A first round trip, so that finding the authority is not part of the measurement."""
        if isinstance(authority, RedisBudgetBackend):
            authority.remaining(self.agents[0], "api_calls")
        else:
            ray.get(authority.ping.remote())

    def run(
        self, authority: Any, *, kind: str, estimate: int, actual: int, count: int, start_at: float
    ) -> dict[str, Any]:
        """Every agent's thread does ``count`` reserve -> settle pairs from ``start_at`` (wall clock)."""
        barrier = threading.Barrier(len(self.agents) + 1)
        samples: list[list[int]] = [[] for _ in self.agents]
        granted = [0] * len(self.agents)
        refused = [0] * len(self.agents)
        errors: list[BaseException] = []

        redis_backend = isinstance(authority, RedisBudgetBackend)  # shared by the threads, as in a runner

        def agent_thread(k: int) -> None:
            backend: BudgetBackend = authority if redis_backend else RayBudgetBackend(authority)
            name, own = self.agents[k], samples[k]
            barrier.wait()
            try:
                for step in range(count):
                    began = time.perf_counter_ns()
                    try:
                        with reserve(backend, name, kind, estimate, step) as spent:
                            spent.settle(actual)
                        granted[k] += 1
                    except BudgetExceeded:
                        refused[k] += 1
                    own.append(time.perf_counter_ns() - began)
            except BaseException as exc:  # re-raised in the caller below, not lost with the thread
                errors.append(exc)

        threads = [threading.Thread(target=agent_thread, args=(k,), daemon=True) for k in range(len(samples))]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, start_at - time.time()))
        late_s = max(0.0, time.time() - start_at)
        cpu = time.process_time()
        barrier.wait()
        for thread in threads:
            thread.join()
        if redis_backend:
            authority.flush()  # settles are answered already; nothing should be waiting
        else:
            ray.get(authority.ping.remote())  # every settle sent from this process is handled now
        ended, cpu = time.time(), time.process_time() - cpu
        if errors:
            raise errors[0]
        return {
            "agents": self.agents,
            "samples_ns": np.concatenate([np.asarray(s, dtype=np.int64) for s in samples]),
            "granted": granted,
            "refused": refused,
            "late_s": late_s,
            "ended": ended,
            "cpu_s": cpu,
        }


@dataclass
class _Authority:
    """One authority under test: what callers get (the actor, or a Redis backend), its CPU seconds so
    far, its cost report once the phase is over, and how to end it."""

    target: Any
    cpu_s: Callable[[], float]
    rows: Callable[[], list[dict[str, Any]]]
    close: Callable[[], None]


def _actor_authority(budgets: dict[str, list[BudgetLimit]], settings: BudgetSettings) -> _Authority:
    actor = start_budget_authority(budgets=budgets, settings=settings)

    def cpu_s() -> float:
        used: float = ray.get(actor.__ray_call__.remote(_cpu_seconds))
        return used

    def rows() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = ray.get(actor.finish.remote({})).rows
        return found

    return _Authority(actor, cpu_s, rows, lambda: ray.kill(actor, no_restart=True))


def _redis_authority(budgets: dict[str, list[BudgetLimit]], settings: BudgetSettings) -> _Authority:
    service = BudgetService(budgets, settings)
    client = redis.Redis.from_url(settings.redis)

    def cpu_s() -> float:  # the Redis server's own CPU (what the scripts cost)
        info = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def close() -> None:
        service.close(delete=True)
        client.close()

    return _Authority(service.agent_backend(), cpu_s, lambda: service.finish({}).rows, close)


def _phase(
    callers: list[Any], authority: _Authority, **work: Any
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run one phase on every caller at once; the results, and timings: ``elapsed_s`` from the start to
    the last caller's flush, CPU of the authority and of the machine (% of one core) meanwhile."""
    ray.get([c.connect.remote(authority.target) for c in callers])
    start_at = time.time() + 0.5
    running = [c.run.remote(authority.target, start_at=start_at, **work) for c in callers]
    time.sleep(max(0.0, start_at - time.time()))
    window, busy = time.perf_counter(), busy_seconds()
    authority_cpu = authority.cpu_s()
    results: list[dict[str, Any]] = ray.get(running)
    authority_cpu = authority.cpu_s() - authority_cpu
    busy, window = busy_seconds() - busy, time.perf_counter() - window
    return results, {
        "elapsed_s": max(r["ended"] for r in results) - start_at,
        "authority_cpu_pct": authority_cpu / window * 100,
        "callers_cpu_pct": sum(r["cpu_s"] for r in results) / window * 100,
        "machine_cpu_pct": busy / window * 100,
    }


def _per_agent(results: list[dict[str, Any]], key: str) -> dict[str, int]:
    return {a: n for r in results for a, n in zip(r["agents"], r[key], strict=True)}


def _inprocess_pairs_per_s(
    budgets: dict[str, list[BudgetLimit]], settings: BudgetSettings, pairs: int
) -> float:
    """The baseline: the same pairs through the same calls, on an in-process authority, one loop."""
    backend = LocalBudgetBackend(BudgetService(budgets, settings))
    names = list(budgets)
    rounds = -(-pairs // len(names))
    started = time.perf_counter()
    for step in range(rounds):
        for name in names:
            with reserve(backend, name, "llm_tokens", ESTIMATE_TOKENS, step) as spent:
                spent.settle(ACTUAL_TOKENS)
    elapsed = time.perf_counter() - started
    return rounds * len(names) / elapsed if elapsed > 0 else 0.0


AUTHORITIES = ("actor", "redis", "both")


def bench_budget(
    *,
    agents: int = 100,
    reservations: int = 200,
    processes: int = 4,
    address: str | None = None,
    authority: str = "actor",
    redis_url: str = "redis://127.0.0.1:6379/0",
) -> dict[str, Any]:
    """Run the budget benchmark; returns every field (see module docstring). ``reservations`` is per agent.
    ``redis_url``: the Redis of ``authority`` ``redis`` or ``both`` (its keys are deleted afterwards)."""
    if agents < 1 or reservations < 1 or processes < 1:
        raise ValueError("agents, reservations and processes must be >= 1")
    if authority not in AUTHORITIES:
        raise ValueError(f"authority {authority!r}: choose one of {', '.join(AUTHORITIES)}")
    processes = min(processes, agents)
    started = time.perf_counter()
    ensure_ray(address)
    ray_start_s = time.perf_counter() - started
    names = [f"agent-{i:03d}" for i in range(agents)]
    settings = BudgetSettings(prices=PRICES)
    tokens_cap = 2 * reservations * ESTIMATE_TOKENS * E8
    main_budgets = {
        name: [
            BudgetLimit("llm_tokens", tokens_cap),
            BudgetLimit("money", int(2 * reservations * ESTIMATE_TOKENS * PRICES["llm_tokens"] * E8)),
        ]
        for name in names
    }
    attempts = max(4, reservations // 4)
    cap = attempts // 2
    refusal_budgets = {name: [BudgetLimit("api_calls", cap * E8, soft=1.0)] for name in names}
    redis_settings = settings.model_copy(
        update={
            "authority": "redis",
            "redis": redis_url,
            "key_prefix": f"federation:bench:{uuid.uuid4().hex[:8]}",
        }
    )
    makers: dict[str, Callable[[dict[str, list[BudgetLimit]]], _Authority]] = {
        "actor": lambda budgets: _actor_authority(budgets, settings),
        "redis": lambda budgets: _redis_authority(budgets, redis_settings),
    }
    chosen = ["actor", "redis"] if authority == "both" else [authority]

    callers: list[Any] = []
    figures: dict[str, dict[str, Any]] = {}
    try:
        started = time.perf_counter()
        callers = [_Callers.remote(names[p::processes]) for p in range(processes)]  # type: ignore[attr-defined]
        ray.get([c.__ray_ready__.remote() for c in callers])
        callers_ready_s = time.perf_counter() - started
        baseline = _inprocess_pairs_per_s(main_budgets, settings, agents * reservations)
        for name in chosen:
            figures[name] = _measure(
                callers, makers[name], main_budgets, refusal_budgets, names, reservations, attempts, cap
            )
    finally:
        for caller in callers:
            ray.kill(caller, no_restart=True)

    for found in figures.values():
        found["ratio"] = round(found["reservations_per_s"] / baseline, 4) if baseline else None
    first = figures[chosen[0]]
    return {
        "benchmark": "budget",
        "authority": authority,
        "agents": agents,
        "reservations_per_agent": reservations,
        "processes": processes,
        "threads_per_process": -(-agents // processes),
        "ray_start_s": round(ray_start_s, 3),
        "callers_ready_s": round(callers_ready_s, 3),
        **{k: v for k, v in first.items() if k != "ratio"},
        "inprocess_reservations_per_s": round(baseline, 1),
        "ratio": first["ratio"],
        "refusal_attempts": attempts,
        "refusal_cap": cap,
        **({"redis": figures["redis"]} if authority == "both" else {}),
        **machine_facts(),
    }


def _measure(
    callers: list[Any],
    make: Callable[[dict[str, list[BudgetLimit]]], _Authority],
    main_budgets: dict[str, list[BudgetLimit]],
    refusal_budgets: dict[str, list[BudgetLimit]],
    names: list[str],
    reservations: int,
    attempts: int,
    cap: int,
) -> dict[str, Any]:
    """Both phases against one kind of authority (a fresh one per phase)."""
    main = make(main_budgets)
    try:
        results, timing = _phase(
            callers,
            main,
            kind="llm_tokens",
            estimate=ESTIMATE_TOKENS,
            actual=ACTUAL_TOKENS,
            count=reservations,
        )
        main_rows = main.rows()
    finally:
        main.close()
    refusal = make(refusal_budgets)
    try:
        limited, _ = _phase(callers, refusal, kind="api_calls", estimate=1, actual=1, count=attempts)
        refusal_rows = refusal.rows()
    finally:
        refusal.close()

    pairs = sum(sum(r["granted"]) for r in results)
    samples_ms = np.concatenate([r["samples_ns"] for r in results]) / 1e6
    granted = _per_agent(limited, "granted")
    refused = _per_agent(limited, "refused")
    tokens = {r["agent"]: r for r in main_rows if r["kind"] == "llm_tokens"}
    calls = {r["agent"]: r for r in refusal_rows if r["kind"] == "api_calls"}
    main_granted = _per_agent(results, "granted")
    accounting_exact = all(
        tokens[a]["usage_e8"] == main_granted[a] * ACTUAL_TOKENS * E8
        and tokens[a]["reservations"] == main_granted[a]
        and tokens[a]["refusals"] == 0
        and calls[a]["usage_e8"] == granted[a] * E8
        and calls[a]["reservations"] == granted[a]
        and calls[a]["refusals"] == refused[a]
        for a in names
    )
    return {
        "reservations": pairs,
        "refused_in_main_phase": sum(sum(r["refused"]) for r in results),
        "elapsed_s": round(timing["elapsed_s"], 3),
        "reservations_per_s": round(pairs / timing["elapsed_s"], 1),
        "latency_p50_ms": round(float(np.percentile(samples_ms, 50)), 3),
        "latency_p99_ms": round(float(np.percentile(samples_ms, 99)), 3),
        "latency_max_ms": round(float(samples_ms.max()), 3),
        "late_start_max_s": round(max(r["late_s"] for r in results), 3),
        "authority_cpu_pct": round(timing["authority_cpu_pct"], 1),
        "callers_cpu_pct": round(timing["callers_cpu_pct"], 1),
        "machine_cpu_pct": round(timing["machine_cpu_pct"], 1),
        "refusal_granted": sum(granted.values()),
        "refusals": sum(refused.values()),
        "overshoot": sum(max(0, n - cap) for n in granted.values()),
        "accounting_exact": accounting_exact,
    }
