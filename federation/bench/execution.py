"""``federation bench execution``: orders per second through risk, the simulated venue and the ledger.

The execution engine (the core of the execution actor) runs in this process on a synthetic feed, with a
SQLite ledger in a temporary folder, so the figure is the engine's own throughput (one actor call per
block of bars is amortized over the block). Every agent flips its desired position on every bar, so every
symbol gets a new order on every bar: each order is risk-checked, sent to the venue, filled on the next
bar and written to the ledger with its fill and allocations. The risk check is timed call by call.
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from federation.bench.machine import machine_facts
from federation.config import AgentRiskConfig, ExecutionConfig, RiskConfig, SyntheticFeedConfig
from federation.execution.actor import breaker_specs, build_agent_risk_policy, build_risk_policy
from federation.execution.engine import ExecutionEngine, TargetUpdates
from federation.feeds import load_feed
from federation.ledger import (
    AgentRecord,
    RunRecord,
    check_ledger_url,
    is_postgres_url,
    mask_url,
    open_buffered_ledger,
)
from policies.risk import Denial, OrderIntent, RiskPolicy


class _TimedRisk(RiskPolicy):
    """The portfolio's policy, with each check of a net order timed (ns)."""

    def __init__(self, inner: RiskPolicy, samples: list[int]) -> None:
        super().__init__(inner.rules)
        self.samples = samples

    def check(self, intent: OrderIntent) -> Denial | None:
        start = time.perf_counter_ns()
        denial = super().check(intent)
        self.samples.append(time.perf_counter_ns() - start)
        return denial


class _TimedAgentRisk(_TimedRisk):
    """An agent's policy, with each check of its demand timed (``first_denial``; its ``commit``, the
    order bucket's bookkeeping after netting, is not)."""

    def first_denial(self, intent: OrderIntent) -> Denial | None:
        start = time.perf_counter_ns()
        denial = super().first_denial(intent)
        self.samples.append(time.perf_counter_ns() - start)
        return denial


_HUGE = Decimal(10**12)
_FULL_LIMITS: dict[str, Any] = {
    "max_order_quantity": _HUGE,
    "max_order_notional": _HUGE,
    "max_position": _HUGE,
    "max_gross_exposure": _HUGE,
    "max_net_exposure": _HUGE,
    "max_leverage": Decimal(1000),
    "breakers": {"loss_pct": 99, "window": "1d", "max_drawdown_pct": 99},
}
"""Every limit and breaker switched on, none ever reached: the checks' full cost, no denials."""


def _risk_configs(mode: str, agents: int) -> tuple[RiskConfig, list[AgentRiskConfig | None]]:
    if mode == "minimal":
        return RiskConfig(max_position=Decimal(10**9), max_order_notional=_HUGE), [None] * agents
    portfolio = RiskConfig(**_FULL_LIMITS, price_collar_bps=10_000, min_order_quantity=Decimal(1))
    agent = AgentRiskConfig(**_FULL_LIMITS, max_orders_per_minute=10**6, order_burst=10**6)
    return portfolio, [agent] * agents


def _targets(rows: int, agents: int, symbols: int, first_row: int) -> TargetUpdates:
    """Every agent wants ±(agent+1) lots of every symbol, flipping sign every bar."""
    r, a, c = np.meshgrid(np.arange(rows), np.arange(agents), np.arange(symbols), indexing="ij")
    sign = np.where((r + first_row) % 2 == 0, 1, -1)
    lots = sign * (a + 1)
    return TargetUpdates(*(x.ravel().astype(np.int64) for x in (r, a, c, lots)))


def _engine(
    run_id: str, names: list[str], market: Any, risk: str, ledger: Any
) -> tuple[ExecutionEngine, list[int], list[int]]:
    risk_config, agent_configs = _risk_configs(risk, len(names))
    portfolio_samples: list[int] = []
    agent_samples: list[int] = []
    timed = _TimedRisk(build_risk_policy(risk_config), portfolio_samples)
    agent_policies = [build_agent_risk_policy(c) for c in agent_configs]
    timed_agents: list[RiskPolicy | None] = [
        None if p is None else _TimedAgentRisk(p, agent_samples) for p in agent_policies
    ]
    engine = ExecutionEngine(
        run_id=run_id,
        agents=names,
        capital=[_CAPITAL] * len(names),
        symbols=market.symbols,
        config=ExecutionConfig(),
        risk=timed,
        ledger=ledger,
        agent_risk=timed_agents,
        breakers=breaker_specs(risk_config, agent_configs),
    )
    return engine, portfolio_samples, agent_samples


_CAPITAL = Decimal(1_000_000)


def _pass(
    market: Any, url: str | None, *, agents: int, symbols: int, block_size: int, risk: str
) -> dict[str, Any]:
    """One replay through the engine, writing to ``url`` through the write-behind buffer (as the
    execution actor does) or to no ledger; the time includes draining the buffer."""
    names = [f"agent-{i}" for i in range(agents)]
    run_id = f"bench-execution-{time.time_ns():x}"
    ledger = None
    if url is not None:
        ledger = open_buffered_ledger(url, writer="bench")
        ledger.begin_run(
            RunRecord(run_id, time.time_ns(), "{}", _CAPITAL * agents, "USD", 0),
            [AgentRecord(n, "bench", "none", market.symbols, "{}", _CAPITAL) for n in names],
        )
    engine, portfolio_samples, agent_samples = _engine(run_id, names, market, risk, ledger)
    started = time.perf_counter()
    row = 0
    for batch in market.blocks(block_size):
        engine.process_block(batch, _targets(len(batch), agents, symbols, row))
        row += len(batch)
    report = engine.finish()
    engine_s = time.perf_counter() - started
    counts = (0, 0)
    if ledger is not None:
        ledger.flush()
    elapsed = time.perf_counter() - started
    if ledger is not None:
        counts = (
            ledger.query("SELECT COUNT(*) FROM orders WHERE run_id = ?", run_id)[0][0],
            ledger.query("SELECT COUNT(*) FROM fills WHERE run_id = ?", run_id)[0][0],
        )
        ledger.close()
        if is_postgres_url(url or ""):
            _delete_run(url or "", run_id)
    portfolio: dict[str, Any] = report["portfolio"]  # type: ignore[assignment]
    return {
        "elapsed_s": elapsed,
        "engine_s": engine_s,
        "orders": int(portfolio["orders"]),
        "fills": int(portfolio["fills"]),
        "risk_denials": int(portfolio["risk_denials"]),
        "ledger_orders": int(counts[0]),
        "ledger_fills": int(counts[1]),
        "portfolio_samples": portfolio_samples,
        "agent_samples": agent_samples,
    }


