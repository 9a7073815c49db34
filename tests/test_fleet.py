"""Loading agent classes and expanding entries: every mistake is reported with where and what to do."""

from __future__ import annotations

import pickle
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import ray.cloudpickle

from federation.config import load_config
from federation.errors import AgentLoadError
from federation.fleet import build_fleet, load_agent_class

SYMBOLS = ("AAA", "BBB")


def fleet(tmp_path: Path, agents: str, capital: int = 90_000) -> list:  # type: ignore[type-arg]
    path = tmp_path / "fleet.toml"
    path.write_text(
        f'[federation]\ncapital = {capital}\n[feed]\nkind = "synthetic"\nsymbols = ["AAA", "BBB"]\n'
        + textwrap.dedent(agents)
    )
    return build_fleet(load_config(path), SYMBOLS, str(path))


def test_grid_and_count_expand_with_stable_names_and_exact_capital(tmp_path: Path) -> None:
    specs = fleet(
        tmp_path,
        """
        [[agents]]
        class = "agents.momentum:MomentumAgent"
        name = "mom"
        grid = { fast = [5, 10, 20], slow = [50, 100] }
        [[agents]]
        class = "agents.mean_reversion:MeanReversionAgent"
        count = 4
        weight = 2.0
        symbols = ["BBB"]
        """,
    )
    assert [s.name for s in specs[:6]] == [f"mom-{k}" for k in range(6)]
    assert [(s.params["fast"], s.params["slow"]) for s in specs[:6]] == [
        (5, 50),
        (5, 100),
        (10, 50),
        (10, 100),
        (20, 50),
        (20, 100),
    ]
    assert [s.name for s in specs[6:]] == [f"MeanReversionAgent-{k}" for k in range(4)]
    assert specs[6].symbols == ("BBB",) and specs[0].symbols == SYMBOLS
    assert sum((s.capital for s in specs), Decimal(0)) == Decimal(90_000)
    assert specs[6].capital == pytest.approx(2 * specs[0].capital, abs=Decimal("0.0001"))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            'class = "agents.momentum:MomentumAgent"\nparams = { fsat = 3 }',
            "unknown parameter 'fsat'; did you mean 'fast'?",
        ),
        (
            'class = "agents.momentum:MomentumAgent"\nparams = { fast = "3" }',
            "parameter 'fast' = '3' is invalid",
        ),
        (
            'class = "agents.momentum:MomentumAgnet"',
            "has no class 'MomentumAgnet'; did you mean MomentumAgent?",
        ),
        ('class = "agents.nonexistent:X"', "cannot import module 'agents.nonexistent'"),
        ('class = "missing.py:X"', "agent file"),
        ('class = "agents.model:Signal"', "not a subclass of agents.Agent"),
        ('class = "agents.momentum:MomentumAgent"\nsymbols = ["ZZZ"]', "ZZZ not in the feed"),
    ],
)
def test_load_errors(tmp_path: Path, entry: str, expected: str) -> None:
    with pytest.raises(AgentLoadError) as info:
        fleet(tmp_path, "[[agents]]\n" + entry + "\n")
    assert expected in str(info.value)
    assert "agents[0]" in str(info.value)


def test_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(AgentLoadError, match="'x' is used twice"):
        fleet(tmp_path, '[[agents]]\nclass = "agents.momentum:MomentumAgent"\nname = "x"\n' * 2)


def test_syntax_error_in_agent_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("from agents import Agent\n\nclass B(Agent)\n    pass\n")
    with pytest.raises(AgentLoadError, match=r"broken.py:3: .*syntax error"):
        load_agent_class("broken.py:B", tmp_path)


def test_agent_that_never_trades_is_refused(tmp_path: Path) -> None:
    (tmp_path / "idle.py").write_text("from agents import Agent\n\nclass Idle(Agent):\n    x = 1\n")
    with pytest.raises(AgentLoadError, match="overrides neither on_bar nor on_batch"):
        load_agent_class("idle.py:Idle", tmp_path)


def test_file_agent_is_pickled_by_value_with_its_sibling_module(tmp_path: Path) -> None:
    """The class travels with its code, so actors on other machines need no copy of the file."""
    (tmp_path / "helper_math.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "mine.py").write_text(
        "from agents import Agent, Signal\nfrom helper_math import double\n\n"
        "class Mine(Agent):\n    k = 1\n    def on_bar(self, bar):\n        return Signal(bar.symbol, double(0.25))\n"
    )
    cls = load_agent_class("mine.py:Mine", tmp_path)
    blob = ray.cloudpickle.dumps(cls)
    (tmp_path / "mine.py").unlink()
    (tmp_path / "helper_math.py").unlink()
    clone = pickle.loads(blob)
    agent = clone(name="m", symbols=["AAA"])
    assert agent.on_bar(type("B", (), {"symbol": "AAA"})()).weight == 0.5


def test_parameter_named_like_an_agent_attribute_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clash.py").write_text(
        "from agents import Agent\n\nclass Clash(Agent):\n    symbols = ('X',)\n"
        "    def on_bar(self, bar):\n        return None\n"
    )
    with pytest.raises(
        AgentLoadError, match="class attribute 'symbols' would replace the Agent's own 'symbols'"
    ):
        fleet(tmp_path, '[[agents]]\nclass = "clash.py:Clash"\n')


def test_agent_that_cannot_be_pickled_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "locked.py").write_text(
        "import threading\nfrom agents import Agent\n\nLOCK = threading.Lock()\n\nclass Locked(Agent):\n"
        "    def on_bar(self, bar):\n        with LOCK:\n            return None\n"
    )
    with pytest.raises(AgentLoadError, match=r"cannot be sent to its actor .*must be created in on_start"):
        load_agent_class("locked.py:Locked", tmp_path)
