"""The built-in agents on real SPY daily data (1998-2021).

The vectorized ``on_batch`` must give exactly the signals of the per-bar path, whatever the block size;
the signals themselves are checked against known market history and an independent numpy computation.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from agents import Agent, BarBatch, ParameterError
from agents.mean_reversion import MeanReversionAgent
from agents.momentum import MomentumAgent
from agents.rolling import SMALL_BATCH, RollingSums

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "lean" / "daily"
Signals = list[tuple[int, int, float, float]]

AGENTS: list[tuple[type[Agent], dict[str, Any]]] = [
    (MomentumAgent, {}),
    (MomentumAgent, {"fast": 50, "slow": 200, "long_only": True, "size": 0.5}),
    (MeanReversionAgent, {}),
    (MeanReversionAgent, {"lookback": 5, "entry_z": 1.5, "exit_z": 0.0}),
]
AGENT_IDS = ["momentum", "momentum-50-200-long-only", "mean-reversion", "mean-reversion-5"]


def load_lean_daily(symbol: str) -> tuple[np.ndarray, np.ndarray]:
    """LEAN daily csv ("YYYYMMDD HH:MM",o,h,l,c,v; prices x 10,000) -> (ts ns UTC, (N, 5) OHLCV)."""
    rows = [line.split(",") for line in (DATA / f"{symbol}.csv").read_text().splitlines() if line]
    days = np.array([f"{r[0][:4]}-{r[0][4:6]}-{r[0][6:8]}" for r in rows], dtype="datetime64[D]")
    values = np.array([r[1:] for r in rows], dtype=float)
    values[:, :4] /= 10_000
    return days.astype("datetime64[ns]").astype(np.int64), values


def make_batch(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> BarBatch:
    """Align several symbols on the union of their timestamps; missing bars are NaN and not valid."""
    ts = np.unique(np.concatenate([t for t, _ in series.values()]))
    arrays = np.full((5, ts.size, len(series)), np.nan)
    valid = np.zeros((ts.size, len(series)), dtype=bool)
    for j, (t, values) in enumerate(series.values()):
        rows = np.searchsorted(ts, t)
        arrays[:, rows, j] = values.T
        valid[rows, j] = True
    o, h, low, c, v = arrays
    return BarBatch(tuple(series), ts, o, h, low, c, v, valid)


def rows(batch: BarBatch, start: int, stop: int) -> BarBatch:
    cut = slice(start, stop)
    return BarBatch(
        batch.symbols,
        batch.ts[cut],
        batch.open[cut],
        batch.high[cut],
        batch.low[cut],
        batch.close[cut],
        batch.volume[cut],
        batch.valid[cut],
    )


def started(cls: type[Agent], params: dict[str, Any], symbols: tuple[str, ...]) -> Agent:
    agent = cls(name="t", symbols=symbols, params=params)
    agent.on_start()
    return agent


def per_bar(agent: Agent, batch: BarBatch) -> tuple[np.ndarray, np.ndarray]:
    """The base class's on_batch: on_bar for every bar."""
    out = Agent.on_batch(agent, batch)
    assert isinstance(out, tuple)
    return out


