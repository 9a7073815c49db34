"""The Agent base class and the host that runs it: parameters, hooks, signal checks, error containment."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agents import Agent, Bar, BarBatch, Fill, ParameterError, Signal
from federation.runners.host import AgentHost


def batch(n: int = 4, symbols: tuple[str, ...] = ("AAA", "BBB")) -> BarBatch:
    close = np.arange(1, n * len(symbols) + 1, dtype=float).reshape(n, len(symbols)) + 100
    valid = np.ones_like(close, dtype=bool)
    valid[1, 1] = False
    close[1, 1] = np.nan
    return BarBatch(symbols, np.arange(n, dtype=np.int64) * 10**9, close, close, close, close, close, valid)


class Params(Agent):
    window = 10
    threshold = 0.5
    label = "x"
    flags: list[int] = [1]  # noqa: RUF012

    def on_bar(self, bar: Bar) -> None:
        return None


def test_parameters_declared_as_class_attributes() -> None:
    assert Params.parameters() == {"window": 10, "threshold": 0.5, "label": "x", "flags": [1]}
    agent = Params(name="p", symbols=["AAA"], params={"window": 3, "threshold": 1})
    assert agent.window == 3 and agent.threshold == 1.0 and dict(agent.params)["label"] == "x"
    with pytest.raises(TypeError):
        agent.params["window"] = 5  # type: ignore[index]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"widnow": 3}, "unknown parameter 'widnow'; did you mean 'window'?"),
        ({"window": 2.5}, "parameter 'window' = 2.5 is invalid"),
        ({"window": True}, "parameter 'window' = True is invalid"),
        ({"label": 3}, "parameter 'label' = 3 is invalid"),
        ({"zzz": 1}, "Valid parameters: flags, label, threshold, window."),
    ],
)
def test_bad_parameters(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        Params(name="p", symbols=["AAA"], params=params)
    assert message in str(info.value) and "agent 'p'" in str(info.value)


class Echo(Agent):
    """Emits whatever ``plan`` says for each (row, symbol)."""

    plan: dict[str, Any] = {}  # noqa: RUF012

    def on_start(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.fills: list[Fill] = []

    def on_bar(self, bar: Bar) -> Any:
        self.seen.append((bar.symbol, bar.ts))
        out = self.plan.get(f"{bar.ts // 10**9}:{bar.symbol}")
        if out == "raise":
            raise RuntimeError(f"boom at {bar.ts}")
        return out

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)


def host(plan: dict[str, Any]) -> AgentHost:
    h = AgentHost(Echo, name="echo", symbols=("AAA", "BBB"), params={"plan": plan}, capital=1000.0)
    assert h.start() is None
    return h


def test_default_batch_hook_calls_on_bar_per_valid_bar_in_time_order() -> None:
    h = host({"0:AAA": Signal("AAA", 0.5), "2:BBB": [Signal("AAA", -1.0), Signal("BBB", 0.2, 0.3)]})
    res = h.process(batch(), [])
    agent = h.agent
    assert isinstance(agent, Echo)
    assert [s for s, _ in agent.seen] == ["AAA", "BBB", "AAA", "AAA", "BBB", "AAA", "BBB"]
    assert res.bars == 7 and res.signals == 3 and res.errors == 0
    assert res.weights[0].tolist()[0] == 0.5 and res.weights[2].tolist() == [-1.0, 0.2]
    assert res.confidences[2, 1] == 0.3 and np.isnan(res.weights[1]).all()


def test_invalid_signals_are_rejected_with_reasons_and_the_run_goes_on() -> None:
    h = host(
        {
            "0:AAA": Signal("AAA", float("nan")),
            "0:BBB": Signal("ZZZ", 0.5),
            "2:AAA": Signal("AAA", 1.5),
            "2:BBB": Signal("BBB", 0.5, confidence=2.0),
            "3:AAA": "not a signal",
            "3:BBB": Signal("BBB", 0.1),
        }
    )
    res = h.process(batch(), [])
    assert res.rejected == 5 and res.signals == 1
    text = " | ".join(res.rejections)
    for needle in (
        "not a finite number",
        "unknown symbol 'ZZZ'",
        "outside [-1, 1]",
        "confidence 2.0",
        "not a Signal",
    ):
        assert needle in text


def test_exception_in_on_bar_is_recorded_with_traceback_and_later_bars_still_run() -> None:
    h = host({"0:AAA": "raise", "3:BBB": Signal("BBB", 0.4)})
    res = h.process(batch(), [])
    assert res.errors == 1 and res.signals == 1
    err = res.error_details[0]
    assert err.hook == "on_bar" and err.ts == 0 and "RuntimeError: boom at 0" in err.message
    assert "Traceback" in err.traceback and "in on_bar" in err.traceback


def test_fills_update_position_before_on_fill() -> None:
    h = host({})
    fill = Fill("AAA", 5, 10.0, 100.0, 0.1, "r-O1")
    h.process(batch(), [fill, Fill("AAA", 6, -4.0, 101.0, 0.0, "r-X2", internal=True)])
    assert h.agent.position("AAA") == 6.0 and h.agent.position("BBB") == 0.0
    assert [f.client_order_id for f in h.agent.fills] == ["r-O1", "r-X2"]  # type: ignore[attr-defined]


class Vector(Agent):
    mode = "ok"

    def on_batch(self, batch: BarBatch) -> Any:
        n, s = len(batch), len(batch.symbols)
        if self.mode == "shape":
            return np.zeros((n + 1, s))
        if self.mode == "raise":
            raise ValueError("vector boom")
        w = np.full((n, s), np.nan)
        w[0, 0], w[1, 0], w[2, 0] = 0.3, np.inf, -3.0
        return w, np.full((n, s), 0.9)


@pytest.mark.parametrize(
    ("mode", "signals", "rejected", "errors"), [("ok", 1, 2, 0), ("shape", 0, 0, 1), ("raise", 0, 0, 1)]
)
def test_vectorized_agent_output_is_checked(mode: str, signals: int, rejected: int, errors: int) -> None:
    h = AgentHost(Vector, name="v", symbols=("AAA", "BBB"), params={"mode": mode}, capital=1.0)
    res = h.process(batch(), [])
    assert (res.signals, res.rejected, res.errors) == (signals, rejected, errors)
    assert res.weights.shape == (4, 2)
    if mode == "ok":
        assert res.weights[0, 0] == 0.3 and np.isnan(res.weights[1, 0]) and res.confidences[0, 0] == 0.9


def test_cpu_time_is_metered() -> None:
    class Busy(Agent):
        def on_bar(self, bar: Bar) -> None:
            sum(i * i for i in range(20_000))

    h = AgentHost(Busy, name="b", symbols=("AAA", "BBB"), params={}, capital=1.0)
    res = h.process(batch(50), [])
    assert res.cpu_s > 0.005 and h.cpu_s == res.cpu_s


def test_on_start_error_is_reported() -> None:
    class Bad(Agent):
        def on_start(self) -> None:
            raise ValueError("fast (50) must be < slow (20)")

        def on_bar(self, bar: Bar) -> None:
            return None

    error = AgentHost(Bad, name="b", symbols=("AAA",), params={}, capital=1.0).start()
    assert error is not None and error.hook == "on_start" and "fast (50)" in error.message
