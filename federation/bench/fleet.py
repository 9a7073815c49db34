"""``federation bench fleet``: a fleet of N built-in agents on a synthetic feed, measured end to end.

Phases, in one process: Ray start; fleet start-up (every agent ready); a settle pause, then whole-machine
CPU over a fixed window while the fleet sits idle; memory of the runner processes; the replay (backtest:
blocks as fast as possible; live: one bar per tick, paced); and finally the baseline: the same agents
(same classes, parameters and bars) called in one plain Python loop in this process.

A decision is one agent processing one bar of one of its symbols. The baseline runs the agents only, so
the fleet's ``decisions_per_s`` is measured on the same path: the decision plane, from sending a block to
the runners to the last answer (``decision_s``, summed over blocks). ``ratio`` = ``decisions_per_s`` /
``inprocess_decisions_per_s``. ``end_to_end_decisions_per_s`` and ``end_to_end_ratio`` divide by the
whole replay instead, aggregation, execution (every fill split among the agents that asked) and the
ledger included. In live mode the fleet is paced by the tick interval, so both ratios say little there
(decisions_per_s uses the whole replay): judge live mode by ``tick_to_orders_p50_ms`` / ``_p99_ms``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import ray

from federation.bench.agents import AGENT_KINDS
from federation.bench.machine import machine_cpu_pct, machine_facts
from federation.config import FleetConfig
from federation.feeds import load_feed
from federation.fleet import build_fleet
from federation.ray_runtime import ensure_ray
from federation.runners import AgentHost, Runner
from federation.supervisor import Supervisor


def fleet_config(
    *,
    agents: int,
    isolation: str,
    mode: str,
    bars: int,
    symbols: int,
    block_size: int,
    agent_kind: str,
    tick_ms: float,
    shared_hosts: int,
    ledger: str,
) -> FleetConfig:
    """Half momentum, half mean reversion (per-bar or vectorized), every agent on every symbol."""
    momentum, reversion = AGENT_KINDS[agent_kind]
    entries: list[dict[str, Any]] = [
        {"class": momentum, "name": "momentum", "count": (agents + 1) // 2, "params": {"fast": 5, "slow": 30}}
    ]
    if agents // 2:
        entries.append({"class": reversion, "name": "reversion", "count": agents // 2})
    return FleetConfig.model_validate(
        {
            "federation": {
                "capital": 10_000_000,
                "ledger": ledger,
                "block_size": block_size,
                "mode": mode,
                "isolation": isolation,
                "shared_hosts": shared_hosts,
            },
            "feed": {
                "kind": "synthetic",
                "symbols": [f"S{k:03d}" for k in range(symbols)],
                "bars": bars,
                "interval": "1m",
            },
            "live": {"tick_interval_ms": tick_ms, "max_ticks": bars},
            "agents": entries,
        }
    )


def _ray_uss_mb() -> float:
    """USS of this process and every process it started (a local Ray: GCS, raylet, workers)."""
    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += proc.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return round(total / 1024**2, 1)


def bench_fleet(
    *,
    agents: int = 100,
    isolation: str = "shared",
    mode: str = "backtest",
    bars: int | None = None,
    symbols: int = 4,
    block_size: int = 256,
    agent_kind: str = "per-bar",
    tick_ms: float = 100.0,
    shared_hosts: int = 0,
    idle_window_s: float = 10.0,
    settle_s: float = 3.0,
    address: str | None = None,
) -> dict[str, Any]:
    """Run the fleet benchmark; returns every field (see module docstring)."""
    if agents < 1 or symbols < 1 or block_size < 1 or idle_window_s <= 0 or settle_s < 0:
        raise ValueError("agents, symbols and block_size must be >= 1, idle_window_s > 0, settle_s >= 0")
    if agent_kind not in AGENT_KINDS:
        raise ValueError(f"agent kind {agent_kind!r}: choose {' or '.join(AGENT_KINDS)}")
    bars = bars or (2000 if mode == "backtest" else 200)
    started = time.perf_counter()
    ensure_ray(address)
    ray_start_s = time.perf_counter() - started
    cluster_cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    measured: dict[str, Any] = {}

    def on_ready(runners: list[Runner]) -> None:
        measured["agents_ready"] = sum(len(r.names) for r in runners)
        measured["runner_processes"] = len(runners)
        time.sleep(settle_s)
        measured["idle_cpu_pct"] = machine_cpu_pct(idle_window_s)
        usage = [u for out in ray.get([r.usage() for r in runners]) for u in out]
        measured["uss_mb_per_agent"] = round(sum(u.uss_mb for u in usage) / max(len(usage), 1), 2)
        measured["rss_mb_per_agent"] = round(sum(u.rss_mb for u in usage) / max(len(usage), 1), 2)
        measured["runners_uss_mb"] = round(sum(u.uss_mb for u in usage), 1)
        measured["local_ray_uss_mb"] = _ray_uss_mb()
        measured["nodes"] = len({u.node_id for u in usage})

    with tempfile.TemporaryDirectory(prefix="federation-bench-") as tmp:
        cfg = fleet_config(
            agents=agents,
            isolation=isolation,
            mode=mode,
            bars=bars,
            symbols=symbols,
            block_size=block_size,
            agent_kind=agent_kind,
            tick_ms=tick_ms,
            shared_hosts=shared_hosts,
            ledger=f"sqlite:///{Path(tmp) / 'bench.db'}",
        )
        summary = Supervisor(cfg, source="bench", show_progress=False, on_ready=on_ready).run()
        decisions = sum(a.bars for a in summary.agents)
        baseline = inprocess_decisions_per_s(cfg, bars if mode == "backtest" else 1)
    plane_s = summary.decision_s if mode == "backtest" else summary.replay_s
    fleet_rate = decisions / plane_s if plane_s > 0 else 0.0
    end_to_end = decisions / summary.replay_s if summary.replay_s > 0 else 0.0
    live = summary.live
    return {
        "benchmark": "fleet",
        "agents": agents,
        "isolation": isolation,
        "mode": mode,
        "agent_kind": agent_kind,
        "bars": bars,
        "symbols": symbols,
        "block_size": block_size if mode == "backtest" else 1,
        "tick_ms": tick_ms if mode == "live" else None,
        "status": summary.status,
        "ray_start_s": round(ray_start_s, 3),
        "startup_s": round(summary.startup_s, 3),
        **measured,
        "idle_window_s": idle_window_s,
        "decisions": decisions,
        "replay_s": summary.replay_s,
        "decision_s": summary.decision_s,
        "decisions_per_s": round(fleet_rate, 1),
        "inprocess_decisions_per_s": round(baseline, 1),
        "ratio": round(fleet_rate / baseline, 4) if baseline else None,
        "end_to_end_decisions_per_s": round(end_to_end, 1),
        "end_to_end_ratio": round(end_to_end / baseline, 4) if baseline else None,
        "fills": summary.portfolio.fills,
        "agent_fill_allocations": sum(a.fills for a in summary.agents),
        "tick_to_orders_p50_ms": live.tick_to_orders_p50_ms if live else None,
        "tick_to_orders_p99_ms": live.tick_to_orders_p99_ms if live else None,
        "coalesced_bars": live.coalesced_bars if live else None,
        "late_answers": live.late_answers if live else None,
        "suspended_agents": sum(a.status != "active" for a in summary.agents),
        "agent_errors": sum(a.errors for a in summary.agents),
        "cluster_cpus": cluster_cpus,
        **machine_facts(),
    }


def inprocess_decisions_per_s(cfg: FleetConfig, block_size: int) -> float:
    """The baseline: the config's agents called in one plain loop in this process, same bars."""
    market = load_feed(cfg.feed, base_dir=cfg.base_dir, seed=cfg.federation.seed)
    specs = build_fleet(cfg, market.symbols, "bench")
    hosts = [
        AgentHost(s.agent_class, name=s.name, symbols=s.symbols, params=s.params, capital=float(s.capital))
        for s in specs
    ]
    for host in hosts:
        host.start()
    decisions = 0
    started = time.perf_counter()
    for batch in market.blocks(block_size):
        for host in hosts:
            decisions += host.process(batch, []).bars
    elapsed = time.perf_counter() - started
    return decisions / elapsed if elapsed > 0 else 0.0
