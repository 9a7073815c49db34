"""The ``federation`` command end to end, as a user runs it (separate processes, their own Ray)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from federation.config import load_config
from federation.ledger import SQLiteLedger
from federation.supervisor import run_fleet
from tests.conftest import ROOT

FEDERATION = [sys.executable, "-m", "federation.cli"]


def cli(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDERATION, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_help_shows_examples() -> None:
    out = cli("--help")
    assert out.returncode == 0
    assert "federation run examples/fleet.toml" in out.stdout and "new-agent" in out.stdout


def test_example_fleet_json(tmp_path: Path) -> None:
    ledger = tmp_path / "fleet.db"
    out = cli("run", "examples/fleet.toml", "--json", "--quiet", "--ledger", f"sqlite:///{ledger}")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["status"] == "completed" and summary["run_id"]
    agents = summary["agents"]
    assert len(agents) >= 20 and all(a["fills"] > 0 for a in agents)
    for key in (
        "name",
        "class",
        "isolation",
        "bars",
        "signals",
        "orders",
        "fills",
        "realized_pnl",
        "unrealized_pnl",
        "cpu_s",
        "errors",
    ):
        assert all(key in a for a in agents), key
    assert {a["isolation"] for a in agents} == {"actor"}
    for key in ("equity", "gross_exposure", "orders", "fills"):
        assert key in summary["portfolio"]
    assert summary["portfolio"]["fills"] == sum(
        1 for _ in sqlite3.connect(ledger).execute("SELECT 1 FROM fills WHERE liquidity != 'internal'")
    )
    assert summary["bars"] == 1761 and summary["symbols"] == ["SPY", "QQQ", "IWM", "EEM", "IBM", "GOOG"]


def test_table_output(tmp_path: Path) -> None:
    """The human summary: one row per agent and the portfolio line (small fleet, to stay quick)."""
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[federation]\nledger = "sqlite:///t.db"\n[feed]\nkind = "synthetic"\nsymbols = ["A"]\nbars = 300\n'
        '[[agents]]\nclass = "agents.momentum:MomentumAgent"\nname = "mom"\nparams = { fast = 5, slow = 20 }\n'
    )
    out = cli("run", str(config), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mom" in out.stdout and "MomentumAgent" in out.stdout and "portfolio: equity" in out.stdout
    assert (tmp_path / "t.db").exists(), "relative ledger paths are relative to the working folder"


def test_run_overrides_tier_and_mode(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[federation]\nledger = "sqlite:///t.db"\n[feed]\nkind = "synthetic"\nsymbols = ["A", "B"]\n'
        "bars = 80\n[live]\ntick_interval_ms = 1\n"
        '[[agents]]\nclass = "agents.momentum:MomentumAgent"\nisolation = "actor"\ncount = 3\n'
        "params = { fast = 3, slow = 10 }\n"
    )
    out = cli("run", str(config), "--isolation", "shared", "--mode", "live", "--json", "-q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert {a["isolation"] for a in summary["agents"]} == {"shared"}, "--isolation overrides every agent"
    assert summary["mode"] == "live" and summary["live"]["ticks"] == 80
    assert all(a["uss_mb"] > 0 and a["sharing"] >= 1 for a in summary["agents"])
    bad_tier = cli("run", str(config), "--isolation", "sandbox", cwd=tmp_path)
    assert bad_tier.returncode == 2 and "Invalid value for '--isolation'" in bad_tier.stderr
    assert "Traceback" not in bad_tier.stderr


def test_bench_commands_print_json(tmp_path: Path) -> None:
    out = cli("bench", "execution", "--orders", "300", "--json", str(tmp_path / "exec.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    execution = json.loads((tmp_path / "exec.json").read_text())
    assert execution["orders"] >= 300 and execution["risk_check_p99_us"] > 0
    out = cli(
        "bench", "fleet", "--agents", "2", "--bars", "60", "--isolation", "actor", "--idle-window", "0.5"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    fleet = json.loads(out.stdout)  # nothing but the JSON on stdout
    assert fleet["agents_ready"] == 2 and fleet["isolation"] == "actor" and fleet["ratio"] > 0


def bad(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


FEED = '[feed]\nkind = "synthetic"\nsymbols = ["A"]\n'


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"c.toml": "[federation\n"}, "c.toml: invalid TOML"),
        (
            {"c.toml": FEED + '[[agents]]\nclass = "agents.momentum:MomentumAgent"\ncount = -1\n'},
            "agents[0].count",
        ),
        (
            {
                "c.toml": '[feed]\nkind = "csv"\npaths = { A = "a.csv" }\n[[agents]]\nclass = "agents.momentum:MomentumAgent"\n',
                "a.csv": "timestamp,open,high,low,close\n2020-01-01,1,1,1,1\n",
            },
            "a.csv",
        ),
        (
            {
                "c.toml": '[feed]\nkind = "csv"\non_invalid = "error"\npaths = { A = "a.csv" }\n[[agents]]\nclass = "agents.momentum:MomentumAgent"\n',
                "a.csv": "timestamp,open,high,low,close,volume\n2020-01-01,1,1,1,1,5\n2020-01-02,1,0.5,1,1,5\n",
            },
            "a.csv:3",
        ),
        (
            {
                "c.toml": FEED + '[[agents]]\nclass = "agent.py:Mine"\n',
                "agent.py": "import nonexistent_pkg\n",
            },
            "importing",
        ),
        (
            {
                "c.toml": FEED
                + '[[agents]]\nclass = "agents.momentum:MomentumAgent"\nparams = { fast = 50, slow = 10 }\n'
            },
            "fast = 50 and slow = 10",
        ),
        (
            {
                "c.toml": FEED
                + '[federation]\nledger = "postgresql://x@localhost/db"\n[[agents]]\nclass = "agents.momentum:MomentumAgent"\n'
            },
            'role "x" does not exist; check the user, password and database',
        ),
    ],
    ids=["toml", "field", "data-column", "data-record", "agent-import", "agent-params", "ledger"],
)
def test_bad_input_exits_2_and_names_the_problem(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    for name, text in files.items():
        bad(tmp_path, name, text)
    out = cli("run", "c.toml", cwd=tmp_path, timeout=60)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert expected in out.stderr.replace("\n", ""), out.stderr
    assert "Traceback" not in out.stderr


def test_missing_config_exits_2(tmp_path: Path) -> None:
    out = cli("run", "nope.toml", cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "nope.toml: config file not found" in out.stderr


def test_new_agent_writes_a_runnable_agent_and_refuses_to_overwrite(
    tmp_path: Path, ray_session: None
) -> None:
    out = cli("new-agent", "my-strategy", "--dir", str(tmp_path), timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "my_strategy.py").exists() and (tmp_path / "my_strategy.toml").exists()
    again = cli("new-agent", "my_strategy", "--dir", str(tmp_path), timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert cli("new-agent", "1bad", "--dir", str(tmp_path), timeout=60).returncode == 2
    config = load_config(
        tmp_path / "my_strategy.toml", overrides={"ledger": f"sqlite:///{tmp_path / 'n.db'}"}
    )
    summary = run_fleet(config)
    assert [a.name for a in summary.agents] == ["my_strategy-0", "my_strategy-1", "my_strategy-2"]
    assert all(a.signals > 0 and a.fills > 0 and a.errors == 0 for a in summary.agents)


SLOW_AGENT = """
import time
from agents import Agent, Signal

