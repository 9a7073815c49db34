"""Capital allocation: policies against hand-computed weights, bounds, schedules, the allocator end to end,
the Kelly helpers, and the ``[allocation]`` config."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.config import AllocationConfig, load_config
from federation.errors import ConfigError
from policies import (
    ALLOCATION_POLICIES,
    CapitalAllocator,
    EqualAllocation,
    FixedAllocation,
    InverseVolatilityAllocation,
    Rebalance,
    RebalanceSchedule,
    SharpeAdaptiveAllocation,
    build_allocator,
    check_weight_bounds,
    clip_weights,
    kelly_binary,
    kelly_fraction,
    split_capital,
)
from tests.conftest import ROOT

D = Decimal
NAN = math.nan


def a(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """A UTC time in epoch nanoseconds."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 10**9


# Policies, hand-computed.


def test_fixed_and_equal() -> None:
    no_history = np.empty((0, 3))
    assert FixedAllocation().weights(no_history, a(1, 3, 4)).tolist() == [0.125, 0.375, 0.5]  # 1/8, 3/8, 4/8
    assert EqualAllocation().weights(no_history, a(1, 3, 4)).tolist() == pytest.approx([1 / 3] * 3)


def test_inverse_volatility() -> None:
    # Columns +-0.01 and +-0.02 around a mean of 0: sigma = 0.01*sqrt(2) and 0.02*sqrt(2) (ddof 1), so
    # 1/sigma is in the ratio 2:1 -> [2/3, 1/3], whatever the configured weights.
    returns = np.array([[0.01, 0.02], [-0.01, -0.02]])
    policy = InverseVolatilityAllocation(min_periods=2)
    assert policy.weights(returns, a(1, 1)) == pytest.approx([2 / 3, 1 / 3], abs=1e-12)
    assert policy.weights(returns, a(5, 1)) == pytest.approx([2 / 3, 1 / 3], abs=1e-12)


def test_inverse_volatility_unmeasured_agents_keep_their_configured_share() -> None:
    # Shares [0.25, 0.25, 0.5]. Agent 2 has one valid return (< min_periods 2): keeps 0.5. Agents 0 and 1
    # (sigma ratio 1:3, so 1/sigma ratio 3:1) share the other 0.5: 0.375 and 0.125.
    returns = np.array([[0.01, 0.03, NAN], [-0.01, -0.03, 0.5]])
    weights = InverseVolatilityAllocation(min_periods=2).weights(returns, a(1, 1, 2))
    assert weights == pytest.approx([0.375, 0.125, 0.5], abs=1e-12)
    # A flat agent (no position: returns exactly 0) has no volatility to invert: it keeps its share.
    flat = np.array([[0.01, 0.0], [-0.01, 0.0]])
    assert InverseVolatilityAllocation(min_periods=2).weights(flat, a(3, 1)).tolist() == [0.75, 0.25]
    # No history at all: the configured shares.
    assert InverseVolatilityAllocation(min_periods=2).weights(np.empty((0, 2)), a(3, 1)).tolist() == [
        0.75,
        0.25,
    ]
    # min_periods counts valid returns: 2 of 3 here, below min_periods 3.
    assert InverseVolatilityAllocation(min_periods=3).weights(returns, a(1, 1, 2)).tolist() == [
        0.25,
        0.25,
        0.5,
    ]


def test_inverse_volatility_with_bounds() -> None:
    # sigma ratio 1:2:4 -> 1/sigma ratio 4:2:1 -> [4/7, 2/7, 1/7]; max_weight 0.5 pins agent 0 at 0.5 and
    # the other 0.5 splits 2:1 -> [0.5, 1/3, 1/6].
    returns = np.array([[0.01, 0.02, 0.04], [-0.01, -0.02, -0.04]])
    free = InverseVolatilityAllocation(min_periods=2).weights(returns, a(1, 1, 1))
    assert free == pytest.approx([4 / 7, 2 / 7, 1 / 7], abs=1e-12)
    bounded = InverseVolatilityAllocation(min_periods=2, max_weight=0.5).weights(returns, a(1, 1, 1))
    assert bounded == pytest.approx([0.5, 1 / 3, 1 / 6], abs=1e-12)
    assert bounded[0] == 0.5


