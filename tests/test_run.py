"""Whole runs in-process (sharing the session's Ray): custom agents, errors, consistency, determinism."""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from federation.config import load_config
from federation.errors import AgentLoadError
from federation.ledger import PORTFOLIO, SQLiteLedger, open_ledger
from federation.supervisor import run_fleet
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.usefixtures("ray_session")

DATA = EXAMPLES / "data" / "lean" / "daily"
MEASURED = {"cpu_s", "wall_s", "rss_mb", "uss_mb", "node_id", "sharing"}
"""Summary fields that are measurements of this machine, not results."""


def write_fleet(tmp_path: Path, agents: str, *, extra: str = "") -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [federation]
            capital = 100000
            ledger = "sqlite:///{tmp_path / "ledger.db"}"
            block_size = 64
            [feed]
            kind = "csv"
            format = "lean"
            start = 2018-01-01
            end = 2019-12-31
            paths = {{ SPY = "{DATA / "spy.csv"}", QQQ = "{DATA / "qqq.csv"}" }}
            """
        )
        + textwrap.dedent(extra)
        + textwrap.dedent(agents)
    )
    return path


FLAKY_AGENT = '''
from agents import Agent, Signal

class Flaky(Agent):
    """Raises on every 50th bar of SPY, otherwise follows a 10-bar breakout."""

    every = 50

    def on_start(self):
        self.n = 0
        self.last = {}

    def on_bar(self, bar):
        self.n += bar.symbol == "SPY"
        if bar.symbol == "SPY" and self.n % self.every == 0:
            raise ZeroDivisionError(f"flaky at bar {self.n}")
        prev, self.last[bar.symbol] = self.last.get(bar.symbol), bar.close
        if prev is None:
            return None
        return Signal(bar.symbol, 0.3 if bar.close > prev else -0.3)
'''


def ledger_for(config_path: Path) -> SQLiteLedger:
    return open_ledger(load_config(config_path).federation.ledger)


def check_consistency(ledger: SQLiteLedger, run_id: str, capital: Decimal) -> None:
    """Positions equal the sum of venue fills; cash equals capital minus the cost of fills and fees."""
    fills = [f for f in ledger.fills(run_id) if f.liquidity != "internal"]
    by_symbol: dict[str, Decimal] = {}
    for f in fills:
        by_symbol[f.symbol] = by_symbol.get(f.symbol, Decimal(0)) + f.quantity
    assert ledger.positions(run_id) == {s: q for s, q in by_symbol.items() if q}
    spent = sum((f.quantity * f.price + f.fee for f in fills), Decimal(0))
    assert ledger.cash(run_id) == capital - spent
    agents = ledger.query(
        "SELECT symbol, SUM(qty_e8) FROM positions WHERE run_id = ? AND account != ? GROUP BY symbol",
        run_id,
        PORTFOLIO,
    )
    assert {s: q for s, q in agents if q} == {s: int(q * 10**8) for s, q in ledger.positions(run_id).items()}


def test_custom_agent_from_file_runs_beside_a_builtin_and_its_errors_do_not_stop_the_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "flaky.py").write_text(FLAKY_AGENT)
    config = write_fleet(
        tmp_path,
        """
        [[agents]]
        class = "flaky.py:Flaky"
        name = "flaky"
        [[agents]]
        class = "agents.momentum:MomentumAgent"
        params = { fast = 5, slow = 20 }
        """,
    )
    summary = run_fleet(load_config(config), source=str(config))
    assert summary.status == "completed"
    flaky, momentum = summary.agents
    assert flaky.name == "flaky" and flaky.class_ == "flaky.py:Flaky" and flaky.isolation == "actor"
    assert flaky.bars == 2 * 503 and flaky.errors == 503 // 50
    assert flaky.last_error is not None and "ZeroDivisionError: flaky at bar" in flaky.last_error
    assert flaky.signals > 800 and flaky.fills > 0 and momentum.fills > 0
    ledger = ledger_for(config)
    errors = ledger.events(summary.run_id, "agent_error")
    assert len(errors) == flaky.errors and {e["agent"] for e in errors} == {"flaky"}
    assert "Traceback" in errors[0]["detail"]["traceback"] and "in on_bar" in errors[0]["detail"]["traceback"]
    assert ledger.run_status(summary.run_id) == "completed"
    check_consistency(ledger, summary.run_id, Decimal(100000))
    assert summary.portfolio.fills == len(
        [f for f in ledger.fills(summary.run_id) if f.liquidity != "internal"]
    )


def test_same_config_same_results(tmp_path: Path) -> None:
    config = write_fleet(
        tmp_path,
        """
        [[agents]]
        class = "agents.momentum:MomentumAgent"
        grid = { fast = [5, 10] }
        params = { slow = 30 }
        [[agents]]
        class = "agents.mean_reversion:MeanReversionAgent"
        """,
        extra="[execution]\nslippage_bps = 5\nmax_volume_share = 0.000001\n",
    )
    first = run_fleet(load_config(config))
    second = run_fleet(load_config(config))
    assert first.run_id != second.run_id
    assert first.portfolio == second.portfolio
    assert [a.model_dump(exclude=MEASURED) for a in first.agents] == [
        a.model_dump(exclude=MEASURED) for a in second.agents
    ]
    assert first.portfolio.internal_crosses > 0, "opposite views must be netted internally"
    ledger = ledger_for(config)
    for summary in (first, second):
        check_consistency(ledger, summary.run_id, Decimal(100000))
    partial = [o for o in ledger.orders(first.run_id) if o.status == "partially_filled"]
    assert partial, "max_volume_share = 1e-6 must cause partial fills on real volumes"


def test_agent_failing_in_on_start_stops_the_run_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "from agents import Agent\n\nclass Bad(Agent):\n"
        "    def on_start(self):\n        raise RuntimeError('model file missing')\n"
        "    def on_bar(self, bar):\n        return None\n"
    )
    config = write_fleet(tmp_path, '[[agents]]\nclass = "bad.py:Bad"\nname = "broken-one"\n')
    with pytest.raises(
        AgentLoadError, match="agent 'broken-one' failed in on_start: RuntimeError: model file missing"
    ):
        run_fleet(load_config(config))
    ledger = ledger_for(config)
    (run,) = ledger.runs()
    assert run["status"] == "failed", "a run that could not start is not left 'running'"


def test_example_custom_agent_config_runs(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'c.db'}"
    summary = run_fleet(load_config(EXAMPLES / "custom_agent" / "fleet.toml", overrides={"ledger": ledger}))
    names = [a.name for a in summary.agents]
    assert names == ["Breakout-0", "Breakout-1", "momentum"]
    assert all(a.fills > 0 for a in summary.agents) and summary.portfolio.fills > 0


POSITION_REPORTER = """
import json
from agents import Agent, Signal

