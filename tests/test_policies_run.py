"""Risk and allocation policies in whole runs (the session's Ray): what the ledger and summary show."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from federation.config import load_config
from federation.errors import ConfigError
from federation.ledger import open_ledger
from federation.supervisor import Supervisor, run_fleet
from tests.test_run import write_fleet

pytestmark = pytest.mark.usefixtures("ray_session")

TWO_STRATEGIES = """
[[agents]]
class = "agents.momentum:MomentumAgent"
name = "fast"
params = { fast = 5, slow = 20 }
weight = 1

[[agents]]
class = "agents.mean_reversion:MeanReversionAgent"
name = "revert"
params = { lookback = 10, entry_z = 1.0 }
weight = 3
"""


def test_inverse_volatility_rebalances_resize_agents_and_are_recorded(tmp_path: Path) -> None:
    path = write_fleet(
        tmp_path,
        TWO_STRATEGIES,
        extra="""
        [allocation]
        policy = "inverse_volatility"
        rebalance = "1M"
        window = 40
        min_periods = 10
        """,
    )
    config = load_config(path, overrides={"block_size": 16})  # a rebalance applies at a block's end
    summary = run_fleet(config)
    assert summary.status == "completed"
    assert summary.rebalances >= 20  # two years of monthly re-splits
    capital = [a.allocated_capital for a in summary.agents]
    assert sum(capital) == pytest.approx(100_000, abs=0.01)
    assert capital != [a.capital for a in summary.agents]  # moved away from the 1:3 weights
    ledger = open_ledger(config.federation.ledger)
    events = ledger.events(summary.run_id, "allocation")
    assert len(events) == summary.rebalances
    for event in events:
        assert event["code"] == "inverse_volatility"
        assert (
            event["ts"] <= event["detail"]["applied_after_ts"] < event["ts"] + 30 * 86_400 * 10**9
        )  # 16 bars
        assert sum(Decimal(v) for v in event["detail"]["capital"].values()) == Decimal(100_000)
        assert sum(event["detail"]["weights"].values()) == pytest.approx(1.0)
    # the cash moved between the agents' accounts: never created or lost
    transfers = ledger.events(summary.run_id, "allocation_transfer")
    assert transfers and all(sum(Decimal(v) for v in e["detail"].values()) == 0 for e in transfers)
    cash = {a.name: ledger.cash(summary.run_id, a.name) for a in summary.agents}
    assert sum(cash.values(), Decimal(0)) == ledger.cash(summary.run_id)


def test_equal_allocation_starts_from_equal_capital(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, TWO_STRATEGIES, extra='[allocation]\npolicy = "equal"\n')
    summary = run_fleet(load_config(path))
    assert [a.capital for a in summary.agents] == [50_000.0, 50_000.0]
    assert summary.rebalances == 0


def test_infeasible_weight_bounds_are_a_config_error(tmp_path: Path) -> None:
    path = write_fleet(
        tmp_path,
        TWO_STRATEGIES,
        extra="""
        [allocation]
        policy = "sharpe_adaptive"
        rebalance_bars = 20
        min_weight = 0.6
        """,
    )
    with pytest.raises(ConfigError, match="allocation"):
        Supervisor(load_config(path)).prepare()
