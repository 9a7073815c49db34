"""Smoke versions of the benchmarks: they run and report every field (numbers are not judged here)."""

from __future__ import annotations

import json

import pytest

from federation.bench.budget import bench_budget
from federation.bench.execution import bench_execution
from federation.bench.fleet import bench_fleet
from federation.errors import ConfigError

FLEET_FIELDS = (
    "startup_s",
    "agents_ready",
    "uss_mb_per_agent",
    "idle_cpu_pct",
    "decisions_per_s",
    "inprocess_decisions_per_s",
    "ratio",
    "tick_to_orders_p50_ms",
    "tick_to_orders_p99_ms",
    "cpu_count",
)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize(("isolation", "mode", "bars"), [("shared", "backtest", 300), ("actor", "live", 25)])
def test_bench_fleet_reports_every_field(isolation: str, mode: str, bars: int) -> None:
    result = bench_fleet(
        agents=3, isolation=isolation, mode=mode, bars=bars, tick_ms=20, idle_window_s=0.5, settle_s=0
    )
    for name in FLEET_FIELDS:
        assert name in result, name
    assert result["status"] == "completed" and result["agents_ready"] == 3
    assert result["decisions"] == 3 * bars * 4, "every agent sees every bar of its 4 symbols"
    assert result["decisions_per_s"] > 0 and result["inprocess_decisions_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["decisions_per_s"] / result["inprocess_decisions_per_s"], rel=1e-2, abs=1e-4
    )
    assert result["end_to_end_decisions_per_s"] <= result["decisions_per_s"] * 1.0001 or mode == "live"
    assert result["uss_mb_per_agent"] > 1 and result["idle_cpu_pct"] >= 0 and result["cpu_count"] >= 1
    assert result["runner_processes"] == (3 if isolation == "actor" else min(3, result["cluster_cpus"]))
    if mode == "live":
        assert 0 < result["tick_to_orders_p50_ms"] <= result["tick_to_orders_p99_ms"]
    else:
        assert result["tick_to_orders_p50_ms"] is None


def test_bench_execution_reports_orders_and_risk_latency() -> None:
    result = bench_execution(orders=600, symbols=6, agents=3)
    assert result["orders"] >= 600 and result["orders"] == result["ledger_orders"]
    assert result["fills"] == result["ledger_fills"] > 0, "every fill reached the ledger"
    assert result["orders_per_s"] > 0 and result["risk_checks"] == result["orders"]
    assert 0 < result["risk_check_p50_us"] <= result["risk_check_p99_us"]
    assert result["agent_risk_checks"] == 0 and result["risk"] == "minimal"


def test_bench_execution_on_postgres_reports_sqlite_beside_it_and_leaves_no_rows(postgres_url: str) -> None:
    from federation.ledger import open_ledger

    result = bench_execution(orders=300, symbols=6, agents=3, ledger=postgres_url)
    assert result["fills"] == result["ledger_fills"] > 0 and result["orders"] == result["ledger_orders"]
    assert result["sqlite_orders_per_s"] > 0 and result["baseline_orders_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["orders_per_s"] / result["baseline_orders_per_s"], rel=0.01
    )
    assert "search_path" in result["ledger"]
    ledger = open_ledger(postgres_url)
    assert ledger.runs() == [], "the benchmark deleted its rows"
    ledger.close()
    with pytest.raises(ConfigError, match="unknown scheme"):
        bench_execution(orders=10, ledger="mysql://x")


def test_bench_events_command_prints_json(redis_url: str) -> None:
    from tests.test_cli import cli

    done = cli("bench", "events", "--batches", "50", "--redis", redis_url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["entries"] == 50 * result["entries_per_batch"] and result["entries_per_s"] > 0
    assert result["caller_ratio"] > 1, "publishing from the caller's thread costs less than sending inline"


def test_bench_execution_with_every_risk_check_denies_nothing_and_times_both_levels() -> None:
    result = bench_execution(orders=600, symbols=6, agents=3, risk="full")
    assert result["orders"] >= 600 and result["risk_denials"] == 0
    assert result["agent_risk_checks"] >= 3 * result["orders"]  # every agent's demand, every order
    assert 0 < result["agent_risk_check_p50_us"] <= result["agent_risk_check_p99_us"]


@pytest.mark.usefixtures("ray_session")
def test_bench_budget_reports_rates_latency_and_no_overshoot() -> None:
    result = bench_budget(agents=8, reservations=20, processes=2)
    assert result["reservations"] == 8 * 20 and result["refused_in_main_phase"] == 0
    assert result["reservations_per_s"] > 0 and result["inprocess_reservations_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["reservations_per_s"] / result["inprocess_reservations_per_s"], rel=1e-2, abs=1e-4
    )
    assert 0 < result["latency_p50_ms"] <= result["latency_p99_ms"] <= result["latency_max_ms"]
    assert result["processes"] == 2 and result["threads_per_process"] == 4
    assert result["refusal_attempts"] > result["refusal_cap"] >= 1
    assert result["overshoot"] == 0, "no agent was granted more than its cap"
    assert result["refusal_granted"] == 8 * result["refusal_cap"], "every cap was used up exactly"
    assert result["refusals"] == 8 * (result["refusal_attempts"] - result["refusal_cap"])
    assert result["accounting_exact"], "the authority's report matches what the callers did"
    assert result["cpu_count"] >= 1 and result["authority_cpu_pct"] >= 0


def test_bench_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="agent kind 'fast'"):
        bench_fleet(agents=1, agent_kind="fast")
    with pytest.raises(ValueError, match="orders, symbols, agents and block_size must be >= 1"):
        bench_execution(orders=0)
    with pytest.raises(ValueError, match="risk 'all' is not 'minimal' or 'full'"):
        bench_execution(risk="all")
    with pytest.raises(ValueError, match="agents, reservations and processes must be >= 1"):
        bench_budget(processes=0)