class Reporter(Agent):
    out = ""

    def on_start(self):
        self.n = 0

    def on_bar(self, bar):
        self.n += 1
        return Signal(bar.symbol, 0.5 if (self.n // 40) % 2 else -0.25)

    def on_stop(self):
        with open(self.out, "w") as f:
            json.dump({s: self.position(s) for s in self.symbols}, f)
"""


def test_relative_ledger_path_and_last_fills_reach_on_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The execution actor writes the driver's file even when the driver's working folder is elsewhere,
    and agents see every fill (the last block's too) before on_stop."""
    (tmp_path / "reporter.py").write_text(POSITION_REPORTER)
    config = write_fleet(
        tmp_path,
        f'[[agents]]\nclass = "reporter.py:Reporter"\nparams = {{ out = "{tmp_path / "pos.json"}" }}\n',
    )
    text = config.read_text().replace(
        f'ledger = "sqlite:///{tmp_path / "ledger.db"}"', 'ledger = "sqlite:///relative.db"'
    )
    config.write_text(text)
    monkeypatch.chdir(tmp_path)
    summary = run_fleet(load_config(config))
    ledger = open_ledger("sqlite:///relative.db")
    assert ledger.run_status(summary.run_id) == "completed"
    reported = json.loads((tmp_path / "pos.json").read_text())
    booked = ledger.positions(summary.run_id, "Reporter")
    assert reported == {s: float(booked.get(s, 0)) for s in ("SPY", "QQQ")}
    assert any(reported.values())