def vectorized(agent: Agent, batch: BarBatch, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    size = block or len(batch)
    parts = []
    for start in range(0, len(batch), size):
        out = agent.on_batch(rows(batch, start, start + size))
        assert isinstance(out, tuple)
        parts.append(out)
    return np.concatenate([w for w, _ in parts]), np.concatenate([c for _, c in parts])


def signals(out: tuple[np.ndarray, np.ndarray]) -> Signals:
    weights, confidences = out
    return [
        (int(t), int(j), float(weights[t, j]), float(confidences[t, j]))
        for t, j in zip(*np.nonzero(~np.isnan(weights)), strict=True)
    ]


def row_of(batch: BarBatch, day: str) -> int:
    return int(np.searchsorted(batch.ts, np.datetime64(day, "ns").astype(np.int64)))


def day_of(batch: BarBatch, row: int) -> str:
    return str(batch.ts[row].astype("datetime64[ns]").astype("datetime64[D]"))


def held(weights: np.ndarray) -> np.ndarray:
    """The weight in force at each row (last emitted, NaN before the first signal)."""
    last = np.maximum.accumulate(np.where(np.isnan(weights), -1, np.arange(weights.size)))
    return np.where(last >= 0, weights[last], np.nan)


@pytest.fixture(scope="module")
def spy() -> BarBatch:
    return make_batch({"SPY": load_lean_daily("spy")})


@pytest.fixture(scope="module")
def market() -> BarBatch:
    """SPY and GOOG; GOOG starts in 2004, so its column has invalid (NaN) rows before that."""
    return make_batch({"SPY": load_lean_daily("spy"), "GOOG": load_lean_daily("goog")})


@pytest.mark.parametrize(("cls", "params"), AGENTS, ids=AGENT_IDS)
def test_on_batch_gives_the_per_bar_signals_for_any_block_size(
    market: BarBatch, cls: type[Agent], params: dict[str, Any]
) -> None:
    assert (~market.valid[:, 1]).sum() > 1000
    assert 7 < SMALL_BATCH <= 50  # so the blocks below exercise both on_bar and the vectorized path
    expected = signals(per_bar(started(cls, params, market.symbols), market))
    assert min(sum(1 for s in expected if s[1] == j) for j in (0, 1)) >= 10
    for block in (1, 7, 50, 256, None):  # blocks under SMALL_BATCH rows go through on_bar
        got = signals(vectorized(started(cls, params, market.symbols), market, block))
        assert got == expected, f"block size {block}"


@pytest.mark.parametrize("span", [20, 100])
def test_rolling_sums_push_and_extend_agree_bit_for_bit(spy: BarBatch, span: int) -> None:
    x = spy.close[:600, 0] - spy.close[0, 0]  # 1998-2000: many ring turns, and quick
    values = np.stack((x, x * x), axis=1)
    spans = (1, 7, span)
    pushed = RollingSums.empty(span, 2)
    expected = np.full((len(x), len(spans), 2), np.nan)
    for t, (a, b) in enumerate(values.tolist()):
        pushed.push(a, b)
        for i, n in enumerate(spans):
            if pushed.count >= n:
                expected[t, i] = pushed.sum(0, n), pushed.sum(1, n)
    for block in (1, 2, 7, span, span + 1, span + 2, 1000, len(x)):
        extended = RollingSums.empty(span, 2)
        got = np.concatenate(
            [np.stack(extended.extend(values[s : s + block], spans), axis=1) for s in range(0, len(x), block)]
        )
        filled = ~np.isnan(expected)
        np.testing.assert_array_equal(got[filled], expected[filled], err_msg=f"block {block}")
        assert (extended.rings, extended.totals, extended.count) == (
            pushed.rings,
            pushed.totals,
            pushed.count,
        )


def test_rolling_sums_rounding_does_not_grow_with_the_series() -> None:
    # Without re-basing, cumulative sums of 300k values near 1e4 reach 3e9 and the window sums lose
    # about 5e-12 of relative precision; re-based every span + 1 values they keep ~1e-15.
    values = 1e4 + np.random.default_rng(3).normal(size=300_000)
    sums = RollingSums.empty(20, 1)
    (got,) = sums.extend(values[:, None], (20,))
    exact = [math.fsum(values[t - 19 : t + 1]) for t in range(len(values) - 500, len(values))]
    np.testing.assert_allclose(got[-500:, 0], exact, rtol=1e-14, atol=0)


def test_momentum_golden_and_death_crosses_of_2007_2010(spy: BarBatch) -> None:
    # 50/200-day SMAs of SPY, checked by hand: on 2007-12-20 fast 148.96 > slow 148.88, on 2007-12-21
    # 148.82 < 148.92 (the death cross); on 2009-06-22 90.11 < 90.28, on 2009-06-23 90.19 > 90.10.
    weights, _ = vectorized(started(MomentumAgent, {"fast": 50, "slow": 200}, ("SPY",)), spy)
    found = [
        (day_of(spy, int(t)), weights[t, 0])
        for t in np.flatnonzero(~np.isnan(weights[:, 0]))
        if "2007" <= day_of(spy, int(t)) < "2011"
    ]
    assert found == [("2007-12-21", -1.0), ("2009-06-23", 1.0), ("2010-07-06", -1.0), ("2010-10-22", 1.0)]

    weights, _ = vectorized(started(MomentumAgent, {}, ("SPY",)), spy)
    in_force = held(weights[:, 0])
    assert in_force[row_of(spy, "2008-06-24")] == 1.0
    assert in_force[row_of(spy, "2008-06-25")] == -1.0  # 20-day SMA 135.85 < 100-day 136.09
    assert np.all(in_force[row_of(spy, "2008-06-25") : row_of(spy, "2009-04-21")] == -1.0)  # the crash
    assert in_force[row_of(spy, "2009-04-21")] == 1.0  # 83.23 > 83.16
    # 2010-02-12 is an exact tie (both averages 108.55...): held, the cross is the next bar.
    assert in_force[row_of(spy, "2010-02-12")] == 1.0
    assert in_force[row_of(spy, "2010-02-16")] == -1.0

    long_only, _ = vectorized(started(MomentumAgent, {"long_only": True, "size": 0.25}, ("SPY",)), spy)
    assert set(np.unique(long_only[~np.isnan(long_only)])) == {0.0, 0.25}
    np.testing.assert_array_equal(np.isnan(long_only), np.isnan(weights))


def test_momentum_matches_an_independent_sma_computation(spy: BarBatch) -> None:
    close = spy.close[:, 0]
    fast = np.convolve(close, np.ones(50) / 50, "valid")[150:]
    slow = np.convolve(close, np.ones(200) / 200, "valid")
    assert np.abs(fast - slow).min() > 1e-6  # no near-tie, so the sign below is unambiguous
    side = np.sign(fast - slow)
    changes = np.flatnonzero(np.concatenate(([True], side[1:] != side[:-1])))
    weights, confidences = vectorized(started(MomentumAgent, {"fast": 50, "slow": 200}, ("SPY",)), spy)
    emitted = np.flatnonzero(~np.isnan(weights[:, 0]))
    np.testing.assert_array_equal(emitted, changes + 199)
    np.testing.assert_array_equal(weights[emitted, 0], side[changes])
    expected_confidence = np.minimum(1.0, np.abs(fast - slow)[changes] / slow[changes] / 0.05)
    np.testing.assert_allclose(confidences[emitted, 0], expected_confidence, rtol=1e-9)


@pytest.mark.parametrize(("lookback", "entry", "exit_"), [(20, 2.0, 0.5), (10, 1.5, 0.3)])
def test_mean_reversion_matches_an_independent_z_score(
    spy: BarBatch, lookback: int, entry: float, exit_: float
) -> None:
    close = spy.close[:, 0]
    window = sliding_window_view(close, lookback)
    z = (close[lookback - 1 :] - window.mean(axis=1)) / window.std(axis=1, ddof=1)
    assert np.abs(np.abs(z) - entry).min() > 1e-6 and np.abs(np.abs(z) - exit_).min() > 1e-6
    expected, position = [], 0.0
    for i, score in enumerate(z):
        target = -1.0 if score > entry else 1.0 if score < -entry else 0.0 if abs(score) < exit_ else position
        if target != position:
            expected.append((i + lookback - 1, target, min(1.0, abs(score) / (2 * entry)) if target else 1.0))
            position = target
    assert len(expected) > 100

    params = {"lookback": lookback, "entry_z": entry, "exit_z": exit_}
    got = signals(vectorized(started(MeanReversionAgent, params, ("SPY",)), spy))
    assert [(t, w) for t, _, w, _ in got] == [(t, w) for t, w, _ in expected]
    np.testing.assert_allclose([c for *_, c in got], [c for *_, c in expected], rtol=1e-9)
    if lookback == 20:
        # By hand: 1998-02-02 close 100.25, 20-day mean 96.521, std 1.7389 -> z = 2.14 > 2: short.
        assert (day_of(spy, got[0][0]), got[0][2]) == ("1998-02-02", -1.0)
        assert got[0][3] == pytest.approx((100.25 - 96.521) / 1.7389437 / 4, rel=1e-6)


@pytest.mark.parametrize(("cls", "params"), AGENTS, ids=AGENT_IDS)
def test_restored_agent_continues_identically(
    market: BarBatch, cls: type[Agent], params: dict[str, Any]
) -> None:
    cut = 3001
    whole = signals(vectorized(started(cls, params, market.symbols), market, 500))
    first = started(cls, params, market.symbols)
    before = signals(per_bar(first, rows(market, 0, cut)))
    saved = pickle.loads(pickle.dumps(first.state()))
    for run in (per_bar, vectorized):
        second = started(cls, params, market.symbols)
        second.restore(pickle.loads(pickle.dumps(saved)))
        after = signals(run(second, rows(market, cut, len(market))))
        assert before + [(t + cut, *rest) for t, *rest in after] == whole, run.__name__
    assert first.state() == saved  # state() is a snapshot, not a live view


def test_restore_refuses_a_state_of_another_window(spy: BarBatch) -> None:
    agent = started(MomentumAgent, {}, ("SPY",))
    agent.on_batch(rows(spy, 0, 150))
    other = started(MomentumAgent, {"slow": 120}, ("SPY",))
    with pytest.raises(ValueError, match=r"window of 100 bars but slow = 120"):
        other.restore(agent.state())


def test_unknown_parameter_suggests_the_close_name() -> None:
    with pytest.raises(ParameterError, match=r"unknown parameter 'slwo'; did you mean 'slow'\?"):
        MomentumAgent(name="m", symbols=["SPY"], params={"slwo": 50})
    with pytest.raises(ParameterError, match=r"'lookbak'; did you mean 'lookback'\?"):
        MeanReversionAgent(name="r", symbols=["SPY"], params={"lookbak": 50})
    with pytest.raises(ParameterError, match=r"'fast' = '20' is invalid"):
        MomentumAgent(name="m", symbols=["SPY"], params={"fast": "20"})


@pytest.mark.parametrize(
    ("cls", "params", "message"),
    [
        (
            MomentumAgent,
            {"fast": 100, "slow": 50},
            r"'m' \(MomentumAgent\): fast = 100 and slow = 50 .*fast < slow",
        ),
        (MomentumAgent, {"fast": 30, "slow": 30}, r"fast = 30 and slow = 30"),
        (MomentumAgent, {"fast": 0}, r"fast = 0 and slow = 100 are invalid: need 1 <= fast"),
        (MomentumAgent, {"size": 1.5}, r"size = 1.5 is outside \(0, 1\]"),
        (MeanReversionAgent, {"size": 0.0}, r"size = 0.0 is outside \(0, 1\]"),
        (MeanReversionAgent, {"lookback": 1}, r"lookback = 1 is below 2"),
        (
            MeanReversionAgent,
            {"exit_z": 2.0},
            r"exit_z = 2.0 and entry_z = 2.0 are invalid: need 0 <= exit_z",
        ),
        (MeanReversionAgent, {"exit_z": -0.5}, r"exit_z = -0.5 and entry_z = 2.0"),
    ],
)
def test_inconsistent_parameters_are_refused_with_the_values(
    cls: type[Agent], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ParameterError, match=message):  # at load time, before anything starts
        cls(name="m", symbols=["SPY"], params=params)


@pytest.mark.parametrize(("cls", "params"), AGENTS, ids=AGENT_IDS)
def test_invalid_rows_are_skipped_as_if_absent(
    spy: BarBatch, cls: type[Agent], params: dict[str, Any]
) -> None:
    holes = np.random.default_rng(7).random(len(spy)) < 0.1
    close = spy.close.copy()
    valid = spy.valid.copy()
    close[holes, 0], valid[holes, 0] = np.nan, False
    close[~holes & (np.arange(len(spy)) % 97 == 0), 0] = np.nan  # valid but no price: skipped too
    present = np.isfinite(close[:, 0])
    gappy = BarBatch(spy.symbols, spy.ts, spy.open, spy.high, spy.low, close, spy.volume, valid)
    dense = BarBatch(
        spy.symbols,
        spy.ts[present],
        spy.open[present],
        spy.high[present],
        spy.low[present],
        close[present],
        spy.volume[present],
        valid[present],
    )
    expected = [
        (int(np.flatnonzero(present)[t]), *rest)
        for t, *rest in signals(per_bar(started(cls, params, ("SPY",)), dense))
    ]
    assert len(expected) >= 10
    assert signals(per_bar(started(cls, params, ("SPY",)), gappy)) == expected
    for block in (7, 50, None):
        assert signals(vectorized(started(cls, params, ("SPY",)), gappy, block)) == expected