SHARPE_RETURNS = np.array(
    [
        [0.02, 0.03, -0.01],  # A: mean 0.01, sigma 0.01*sqrt(2) -> S = 1/sqrt(2)
        [0.00, -0.01, -0.03],  # B: mean 0.01, sigma 0.02*sqrt(2) -> S = 1/(2*sqrt(2)); C: mean -0.02 -> 0
    ]
)


def test_sharpe_adaptive() -> None:
    policy = SharpeAdaptiveAllocation(min_periods=2)
    # Equal shares: w ~ [1/sqrt(2), 1/(2*sqrt(2)), 0] = [2/3, 1/3, 0].
    assert policy.weights(SHARPE_RETURNS, a(1, 1, 1)) == pytest.approx([2 / 3, 1 / 3, 0], abs=1e-12)
    # Shares [0.25, 0.5, 0.25]: b x S = [0.25/sqrt(2), 0.5/(2*sqrt(2)), 0] -> equal: [0.5, 0.5, 0].
    assert policy.weights(SHARPE_RETURNS, a(1, 2, 1)) == pytest.approx([0.5, 0.5, 0], abs=1e-12)
    # min_weight 0.1 lifts C to 0.1; A and B share 0.9 as 2:1 -> [0.6, 0.3, 0.1].
    floored = SharpeAdaptiveAllocation(min_periods=2, min_weight=0.1).weights(SHARPE_RETURNS, a(1, 1, 1))
    assert floored == pytest.approx([0.6, 0.3, 0.1], abs=1e-12)
    # Scaling the returns (a longer bar, say) leaves every Sharpe ratio's proportion unchanged.
    assert policy.weights(SHARPE_RETURNS * 7, a(1, 1, 1)) == pytest.approx([2 / 3, 1 / 3, 0], abs=1e-12)


def test_sharpe_adaptive_without_a_positive_sharpe_keeps_configured_shares() -> None:
    losing = np.array([[-0.01, -0.02, 0.0], [-0.03, -0.02, 0.0]])
    # A and B lose, C is flat (unmeasured): nothing to tilt towards -> the shares [0.2, 0.3, 0.5].
    assert SharpeAdaptiveAllocation(min_periods=2).weights(losing, a(2, 3, 5)) == pytest.approx(
        [0.2, 0.3, 0.5], abs=1e-12
    )


def test_policies_never_return_nan() -> None:
    nasty = np.array([[NAN, 0.0, 1e300], [NAN, 0.0, -1e300], [NAN, 0.0, NAN]])
    for policy in (
        FixedAllocation(),
        EqualAllocation(),
        InverseVolatilityAllocation(min_periods=2),
        SharpeAdaptiveAllocation(min_periods=2),
    ):
        w = policy.weights(nasty, a(1, 2, 3))
        assert np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1) < 1e-12, policy.name


def test_registry_names_match() -> None:
    assert set(ALLOCATION_POLICIES) == {"fixed", "equal", "inverse_volatility", "sharpe_adaptive"}
    assert all(name == cls.name for name, cls in ALLOCATION_POLICIES.items())


# Bounds: clip and redistribute.


def test_clip_weights_by_hand() -> None:
    # [0.7, 0.2, 0.1] in [0.15, 0.5]: 0.7 -> 0.5; the others share 0.5 as 2:1 -> [1/3, 1/6] (>= 0.15).
    assert clip_weights(a(0.7, 0.2, 0.1), 0.15, 0.5) == pytest.approx([0.5, 1 / 3, 1 / 6], abs=1e-15)
    # [0.9, 0.05, 0.05] in [0.2, 0.6]: 0.9 -> 0.6, the rest 0.4 as 1:1 -> 0.2 each (exactly at the floor).
    assert clip_weights(a(0.9, 0.05, 0.05), 0.2, 0.6) == pytest.approx([0.6, 0.2, 0.2], abs=1e-15)
    # One agent holds everything and hits the cap: the others had 0, so they share the rest equally.
    assert clip_weights(a(1, 0, 0), 0.0, 0.5).tolist() == [0.5, 0.25, 0.25]
    # Already within the bounds: unchanged.
    assert clip_weights(a(0.3, 0.7), 0.1, 0.9).tolist() == [0.3, 0.7]
    with pytest.raises(
        ValueError, match=r"min_weight = 0.4 with 3 agents .* lower min_weight to at most 0.333"
    ):
        clip_weights(a(0.5, 0.3, 0.2), 0.4, 1.0)


