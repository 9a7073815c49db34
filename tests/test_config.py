"""Config validation: every bad input names the file and the field, and says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.config import load_config
from federation.errors import ConfigError

GOOD = """
[federation]
capital = 50000
[feed]
kind = "synthetic"
symbols = ["AAA"]
[[agents]]
class = "agents.momentum:MomentumAgent"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_good_config_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.federation.capital == 50000 and cfg.federation.block_size == 256
    assert cfg.base_dir == tmp_path.resolve()
    assert cfg.agents[0].isolation is None and cfg.federation.isolation == "actor"
    assert cfg.agents[0].count == 1 and cfg.federation.mode == "backtest"


def test_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), overrides={"ledger": "sqlite:///x.db", "block_size": None})
    assert cfg.federation.ledger == "sqlite:///x.db" and cfg.federation.block_size == 256


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config("nope.toml")


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    msg = error(tmp_path, "[federation]\ncapital = = 3\n")
    assert "fleet.toml: invalid TOML" in msg and "line 2" in msg


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            GOOD.replace("capital = 50000", "capital = -5"),
            "federation.capital: Input should be greater than 0",
        ),
        (
            GOOD.replace("capital = 50000", "capitol = 5"),
            "federation.capitol: Extra inputs are not permitted",
        ),
        (GOOD.replace('kind = "synthetic"', 'kind = "parquet"'), "feed: Input tag 'parquet'"),
        (
            GOOD.replace("agents.momentum:MomentumAgent", "agents.momentum"),
            "agents[0].class: 'agents.momentum' is not",
        ),
        (
            GOOD + 'isolation = "sandbox"\n',
            "agents[0].isolation: isolation 'sandbox' is not a tier (the sandbox tier is not built yet)",
        ),
        (
            GOOD + 'isolation = "shard"\n',
            "agents[0].isolation: isolation 'shard' is not a tier; choose 'actor'",
        ),
        (GOOD + "count = 0\n", "agents[0].count: Input should be greater than or equal to 1"),
        (GOOD + "weight = 0\n", "agents[0].weight"),
        (GOOD + "params = { fast = 3 }\ngrid = { fast = [1, 2] }\n", "fast set in both params and grid"),
        (GOOD + "grid = { fast = [] }\n", "grid.fast is empty"),
        (GOOD.replace("[[agents]]", "[[agent]]"), "agent: Extra inputs are not permitted"),
        ("[execution]\nlot_size = 0.000000001\n" + GOOD, "execution: lot_size = 1E-9 is finer than 1e-8"),
        ("[execution]\nlot_size = 0.0001\nprice_tick = 0.00001\n" + GOOD, "lot_size x price_tick = 1E-9"),
        (
            "[risk]\nmax_position_by_symbol = { AAA = -5 }\n" + GOOD,
            "risk.max_position_by_symbol.AAA: Input should be greater than 0",
        ),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, snippet: str, expected: str) -> None:
    msg = error(tmp_path, snippet)
    assert msg.startswith(str(tmp_path / "fleet.toml")), msg
    assert expected in msg, msg


def test_no_agents(tmp_path: Path) -> None:
    msg = error(tmp_path, '[feed]\nkind = "synthetic"\nsymbols = ["A"]\n')
    assert "agents: Field required" in msg


def test_csv_feed_dates(tmp_path: Path) -> None:
    text = (
        '[feed]\nkind = "csv"\npaths = { A = "a.csv" }\nstart = 2020-02-01\nend = 2020-01-01\n'
        + GOOD.split("[feed]")[1].split("\n", 3)[3]
    )
    assert "start 2020-02-01 is after end 2020-01-01" in error(tmp_path, text)


def test_risk_symbols_must_be_in_the_feed(tmp_path: Path) -> None:
    from federation.supervisor import Supervisor

    cfg = load_config(write(tmp_path, "[risk]\nmax_position_by_symbol = { SYP = 5 }\n" + GOOD))
    with pytest.raises(ConfigError, match=r"risk\.max_position_by_symbol: SYP not in the feed"):
        Supervisor(cfg, source="fleet.toml").prepare()


