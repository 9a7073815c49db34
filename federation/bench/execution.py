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
from federation.config import ExecutionConfig, RiskConfig, SyntheticFeedConfig
from federation.execution.actor import build_risk_policy
from federation.execution.engine import ExecutionEngine, TargetUpdates
from federation.feeds import load_feed
from federation.ledger import AgentRecord, RunRecord, open_ledger
from policies.risk import Denial, OrderIntent, RiskPolicy


class _TimedRisk(RiskPolicy):
    """The configured policy, with each check's duration recorded (ns)."""

    def __init__(self, inner: RiskPolicy) -> None:
        super().__init__(inner.rules)
        self.samples: list[int] = []

    def check(self, intent: OrderIntent) -> Denial | None:
        start = time.perf_counter_ns()
        denial = super().check(intent)
        self.samples.append(time.perf_counter_ns() - start)
        return denial


def _targets(rows: int, agents: int, symbols: int, first_row: int) -> TargetUpdates:
    """Every agent wants ±(agent+1) lots of every symbol, flipping sign every bar."""
    r, a, c = np.meshgrid(np.arange(rows), np.arange(agents), np.arange(symbols), indexing="ij")
    sign = np.where((r + first_row) % 2 == 0, 1, -1)
    lots = sign * (a + 1)
    return TargetUpdates(*(x.ravel().astype(np.int64) for x in (r, a, c, lots)))


def bench_execution(
    *, orders: int = 20_000, symbols: int = 10, agents: int = 10, block_size: int = 256
) -> dict[str, Any]:
    """Run the execution benchmark; returns orders/s and the risk check's p50/p99 in microseconds."""
    if orders < 1 or symbols < 1 or agents < 1 or block_size < 1:
        raise ValueError("orders, symbols, agents and block_size must be >= 1")
    bars = -(-orders // symbols) + 1  # +1: the last bar's orders fill on the bar after
    feed = SyntheticFeedConfig(kind="synthetic", symbols=[f"S{k:03d}" for k in range(symbols)], bars=bars)
    market = load_feed(feed, base_dir=Path("."), seed=0)
    risk_config = RiskConfig(max_position=Decimal(10**9), max_order_notional=Decimal(10**12))
    risk = _TimedRisk(build_risk_policy(risk_config))
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
            risk=risk,
            ledger=ledger,
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
    samples = np.asarray(risk.samples, dtype=np.float64) / 1000
    portfolio: dict[str, Any] = report["portfolio"]  # type: ignore[assignment]
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
        "risk_checks": len(risk.samples),
        "risk_check_p50_us": round(float(np.percentile(samples, 50)), 2),
        "risk_check_p99_us": round(float(np.percentile(samples, 99)), 2),
        **machine_facts(),
    }
