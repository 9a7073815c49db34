"""Agent recovery: checkpoints, restore + replay, restarts of real Ray actors, quarantine decisions and
injected hook faults. The built-in agents run on real daily data (LEAN sample: SPY, QQQ, IWM)."""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import time
from typing import Any

import numpy as np
import pytest
import ray
from pydantic import ValidationError

from agents import Agent, Signal
from agents.mean_reversion import MeanReversionAgent
from agents.model import Bar, BarBatch, FillRow
from agents.momentum import MomentumAgent
from federation.chaos.hooks import HookFaults, InjectedFault
from federation.config import RecoverySettings
from federation.recovery import AgentRecovery
from federation.runners import ActorRunner, AgentBlockResult, AgentHost, RunnerLimits, SharedRunner
from tests.test_builtin_agents import load_lean_daily, make_batch, rows

SYMBOLS = ("SPY", "QQQ", "IWM")
AGENTS: list[tuple[type[Agent], dict[str, Any]]] = [
    (MomentumAgent, {"fast": 10, "slow": 30}),
    (MeanReversionAgent, {"lookback": 15, "entry_z": 1.5}),
]
CUTS = [0, 5, 40, 41, 70, 150, 153, 160, 300, 320, 330, 420, 600]
"""Block boundaries: blocks under SMALL_BATCH rows go through on_bar, longer ones are vectorized."""
CHECKPOINT_AFTER = 3
"""The snapshot is taken with block 3; blocks 4..6 are replayed; the process dies after block 6."""
DIES_AFTER = 6


@pytest.fixture(scope="module")
def market() -> BarBatch:
    data = make_batch({s: load_lean_daily(s.lower()) for s in SYMBOLS})
    return rows(data, 2000, 2000 + CUTS[-1])


def blocks(market: BarBatch) -> list[BarBatch]:
    return [rows(market, a, b) for a, b in itertools.pairwise(CUTS)]


def fills_for(k: int, batch: BarBatch) -> list[FillRow]:
    """A fill on some blocks (positions must survive the restart)."""
    if k % 2:
        return []
    return [("SPY", int(batch.ts[0]), float(k + 1), 100.0, 0.1, f"t-{k}", False)]


def kwargs(name: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "symbols": SYMBOLS, "params": params, "capital": 1000.0, **extra}


def same(a: AgentBlockResult, b: AgentBlockResult) -> bool:
    return np.array_equal(a.weights, b.weights, equal_nan=True) and np.array_equal(
        a.confidences, b.confidences, equal_nan=True
    )


def reference(cls: type[Agent], params: dict[str, Any], market: BarBatch) -> list[AgentBlockResult]:
    """An uninterrupted agent's results, block by block."""
    host = AgentHost(cls, **kwargs("ref", params))
    assert host.start() is None
    return [host.process(b, fills_for(k, b)) for k, b in enumerate(blocks(market))]