# ------------------------------------------------------------------------------------------------ risk
@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("[risk.breakers]\naction = 'halted'\n", "risk.breakers: a breaker needs loss_pct"),
        ("[risk.breakers]\nloss_pct = 5\nwindow = '5x'\n", "window '5x' is not a duration"),
        ("[risk.breakers]\nloss_pct = 5\nwindow = 0\n", "window 0 s must be longer than zero"),
        ("[risk.breakers]\nloss_pct = 5\ncooldown = -1\n", "cooldown -1 s must be zero or longer"),
        ("[risk.breakers]\nloss_pct = 150\n", "risk.breakers.loss_pct: Input should be less than 100"),
        ("[risk.breakers]\nloss_pct = 5\naction = 'flatten'\n", "risk.breakers.action: Input should be"),
        ("[risk]\norder_burst = 5\n", "order_burst = 5 is set without max_orders_per_minute"),
        ("[risk]\nmax_leverage = 0\n", "risk.max_leverage: Input should be greater than 0"),
        (
            "[risk.instruments.AAA]\nlot_size = 0.000000001\n",
            "risk.instruments.AAA: lot_size = 1E-9 is finer than 1e-8",
        ),
        ("[risk]\nprice_collar = 5\n", "risk.price_collar: Extra inputs are not permitted"),
    ],
)
def test_invalid_risk_fields_are_named(tmp_path: Path, snippet: str, expected: str) -> None:
    assert expected in error(tmp_path, snippet + GOOD)


def test_agent_risk_is_read_per_entry_and_reaches_the_agent_specs(tmp_path: Path) -> None:
    from federation.fleet import build_fleet

    text = GOOD + (
        "count = 2\n"
        "risk = { max_position = 500, max_orders_per_minute = 10, "
        "breakers = { loss_pct = 5, window = '5m', cooldown = 90 } }\n"
    )
    cfg = load_config(write(tmp_path, text))
    risk = cfg.agents[0].risk
    assert risk is not None and risk.max_position == 500 and risk.breakers is not None
    spec = risk.breakers.to_spec()
    assert (spec.window_ns, spec.cooldown_ns, spec.max_trips_per_day) == (300 * 10**9, 90 * 10**9, 3)
    assert spec.action.label == "reducing"
    fleet = build_fleet(cfg, ("AAA",))
    assert [s.risk for s in fleet] == [risk, risk]
    assert load_config(write(tmp_path, GOOD)).agents[0].risk is None
    msg = error(tmp_path, GOOD + "risk = { price_collar_bps = 5 }\n")
    assert "agents[0].risk.price_collar_bps: Extra inputs are not permitted" in msg


def test_agent_and_instrument_risk_symbols_must_be_in_the_feed(tmp_path: Path) -> None:
    from federation.supervisor import Supervisor

    cfg = load_config(write(tmp_path, GOOD + "risk = { max_position_by_symbol = { SYP = 5 } }\n"))
    with pytest.raises(ConfigError, match=r"agents\[0\]\.risk\.max_position_by_symbol: SYP not in the feed"):
        Supervisor(cfg, source="fleet.toml").prepare()
    cfg = load_config(write(tmp_path, "[risk.instruments.SYP]\nlot_size = 5\n" + GOOD))
    with pytest.raises(ConfigError, match=r"risk\.instruments: SYP not in the feed"):
        Supervisor(cfg, source="fleet.toml").prepare()


def test_the_readme_risk_example_loads_and_documents_every_risk_key(tmp_path: Path) -> None:
    from federation.config import AgentRiskConfig, BreakerConfig, InstrumentConfig, RiskConfig
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Risk\n")[1].split("\n## ")[0]
    example = section.split("```toml\n")[1].split("```")[0]
    feed = '[feed]\nkind = "synthetic"\nsymbols = ["SPY"]\n'
    cfg = load_config(write(tmp_path, feed + example))
    assert cfg.risk.breakers is not None and cfg.agents[0].risk is not None
    reference = readme.split("## Config reference")[1].split("## CLI reference")[0]
    for model in (RiskConfig, AgentRiskConfig, BreakerConfig, InstrumentConfig):
        for name in model.model_fields:
            assert f"`{name}`" in reference, f"{model.__name__}.{name} is not documented"
    assert set(AgentRiskConfig.model_fields) < set(RiskConfig.model_fields)