_RUN_TABLES = ("order_allocations", "fill_allocations", "fills", "orders", "positions", "cash", "events")


def _delete_run(url: str, run_id: str) -> None:
    """Remove the benchmark's rows from a PostgreSQL ledger (it may be a real one)."""
    import asyncio

    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
        try:
            async with conn.transaction():
                for table in _RUN_TABLES:
                    await conn.execute(f"DELETE FROM {table} WHERE run_id = $1", run_id)
                await conn.execute("DELETE FROM agents WHERE run_id = $1", run_id)
                await conn.execute("DELETE FROM runs WHERE run_id = $1", run_id)
        finally:
            await conn.close()

    asyncio.run(go())


def bench_execution(
    *,
    orders: int = 20_000,
    symbols: int = 10,
    agents: int = 10,
    block_size: int = 256,
    risk: str = "minimal",
    ledger: str | None = None,
) -> dict[str, Any]:
    """Run the execution benchmark; returns orders/s and the risk checks' p50/p99 in microseconds.

    ``risk="minimal"``: the portfolio's max position and order notional only. ``risk="full"``: every
    portfolio and agent limit, order rate and breaker on (never reached), so each agent's demand is also
    checked before netting; ``agent_risk_check_*`` time those checks.

    ``ledger``: where the orders are written, through the write-behind buffer as in a run (default: an
    SQLite file in a temporary folder; ``postgresql://...``: that database, the benchmark's rows deleted
    afterwards). The same replay also runs with no ledger (the in-process baseline: ``ratio`` is
    orders/s with the ledger over orders/s without) and, for a PostgreSQL ledger, with a temporary
    SQLite file beside it (``sqlite_orders_per_s``).
    """
    if orders < 1 or symbols < 1 or agents < 1 or block_size < 1:
        raise ValueError("orders, symbols, agents and block_size must be >= 1")
    if risk not in ("minimal", "full"):
        raise ValueError(f"risk {risk!r} is not 'minimal' or 'full'")
    if ledger is not None:
        check_ledger_url(ledger)
    bars = -(-orders // symbols) + 1  # +1: the last bar's orders fill on the bar after
    feed = SyntheticFeedConfig(kind="synthetic", symbols=[f"S{k:03d}" for k in range(symbols)], bars=bars)
    market = load_feed(feed, base_dir=Path("."), seed=0)
    shape: dict[str, Any] = {"agents": agents, "symbols": symbols, "block_size": block_size, "risk": risk}
    baseline = _pass(market, None, **shape)
    sqlite_pass = None
    with tempfile.TemporaryDirectory(prefix="federation-bench-") as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'exec.db'}"
        if ledger is None or not is_postgres_url(ledger):
            main = _pass(market, ledger or sqlite_url, **shape)
        else:
            main = _pass(market, ledger, **shape)
            sqlite_pass = _pass(market, f"sqlite:///{Path(tmp) / 'side.db'}", **shape)
    portfolio_samples, agent_samples = main["portfolio_samples"], main["agent_samples"]
    elapsed = main["elapsed_s"]
    orders_per_s = main["orders"] / elapsed
    baseline_per_s = baseline["orders"] / baseline["elapsed_s"]
    samples = np.asarray(portfolio_samples, dtype=np.float64) / 1000
    agent_us = np.asarray(agent_samples, dtype=np.float64) / 1000
    return {
        "benchmark": "execution",
        "ledger": "sqlite (temporary file)" if ledger is None else mask_url(ledger),
        "orders": main["orders"],
        "fills": main["fills"],
        "ledger_orders": main["ledger_orders"],
        "ledger_fills": main["ledger_fills"],
        "symbols": symbols,
        "agents": agents,
        "bars": bars,
        "block_size": block_size,
        "elapsed_s": round(elapsed, 3),
        "engine_s": round(main["engine_s"], 3),
        "orders_per_s": round(orders_per_s, 1),
        "baseline_orders_per_s": round(baseline_per_s, 1),
        "ratio": round(orders_per_s / baseline_per_s, 3),
        "sqlite_orders_per_s": None
        if sqlite_pass is None
        else round(sqlite_pass["orders"] / sqlite_pass["elapsed_s"], 1),
        "risk": risk,
        "risk_denials": main["risk_denials"],
        "risk_checks": len(portfolio_samples),
        "risk_check_p50_us": round(float(np.percentile(samples, 50)), 2),
        "risk_check_p99_us": round(float(np.percentile(samples, 99)), 2),
        "agent_risk_checks": len(agent_samples),
        "agent_risk_check_p50_us": round(float(np.percentile(agent_us, 50)), 2) if agent_samples else None,
        "agent_risk_check_p99_us": round(float(np.percentile(agent_us, 99)), 2) if agent_samples else None,
        **machine_facts(),
    }