@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=12),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_clip_weights_properties(raw: list[float], low: float, high: float) -> None:
    n = len(raw)
    min_weight = low / n  # n * min_weight <= 1
    max_weight = 1 / n + high * (1 - 1 / n)  # n * max_weight >= 1
    weights = a(*raw)
    out = clip_weights(weights / weights.sum() if weights.sum() > 0 else weights, min_weight, max_weight)
    assert np.all(out >= 0)
    assert abs(out.sum() - 1) <= 1e-12
    assert np.all(out >= min_weight) and np.all(out <= max_weight)


@given(
    st.integers(1, 8),
    st.integers(0, 30),
    st.integers(0, 2**32 - 1),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_adaptive_policies_respect_bounds_on_any_history(
    n: int, bars: int, seed: int, low: float, high: float
) -> None:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0005, 0.01, (bars, n)) * rng.choice([0.0, 1.0, 10.0], n)
    returns[rng.random((bars, n)) < 0.2] = NAN
    base = rng.uniform(0.1, 5, n)
    min_weight, max_weight = low / n, 1 / n + high * (1 - 1 / n)
    for cls in (InverseVolatilityAllocation, SharpeAdaptiveAllocation):
        w = cls(min_periods=3, min_weight=min_weight, max_weight=max_weight).weights(returns, base)
        assert np.all(np.isfinite(w)) and abs(w.sum() - 1) <= 1e-12
        assert np.all(w >= min_weight) and np.all(w <= max_weight)


@given(st.lists(st.floats(0.01, 100), min_size=1, max_size=12))
def test_clip_weights_without_binding_bounds_is_proportional(raw: list[float]) -> None:
    weights = a(*raw)
    assert clip_weights(weights, 0.0, 1.0) == pytest.approx(weights / weights.sum(), abs=1e-12)


def test_infeasible_bounds_for_the_fleet_size() -> None:
    check_weight_bounds(4, 0.25, 0.25)  # exactly feasible: everyone gets 0.25
    with pytest.raises(ValueError, match=r"min_weight = 0.3 with 4 agents asks for 1.2 times the capital"):
        check_weight_bounds(4, 0.3, 1.0)
    with pytest.raises(ValueError, match=r"max_weight = 0.2 with 4 agents leaves 0.2 of the capital"):
        check_weight_bounds(4, 0.0, 0.2)
    config = AllocationConfig(policy="sharpe_adaptive", rebalance="1w", max_weight=0.2)
    with pytest.raises(ValueError, match=r"raise max_weight to at least 0\.25 or run more agents"):
        build_allocator(config, [1.0] * 4, D(1000))
    assert build_allocator(config, [1.0] * 5, D(1000)).capital() == (D(200),) * 5


# Schedules.


def test_every_n_bars_counts_across_blocks() -> None:
    per_bar = RebalanceSchedule(every_bars=3)
    assert [per_bar.due(t) for t in range(8)] == [False, False, False, True, False, False, True, False]
    blocks = RebalanceSchedule(every_bars=3)
    got = [
        *blocks.due_mask(np.arange(2)),
        *blocks.due_mask(np.arange(2, 7)),
        *blocks.due_mask(np.arange(7, 8)),
    ]
    assert got == [False, False, False, True, False, False, True, False]


