"""Execution: venue fill rules, netting and attribution, risk denials, ledger consistency."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.model import BarBatch, Fill
from federation.config import ExecutionConfig, RiskConfig
from federation.execution import ExecutionEngine, SimulatedVenue, TargetUpdates, VenueOrder, pro_rata
from federation.execution.actor import build_risk_policy
from federation.ledger import PORTFOLIO, RunRecord, SQLiteLedger
from federation.money import to_e8

D = Decimal
NS = 86_400 * 10**9


def make_batch(
    rows: list[dict[str, tuple[float, float, float, float, float] | None]], t0: int = 0
) -> BarBatch:
    """rows: per time step, symbol -> (open, high, low, close, volume) or None (no bar)."""
    symbols = tuple(rows[0])
    shape = (len(rows), len(symbols))
    arrays = {k: np.full(shape, np.nan) for k in ("open", "high", "low", "close", "volume")}
    valid = np.zeros(shape, dtype=bool)
    for t, row in enumerate(rows):
        for j, s in enumerate(symbols):
            bar = row[s]
            if bar is not None:
                valid[t, j] = True
                for k, v in zip(("open", "high", "low", "close", "volume"), bar, strict=True):
                    arrays[k][t, j] = v
    ts = np.arange(t0, t0 + len(rows), dtype=np.int64) * NS
    return BarBatch(symbols=symbols, ts=ts, valid=valid, **arrays)


def updates(*entries: tuple[int, int, int, int]) -> TargetUpdates:
    """(row, agent, col, lots) entries."""
    cols = list(zip(*entries, strict=True)) if entries else [[], [], [], []]
    return TargetUpdates(*(np.asarray(c, dtype=np.int64) for c in cols))


def engine(
    tmp_path: Path | None = None,
    agents: int = 2,
    symbols: tuple[str, ...] = ("AAA",),
    risk: RiskConfig | None = None,
    **execution: object,
) -> ExecutionEngine:
    cfg = ExecutionConfig(**{"slippage_bps": 0.0, "taker_fee_bps": 0.0, **execution})  # type: ignore[arg-type]
    ledger = SQLiteLedger(tmp_path / "ledger.db") if tmp_path else None
    if ledger is not None:
        ledger.begin_run(RunRecord("r1", 0, "{}", D(10_000) * agents, "USD", 0), [])
    return ExecutionEngine(
        run_id="r1",
        agents=[f"a{i}" for i in range(agents)],
        capital=[D(10_000)] * agents,
        symbols=symbols,
        config=cfg,
        risk=build_risk_policy(risk or RiskConfig()),
        ledger=ledger,
    )


BAR = (100.0, 110.0, 90.0, 105.0, 1_000_000.0)


# ------------------------------------------------------------------------------------------------ venue
def venue(**kw: object) -> SimulatedVenue:
    return SimulatedVenue(ExecutionConfig(**kw))  # type: ignore[arg-type]


def test_market_buy_fills_at_next_open_plus_slippage_and_pays_taker_fee() -> None:
    v = venue(slippage_bps=10, taker_fee_bps=5)
    v.submit(VenueOrder("o1", 0, 100, "market", None))
    fill, _ = v.match(0, 100.0, 110.0, 90.0, 1e6)  # type: ignore[misc]
    assert fill is not None
    assert fill.price == D("100.1000") and fill.lots == 100 and fill.liquidity == "taker"
    assert fill.fee == D("100.1") * 100 * D("0.0005")


def test_market_sell_slips_down() -> None:
    v = venue(slippage_bps=10)
    v.submit(VenueOrder("o1", 0, -5, "market", None))
    fill, _ = v.match(0, 100.0, 110.0, 90.0, 1e6)  # type: ignore[misc]
    assert fill is not None and fill.price == D("99.9") and fill.lots == -5


@pytest.mark.parametrize(
    ("lots", "limit", "bar", "price", "liquidity"),
    [
        (10, "101", (100.0, 110.0, 90.0), "100", "taker"),  # marketable at the open
        (10, "95", (100.0, 110.0, 90.0), "95", "maker"),  # touched intrabar
        (10, "85", (100.0, 110.0, 90.0), None, None),  # never reached
        (-10, "99", (100.0, 110.0, 90.0), "100", "taker"),
        (-10, "108", (100.0, 110.0, 90.0), "108", "maker"),
        (-10, "111", (100.0, 110.0, 90.0), None, None),
    ],
)
def test_limit_order_rules(
    lots: int, limit: str, bar: tuple[float, float, float], price: str | None, liquidity: str | None
) -> None:
    v = venue(maker_fee_bps=-1, taker_fee_bps=3)
    v.submit(VenueOrder("o1", 0, lots, "limit", D(limit)))
    fill, why = v.match(0, *bar, 1e6)  # type: ignore[misc]
    if price is None:
        assert fill is None and why == "limit_not_reached"
    else:
        assert fill is not None and fill.price == D(price) and fill.liquidity == liquidity
        rate = D("-0.0001") if liquidity == "maker" else D("0.0003")
        assert fill.fee == D(price) * 10 * rate


def test_partial_fill_capped_by_volume_share() -> None:
    v = venue(max_volume_share=0.1)
    v.submit(VenueOrder("o1", 0, 500, "market", None))
    fill, _ = v.match(0, 100.0, 100.0, 100.0, 1234.0)  # type: ignore[misc]
    assert fill is not None and fill.lots == 123
    assert v.match(0, 100.0, 100.0, 100.0, 1234.0) is None  # the rest expired: nothing is working


def test_zero_volume_means_unknown_volume_and_caps_nothing() -> None:
    v = venue(max_volume_share=0.1)
    v.submit(VenueOrder("o1", 0, 500, "market", None))
    fill, _ = v.match(0, 1.1, 1.2, 1.0, 0.0)  # type: ignore[misc]
    assert fill is not None and fill.lots == 500


def test_slippage_is_rounded_against_the_trader() -> None:
    v = venue(slippage_bps=1, price_tick=Decimal("0.01"))
    v.submit(VenueOrder("b", 0, 1, "market", None))
    buy, _ = v.match(0, 10.0, 10.0, 10.0, 1e6)  # type: ignore[misc]
    v.submit(VenueOrder("s", 0, -1, "market", None))
    sell, _ = v.match(0, 10.0, 10.0, 10.0, 1e6)  # type: ignore[misc]
    assert buy.price == D("10.01") and sell.price == D("9.99")  # type: ignore[union-attr]


def test_deterministic_trade_ids() -> None:
    ids = []
    for _ in range(2):
        v = venue()
        for k in range(3):
            v.submit(VenueOrder(f"o{k}", 0, 1, "market", None))
            ids.append(v.match(0, 100.0, 100.0, 100.0, 1e6)[0].fill_id)  # type: ignore[index,union-attr]
    assert ids[:3] == ids[3:] == ["SIM-00000001", "SIM-00000002", "SIM-00000003"]


# --------------------------------------------------------------------------------------------- pro rata
@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=30), st.data())
def test_pro_rata_is_exact_and_fair(weights: list[int], data: st.DataObject) -> None:
    total = data.draw(st.integers(min_value=0, max_value=sum(weights)))
    shares = pro_rata(total, weights)
    assert sum(shares) == total
    for share, w in zip(shares, weights, strict=True):
        exact = total * w / sum(weights)
        assert 0 <= share <= w and abs(share - exact) < 1


# ----------------------------------------------------------------------------------------------- engine
def test_opposite_demands_cross_internally_and_only_the_net_goes_to_the_venue(tmp_path: Path) -> None:
    eng = engine(tmp_path, agents=3)
    batch = make_batch([{"AAA": BAR}, {"AAA": (106.0, 110.0, 100.0, 107.0, 1e6)}])
    # a0 wants +100, a1 wants +50, a2 wants -60 -> cross 60, net buy 90.
    out = eng.process_block(batch, updates((0, 0, 0, 100), (0, 1, 0, 50), (0, 2, 0, -60)))
    assert eng.books.lots[:3, 0].tolist() == [100, 50, -60]
    assert eng.books.lots[3, 0] == 90  # portfolio: only the venue fill
    assert eng.crosses == 1 and eng.orders == 1 and eng.fills == 1
    orders = eng.ledger.orders("r1")  # type: ignore[union-attr]
    assert len(orders) == 1 and orders[0].quantity == D(90) and orders[0].side == "buy"
    assert orders[0].status == "filled"
    fills = {f.liquidity: f for f in eng.ledger.fills("r1")}  # type: ignore[union-attr]
    assert fills["internal"].quantity == D(60) and fills["internal"].price == D(106)
    assert fills["taker"].quantity == D(90) and fills["taker"].price == D(106)
    # every agent got its on_fill deliveries; internal ones are marked
    delivered = {a: [Fill(*row) for row in rows] for a, rows in out.fills.items()}
    assert {f.internal for f in delivered["a2"]} == {True}
    assert sum(f.quantity for f in delivered["a0"]) == 100


def test_fill_split_pro_rata_with_fees_summing_exactly(tmp_path: Path) -> None:
    eng = engine(tmp_path, agents=3, taker_fee_bps=7, max_volume_share=1.0)
    batch = make_batch([{"AAA": BAR}, {"AAA": (100.0, 100.0, 100.0, 100.0, 100.0)}])
    out = eng.process_block(batch, updates((0, 0, 0, 30), (0, 1, 0, 30), (0, 2, 0, 40)))
    assert eng.books.lots[:3, 0].tolist() == [30, 30, 40]
    agent_fees = sum((eng.books.fees[i] for i in range(3)), D(0))
    assert agent_fees == eng.books.fees[3] == D(100) * 100 * D("0.0007")
    assert [len(out.fills[a]) for a in ("a0", "a1", "a2")] == [1, 1, 1]


def test_partial_fill_is_recorded_and_the_rest_is_resubmitted(tmp_path: Path) -> None:
    eng = engine(tmp_path, agents=1, max_volume_share=0.5)
    small = (100.0, 100.0, 100.0, 100.0, 100.0)  # 50 lots fill per bar
    batch = make_batch([{"AAA": small}, {"AAA": small}, {"AAA": small}])
    eng.process_block(batch, updates((0, 0, 0, 80)))
    statuses = [(o.status, o.quantity, o.filled_quantity) for o in eng.ledger.orders("r1")]  # type: ignore[union-attr]
    assert statuses == [("partially_filled", D(80), D(50)), ("filled", D(30), D(30))]
    assert eng.books.lots[0, 0] == 80


def test_order_waits_for_the_symbols_next_bar() -> None:
    eng = engine(agents=1, symbols=("AAA", "BBB"))
    batch = make_batch(
        [
            {"AAA": BAR, "BBB": BAR},
            {"AAA": BAR, "BBB": None},  # BBB does not trade here
            {"AAA": BAR, "BBB": (120.0, 121.0, 119.0, 120.0, 1e6)},
        ]
    )
    eng.process_block(batch, updates((0, 0, 1, 10)))
    assert eng.books.lots[0, 1] == 10
    qty, avg, _ = eng.books.holding(0, 1)
    assert qty == 10 and avg == D(120)


def test_risk_denial_is_recorded_with_reason_and_not_repeated(tmp_path: Path) -> None:
    eng = engine(tmp_path, agents=2, risk=RiskConfig(max_position=D(50)))
    batch = make_batch([{"AAA": BAR}] * 5)
    eng.process_block(batch, updates((0, 0, 0, 40), (0, 1, 0, 40)))
    ledger = eng.ledger
    assert ledger is not None
    orders = ledger.orders("r1")
    assert len(orders) == 1, "an unchanged denied demand is not re-sent every bar"
    assert orders[0].status == "denied" and orders[0].reason_code == "max_position"
    assert "above max_position 50" in (orders[0].reason or "") and "'a0'" in (orders[0].reason or "")
    assert eng.books.lots[2, 0] == 0
    events = ledger.events("r1", "risk_denial")
    assert events and events[0]["code"] == "max_position"
    assert ledger.query("SELECT agent, qty_e8 FROM order_allocations WHERE run_id='r1' ORDER BY agent") == [
        ("a0", 40 * 10**8),
        ("a1", 40 * 10**8),
    ]


def test_a_denied_demand_is_recorded_again_after_it_went_away_and_came_back(tmp_path: Path) -> None:
    eng = engine(tmp_path, agents=1, risk=RiskConfig(max_position=D(50)))
    eng.process_block(make_batch([{"AAA": BAR}] * 6), updates((0, 0, 0, 100), (2, 0, 0, 0), (4, 0, 0, 100)))
    assert [o.status for o in eng.ledger.orders("r1")] == ["denied", "denied"]  # type: ignore[union-attr]
    assert len(eng.ledger.events("r1", "risk_denial")) == 2  # type: ignore[union-attr]


def test_a_notional_denial_is_retried_when_the_price_makes_it_fit(tmp_path: Path) -> None:
    eng = engine(tmp_path, agents=1, risk=RiskConfig(max_order_notional=D(5000)))
    cheap = (40.0, 40.0, 40.0, 40.0, 1e6)
    eng.process_block(
        make_batch([{"AAA": BAR}, {"AAA": BAR}, {"AAA": cheap}, {"AAA": cheap}]), updates((0, 0, 0, 100))
    )
    statuses = [o.status for o in eng.ledger.orders("r1")]  # type: ignore[union-attr]
    assert statuses == ["denied", "filled"] and eng.books.lots[0, 0] == 100


def test_expired_orders_say_why(tmp_path: Path) -> None:
    eng = engine(tmp_path, agents=1, order_type="limit", limit_offset_bps=500)
    up = (110.0, 112.0, 108.0, 111.0, 1e6)  # never comes back down to the limit
    eng.process_block(make_batch([{"AAA": BAR}, {"AAA": up}]), updates((0, 0, 0, 10)))
    order = eng.ledger.orders("r1")[0]  # type: ignore[union-attr]
    assert order.status == "expired" and order.reason_code == "limit_not_reached"
    assert order.limit_price == D("99.75")  # 105 * (1 - 5%)


def test_tiny_fees_split_exactly_and_never_negative() -> None:
    eng = engine(agents=5, taker_fee_bps=0.00006, max_volume_share=1.0)  # 3e-8 over 5 takers
    batch = make_batch([{"AAA": (1.0,) * 4 + (1e6,)}, {"AAA": (1.0,) * 4 + (1e6,)}])
    eng.process_block(batch, updates(*[(0, i, 0, 1) for i in range(5)]))
    fees = [eng.books.fees[i] for i in range(5)]
    assert eng.books.fees[5] == D("3E-8")
    assert sum(fees, D(0)) == eng.books.fees[5] and all(f >= 0 for f in fees)


def test_block_outcome_has_each_agents_exact_fees_in_1e8_units() -> None:
    eng = engine(agents=5, taker_fee_bps=0.00006, max_volume_share=1.0)  # 3e-8 over 5 takers
    batch = make_batch([{"AAA": (1.0,) * 4 + (1e6,)}, {"AAA": (1.0,) * 4 + (1e6,)}])
    out = eng.process_block(batch, updates(*[(0, i, 0, 1) for i in range(5)]))
    assert out.fees_e8 == {f"a{i}": to_e8(eng.books.fees[i]) for i in range(5)}
    assert sorted(out.fees_e8.values()) == [0, 0, 1, 1, 1] and sum(out.fees_e8.values()) == 3
    assert out.fills.keys() == out.fees_e8.keys()
    # fills rows are unchanged: floats, as before
    assert [row[4] for row in out.fills["a0"]] == [float(eng.books.fees[0])]


def test_fees_e8_are_negative_for_maker_rebates_and_zero_for_internal_crosses() -> None:
    eng = engine(agents=3, order_type="limit", limit_offset_bps=100, maker_fee_bps=-2.5)
    # bar 0 closes at 105: buy limit 103.95; bar 1 opens above it and dips to 98 -> maker fill at 103.95
    out = eng.process_block(
        make_batch([{"AAA": BAR}, {"AAA": (106.0, 106.0, 98.0, 100.0, 1e6)}]),
        updates((0, 0, 0, 30), (0, 1, 0, 10), (0, 2, 0, -7)),
    )
    rebate = D("103.95") * 33 * D("-0.00025")  # the 33 lots net: 30 + 10 - 7
    assert eng.books.fees[3] == rebate
    assert out.fees_e8["a2"] == 0, "a2 only crossed internally: no fee"
    assert out.fees_e8["a0"] + out.fees_e8["a1"] == to_e8(rebate) < 0
    assert out.fees_e8 == {f"a{i}": to_e8(eng.books.fees[i]) for i in range(3)}


def test_max_order_notional_denies_but_smaller_orders_pass() -> None:
    eng = engine(agents=1, risk=RiskConfig(max_order_notional=D(5000)))
    batch = make_batch([{"AAA": BAR}] * 4)
    eng.process_block(batch, updates((0, 0, 0, 100), (1, 0, 0, 40)))  # 100*105 denied; 40*105 ok
    assert eng.denied == 1 and eng.books.lots[0, 0] == 40


def test_realized_and_unrealized_pnl_average_cost() -> None:
    eng = engine(agents=1)
    bars = [(100.0,) * 4 + (1e6,), (100.0,) * 4 + (1e6,), (110.0,) * 4 + (1e6,), (120.0,) * 4 + (1e6,)]
    batch = make_batch([{"AAA": b} for b in bars])
    eng.process_block(batch, updates((0, 0, 0, 10), (1, 0, 0, 4)))  # buy 10 @100, sell 6 @110
    report = eng.report()
    agent = report["agents"][0]  # type: ignore[index]
    assert agent["realized_pnl"] == D(60)  # 6 * (110 - 100)
    assert agent["unrealized_pnl"] == D(80)  # 4 * (120 - 100)
    assert agent["equity"] == D(10_000) + D(60) + D(80)


def test_ledger_positions_equal_sum_of_fills_and_cash_equals_capital_minus_costs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    eng = engine(
        tmp_path, agents=4, symbols=("AAA", "BBB"), taker_fee_bps=2, slippage_bps=3, max_volume_share=0.02
    )
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(300, 2)), axis=0))
    rows = [
        {s: (c[j] * 0.999, c[j] * 1.01, c[j] * 0.99, c[j], 50_000.0) for j, s in enumerate(("AAA", "BBB"))}
        for c in closes
    ]
    entries = [
        (t, int(rng.integers(4)), int(rng.integers(2)), int(rng.integers(-300, 300)))
        for t in sorted(rng.integers(0, 290, size=120).tolist())
    ]
    for start in range(0, 300, 64):  # several blocks, like the supervisor
        part = [e for e in entries if start <= e[0] < start + 64]
        eng.process_block(
            make_batch(rows[start : start + 64], t0=start),
            updates(*[(t - start, a, c, lots) for t, a, c, lots in part]),
        )
    eng.finish()
    db = SQLiteLedger(tmp_path / "ledger.db")
    fills = db.query(
        "SELECT symbol, SUM(qty_e8) FROM fills WHERE run_id='r1' AND liquidity != 'internal' GROUP BY symbol"
    )
    positions = db.query(f"SELECT symbol, qty_e8 FROM positions WHERE account='{PORTFOLIO}' ORDER BY symbol")
    assert dict(fills) == dict(positions) and len(fills) == 2
    # each agent's position is the sum of its allocations; agents add up to the portfolio
    per_agent = db.query(
        "SELECT agent, symbol, SUM(qty_e8) FROM fill_allocations WHERE run_id='r1' GROUP BY agent, symbol"
    )
    recorded = db.query(f"SELECT account, symbol, qty_e8 FROM positions WHERE account != '{PORTFOLIO}'")
    assert {(a, s): q for a, s, q in per_agent if q} == {(a, s): q for a, s, q in recorded if q}
    for symbol, total in positions:
        assert sum(q for _, s, q in per_agent if s == symbol) == total
    spent = sum((f.quantity * f.price + f.fee for f in db.fills("r1") if f.liquidity != "internal"), D(0))
    assert db.cash("r1") == D(40_000) - spent
    agent_cash = [db.cash("r1", f"a{i}") for i in range(4)]
    assert sum((c for c in agent_cash if c is not None), D(0)) == db.cash("r1")
    assert eng.fills > 10 and eng.crosses > 0, "the scenario must exercise fills and crosses"
    assert all(o.status != "submitted" for o in db.orders("r1")), "finish() leaves no order open"
