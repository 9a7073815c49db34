"""Isolation tiers: shared hosts, mixed fleets, containment of slow agents, live mode."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from agents import Agent, Signal
from agents.model import BarBatch
from federation.config import load_config
from federation.live import newest
from federation.runners import AgentBlockResult, RunnerLimits, pack
from federation.runners.lane import LaneRunner
from federation.runners.shared import _HostService
from federation.supervisor import run_fleet
from tests.test_run import MEASURED, check_consistency, ledger_for, write_fleet

HANGER = """
import time
from agents import Agent, Signal

class Hanger(Agent):
    at = 30
    spin = False

    def on_start(self):
        self.n = 0

    def on_bar(self, bar):
        self.n += 1
        if self.n == self.at:
            if self.spin:
                while True:
                    pass
            time.sleep(3600)
        return Signal(bar.symbol, 0.2 if self.n % 20 < 10 else -0.2)
"""

TWO_MOMENTUM = """
[[agents]]
class = "agents.momentum:MomentumAgent"
grid = { fast = [5, 10] }
params = { slow = 30 }
[[agents]]
class = "agents.mean_reversion:MeanReversionAgent"
count = 2
"""


# ------------------------------------------------------------------------------------------- unit level
def test_pack_balances_cost_and_is_deterministic() -> None:
    groups = pack([3, 1, 1, 1, 2, 2], 2)
    assert groups == [[0, 1, 2], [3, 4, 5]] or sorted(map(len, groups)) == [3, 3]
    assert sum(len(g) for g in groups) == 6 and sorted(i for g in groups for i in g) == list(range(6))
    loads = [sum([3, 1, 1, 1, 2, 2][i] for i in g) for g in groups]
    assert loads == [5, 5]
    assert pack([1] * 5, 8) == [[0], [1], [2], [3], [4]], "never more hosts than agents"
    assert pack([1, 1, 1], 1) == [[0, 1, 2]]
    assert pack([2, 2], 2) == pack([2, 2], 2)


def test_lane_gives_up_on_an_overrunning_call_and_runs_the_rest() -> None:
    late: list[tuple[str, object]] = []
    lanes = LaneRunner(lambda name, result: late.append((name, result)))
    calls = [("a", lambda: 1), ("slow", lambda: time.sleep(2) or "slow-done"), ("b", lambda: 2)]
    started = time.perf_counter()
    done, overran = lanes.run(calls, deadline_s=0.1)
    assert time.perf_counter() - started < 1.5, "b must not wait for the slow call to end"
    assert done == {"a": 1, "b": 2} and overran == ["slow"]
    time.sleep(2.5)
    assert late == [("slow", "slow-done")], "the slow call's result is handed over when it ends"
    assert lanes.run([("c", lambda: 3)], 0.1) == ({"c": 3}, [])


def test_lane_interrupt_stops_a_spinning_call() -> None:
    lanes = LaneRunner(lambda name, result: None)
    state = {"spins": 0}

    def spin() -> None:
        while True:
            state["spins"] += 1

    _, overran = lanes.run([("spinner", spin)], deadline_s=0.05)
    assert overran == ["spinner"]
    lanes.abandoned["spinner"].interrupt()
    time.sleep(0.2)
    before = state["spins"]
    time.sleep(0.1)
    assert state["spins"] == before, "the abandoned thread must have stopped"


class _Recorder(Agent):
    """Records the length of every batch it receives; sleeps ``delay`` seconds on its first call."""

    delay = 0.0

    def on_start(self) -> None:
        self.seen: list[int] = []

    def on_batch(self, batch: BarBatch) -> np.ndarray:
        self.seen.append(len(batch))
        if self.delay and len(self.seen) == 1:
            time.sleep(self.delay)
        return np.full((len(batch), len(self.symbols)), 0.1)

    def on_bar(self, bar: object) -> Signal | None:
        return None


def _bar(i: int) -> BarBatch:
    one = np.array([[100.0 + i]])
    return BarBatch(("X",), np.array([i], dtype=np.int64), one, one, one, one, one, np.ones((1, 1), bool))


def test_live_host_coalesces_a_slow_agents_missed_bars_without_holding_up_the_others() -> None:
    limits = RunnerLimits(call_timeout_s=10, live=True, decision_timeout_s=0.05)
    agents = [
        (_Recorder, {"name": "slow", "symbols": ("X",), "params": {"delay": 1.5}, "capital": 1.0}),
        (_Recorder, {"name": "fast", "symbols": ("X",), "params": {}, "capital": 1.0}),
    ]
    host = _HostService(agents, limits)
    assert host.start() == []
    answers: list[list[AgentBlockResult]] = []
    for i in range(8):
        started = time.perf_counter()
        answers.append(host.process(_bar(i), {}))
        assert time.perf_counter() - started < 1.0, f"tick {i} was held up by the slow agent"
        time.sleep(0.3)
    slow, fast = host.hosts["slow"].agent, host.hosts["fast"].agent
    assert fast.seen == [1] * 8  # type: ignore[attr-defined]
    # The slow agent answered its first bar late, then got the bars it missed in one batch.
    assert slow.seen[0] == 1 and slow.seen[1] > 1 and sum(slow.seen) == 8  # type: ignore[attr-defined]
    names = [r.name for out in answers for r in out]
    assert names.count("fast") == 8 and names.count("slow") == len(slow.seen)  # type: ignore[attr-defined]
    assert not host.suspended


def test_newest_keeps_each_symbols_last_signal() -> None:
    w = np.array([[0.1, np.nan], [np.nan, -0.5], [0.3, np.nan]])
    c = np.array([[1.0, 1.0], [1.0, 0.4], [0.7, 1.0]])
    res = newest(AgentBlockResult("a", w, c, bars=6, signals=3))
    assert res.weights.tolist() == [[0.3, -0.5]] and res.confidences.tolist() == [[0.7, 0.4]]
    assert res.bars == 6 and res.signals == 3


# ------------------------------------------------------------------------------------------ whole runs
pytestmark_ray = pytest.mark.usefixtures("ray_session")


@pytestmark_ray
def test_shared_tier_gives_the_same_results_as_the_actor_tier(tmp_path: Path) -> None:
    config = write_fleet(tmp_path, TWO_MOMENTUM)
    actor = run_fleet(load_config(config))
    shared = run_fleet(load_config(config, overrides={"isolation": "shared", "shared_hosts": 2}))
    assert {a.isolation for a in actor.agents} == {"actor"}
    assert {a.isolation for a in shared.agents} == {"shared"}
    assert {a.sharing for a in shared.agents} == {2}, "4 agents packed on 2 hosts"
    assert shared.portfolio == actor.portfolio
    skip = MEASURED | {"isolation"}
    assert [a.model_dump(exclude=skip) for a in shared.agents] == [
        a.model_dump(exclude=skip) for a in actor.agents
    ]
    for a in shared.agents + actor.agents:
        assert a.status == "active" and a.uss_mb is not None and a.uss_mb > 0 and a.node_id


@pytestmark_ray
def test_mixed_fleet_reports_each_agents_tier(tmp_path: Path) -> None:
    config = write_fleet(
        tmp_path,
        """
        [[agents]]
        class = "agents.momentum:MomentumAgent"
        isolation = "actor"
        [[agents]]
        class = "agents.mean_reversion:MeanReversionAgent"
        isolation = "shared"
        count = 3
        """,
        extra="[federation.x]\n".replace("[federation.x]\n", ""),
    )
    summary = run_fleet(load_config(config))
    tiers = {a.name: (a.isolation, a.sharing) for a in summary.agents}
    assert tiers["MomentumAgent"] == ("actor", 1)
    shared = [t for n, t in tiers.items() if n.startswith("MeanReversion")]
    assert len(shared) == 3 and all(t[0] == "shared" for t in shared)
    assert all(a.fills > 0 for a in summary.agents)
    check_consistency(ledger_for(config), summary.run_id, __import__("decimal").Decimal(100000))


def _hang_fleet(tmp_path: Path, tier: str, spin: bool) -> Path:
    (tmp_path / "hanger.py").write_text(HANGER)
    return write_fleet(
        tmp_path,
        f"""
        [[agents]]
        class = "hanger.py:Hanger"
        name = "hanger"
        isolation = "{tier}"
        params = {{ spin = {str(spin).lower()} }}
        [[agents]]
        class = "agents.momentum:MomentumAgent"
        isolation = "{tier}"
        params = {{ fast = 5, slow = 20 }}
        """,
    )


@pytestmark_ray
@pytest.mark.parametrize(("tier", "spin"), [("shared", False), ("shared", True), ("actor", False)])
def test_a_hanging_agent_is_suspended_and_the_others_finish(tmp_path: Path, tier: str, spin: bool) -> None:
    config = _hang_fleet(tmp_path, tier, spin)
    cfg = load_config(config, overrides={"agent_timeout_s": 1.5, "shared_hosts": 1})
    started = time.perf_counter()
    summary = run_fleet(cfg)
    assert time.perf_counter() - started < 60
    assert summary.status == "completed"
    hanger, momentum = summary.agents
    assert hanger.status == "suspended" and hanger.errors >= 1
    assert hanger.last_error is not None and "suspended for the rest of the run" in hanger.last_error
    assert momentum.status == "active" and momentum.bars == 2 * 503 and momentum.fills > 0
    assert hanger.bars < momentum.bars
    ledger = ledger_for(config)
    events = ledger.events(summary.run_id, "agent_suspended")
    assert [e["agent"] for e in events] == ["hanger"]
    check_consistency(ledger, summary.run_id, __import__("decimal").Decimal(100000))


@pytestmark_ray
def test_live_mode_runs_ticks_and_reports_latency(tmp_path: Path) -> None:
    config = write_fleet(
        tmp_path,
        TWO_MOMENTUM,
        extra=textwrap.dedent(
            """
            [live]
            tick_interval_ms = 5
            decision_timeout_ms = 200
            max_ticks = 120
            """
        ),
    )
    cfg = load_config(config, overrides={"mode": "live", "isolation": "shared"})
    summary = run_fleet(cfg)
    assert summary.status == "completed" and summary.mode == "live" and summary.live is not None
    assert summary.live.ticks == 120
    assert 0 < summary.live.tick_to_orders_p50_ms <= summary.live.tick_to_orders_p99_ms
    assert sum(a.bars for a in summary.agents) == 4 * 120 * 2, "every bar reaches every agent once"
    assert summary.portfolio.fills > 0
    check_consistency(ledger_for(config), summary.run_id, __import__("decimal").Decimal(100000))


class _BadOnFill(Agent):
    def on_start(self) -> None:
        self.seen: list[float] = []

    def on_fill(self, fill: object) -> None:
        qty = fill.quantity  # type: ignore[attr-defined]
        self.seen.append(qty)
        if qty < 0:
            raise RuntimeError("cannot handle sells")

    def on_bar(self, bar: object) -> Signal | None:
        return None


def test_every_fill_reaches_the_agent_even_when_on_fill_raises() -> None:
    from agents.model import Fill
    from federation.runners import AgentHost

    host = AgentHost(_BadOnFill, name="a", symbols=("X",), params={}, capital=1.0)
    host.start()
    fills = [Fill("X", 1, q, 10.0, 0.0, f"o{k}") for k, q in enumerate([5.0, -2.0, 1.0, -1.0])]
    result = host.process(_bar(1), fills)
    assert host.agent.seen == [5.0, -2.0, 1.0, -1.0]  # type: ignore[attr-defined]
    assert host.agent.position("X") == 3.0
    assert result.errors == 2 and all(e.hook == "on_fill" for e in result.error_details)
    assert "cannot handle sells" in result.error_details[0].message and result.cpu_s >= 0


def test_backtest_host_drops_the_late_answer_of_a_suspended_agent() -> None:
    limits = RunnerLimits(call_timeout_s=0.3, live=False)
    agents = [
        (_Recorder, {"name": "slow", "symbols": ("X",), "params": {"delay": 1.0}, "capital": 1.0}),
        (_Recorder, {"name": "ok", "symbols": ("X",), "params": {}, "capital": 1.0}),
    ]
    host = _HostService(agents, limits)
    host.start()
    first = host.process(_bar(0), {})
    assert {r.name: r.suspended for r in first} == {"ok": False, "slow": True}
    time.sleep(1.3)  # the sleeping call (not interruptible) has returned by now
    later = host.process(_bar(1), {})
    assert [r.name for r in later] == ["ok"], "no late rows from an earlier block, nothing from 'slow'"
    assert host.suspended == {"slow"}


def test_live_host_keeps_a_busy_agents_missed_bars_and_fills_when_its_budget_holds_it() -> None:
    limits = RunnerLimits(call_timeout_s=10, live=True, decision_timeout_s=0.05, max_backlog_rows=100)
    agents = [(_Recorder, {"name": "slow", "symbols": ("X",), "params": {"delay": 0.5}, "capital": 1.0})]
    host = _HostService(agents, limits)
    assert host.start() == []
    host.process(_bar(0), {})  # overruns the decision deadline: busy
    fill = ("X", 1, 5.0, 100.0, 0.0, "o1", False)
    host.process(_bar(1), {"slow": [fill]})  # missed while busy, with a fill
    time.sleep(0.7)  # the late answer arrives: the missed bar and fill are ready
    held = host.process(_bar(2), {}, hold={"slow": True})  # its budget throttles it now
    assert [r.held for r in held if r.name == "slow"][-1]
    host.process(_bar(3), {})
    agent = host.hosts["slow"].agent
    assert agent.position("X") == 5.0  # the fill it missed while busy was not lost
    assert sum(agent.seen) == 4  # type: ignore[attr-defined]  # and neither were the bars