def test_daily() -> None:
    s = RebalanceSchedule(period="1d")
    times = [ns(2024, 3, 1, 10), ns(2024, 3, 1, 23, 59), ns(2024, 3, 2), ns(2024, 3, 2, 9), ns(2024, 3, 4, 9)]
    assert [s.due(t) for t in times] == [False, False, True, False, True]


def test_weekly_is_iso_weeks_starting_monday() -> None:
    s = RebalanceSchedule(period="1w")
    times = [
        ns(2024, 1, 6),  # Saturday
        ns(2024, 1, 7, 23),  # Sunday: same week
        ns(2024, 1, 8, 9),  # Monday: new week
        ns(2024, 1, 14),  # Sunday
        ns(2024, 1, 16),  # Tuesday: new week (no bar on Monday)
    ]
    assert [s.due(t) for t in times] == [False, False, True, False, True]
    # A new calendar year is not a new ISO week: 2020-12-31 (Thu) and 2021-01-01 (Fri) share week 53.
    year_end = RebalanceSchedule(period="1w")
    assert [year_end.due(t) for t in (ns(2020, 12, 31), ns(2021, 1, 1), ns(2021, 1, 3), ns(2021, 1, 4))] == [
        False,
        False,
        False,
        True,
    ]


def test_monthly_rolls_over_months_and_years() -> None:
    s = RebalanceSchedule(period="1M")
    times = [
        ns(2023, 12, 30),
        ns(2023, 12, 31, 23),
        ns(2024, 1, 1),
        ns(2024, 1, 31),
        ns(2024, 2, 29),
        ns(2024, 3, 1),
    ]
    assert [s.due(t) for t in times] == [False, False, True, False, True, True]
    # The same answers, block at a time.
    block = RebalanceSchedule(period="1M")
    ts = np.array(times, dtype=np.int64)
    assert [*block.due_mask(ts[:2]), *block.due_mask(ts[2:])] == [False, False, True, False, True, True]


def test_first_bar_never_rebalances_and_no_schedule_never_does() -> None:
    assert RebalanceSchedule(period="1M").due(ns(2024, 2, 1)) is False
    never = RebalanceSchedule()
    assert not any(never.due(t) for t in (0, ns(2024, 1, 1), ns(2024, 2, 1)))
    # A repeated or earlier time opens no new period: deterministic on any input.
    s = RebalanceSchedule(period="1d")
    assert [s.due(t) for t in (ns(2024, 1, 2), ns(2024, 1, 1), ns(2024, 1, 2), ns(2024, 1, 3))] == [
        False,
        False,
        False,
        True,
    ]


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match="every_bars or period, not both"):
        RebalanceSchedule(every_bars=5, period="1d")
    with pytest.raises(ValueError, match="every_bars = 0 must be >= 1"):
        RebalanceSchedule(every_bars=0)


# Capital: exact Decimal splits and the allocator end to end.


def test_split_capital_is_exact() -> None:
    # 100 / 3 = 33.333333333... -> 33.33333333 each, 0.00000001 left: the largest share (ties: the last).
    assert split_capital(D(100), [1, 1, 1]) == (D("33.33333333"), D("33.33333333"), D("33.33333334"))
    # 100 x 1/6 = 16.66666666.. -> 16.66666667 (x3) and 100 x 3/6 = 50: 0.00000001 too much, taken from
    # the largest share.
    assert split_capital(D(100), [1, 1, 1, 3]) == (D("16.66666667"),) * 3 + (D("49.99999999"),)
    with pytest.raises(ValueError, match="multiple of 1e-8"):
        split_capital(D("1.000000001"), [1])


@given(st.lists(st.floats(0.001, 1000), min_size=1, max_size=20), st.integers(1, 10**15))
def test_split_capital_sums_exactly(weights: list[float], cents: int) -> None:
    total = D(cents).scaleb(-2)
    shares = split_capital(total, weights)
    assert sum(shares, D(0)) == total
    assert all(s >= 0 and s == s.quantize(D("1e-8")) for s in shares)


