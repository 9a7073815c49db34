"""Scale runs: 100 agents on real data in each tier, and the 100-agent benchmark.

The 100-agent runs are marked ``slow`` (a minute or more each on 2 cores): run them with
``python -m pytest -m slow``. The default suite runs the small version (one host, a few agents) of the
same paths in tests/test_tiers.py and tests/test_bench.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.config import load_config
from federation.supervisor import run_fleet
from tests.conftest import EXAMPLES


def test_fleet100_example_has_100_agents_on_real_data() -> None:
    from federation.fleet import build_fleet

    cfg = load_config(EXAMPLES / "fleet100.toml")
    fleet = build_fleet(cfg, ("SPY", "QQQ", "IWM", "EEM", "IBM", "GOOG"))
    assert len(fleet) == 100 and len({(s.class_path, s.params_json(), s.symbols) for s in fleet}) == 100
    assert cfg.feed.kind == "csv"


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("tier", ["shared", "actor"])
def test_fleet100_runs_to_completion(tmp_path: Path, tier: str) -> None:
    cfg = load_config(
        EXAMPLES / "fleet100.toml",
        overrides={"isolation": tier, "ledger": f"sqlite:///{tmp_path / 'f.db'}"},
    )
    summary = run_fleet(cfg)
    assert summary.status == "completed" and len(summary.agents) == 100
    assert all(a.isolation == tier and a.status == "active" and a.errors == 0 for a in summary.agents)
    assert sum(a.fills > 0 for a in summary.agents) >= 90
    assert summary.portfolio.fills > 1000


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_bench_fleet_100_shared() -> None:
    from federation.bench.fleet import bench_fleet

    result = bench_fleet(agents=100, isolation="shared", mode="backtest", idle_window_s=5)
    assert result["agents_ready"] == 100 and result["status"] == "completed"
    assert result["decisions"] == 100 * 2000 * 4
