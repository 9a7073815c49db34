"""The README stays true: its example agent runs, its config reference covers every field, CI runs its
test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from federation.config import (
    AgentEntry,
    AgentRiskConfig,
    AllocationConfig,
    BreakerConfig,
    BudgetEntry,
    BudgetSettings,
    CsvFeedConfig,
    ExecutionConfig,
    FederationSettings,
    InstrumentConfig,
    LedgerSettings,
    LiveSettings,
    RecoverySettings,
    RedisFeedConfig,
    RiskConfig,
    SyntheticFeedConfig,
    load_config,
)
from federation.events_out import EventStreamConfig
from federation.supervisor import run_fleet
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quickstart_is_two_commands_and_ci_runs_the_second() -> None:
    commands = blocks("bash")[0].strip().splitlines()
    assert len(commands) == 2 and "federation run examples/fleet.toml" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == commands[1]


@pytest.mark.parametrize(
    "model",
    [
        FederationSettings,
        CsvFeedConfig,
        SyntheticFeedConfig,
        ExecutionConfig,
        RiskConfig,
        AgentRiskConfig,
        BreakerConfig,
        InstrumentConfig,
        AllocationConfig,
        BudgetSettings,
        BudgetEntry,
        LiveSettings,
        AgentEntry,
        LedgerSettings,
        RedisFeedConfig,
        EventStreamConfig,
        RecoverySettings,
    ],
)
def test_config_reference_lists_every_field(model: type) -> None:
    reference = README.split("## Config reference")[1].split("## CLI reference")[0]
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        if field.exclude:
            continue
        assert f"`{field.alias or name}`" in reference, f"{model.__name__}.{name} is not documented"


def test_readme_agent_runs_as_written(tmp_path: Path, ray_session: None) -> None:
    agent_code = blocks("python")[0]
    config_text = blocks("toml")[0]
    (tmp_path / "my_agent.py").write_text(agent_code)
    (tmp_path / "my_fleet.toml").write_text(config_text)
    config = load_config(tmp_path / "my_fleet.toml", overrides={"ledger": f"sqlite:///{tmp_path / 'l.db'}"})
    summary = run_fleet(config)
    names = [a.name for a in summary.agents]
    assert names == ["DipBuyer-0", "DipBuyer-1", "DipBuyer-2", "MomentumAgent"]
    assert all(a.errors == 0 for a in summary.agents)
    assert summary.agents[0].signals > 0 and summary.agents[0].fills > 0