def equity_from_returns(start: float, returns: list[list[float]]) -> np.ndarray:
    """Equity paths (T+1, n) starting at ``start`` and compounding the per-bar returns."""
    rows = [np.full(len(returns[0]), start)]
    for r in returns:
        rows.append(rows[-1] * (1 + np.asarray(r)))
    return np.array(rows)


def test_allocator_end_to_end() -> None:
    # Agent 0 moves +-1 % per bar, agent 1 +-2 %: inverse volatility gives [2/3, 1/3] once measured.
    returns = np.array([[0.0, 0.0]] + [[0.01, 0.02], [-0.01, -0.02]] * 6)  # 13 bars
    ts = np.arange(13, dtype=np.int64) * 10
    total = D(1_000_000)
    alloc = CapitalAllocator(
        InverseVolatilityAllocation(min_periods=2),
        RebalanceSchedule(every_bars=4),
        [1.0, 3.0],
        total,
        window=4,
    )
    assert alloc.capital() == (D(250_000), D(750_000))  # no history: the configured weights 1:3
    seen: list[Rebalance] = []
    last = np.array([float(c) for c in alloc.capital()])
    for lo, hi in ((0, 3), (3, 6), (6, 9), (9, 13)):
        # Each agent's equity, moved by the cash the previous rebalance transferred between accounts.
        block = last * np.cumprod(1 + returns[lo:hi], axis=0)
        before = alloc.capital()
        found = alloc.observe(ts[lo:hi], block)
        seen += found
        transfer = [float(a - b) for a, b in zip(alloc.capital(), before, strict=True)] if found else [0, 0]
        last = block[-1] + np.array(transfer)
        assert alloc.returns.shape[0] <= 4, "the buffer is bounded to the window"
    assert [r.ts for r in seen] == [40, 80, 120]  # bars 4, 8 and 12 only
    for r in seen:
        assert r.policy == "inverse_volatility"
        assert sum(r.capital, D(0)) == total
        assert all(c == c.quantize(D("1e-8")) for c in r.capital)
        assert r.weights == pytest.approx((2 / 3, 1 / 3), abs=1e-9)
        assert float(r.capital[0]) == pytest.approx(666_666.67, abs=0.01)
    assert alloc.capital() == seen[-1].capital and alloc.weights == seen[-1].weights
    # The last 4 returns (bars 9..12) of agent 0: +1 %, -1 %, +1 %, -1 %.
    assert alloc.returns[:, 0] == pytest.approx([0.01, -0.01, 0.01, -0.01])
    with pytest.raises(AttributeError):
        seen[0].ts = 0  # type: ignore[misc]


def test_rebalance_sees_the_due_bars_own_return_and_only_the_window() -> None:
    # Bar 1: agent 0 jumps +50 % (outside the window of 2 at bar 3). Bars 2, 3: +-1 % and +-2 %.
    equity = equity_from_returns(100.0, [[0.5, 0.0], [0.01, 0.02], [-0.01, -0.02]])
    alloc = CapitalAllocator(
        InverseVolatilityAllocation(min_periods=2),
        RebalanceSchedule(every_bars=3),
        [1.0, 1.0],
        D(300),
        window=2,
    )
    (rebalance,) = alloc.observe(np.arange(4, dtype=np.int64), equity)
    # Window = returns of bars 2 and 3: sigma ratio 1:2 -> [2/3, 1/3] -> 200 and 100.
    assert rebalance.ts == 3 and rebalance.weights == pytest.approx((2 / 3, 1 / 3), abs=1e-9)
    assert rebalance.capital == (D(200), D(100))