# --------------------------------------------------------------------------------------- AgentHost
@pytest.mark.parametrize(("cls", "params"), AGENTS, ids=["momentum", "mean-reversion"])
def test_restore_and_replay_reproduce_the_uninterrupted_signals(
    market: BarBatch, cls: type[Agent], params: dict[str, Any]
) -> None:
    expected = reference(cls, params, market)
    assert sum(r.signals for r in expected[DIES_AFTER + 1 :]) >= 5, "the comparison must see signals"
    parts = blocks(market)
    first = AgentHost(cls, **kwargs("a", params))
    first.start()
    snapshot = None
    for k in range(DIES_AFTER + 1):
        result = first.process(parts[k], fills_for(k, parts[k]), checkpoint=k == CHECKPOINT_AFTER)
        assert same(result, expected[k])
        if k == CHECKPOINT_AFTER:
            snapshot = result.checkpoint
        else:
            assert result.checkpoint is None
    assert snapshot is not None
    content = pickle.loads(snapshot)
    assert set(content) == {"state", "positions", "now"} and content["positions"]["SPY"] == 1.0 + 3.0

    second = AgentHost(cls, **kwargs("a", params))  # the restarted process
    assert second.start() is None
    assert second.restore_snapshot(snapshot) is None
    calls = [(parts[k], fills_for(k, parts[k])) for k in range(CHECKPOINT_AFTER + 1, DIES_AFTER + 1)]
    replayed = second.replay(calls)
    assert replayed == sum(int(parts[k].valid.sum()) for k in range(CHECKPOINT_AFTER + 1, DIES_AFTER + 1))
    assert second.agent._positions == first.agent._positions and second.agent._now == first.agent._now
    for k in range(DIES_AFTER + 1, len(parts)):
        got = second.process(parts[k], fills_for(k, parts[k]))
        assert same(got, expected[k]), f"block {k} differs after restore + replay"
    fresh = AgentHost(cls, **kwargs("a", params))  # without its state the agent would say otherwise
    fresh.start()
    later = [fresh.process(parts[k], []) for k in range(DIES_AFTER + 1, len(parts))]
    assert not all(same(a, b) for a, b in zip(later, expected[DIES_AFTER + 1 :], strict=True))


class _Spender(Agent):
    """Pays for a quote on every bar unless replaying; records what it saw."""

    def on_start(self) -> None:
        self.seen: list[tuple[int, bool]] = []
        self.n = 0

    def on_bar(self, bar: Bar) -> Signal | None:
        self.seen.append((bar.ts, self.replaying))
        with self.spend("api_calls", estimate=1):
            self.n += 1
        return Signal(bar.symbol, 0.1)

    def state(self) -> dict[str, Any]:
        return {"n": self.n}

    def restore(self, state: dict[str, Any]) -> None:
        self.n = state["n"]


def test_replay_sets_replaying_and_charges_no_budget(market: BarBatch) -> None:
    parts = blocks(market)
    host = AgentHost(_Spender, name="s", symbols=("SPY",), params={}, capital=1.0)
    host.start()
    first = host.process(parts[0], [], checkpoint=True)
    assert first.spent == {"api_calls": 5 * 100_000_000} and first.checkpoint is not None
    assert host.agent.replaying is False
    again = AgentHost(_Spender, name="s", symbols=("SPY",), params={}, capital=1.0)
    again.start()
    assert again.restore_snapshot(first.checkpoint) is None
    assert again.replay([(parts[1], [])]) == len(parts[1])
    agent: Any = again.agent
    assert agent.n == 5 + len(parts[1]), "the replayed bars ran the agent's code"
    assert all(flag for _, flag in agent.seen) and agent.replaying is False
    after = again.process(parts[2], [])
    assert after.spent == {"api_calls": 1 * 100_000_000}, "replayed spending was charged nothing"
    assert agent.seen[-1][1] is False


class _BadState(Agent):
    broken = "raise"

    def on_bar(self, bar: Bar) -> None:
        return None

    def state(self) -> dict[str, Any]:
        if self.broken == "raise":
            raise RuntimeError("cannot save")
        return {"lock": __import__("threading").Lock()}


@pytest.mark.parametrize("broken", ["raise", "unpicklable"])
def test_a_failing_state_is_a_hook_error_not_a_crash(market: BarBatch, broken: str) -> None:
    host = AgentHost(_BadState, name="b", symbols=("SPY",), params={"broken": broken}, capital=1.0)
    host.start()
    result = host.process(blocks(market)[0], [], checkpoint=True)
    assert result.checkpoint is None and result.errors == 1
    assert result.error_details[0].hook == "state" and result.error_details[0].traceback
    assert host.snapshot() is None
    assert host.process(blocks(market)[1], []).error_details[0].hook == "state", "reported next call"