class Slow(Agent):
    def on_bar(self, bar):
        time.sleep(0.005)
        return Signal(bar.symbol, 0.5 if bar.close > bar.open else -0.5)
"""


def test_ctrl_c_stops_cleanly_flushes_and_prints_the_summary(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_AGENT)
    (tmp_path / "c.toml").write_text(
        '[federation]\nledger = "sqlite:///l.db"\nblock_size = 20\n'
        '[feed]\nkind = "synthetic"\nsymbols = ["A", "B"]\nbars = 20000\n'
        '[[agents]]\nclass = "slow.py:Slow"\ncount = 2\n'
    )
    # A new session, and SIGINT to the whole group: what a terminal's Ctrl-C does.
    proc = subprocess.Popen(
        [*FEDERATION, "run", "c.toml", "--json", "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            with sqlite3.connect(tmp_path / "l.db") as db:
                if db.execute("SELECT count(*) FROM fills").fetchone()[0] > 20:
                    break
        except sqlite3.Error:
            continue
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads(out)
    assert summary["status"] == "interrupted" and 0 < summary["agents"][0]["bars"] < 2 * 20000
    ledger = SQLiteLedger(tmp_path / "l.db")
    run_id = summary["run_id"]
    assert ledger.run_status(run_id) == "interrupted"
    fills = [f for f in ledger.fills(run_id) if f.liquidity != "internal"]
    assert summary["portfolio"]["fills"] == len(fills) > 0
    spent = sum((f.quantity * f.price + f.fee for f in fills), Decimal(0))
    assert ledger.cash(run_id) == Decimal(1_000_000) - spent
    assert all(o.status != "submitted" for o in ledger.orders(run_id))
