"""``federation bench redis-feed``: bars per second from a Redis stream into a fleet of N agents.

Phases, in one process, on the same seeded synthetic bars (``steps`` times x ``symbols``, so
``steps x symbols`` bars):

1. publish: every bar into a fresh stream (pipelined XADDs) and the end marker;
2. feed only: :class:`RedisBarSource` reads the stream with a group of its own (parse, validate,
   assemble steps, acknowledge) with nothing behind it: the ceiling the feed puts on a run;
3. redis run: the fleet in live mode on ``[feed] kind = "redis"`` (another group, ``start =
   "earliest"``), so every bar is already waiting when the agents are ready: the run goes as fast as
   the federation takes steps;
4. preloaded run: the same fleet and config in live mode on the same bars held in memory, ticks as fast
   as possible (``tick_interval_ms = 0``): what the Redis feed costs on top (``ratio_to_preloaded``);
5. in process: the same agents called bar by bar in one plain Python loop (the baseline every benchmark
   reports, ``ratio``).

``bars_per_s`` is bars accepted by the feed divided by the run's replay seconds (first step to the last
agent's answer); a decision is one agent processing one bar, so ``decisions_per_s`` is ``bars_per_s``
times the agents. The stream is deleted at the end.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import redis

from federation.bench.agents import AGENT_KINDS
from federation.bench.fleet import inprocess_decisions_per_s
from federation.bench.machine import machine_facts
from federation.config import FleetConfig, RedisFeedConfig
from federation.feeds import load_feed
from federation.feeds.redis_stream import RedisBarSource, publish_market
from federation.feeds.redis_stream.source import CONNECTION_ERRORS, unreachable
from federation.ray_runtime import ensure_ray
from federation.summary import RunSummary
from federation.supervisor import Supervisor

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _config(
    *,
    agents: int,
    isolation: str,
    steps: int,
    symbols: int,
    agent_kind: str,
    shared_hosts: int,
    ledger: str,
    feed: dict[str, Any] | None,
) -> FleetConfig:
    """Half momentum, half mean reversion, every agent on every symbol, live mode; ``feed`` None: the
    synthetic bars in memory, paced by nothing."""
    momentum, reversion = AGENT_KINDS[agent_kind]
    entries: list[dict[str, Any]] = [
        {"class": momentum, "name": "momentum", "count": (agents + 1) // 2, "params": {"fast": 5, "slow": 30}}
    ]
    if agents // 2:
        entries.append({"class": reversion, "name": "reversion", "count": agents // 2})
    names = [f"S{k:03d}" for k in range(symbols)]
    synthetic = {"kind": "synthetic", "symbols": names, "bars": steps, "interval": "1m"}
    return FleetConfig.model_validate(
        {
            "federation": {
                "capital": 10_000_000,
                "ledger": ledger,
                "mode": "live",
                "isolation": isolation,
                "shared_hosts": shared_hosts,
            },
            "feed": feed or synthetic,
            "live": {} if feed else {"tick_interval_ms": 0},
            "agents": entries,
        }
    )


def _run(cfg: FleetConfig) -> RunSummary:
    return Supervisor(cfg, source="bench", show_progress=False).run()


def bench_redis_feed(
    *,
    agents: int = 100,
    isolation: str = "shared",
    steps: int = 500,
    symbols: int = 4,
    agent_kind: str = "per-bar",
    url: str = DEFAULT_URL,
    stream: str | None = None,
    shared_hosts: int = 0,
    address: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module documentation); ``stream`` defaults to a fresh
    ``federation-bench:<random>`` key, deleted afterwards like everything the benchmark creates."""
    if agents < 1 or steps < 2 or symbols < 1:
        raise ValueError("agents and symbols must be >= 1, steps >= 2")
    if agent_kind not in AGENT_KINDS:
        raise ValueError(f"agent kind {agent_kind!r}: choose {' or '.join(AGENT_KINDS)}")
    stream = stream or f"federation-bench:{secrets.token_hex(4)}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except CONNECTION_ERRORS as exc:
        raise unreachable(url, exc, "start the server (e.g. redis-server) or pass --redis URL") from None
    ensure_ray(address)
    cluster_cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    try:
        with tempfile.TemporaryDirectory(prefix="federation-bench-") as tmp:
            options: dict[str, Any] = {
                "agents": agents,
                "isolation": isolation,
                "steps": steps,
                "symbols": symbols,
                "agent_kind": agent_kind,
                "shared_hosts": shared_hosts,
            }
            preloaded_cfg = _config(**options, ledger=f"sqlite:///{Path(tmp) / 'preloaded.db'}", feed=None)
            market = load_feed(preloaded_cfg.feed, base_dir=Path("."), seed=0)
            published = publish_market(market, url=url, stream=stream)

            feed = {"kind": "redis", "url": url, "stream": stream, "symbols": list(market.symbols)}
            feed_only = RedisBarSource(
                RedisFeedConfig.model_validate({**feed, "group": "bench-feed-only", "start": "earliest"})
            )
            feed_only.check()
            started = time.perf_counter()
            for step in feed_only.steps():
                if step is not None:
                    feed_only.ack(step)
            feed_only.close()
            feed_only_s = time.perf_counter() - started

            redis_cfg = _config(
                **options,
                ledger=f"sqlite:///{Path(tmp) / 'redis.db'}",
                feed={**feed, "group": "bench", "start": "earliest"},
            )
            on_redis = _run(redis_cfg)
            preloaded = _run(preloaded_cfg)
            inprocess_decisions = inprocess_decisions_per_s(preloaded_cfg, 1)
            pending = int(client.xpending(stream, "bench")["pending"])
    finally:
        client.delete(stream)
        client.close()
    feed_summary = on_redis.feed
    assert feed_summary is not None
    bars_per_s = feed_summary.bars / on_redis.replay_s if on_redis.replay_s > 0 else 0.0
    preloaded_per_s = int(market.valid.sum()) / preloaded.replay_s if preloaded.replay_s > 0 else 0.0
    inprocess_bars_per_s = inprocess_decisions / agents
    live, base_live = on_redis.live, preloaded.live
    return {
        "benchmark": "redis-feed",
        "agents": agents,
        "isolation": isolation,
        "agent_kind": agent_kind,
        "symbols": symbols,
        "steps": steps,
        "bars": published.bars,
        "status": on_redis.status,
        "startup_s": on_redis.startup_s,
        "publish_bars_per_s": round(published.bars / published.seconds, 1) if published.seconds else None,
        "feed_only_bars_per_s": round(feed_only.stats.bars / feed_only_s, 1) if feed_only_s else None,
        "replay_s": on_redis.replay_s,
        "bars_delivered": feed_summary.bars,
        "steps_delivered": on_redis.bars,
        "bars_per_s": round(bars_per_s, 1),
        "steps_per_s": round(on_redis.bars / on_redis.replay_s, 1) if on_redis.replay_s > 0 else 0.0,
        "decisions_per_s": round(bars_per_s * agents, 1),
        "preloaded_bars_per_s": round(preloaded_per_s, 1),
        "ratio_to_preloaded": round(bars_per_s / preloaded_per_s, 4) if preloaded_per_s else None,
        "inprocess_bars_per_s": round(inprocess_bars_per_s, 1),
        "inprocess_decisions_per_s": round(inprocess_decisions, 1),
        "ratio": round(bars_per_s / inprocess_bars_per_s, 4) if inprocess_bars_per_s else None,
        "tick_to_orders_p50_ms": live.tick_to_orders_p50_ms if live else None,
        "tick_to_orders_p99_ms": live.tick_to_orders_p99_ms if live else None,
        "preloaded_tick_to_orders_p50_ms": base_live.tick_to_orders_p50_ms if base_live else None,
        "preloaded_tick_to_orders_p99_ms": base_live.tick_to_orders_p99_ms if base_live else None,
        "coalesced_bars": live.coalesced_bars if live else None,
        "late_answers": live.late_answers if live else None,
        "acked": feed_summary.acked,
        "pending_after": pending,
        "fills": on_redis.portfolio.fills,
        "preloaded_fills": preloaded.portfolio.fills,
        "suspended_agents": sum(a.status != "active" for a in on_redis.agents),
        "agent_errors": sum(a.errors for a in on_redis.agents),
        "cluster_cpus": cluster_cpus,
        **machine_facts(),
    }