def test_a_failing_restore_is_reported(market: BarBatch) -> None:
    host = AgentHost(MomentumAgent, **kwargs("m", {"fast": 10, "slow": 30}))
    host.start()
    other = AgentHost(MomentumAgent, **kwargs("m", {"fast": 10, "slow": 20}))
    other.start()
    other.process(blocks(market)[1], [])
    snapshot = other.snapshot()
    assert snapshot is not None
    error = host.restore_snapshot(snapshot)
    assert error is not None and error.hook == "restore" and "slow" in error.message


# ------------------------------------------------------------------------------------- hook faults
def _injected(faults: HookFaults, name: str, market: BarBatch, incarnation: int = 0) -> list[Any]:
    host = AgentHost(
        MomentumAgent, **kwargs(name, {"fast": 10, "slow": 30}, faults=faults, incarnation=incarnation)
    )
    host.start()
    out = []
    for k in range(40):
        result = host.process(rows(market, k, k + 1), [])
        out.append((result.injected, [e.hook for e in result.error_details]))
    return out


def test_hook_faults_are_reproducible_from_the_seed(market: BarBatch) -> None:
    faults = HookFaults(seed=7, raise_rate=0.2, slow_rate=0.2, slow_ms=1.0)
    one = _injected(faults, "a", market)
    assert one == _injected(faults, "a", market), "same seed and agent: same faults"
    assert one != _injected(faults, "b", market), "each agent draws its own stream"
    assert one != _injected(faults, "a", market, incarnation=1), "a restarted agent draws afresh"
    assert one != _injected(faults.model_copy(update={"seed": 8}), "a", market)
    raised = [k for k, (inj, _) in enumerate(one) if inj.get("raise")]
    slow = [k for k, (inj, _) in enumerate(one) if inj.get("slow")]
    assert 3 <= len(raised) <= 15 and 3 <= len(slow) <= 15 and not set(raised) & set(slow)
    assert all(one[k][1] == ["on_batch"] for k in raised), "an injected raise is the hook's error"
    assert all(one[k][1] == [] for k in slow)


def test_injected_raise_carries_its_type_and_replay_injects_nothing(market: BarBatch) -> None:
    host = AgentHost(
        MomentumAgent, **kwargs("x", {"fast": 10, "slow": 30}, faults=HookFaults(raise_rate=1.0))
    )
    host.start()
    result = host.process(rows(market, 0, 3), [])
    assert result.injected == {"raise": 1} and InjectedFault.__name__ in result.error_details[0].message
    later = rows(market, 3, 6)
    assert host.replay([(later, [])]) == int(later.valid.sum()) > 0
    assert host._faults is not None and host._faults.take() == {}


def test_hang_and_slow_faults_sleep(market: BarBatch) -> None:
    host = AgentHost(
        MomentumAgent, **kwargs("h", {"fast": 10, "slow": 30}, faults=HookFaults(hang_rate=1.0, hang_s=0.3))
    )
    host.start()
    started = time.perf_counter()
    assert host.process(rows(market, 0, 1), []).injected == {"hang": 1}
    assert time.perf_counter() - started >= 0.3
    with pytest.raises(ValidationError, match="sum to at most 1"):
        HookFaults(raise_rate=0.5, hang_rate=0.4, slow_rate=0.2)
    with pytest.raises(ValidationError):
        HookFaults(raise_rat=0.1)  # type: ignore[call-arg]


# ------------------------------------------------------------------------------------ AgentRecovery
class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _result(
    name: str, *, checkpoint: bytes | None = None, wall_s: float = 0.0, errors: int = 0, held: bool = False
) -> AgentBlockResult:
    empty = np.zeros((0, 1))
    return AgentBlockResult(
        name, empty, empty, checkpoint=checkpoint, wall_s=wall_s, errors=errors, held=held
    )


def _bars(start: int, n: int) -> BarBatch:
    ts = np.arange(start, start + n, dtype=np.int64)
    x = np.full((n, 1), 100.0)
    return BarBatch(("X",), ts, x, x, x, x, x, np.ones((n, 1), bool))


def _fill(k: int) -> FillRow:
    return ("X", k, 1.0, 100.0, 0.0, f"f-{k}", False)


