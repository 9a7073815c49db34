"""Aggregation policies' math, sizing of signals into lots, and attribution."""

from __future__ import annotations

import numpy as np
import pytest

from agents.model import BarBatch
from federation.aggregator import Aggregator
from federation.runners.host import AgentBlockResult
from policies.aggregation import ConfidenceWeighted, FixedWeights


def test_policy_math() -> None:
    w, c, cap = np.array([0.5, -1.0, 0.2]), np.array([1.0, 0.5, 0.0]), np.array([1000.0, 2000.0, 500.0])
    assert FixedWeights().notional(w, c, cap).tolist() == [500.0, -2000.0, 100.0]
    assert ConfidenceWeighted().notional(w, c, cap).tolist() == [500.0, -1000.0, 0.0]


def batch(close: list[list[float]]) -> BarBatch:
    arr = np.asarray(close, dtype=float)
    return BarBatch(
        symbols=("AAA", "BBB"),
        ts=np.arange(len(arr), dtype=np.int64),
        open=arr,
        high=arr,
        low=arr,
        close=arr,
        volume=np.ones_like(arr),
        valid=~np.isnan(arr),
    )


def result(name: str, weights: list[list[float]], conf: list[list[float]] | None = None) -> AgentBlockResult:
    w = np.asarray(weights, dtype=float)
    return AgentBlockResult(name, w, np.asarray(conf, dtype=float) if conf else np.ones_like(w))


@pytest.mark.parametrize(("policy", "lots_b"), [(FixedWeights(), -40), (ConfidenceWeighted(), -10)])
def test_signals_sized_at_their_bar_close_with_attribution(policy: FixedWeights, lots_b: int) -> None:
    agg = Aggregator(policy, ("AAA", "BBB"), ["a", "b"], [("AAA", "BBB"), ("BBB",)], [10_000.0, 5_000.0], 1.0)
    b = batch([[100.0, 50.0], [200.0, np.nan], [100.0, 100.0]])
    r0 = result("a", [[0.5, np.nan], [np.nan, np.nan], [np.nan, 0.25]])
    r1 = result("b", [[np.nan], [-0.4], [np.nan]], [[1.0], [0.25], [1.0]])
    up = agg.targets(b, [r0, r1])
    got = list(zip(up.rows.tolist(), up.agents.tolist(), up.cols.tolist(), up.lots.tolist(), strict=True))
    again = agg.targets(b, [r1, r0])  # the answers' order does not matter
    assert again.agents.tolist() == up.agents.tolist() and again.lots.tolist() == up.lots.tolist()
    # a: 0.5 * 10k / 100 = 50 AAA at row 0; 0.25 * 10k / 100 = 25 BBB at row 2
    # b: -0.4 * 5k on BBB at row 1, where BBB has no bar: priced at the last close (50)
    assert got == [(0, 0, 0, 50), (1, 1, 1, lots_b), (2, 0, 1, 25)]


def test_sizing_is_not_cut_by_binary_float_rounding() -> None:
    agg = Aggregator(FixedWeights(), ("AAA", "BBB"), ["a"], [("AAA",)], [100.0], 1.0)
    up = agg.targets(batch([[1.0, 1.0]]), [result("a", [[0.29]])])
    assert up.lots.tolist() == [29]  # 0.29 * 100 / 1 = 28.999999999999996 in floats
    fine = Aggregator(FixedWeights(), ("AAA", "BBB"), ["a"], [("AAA",)], [1.0], 0.0001)
    assert fine.targets(batch([[1.0, 1.0]]), [result("a", [[-0.3]])]).lots.tolist() == [-3000]


def test_unpriced_signal_is_skipped_and_close_carries_across_blocks() -> None:
    agg = Aggregator(FixedWeights(), ("AAA", "BBB"), ["a"], [("BBB",)], [1000.0], 1.0)
    first = agg.targets(batch([[1.0, np.nan]]), [result("a", [[1.0]])])
    assert first.rows.size == 0, "no price for BBB yet"
    agg.targets(batch([[1.0, 10.0]]), [result("a", [[np.nan]])])
    later = agg.targets(batch([[1.0, np.nan]]), [result("a", [[1.0]])])
    assert later.lots.tolist() == [100]  # priced at the previous block's close


def test_a_price_so_small_the_lots_overflow_sets_no_target() -> None:
    """A close of 1e-320 passes as > 0; 1e5 / 1e-320 lots must not wrap around into the largest short."""
    agg = Aggregator(FixedWeights(), ("AAA", "BBB"), ["a"], [("AAA", "BBB")], [100_000.0], 1.0)
    up = agg.targets(batch([[1e-320, 10.0]]), [result("a", [[1.0, 0.5]])])
    assert up.cols.tolist() == [1] and up.lots.tolist() == [5000]
