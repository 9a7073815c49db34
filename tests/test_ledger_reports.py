"""The ledger's user queries (P&L per agent, order history with denials) on both backends, from a real
run: the same numbers as the run summary, and the same rows on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from federation.config import load_config
from federation.ledger import PORTFOLIO, open_ledger
from federation.ledger.reports import account_report, order_history
from federation.supervisor import run_fleet
from tests.test_run import write_fleet

pytestmark = pytest.mark.usefixtures("ray_session")

AGENTS = """
[[agents]]
class = "agents.momentum:MomentumAgent"
name = "fast"
params = { fast = 5, slow = 20 }
risk = { max_position = 60 }

[[agents]]
class = "agents.mean_reversion:MeanReversionAgent"
name = "revert"
params = { lookback = 10, entry_z = 1.0 }
"""


def test_reports_match_the_summary_on_both_ledgers(tmp_path: Path, postgres_url: str) -> None:
    path = write_fleet(tmp_path, AGENTS, extra="[risk]\nmax_order_notional = 60000\n")
    reports = {}
    for url in (f"sqlite:///{tmp_path / 'r.db'}", postgres_url):
        summary = run_fleet(load_config(path, overrides={"ledger": url}))
        ledger = open_ledger(url)
        accounts = account_report(ledger, summary.run_id)
        history = order_history(ledger, summary.run_id)
        fast = order_history(ledger, summary.run_id, agent="fast")
        denied = order_history(ledger, summary.run_id, status="denied")
        ledger.close()

        by_name = {a.account: a for a in accounts}
        assert [a.account for a in accounts] == ["fast", "revert", PORTFOLIO]
        for agent in summary.agents:
            mine = by_name[agent.name]
            assert mine.fills == agent.fills
            assert float(mine.fees) == pytest.approx(agent.fees, abs=0.01)
            assert float(mine.realized_pnl) == pytest.approx(agent.realized_pnl, abs=0.01)
        portfolio = by_name[PORTFOLIO]
        assert float(portfolio.cash or 0) == pytest.approx(summary.portfolio.cash, abs=0.01)
        assert sum((a.cash or Decimal(0) for a in accounts[:-1]), Decimal(0)) == portfolio.cash

        orders = [r for r in history if r.kind == "order"]
        assert len(orders) == summary.portfolio.orders
        assert all("fast" in r.agents for r in fast if r.kind == "order")
        assert all(r.agent_quantity == r.agents["fast"] for r in fast if r.kind == "order")
        assert {r.kind for r in denied} == {"order", "agent_denial"}, "both levels of denial are listed"
        assert all(r.reason_code and r.reason for r in denied)
        assert all(r.agents == {"fast": r.quantity} for r in fast if r.kind == "agent_denial")
        assert [r.ts for r in history] == sorted(r.ts for r in history)
        rows = [r.as_dict() for r in history]
        for row in rows:  # client order ids start with the run id
            row["client_order_id"] = (row["client_order_id"] or "").removeprefix(summary.run_id)
        reports[url] = (accounts, rows)
    (sqlite, postgres) = reports.values()
    assert sqlite == postgres, "the two backends answer the same"


def test_report_and_costs_commands_read_a_postgres_ledger(tmp_path: Path, postgres_url: str) -> None:
    from tests.test_cli import cli

    path = write_fleet(tmp_path, AGENTS, extra="[risk]\nmax_order_notional = 60000\n")
    summary = run_fleet(load_config(path, overrides={"ledger": postgres_url}))
    done = cli("report", postgres_url, "--orders", "--status", "denied", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["run_id"] == summary.run_id
    assert [a["account"] for a in out["accounts"]] == ["fast", "revert", PORTFOLIO]
    assert out["orders"] and {o["status"] for o in out["orders"]} == {"denied"}
    one = cli("report", summary.run_id, "--ledger", postgres_url, "--agent", "fast", "--json")
    assert [a["account"] for a in json.loads(one.stdout)["accounts"]] == ["fast"]
    table = cli("report", postgres_url, "--orders")
    assert table.returncode == 0 and "realized_pnl" in table.stdout and "denied (agent)" in table.stdout
    wrong = cli("report", postgres_url, "--agent", "nobody")
    assert wrong.returncode == 2 and "'nobody' is not in run" in wrong.stderr and "fast" in wrong.stderr
    costs = cli("costs", postgres_url, "--json")
    rows = json.loads(costs.stdout)  # no budgets: usage of the meters used (compute, fees)
    assert costs.returncode == 0 and {r["agent"] for r in rows} == {"fast", "revert"}
    assert any(r["kind"] == "fees" and r["usage"] > 0 for r in rows)
    missing = cli("ledger-replay", str(tmp_path / "none.pickle"), "--ledger", postgres_url)
    assert missing.returncode == 2 and "no such file" in " ".join(missing.stderr.split())


def test_the_example_fleet_on_postgres_equals_sqlite(tmp_path: Path, postgres_url: str) -> None:
    """The issue's bar: examples/fleet.toml runs unchanged with a PostgreSQL ledger and ends with the same
    positions, cash and fills as with SQLite."""
    from tests.conftest import EXAMPLES

    ledgers = (f"sqlite:///{tmp_path / 'fleet.db'}", postgres_url)
    results = []
    for url in ledgers:
        summary = run_fleet(load_config(EXAMPLES / "fleet.toml", overrides={"ledger": url}))
        assert summary.status == "completed"
        ledger = open_ledger(url)
        run = summary.run_id
        agents = [a.name for a in summary.agents]
        results.append(
            (
                ledger.positions(run),
                ledger.cash(run),
                {a: ledger.positions(run, a) for a in agents},
                [(f.ts, f.symbol, f.quantity, f.price, f.fee) for f in ledger.fills(run)],
                summary.portfolio.equity,
            )
        )
        ledger.close()
    assert results[0][0], "the fleet holds positions at the end"
    assert results[0] == results[1]