def test_checkpoints_fall_due_by_bars_or_time_and_reset_the_replay_log() -> None:
    clock = _Clock()
    settings = RecoverySettings(checkpoint_every_bars=10, checkpoint_every_s=5.0)
    rec = AgentRecovery(["a", "b"], settings, clock=clock)
    assert rec.checkpoints_due(["a", "b"]) == set()
    rec.sent("a", _bars(0, 6), [_fill(0)])
    rec.sent("a", _bars(6, 4), [])
    assert rec.checkpoints_due(["a", "b"]) == {"a"}, "10 bars since the start"
    rec.answered("a", _result("a", held=True))
    assert rec.checkpoints_due(["a"]) == {"a"}, "a held call took no checkpoint: still due"
    rec.answered("a", _result("a", checkpoint=b"snap"))
    assert rec.take_checkpoints() == [rec.checkpoint("a")] and rec.take_checkpoints() == []
    cp = rec.checkpoint("a")
    assert (cp.data, cp.ts, cp.bars, cp.taken_s) == (b"snap", 9, 10, 1000.0)
    assert rec.replay("a") == [] and rec.checkpoints_due(["a"]) == set()
    clock.t += 5.0
    assert rec.checkpoints_due(["a", "b"]) == {"a", "b"}, "5 s since the last one"
    rec.answered("b", _result("b"))  # asked, but no snapshot came (state() failed): not asked at once
    assert rec.checkpoints_due(["b"]) == set() and rec.checkpoint("b").data is None


def test_replay_log_is_bounded_keeps_fills_and_records_the_loss() -> None:
    rec = AgentRecovery(["a"], RecoverySettings(replay_bars=10, checkpoint_every_bars=1000), clock=_Clock())
    for k in range(4):
        rec.sent("a", _bars(4 * k, 4), [_fill(k)])
    log = rec.replay("a")
    assert sum(len(b) for b, _ in log) == 8 and [int(b.ts[0]) for b, _ in log] == [8, 12]
    assert log[0][1] == [_fill(0), _fill(1), _fill(2)], "dropped calls' fills go with the next call"
    assert rec.replay_incomplete("a") and rec.dropped_bars("a") == 8
    rec.sent("a", _bars(16, 2), [_fill(9)], bars=False)  # held without its bars: fills only
    assert len(rec.replay("a")[-1][0]) == 0 and rec.replay("a")[-1][1] == [_fill(9)]
    rec.answered("a", _result("a", checkpoint=b"s"))
    assert not rec.replay_incomplete("a") and rec.replay("a") == []
    zero = AgentRecovery(["a"], RecoverySettings(replay_bars=0), clock=_Clock())
    zero.sent("a", _bars(0, 3), [_fill(1)])
    zero.sent("a", _bars(3, 3), [_fill(2)])
    assert [(len(b), f) for b, f in zero.replay("a")] == [(0, [_fill(1), _fill(2)])]


def test_restarts_within_the_window_end_in_quarantine() -> None:
    clock = _Clock()
    rec = AgentRecovery(["a", "b"], RecoverySettings(max_restarts=2, restart_window_s=60.0), clock=clock)
    rec.sent("a", _bars(0, 3), [_fill(0)])
    assert rec.died("a") == "restart"
    clock.t += 0.5
    assert rec.answered("a", _result("a")) == "continue"
    clock.t += 10
    assert rec.died("a") == "restart"
    clock.t += 1.5
    rec.answered("a", _result("a"))
    clock.t += 10
    assert rec.died("a") == "quarantine", "a third death within 60 s"
    assert rec.quarantined["a"].reason == "restarts" and "max_restarts" in rec.quarantined["a"].message
    assert rec.died("a") == "quarantine" and rec.answered("a", _result("a")) == "quarantine"
    assert rec.recovery_inputs(["a", "b"]) == ({"b": None}, {"b": []})
    stats = rec.recovery_stats()
    assert (stats.count, stats.p50_s, stats.max_s) == (2, 1.0, 1.5) and stats.p99_s == pytest.approx(1.49)
    clock.t += 100
    assert rec.died("b") == "restart" and rec.died("b") == "restart" and rec.died("b") == "quarantine"
    spaced = AgentRecovery(["c"], RecoverySettings(max_restarts=1, restart_window_s=5.0), clock=clock)
    for _ in range(4):
        assert spaced.died("c") == "restart"
        clock.t += 6
    assert (
        spaced.restarts == 4
        and AgentRecovery(["d"], RecoverySettings(max_restarts=0)).died("d") == "quarantine"
    )


