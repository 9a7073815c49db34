"""Agents whose process dies are restarted and restored; repeated failures quarantine them (real Ray)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from federation.config import load_config
from federation.ledger import SQLiteLedger
from federation.supervisor import Supervisor, run_fleet
from tests.test_run import check_consistency, ledger_for, write_fleet

pytestmark = pytest.mark.usefixtures("ray_session")

CRASHER = '''
import os
from pathlib import Path
from agents import Agent, Signal

class Crasher(Agent):
    """Trades a 5-bar breakout; its process dies (os._exit) after ``at`` new bars in each of its first
    ``crashes`` lives (a marker file per death, so a restarted process knows how many it had)."""

    at = 40
    crashes = 1
    marker = ""

    def on_start(self):
        self.n = 0
        self.life = 0  # bars this process saw for the first time (not in state(): per process)
        self.closes = []

    def on_bar(self, bar):
        self.n += 1
        self.life += 0 if self.replaying else 1
        self.closes = (self.closes + [bar.close])[-5:]
        if self.life == self.at:
            deaths = sorted(Path(self.marker).parent.glob(Path(self.marker).name + "*"))
            if len(deaths) < self.crashes:
                Path(f"{self.marker}{len(deaths)}").write_text("died")
                os._exit(1)
        if len(self.closes) == 5:
            return Signal(bar.symbol, 0.3 if bar.close >= max(self.closes) else -0.3)
        return None

    def state(self):
        return {"n": self.n, "closes": list(self.closes)}

    def restore(self, state):
        self.n, self.closes = state["n"], list(state["closes"])
'''


def _fleet(tmp_path: Path, *, crashes: int, extra: str = "", params: str = "") -> Path:
    (tmp_path / "crasher.py").write_text(CRASHER)
    marker = tmp_path / "died"
    return write_fleet(
        tmp_path,
        f"""
        [[agents]]
        class = "crasher.py:Crasher"
        name = "crasher"
        params = {{ crashes = {crashes}, marker = "{marker}" {params} }}
        [[agents]]
        class = "agents.momentum:MomentumAgent"
        params = {{ fast = 5, slow = 20 }}
        """,
        extra=extra,
    )


def _live(extra: str = "", *, tick_ms: int = 20, ticks: int = 120) -> str:
    return (
        f"""
        [live]
        tick_interval_ms = {tick_ms}
        decision_timeout_ms = 200
        max_ticks = {ticks}
        """
        + extra
    )


@pytest.mark.parametrize("mode", ["backtest", "live"])
def test_a_killed_agent_is_restarted_restored_and_trades_on(tmp_path: Path, mode: str) -> None:
    extra = (
        _live("[recovery]\ncheckpoint_every_bars = 10\n")
        if mode == "live"
        else ("[recovery]\ncheckpoint_every_bars = 10\n")
    )
    config = _fleet(tmp_path, crashes=1, extra=extra)
    overrides = {"mode": mode, "block_size": 16 if mode == "backtest" else None}
    summary = run_fleet(load_config(config, overrides=overrides))
    assert summary.status == "completed"
    crasher, momentum = summary.agents
    assert (crasher.restarts, crasher.status) == (1, "active"), crasher
    assert momentum.restarts == 0 and momentum.status == "active"
    assert list(tmp_path.glob("died*")) == [tmp_path / "died0"]  # it really died once
    assert summary.recovery is not None and summary.recovery.agent_restarts == 1
    assert summary.recovery.recovered == 1 and summary.recovery.checkpoints > 0
    ledger = ledger_for(config)
    assert [e["agent"] for e in ledger.events(summary.run_id, "agent_restarted")] == ["crasher"]
    recovered = ledger.events(summary.run_id, "agent_recovered")
    assert [e["agent"] for e in recovered] == ["crasher"]
    checkpoints = ledger.latest_checkpoints(summary.run_id)
    assert set(checkpoints) == {"crasher", "MomentumAgent"} and checkpoints["crasher"].bars > 0
    # after its restart it kept trading: it has fills, and the books still add up
    assert crasher.fills > 0
    check_consistency(ledger, summary.run_id, Decimal(100000))
    from rich.console import Console

    from federation.summary import render

    console = Console(record=True, width=200)
    render(summary, console)
    assert "recovery: 1 agent restarts (1 back" in console.export_text()


def test_an_agent_that_keeps_dying_is_quarantined_and_the_run_completes(tmp_path: Path) -> None:
    extra = "[recovery]\nmax_restarts = 2\ncheckpoint_every_bars = 1000\n"
    config = _fleet(tmp_path, crashes=10, extra=extra)
    summary = run_fleet(load_config(config, overrides={"block_size": 16}))
    assert summary.status == "completed"
    crasher, momentum = summary.agents
    assert crasher.status == "suspended" and crasher.restarts == 2
    assert summary.recovery is not None and "crasher" in summary.recovery.suspended
    assert summary.recovery.suspended["crasher"].startswith("restarts:")
    assert momentum.status == "active" and momentum.fills > 0
    events = ledger_for(config).events(summary.run_id, "agent_suspended")
    assert [(e["agent"], e["code"]) for e in events] == [("crasher", "restarts")]


SLOW_OR_FAILING = '''
import time
from agents import Agent, Signal

class Troubled(Agent):
    """Goes long; sleeps ``sleep_ms`` per bar; raises on every bar after ``fail_after`` bars (0: never)."""

    sleep_ms = 0.0
    fail_after = 0

    def on_start(self):
        self.n = 0

    def on_bar(self, bar):
        self.n += 1
        if self.sleep_ms:
            time.sleep(self.sleep_ms / 1000)
        if self.fail_after and self.n > self.fail_after:
            raise RuntimeError("feed me better data")
        return Signal(bar.symbol, 0.5)
'''


@pytest.mark.parametrize(
    ("params", "recovery", "reason", "pace"),
    [
        # one bar per call (ticks 300 ms apart), each call 250 ms: every call is a miss
        (
            "sleep_ms = 250.0",
            "miss_deadline_ms = 100\nmax_misses = 3\nmiss_window_s = 30",
            "misses",
            (300, 12),
        ),
        ("fail_after = 40", 'max_errors = 3\non_quarantine = "flatten"', "errors", (20, 120)),
    ],
)
def test_misses_or_errors_quarantine_an_agent(
    tmp_path: Path, params: str, recovery: str, reason: str, pace: tuple[int, int]
) -> None:
    (tmp_path / "troubled.py").write_text(SLOW_OR_FAILING)
    config = write_fleet(
        tmp_path,
        f"""
        [[agents]]
        class = "troubled.py:Troubled"
        name = "troubled"
        params = {{ {params} }}
        [[agents]]
        class = "agents.momentum:MomentumAgent"
        params = {{ fast = 5, slow = 20 }}
        """,
        extra=_live(f"[recovery]\n{recovery}\n", tick_ms=pace[0], ticks=pace[1]),
    )
    supervisor = Supervisor(load_config(config, overrides={"mode": "live"}), show_progress=False)
    summary = supervisor.run()
    troubled, momentum = summary.agents
    assert troubled.status == "suspended" and momentum.status == "active"
    assert supervisor.quarantined["troubled"].startswith(f"{reason}:")
    assert troubled.bars < momentum.bars
    events = ledger_for(config).events(summary.run_id, "agent_suspended")
    assert [(e["agent"], e["code"]) for e in events] == [("troubled", reason)]
    if reason == "errors":  # on_quarantine = "flatten": it had bought, then its targets went to zero
        ledger: SQLiteLedger = ledger_for(config)
        assert troubled.fills >= 2
        held = ledger.positions(summary.run_id, "troubled")
        assert all(q == 0 for q in held.values()), held
        assert events[0]["detail"]["targets"] == "flatten"


def test_spare_processes_are_paused_until_taken_and_a_restart_uses_one(tmp_path: Path) -> None:
    import psutil
    import ray

    from federation.runners import SparePool

    pool = SparePool(4)
    pool.fill()
    pool.wait_ready(timeout_s=60)
    assert pool.ready() == 4
    pids = [p for _, p in pool._ready]
    assert all(p is not None and psutil.Process(p).status() == psutil.STATUS_STOPPED for p in pids)
    spares = [pool.take() for _ in range(3)]
    answers = ray.get([s.pid.remote() for s in spares], timeout=30)  # resumed: they answer
    assert all(pid in pids and psutil.Process(pid).status() != psutil.STATUS_STOPPED for _, pid in answers)
    pool.fill()  # a quarter or less left: refilled, one process start at a time
    for _ in range(3):
        assert len(pool._starting) == 1
        pool.wait_ready(timeout_s=60)
        pool.fill()
    assert pool.ready() == 4 and not pool._starting
    pool.fill()
    assert not pool._starting  # full: nothing more
    pool.kill()
    for spare in spares:
        ray.kill(spare)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() == psutil.STATUS_STOPPED for p in pids)

    # a live run whose agent dies takes a spare (no process start) and recovers
    extra = _live("[recovery]\ncheckpoint_every_bars = 10\nspare_processes = 2\n")
    config = _fleet(tmp_path, crashes=1, extra=extra)
    supervisor = Supervisor(load_config(config, overrides={"mode": "live"}), show_progress=False)
    summary = supervisor.run()
    crasher = summary.agents[0]
    assert (crasher.restarts, crasher.status) == (1, "active")
    assert supervisor._spares is not None and supervisor._spares.taken == 1
    link = supervisor.execution
    assert link is not None and link.standby is None  # released at the end


def test_a_killed_execution_actor_is_replaced_by_its_standby_process(tmp_path: Path) -> None:
    import threading

    import ray

    config = _fleet(tmp_path, crashes=0, extra=_live())
    supervisor = Supervisor(load_config(config, overrides={"mode": "live"}), show_progress=False)
    seen: dict[str, object] = {}

    def kill_soon(runners: object) -> None:
        def kill() -> None:
            link = supervisor.execution
            assert link is not None
            seen["standby"] = link.standby
            ray.kill(link.handle, no_restart=True)

        threading.Timer(0.8, kill).start()

    supervisor.on_ready = kill_soon
    summary = supervisor.run()
    assert summary.status == "completed"
    link = supervisor.execution
    assert link is not None and len(link.restarts) == 1
    assert seen["standby"] is not None and link.handle == seen["standby"]
    assert summary.recovery is not None and summary.recovery.execution_restarts == 1
    events = ledger_for(config).events(summary.run_id, "execution_recovered")
    assert len(events) == 1
    check_consistency(ledger_for(config), summary.run_id, Decimal(100000))
