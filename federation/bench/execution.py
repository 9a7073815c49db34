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
from federation.ledger import AgentRecord, RunRecord, open_ledger
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


def bench_execution(
    *, orders: int = 20_000, symbols: int = 10, agents: int = 10, block_size: int = 256, risk: str = "minimal"
) -> dict[str, Any]:
    """Run the execution benchmark; returns orders/s and the risk checks' p50/p99 in microseconds.

    ``risk="minimal"``: the portfolio's max position and order notional only. ``risk="full"``: every
    portfolio and agent limit, order rate and breaker on (never reached), so each agent's demand is also
    checked before netting; ``agent_risk_check_*`` time those checks.
    """
    if orders < 1 or symbols < 1 or agents < 1 or block_size < 1:
        raise ValueError("orders, symbols, agents and block_size must be >= 1")
    if risk not in ("minimal", "full"):
        raise ValueError(f"risk {risk!r} is not 'minimal' or 'full'")
    bars = -(-orders // symbols) + 1  # +1: the last bar's orders fill on the bar after
    feed = SyntheticFeedConfig(kind="synthetic", symbols=[f"S{k:03d}" for k in range(symbols)], bars=bars)
    market = load_feed(feed, base_dir=Path("."), seed=0)
    risk_config, agent_configs = _risk_configs(risk, agents)
    portfolio_samples: list[int] = []
    agent_samples: list[int] = []
    timed = _TimedRisk(build_risk_policy(risk_config), portfolio_samples)
    agent_policies = [build_agent_risk_policy(c) for c in agent_configs]
    timed_agents: list[RiskPolicy | None] = [
        None if p is None else _TimedAgentRisk(p, agent_samples) for p in agent_policies
    ]
    names = [f"agent-{i}" for i in range(agents)]
    capital = [Decimal(1_000_000)] * agents
    with tempfile.TemporaryDirectory(prefix="federation-bench-") as tmp:
        ledger = open_ledger(f"sqlite:///{Path(tmp) / 'exec.db'}")
        run_id = "bench-execution"
        ledger.begin_run(
            RunRecord(run_id, time.time_ns(), "{}", sum(capital, Decimal(0)), "USD", 0),
            [
                AgentRecord(n, "bench", "none", market.symbols, "{}", c)
                for n, c in zip(names, capital, strict=True)
            ],
        )
        engine = ExecutionEngine(
            run_id=run_id,
            agents=names,
            capital=capital,
            symbols=market.symbols,
            config=ExecutionConfig(),
            risk=timed,
            ledger=ledger,
            agent_risk=timed_agents,
            breakers=breaker_specs(risk_config, agent_configs),
        )
        started = time.perf_counter()
        row = 0
        for batch in market.blocks(block_size):
            engine.process_block(batch, _targets(len(batch), agents, symbols, row))
            row += len(batch)
        report = engine.finish()
        elapsed = time.perf_counter() - started
        ledger_orders = ledger.query("SELECT COUNT(*) FROM orders WHERE run_id = ?", run_id)[0][0]
        ledger_fills = ledger.query("SELECT COUNT(*) FROM fills WHERE run_id = ?", run_id)[0][0]
        ledger.close()
    samples = np.asarray(portfolio_samples, dtype=np.float64) / 1000
    portfolio: dict[str, Any] = report["portfolio"]  # type: ignore[assignment]
    agent_us = np.asarray(agent_samples, dtype=np.float64) / 1000
    return {
        "benchmark": "execution",
        "orders": int(portfolio["orders"]),
        "fills": int(portfolio["fills"]),
        "ledger_orders": int(ledger_orders),
        "ledger_fills": int(ledger_fills),
        "symbols": symbols,
        "agents": agents,
        "bars": bars,
        "block_size": block_size,
        "elapsed_s": round(elapsed, 3),
        "orders_per_s": round(portfolio["orders"] / elapsed, 1),
        "risk": risk,
        "risk_denials": int(portfolio["risk_denials"]),
        "risk_checks": len(portfolio_samples),
        "risk_check_p50_us": round(float(np.percentile(samples, 50)), 2),
        "risk_check_p99_us": round(float(np.percentile(samples, 99)), 2),
        "agent_risk_checks": len(agent_samples),
        "agent_risk_check_p50_us": round(float(np.percentile(agent_us, 50)), 2) if agent_samples else None,
        "agent_risk_check_p99_us": round(float(np.percentile(agent_us, 99)), 2) if agent_samples else None,
        **machine_facts(),
    }