def test_recovery_inputs_give_the_snapshot_and_every_call_since() -> None:
    rec = AgentRecovery(["a"], RecoverySettings(checkpoint_every_bars=3), clock=_Clock())
    rec.sent("a", _bars(0, 3), [])
    rec.answered("a", _result("a", checkpoint=b"s1"))
    rec.sent("a", _bars(3, 2), [_fill(1)])
    rec.sent("a", _bars(5, 2), [])  # the call in flight when it died is replayed too
    assert rec.died("a") == "restart"
    snapshots, replay = rec.recovery_inputs(["a"])
    assert snapshots == {"a": b"s1"} and [int(b.ts[0]) for b, _ in replay["a"]] == [3, 5]
    assert replay["a"][0][1] == [_fill(1)]
    assert rec.checkpoints_due(["a"]) == set(), "no checkpoint is asked of a dead agent"


def test_misses_and_errors_quarantine_within_their_windows() -> None:
    clock = _Clock()
    settings = RecoverySettings(
        miss_deadline_ms=50, max_misses=3, miss_window_s=1.0, max_errors=4, error_window_s=10
    )
    rec = AgentRecovery(["a", "b", "c"], settings, miss_deadline_s=9.0, clock=clock)
    assert rec.miss_deadline_s == 0.05, "the setting wins over the run's fallback"
    for _ in range(5):  # misses spread out more than the window: never 3 within 1 s
        assert rec.answered("a", _result("a"), elapsed_s=0.2) == "continue"
        clock.t += 0.6
    assert rec.misses == 5
    assert rec.answered("a", _result("a", wall_s=0.01), elapsed_s=0.01) == "continue"
    assert rec.answered("b", _result("b", wall_s=0.2)) == "continue", "a shared host: the agent's own time"
    assert rec.answered("b", _result("b", wall_s=0.2)) == "continue"
    assert rec.answered("b", _result("b", wall_s=0.2)) == "quarantine"
    assert rec.quarantined["b"].reason == "misses"
    assert rec.answered("c", _result("c", errors=3)) == "continue"
    clock.t += 11
    assert rec.answered("c", _result("c", errors=3)) == "continue", "the first three left the window"
    assert rec.answered("c", _result("c", errors=1)) == "quarantine"
    assert rec.quarantined["c"].reason == "errors" and list(rec.quarantined) == ["b", "c"]
    lenient = AgentRecovery(["a"], RecoverySettings(), clock=clock)
    assert lenient.miss_deadline_s is None
    for _ in range(50):
        assert lenient.answered("a", _result("a", errors=10, wall_s=100.0)) == "continue"


# --------------------------------------------------------------------------------------- real Ray
pytestmark_ray = pytest.mark.usefixtures("ray_session")


def _kill_process(runner: Any) -> int:
    """SIGKILL the runner's process (as a crash would); its pid."""
    pid = ray.get(runner.usage())[0].pid
    os.kill(pid, signal.SIGKILL)
    return int(pid)


def _dead(ref: Any) -> bool:
    try:
        ray.get(ref, timeout=60)
    except ray.exceptions.RayActorError:
        return True
    return False