def test_nan_and_zero_equity() -> None:
    alloc = CapitalAllocator(
        SharpeAdaptiveAllocation(min_periods=2),
        RebalanceSchedule(every_bars=5),
        [1.0, 1.0],
        D(1000),
        window=10,
    )
    assert alloc.observe(np.array([0], dtype=np.int64), a(100, 100)[None, :]) == []
    assert alloc.returns.shape == (0, 2), "the first bar has no return"
    equity = np.array([[101, NAN], [102.01, 50], [100.9899, 0], [103.0, 0], [104.0, 10]])
    (rebalance,) = alloc.observe(np.arange(1, 6, dtype=np.int64), equity)
    r = alloc.returns
    assert r[:, 0] == pytest.approx([0.01, 0.01, -0.01, 103 / 100.9899 - 1, 104 / 103 - 1])
    # Agent 1: no equity (NaN), a return from NaN (NaN), a fall to 0 (-1), then returns on 0 (undefined).
    assert np.isnan(r[0, 1]) and np.isnan(r[1, 1]) and r[2, 1] == -1 and np.isnan(r[3:, 1]).all()
    # Agent 1 has one valid return (< min_periods): it keeps its configured half; agent 0 has a positive
    # Sharpe ratio and takes the other half.
    assert rebalance.weights == (0.5, 0.5) and rebalance.capital == (D(500), D(500))


def test_fixed_policy_never_moves_money() -> None:
    weights = [1.0, 1.0, 1.0, 3.0]
    alloc = CapitalAllocator(FixedAllocation(), RebalanceSchedule(every_bars=1), weights, D(100), window=5)
    start = alloc.capital()
    assert start == split_capital(D(100), weights)
    equity = equity_from_returns(10.0, [[0.1, -0.2, 0.3, 0.0]] * 4)
    got = alloc.observe(np.arange(5, dtype=np.int64), equity)
    assert len(got) == 4 and all(r.capital == start for r in got)


def test_default_config_reproduces_the_split_by_weight() -> None:
    alloc = build_allocator(AllocationConfig(), [2.0, 1.0, 1.0], D(1_000_000))
    assert alloc.policy.name == "fixed" and alloc.capital() == (D(500_000), D(250_000), D(250_000))
    equity = np.full((50, 3), 100.0) * np.linspace(1, 2, 50)[:, None]
    assert alloc.observe(np.arange(50, dtype=np.int64) * 86_400 * 10**9, equity) == []


def test_allocator_input_errors() -> None:
    with pytest.raises(ValueError, match=r"expected \(bars, agents\) = \(2, 2\)"):
        CapitalAllocator(EqualAllocation(), RebalanceSchedule(), [1, 1], D(10), 5).observe(
            np.arange(2, dtype=np.int64), np.ones((2, 3))
        )
    with pytest.raises(ValueError, match="one finite number > 0 per agent"):
        CapitalAllocator(EqualAllocation(), RebalanceSchedule(), [1, 0], D(10), 5)
    with pytest.raises(ValueError, match="window = 1 must be >= 2"):
        CapitalAllocator(EqualAllocation(), RebalanceSchedule(), [1, 1], D(10), 1)
    empty = CapitalAllocator(EqualAllocation(), RebalanceSchedule(every_bars=1), [1, 1], D(10), 5)
    assert empty.observe(np.empty(0, dtype=np.int64), np.empty((0, 2))) == []


# Kelly.


def test_kelly_fraction() -> None:
    # mu / sigma^2 = 0.0002 / 0.0004 = 0.5; half Kelly: 0.25.
    assert kelly_fraction(0.0002, 0.0004) == pytest.approx(0.25)
    # Full Kelly 0.001 / 0.0004 = 2.5: capped at 1 (and at 0.3 with cap=0.3); a negative edge goes short.
    assert kelly_fraction(0.001, 0.0004, fraction=1.0) == 1.0
    assert kelly_fraction(-0.001, 0.0004, fraction=1.0, cap=0.3) == -0.3
    assert kelly_fraction(-0.0002, 0.0004, fraction=1.0) == pytest.approx(-0.5)
    from agents import kelly_binary as exported_binary
    from agents import kelly_fraction as exported

    assert exported is kelly_fraction and exported_binary is kelly_binary


