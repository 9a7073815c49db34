"""Small chaos plans through the harness (``chaos`` fixture, the pytest plugin) and the CLI.

The full plan of issue 6 (100 agents, 60 s) is ``test_full_plan.py``, behind the ``slow`` marker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from federation.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "examples" / "chaos"

pytestmark = pytest.mark.usefixtures("ray_session")


def test_the_small_example_plan_injects_every_fault_and_holds_every_invariant(chaos) -> None:  # type: ignore[no-untyped-def]
    report = chaos(CHAOS / "small_fleet.toml", CHAOS / "small_plan.toml")
    assert report.ok, [(i.name, i.value, i.detail) for i in report.invariants if not i.ok]
    faults = report.faults
    assert faults["kill_agent"] >= 3 and faults["kill_execution"] == 1
    for kind in ("timeouts", "rejects", "rate_limited", "partial_fills", "delayed_fills", "duplicate_fills"):
        assert faults[f"venue_{kind}"] > 0, kind
    assert faults["venue_disconnect"] == 1 and faults["venue_disconnected_calls"] > 0
    assert sum(n for k, n in faults.items() if k.startswith("data_")) > 0
    values = {i.name: i.value for i in report.invariants}
    assert values["fills_missing"] == 0 and values["client_ids_sent_twice"] == 0
    assert values["agents_recovered"]["recovered"] == values["agents_recovered"]["kills"] >= 3
    assert values["execution_restarts"] == 1


def _redis_fleet(tmp_path: Path) -> Path:
    """The small fleet with its events going to Redis (the harness points them at its own server)."""
    text = (CHAOS / "small_fleet.toml").read_text()
    text = text.replace('paths = { SPY = "../data', f'paths = {{ SPY = "{CHAOS}/../data')
    text = text.replace('QQQ = "../data', f'QQQ = "{CHAOS}/../data').replace(
        'IBM = "../data', f'IBM = "{CHAOS}/../data'
    )
    path = tmp_path / "fleet.toml"
    path.write_text(text + '\n[events]\nurl = "redis://127.0.0.1:1/0"\nprefix = "chaos"\n')
    return path


def test_postgres_restart_and_redis_outage_lose_nothing(chaos, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = {
        "seed": 5,
        "duration_s": 12,
        "baseline": False,
        "agents": {"kill_fraction": 0.25, "kill_every_s": 4},
        "postgres": {"restart_at_s": [3], "down_s": 2},
        "redis": {"down_at_s": [6], "down_s": 3},
        "venue": {"timeout_rate": 0.02, "partial_fill_rate": 0.3},
    }
    report = chaos(_redis_fleet(tmp_path), plan)
    assert report.ok, [(i.name, i.value, i.detail) for i in report.invariants if not i.ok]
    assert report.faults["postgres_down"] == 1 and report.faults["postgres_up"] == 1
    assert report.faults["redis_down"] == 1 and report.faults["redis_up"] == 1
    assert any("private PostgreSQL" in n for n in report.notes)


def test_hook_faults_are_counted_and_quarantine_is_reported(chaos) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(CHAOS / "small_fleet.toml")
    cfg = cfg.model_copy(update={"recovery": cfg.recovery.model_copy(update={"max_errors": 2})})
    plan = {
        "seed": 11,
        "duration_s": 6,
        "baseline": False,
        "hooks": {"raise_rate": 0.5, "slow_rate": 0.2, "slow_ms": 5, "agents_fraction": 0.5},
    }
    report = chaos(cfg, plan)
    values = {i.name: i.value for i in report.invariants}
    assert report.faults["hook_raise"] > 0
    assert len(values["quarantined"]) >= 1
    assert report.ok  # a quarantine is reported, not a failure, unless the plan bounds it


def _cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_cli_exits_non_zero_with_a_json_report_when_an_invariant_fails(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(
        textwrap.dedent(
            """
            seed = 2
            duration_s = 5
            baseline = false
            [hooks]
            raise_rate = 1.0
            agents_fraction = 0.25
            [invariants]
            max_quarantined = 0
            """
        )
    )
    fleet = tmp_path / "fleet.toml"
    fleet.write_text((CHAOS / "small_fleet.toml").read_text().replace("../data", f"{CHAOS}/../data") + "\n")
    text = fleet.read_text().replace("[recovery]\n", "[recovery]\nmax_errors = 1\n")
    fleet.write_text(text)
    done = _cli("chaos", str(fleet), "--plan", str(plan), "--json", "-q", cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["invariants"]["quarantined"]["ok"] is False
    assert report["invariants"]["fills_missing"] == {**report["invariants"]["fills_missing"], "ok": True}
    assert "invariants failed: quarantined" in done.stderr


def test_cli_rejects_a_bad_plan_before_starting_anything(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text("seed = 1\nduration_s = 10\n[agents]\nkill_fraction = 2\nkill_every_s = 1\n")
    done = _cli("chaos", str(CHAOS / "small_fleet.toml"), "--plan", str(plan), cwd=tmp_path)
    assert done.returncode == 2
    assert "agents.kill_fraction" in done.stderr and str(plan) in done.stderr


def test_the_user_facing_example_test_passes_with_the_plugin_fixture(chaos) -> None:  # type: ignore[no-untyped-def]
    """examples/chaos/test_my_fleet.py, run as a user's test with the installed ``chaos`` fixture."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("test_my_fleet", CHAOS / "test_my_fleet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_kills_and_venue_faults_lose_nothing(chaos)