@pytestmark_ray
def test_actor_runner_restarts_after_its_process_is_killed_and_converges(market: BarBatch) -> None:
    cls, params = AGENTS[0]
    expected = reference(cls, params, market)
    parts = blocks(market)
    rec = AgentRecovery(["m"], RecoverySettings(checkpoint_every_bars=10_000, checkpoint_every_s=1e9))
    runner = ActorRunner(cls, kwargs("m", params))
    try:
        assert ray.get(runner.start()) == []
        for k in range(DIES_AFTER + 1):
            fills = {"m": fills_for(k, parts[k])}
            due = {"m"} if k == CHECKPOINT_AFTER else rec.checkpoints_due(["m"])
            ref = runner.process(ray.put(parts[k]), fills, None, checkpoint=due)
            rec.sent("m", parts[k], fills["m"])
            (result,) = ray.get(ref)
            assert same(result, expected[k]) and (result.checkpoint is not None) == (k == CHECKPOINT_AFTER)
            assert rec.answered("m", result) == "continue"
        pid = _kill_process(runner)
        k = DIES_AFTER + 1
        call = runner.process(ray.put(parts[k]), {"m": fills_for(k, parts[k])})
        rec.sent("m", parts[k], fills_for(k, parts[k]))  # in flight when it died: replayed
        assert _dead(call)
        assert rec.died("m") == "restart"
        runner.restart()
        snapshots, replay = rec.recovery_inputs(runner.names)
        assert snapshots["m"] is not None and len(replay["m"]) == DIES_AFTER + 1 - CHECKPOINT_AFTER
        assert ray.get(runner.recover(snapshots, replay)) == []
        assert ray.get(runner.usage())[0].pid != pid and runner.restarts == 1
        for k in range(DIES_AFTER + 2, len(parts)):
            (result,) = ray.get(runner.process(ray.put(parts[k]), {"m": fills_for(k, parts[k])}))
            assert same(result, expected[k]), f"block {k} differs after the restart"
            rec.answered("m", result)
        assert rec.recovery_stats().count == 1
    finally:
        runner.kill()


@pytestmark_ray
def test_shared_runner_restarts_the_whole_host_and_leaves_quarantined_agents_out(market: BarBatch) -> None:
    parts = blocks(market)
    expected = {
        n: reference(cls, params, market) for n, (cls, params) in zip(("m", "r"), AGENTS, strict=True)
    }
    agents = [(cls, kwargs(n, params)) for n, (cls, params) in zip(("m", "r"), AGENTS, strict=True)]
    runner = SharedRunner(agents, RunnerLimits(call_timeout_s=30))
    snapshots: dict[str, bytes | None] = {}
    try:
        assert ray.get(runner.start()) == []
        for k in range(CHECKPOINT_AFTER + 1):
            fills = {n: fills_for(k, parts[k]) for n in ("m", "r")}
            cp = {"m", "r"} if k == CHECKPOINT_AFTER else None
            for result in ray.get(runner.process(ray.put(parts[k]), fills, None, cp)):
                assert same(result, expected[result.name][k])
                if result.checkpoint is not None:
                    snapshots[result.name] = result.checkpoint
        assert set(snapshots) == {"m", "r"}
        _kill_process(runner)
        assert _dead(runner.process(ray.put(parts[CHECKPOINT_AFTER + 1]), {}))
        runner.restart()
        replay = {
            "m": [(parts[k], fills_for(k, parts[k])) for k in range(CHECKPOINT_AFTER + 1, DIES_AFTER + 1)]
        }
        assert ray.get(runner.recover({"m": snapshots["m"]}, replay)) == [], "'r' is quarantined"
        for k in range(DIES_AFTER + 1, len(parts)):
            out = ray.get(runner.process(ray.put(parts[k]), {"m": fills_for(k, parts[k])}))
            assert [r.name for r in out] == ["m"]
            assert same(out[0], expected["m"][k]), f"block {k} differs after the host restart"
        runner.suspend({"m"})
        assert ray.get(runner.process(ray.put(parts[-1]), {})) == []
    finally:
        runner.kill()
