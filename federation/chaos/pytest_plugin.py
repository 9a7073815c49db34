"""The ``chaos`` pytest fixture: fault tests of your own fleet in a few lines.

Installed with the package (entry point ``pytest11``), so any test can ask for it::

    def test_my_fleet_survives_kills(chaos):
        report = chaos("fleet.toml", {"seed": 1, "duration_s": 10, "baseline": False,
                                      "agents": {"kill_fraction": 0.25, "kill_every_s": 3},
                                      "venue": {"timeout_rate": 0.05, "reject_rate": 0.05}})
        assert report.ok, report.failed

The plan is a dict (the TOML plan's keys), a :class:`~federation.chaos.plan.ChaosPlan` or a plan file.
The fleet's ledger is redirected to a SQLite file in the test's temporary folder unless ``ledger=`` names
one (a plan that restarts PostgreSQL brings its own server). Ray is started once and kept for the session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from federation.chaos.plan import ChaosPlan
from federation.chaos.report import ChaosReport
from federation.config import FleetConfig, format_validation_error, load_config
from federation.errors import ConfigError

ChaosRunner = Callable[..., ChaosReport]


def _plan(plan: str | Path | ChaosPlan | Mapping[str, Any]) -> str | Path | ChaosPlan:
    if not isinstance(plan, Mapping):
        return plan
    try:
        return ChaosPlan.model_validate(dict(plan))
    except ValidationError as exc:
        raise ConfigError(format_validation_error("chaos plan", exc)) from None


@pytest.fixture
def chaos(tmp_path: Path) -> ChaosRunner:
    """``chaos(config, plan, *, ledger=None) -> ChaosReport``: run a fleet under a fault plan."""
    from federation.chaos.harness import run_chaos

    def run(
        config: str | Path | FleetConfig,
        plan: str | Path | ChaosPlan | Mapping[str, Any],
        *,
        ledger: str | None = None,
    ) -> ChaosReport:
        cfg = config if isinstance(config, FleetConfig) else load_config(config)
        url = ledger or f"sqlite:///{tmp_path / 'chaos.db'}"
        cfg = cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"ledger": url})})
        return run_chaos(cfg, _plan(plan), show_progress=False)

    return run