def test_kelly_binary() -> None:
    assert kelly_binary(0.6, 1.0, fraction=1.0) == pytest.approx(0.2)  # 0.6 - 0.4 / 1
    assert kelly_binary(0.55, 2.0) == pytest.approx(0.1625)  # (0.55 - 0.45 / 2) / 2
    assert kelly_binary(0.3, 1.0) == 0.0  # 0.3 - 0.7 < 0: no bet
    assert kelly_binary(1.0, 0.5, fraction=1.0) == 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: kelly_fraction(0.01, 0.0),
            r"variance = 0.0 must be a finite number > 0 .* volatility squared",
        ),
        (lambda: kelly_fraction(0.01, -1.0), r"variance = -1.0 must be"),
        (lambda: kelly_fraction(math.nan, 1.0), r"mean_return = nan must be a finite number"),
        (lambda: kelly_fraction(0.01, 1.0, fraction=0.0), r"fraction = 0.0 must be in \(0, 1\]"),
        (lambda: kelly_fraction(0.01, 1.0, fraction=2.0), r"more than full Kelly only adds risk"),
        (lambda: kelly_fraction(0.01, 1.0, cap=0.0), r"cap = 0.0 must be a finite number > 0"),
        (lambda: kelly_binary(1.2, 1.0), r"win_probability = 1.2 must be a probability in \[0, 1\]"),
        (lambda: kelly_binary(0.5, 0.0), r"win_loss_ratio = 0.0 must be .* average win divided by"),
        (lambda: kelly_binary(0.5, 1.0, fraction=-0.5), r"fraction = -0.5 must be in \(0, 1\]"),
    ],
)
def test_kelly_errors(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


# Config.

GOOD = """
[feed]
kind = "synthetic"
symbols = ["AAA"]
[[agents]]
class = "agents.momentum:MomentumAgent"
"""


def load(tmp_path: Path, allocation: str) -> AllocationConfig:
    path = tmp_path / "fleet.toml"
    path.write_text("[allocation]\n" + allocation + GOOD)
    return load_config(path).allocation


def test_config_defaults_and_a_good_section(tmp_path: Path) -> None:
    default = AllocationConfig()
    assert (default.policy, default.rebalance, default.rebalance_bars, default.window) == (
        "fixed",
        None,
        None,
        60,
    )
    got = load(
        tmp_path, 'policy = "sharpe_adaptive"\nrebalance = "1M"\nmin_weight = 0.05\nmax_weight = 0.5\n'
    )
    assert got.policy == "sharpe_adaptive" and got.rebalance == "1M" and got.max_weight == 0.5
    assert isinstance(build_allocator(got, [1.0] * 4, D(100)).policy, SharpeAdaptiveAllocation)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            'rebalance = "1w"\nrebalance_bars = 5\n',
            "rebalance = '1w' and rebalance_bars = 5 are both set; keep one",
        ),
        ('policy = "inverse_volatility"\n', "policy 'inverse_volatility' re-weights only when it rebalances"),
        ("min_weight = 0.1\n", "min_weight and max_weight bound the inverse_volatility and sharpe_adaptive"),
        ("window = 10\nmin_periods = 20\n", "min_periods = 20 is more than window = 10"),
        (
            'policy = "sharpe_adaptive"\nrebalance_bars = 5\nmin_weight = 0.6\nmax_weight = 0.4\n',
            "min_weight = 0.6 is above max_weight = 0.4; swap them",
        ),
        ('policy = "risk_parity"\n', "allocation.policy: Input should be 'fixed', 'equal'"),
        ('rebalance = "2d"\n', "allocation.rebalance: Input should be '1d', '1w' or '1M'"),
        ("rebalance_bars = 0\n", "allocation.rebalance_bars: Input should be greater than or equal to 1"),
        ("windw = 5\n", "allocation.windw: Extra inputs are not permitted"),
    ],
)
def test_config_errors(tmp_path: Path, section: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, section)
    assert expected in str(info.value), str(info.value)
    assert str(info.value).startswith(str(tmp_path / "fleet.toml"))


def test_readme_documents_every_allocation_key() -> None:
    readme = (ROOT / "README.md").read_text()
    reference = readme.split("## Config reference")[1].split("## CLI reference")[0]
    section = reference.split("`[allocation]`")[1].split("\n\n`")[0]
    for name in AllocationConfig.model_fields:
        assert f"| `{name}` |" in section, f"[allocation] {name} is not in the README"
