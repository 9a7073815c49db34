"""Risk: every pre-trade rule (denies what it must, passes what it must, at the boundary), the order-rate
bucket, trading states, circuit breakers on scripted P&L paths, and the engine recording it all."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.model import BarBatch
from federation.config import AgentRiskConfig, BreakerConfig, ExecutionConfig, InstrumentConfig, RiskConfig
from federation.execution import ExecutionEngine, build_agent_risk_policy
from federation.execution.actor import _ExecutionService
from federation.ledger import BufferedLedger, RunRecord, SQLiteLedger
from policies.breakers import NS_PER_DAY, BreakerSpec, CircuitBreakers
from policies.risk import (
    STATE_RULES,
    Denial,
    LotSize,
    MaxGrossExposure,
    MaxLeverage,
    MaxNetExposure,
    MaxOrderNotional,
    MaxOrderQuantity,
    MaxPosition,
    MinQuantity,
    NotHalted,
    OrderIntent,
    OrderRateLimit,
    PriceCollar,
    PriceTick,
    ReduceOnly,
    RiskPolicy,
    reduces,
    reducing_part,
)
from policies.trading_state import TradingState, TradingStateMachine
from tests.test_execution import updates

D = Decimal
S = 10**9
MIN = 60 * S
ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def intent(
    quantity: float | str | Decimal,
    price: float | str = 100,
    position: float | str | Decimal = 0,
    **kw: object,
) -> OrderIntent:
    return OrderIntent("AAA", D(str(quantity)), D(str(price)), D(str(position)), ("a0",), **kw)  # type: ignore[arg-type]


def denied(rule: object, order: OrderIntent) -> Denial | None:
    return rule.check(order)  # type: ignore[attr-defined,no-any-return]


# ------------------------------------------------------------------------------------------ order size
def test_max_order_quantity_boundary_both_sides() -> None:
    rule = MaxOrderQuantity(D(100))
    assert denied(rule, intent(100)) is None and denied(rule, intent(-100)) is None
    for q in (101, -101, "100.5"):
        d = denied(rule, intent(q))
        assert (
            d is not None and d.code == "max_order_quantity" and "above max_order_quantity 100" in d.message
        )
    assert denied(MaxOrderQuantity(None), intent(10**9)) is None


def test_max_order_notional_boundary() -> None:
    rule = MaxOrderNotional(D(5000))
    assert denied(rule, intent(50, 100)) is None  # exactly 5000
    d = denied(rule, intent(-51, 100))
    assert d is not None and d.code == "max_order_notional" and "5100.00" in d.message


# -------------------------------------------------------------------------------------------- position
def test_max_position_limits_growth_but_always_lets_a_position_shrink() -> None:
    rule = MaxPosition(D(50), {"BBB": D(10)})
    assert denied(rule, intent(50)) is None
    assert denied(rule, intent(51)) is not None
    assert denied(rule, intent(-60, position=80)) is None  # 80 -> 20
    assert denied(rule, intent(-10, position=80)) is None  # still above, but smaller
    assert denied(rule, intent(-131, position=80)) is None  # flips to -51: above, but smaller than 80
    assert denied(rule, intent(-90, position=40)) is None  # flips to -50: at the limit
    assert denied(rule, intent(-91, position=40)) is not None  # flips to -51, larger than 40
    bbb = OrderIntent("BBB", D(11), D(1), D(0), ("a0",))
    assert denied(rule, bbb) is not None and "max_position 10" in denied(rule, bbb).message  # type: ignore[union-attr]


@given(
    st.integers(-100, 100),
    st.lists(st.integers(-300, 300), max_size=30),
)
def test_no_order_that_passes_max_position_leaves_the_position_above_the_limit(
    start: int, orders: list[int]
) -> None:
    rule, position = MaxPosition(D(100)), D(start)
    for q in orders:
        if rule.check(intent(q, position=position)) is None:
            position += q
        assert abs(position) <= 100


# -------------------------------------------------------------------------------------------- exposure
def test_max_gross_exposure_counts_the_other_positions_and_lets_gross_fall() -> None:
    rule = MaxGrossExposure(D(10_000))
    assert denied(rule, intent(10, 100, gross_exposure=9_000.0)) is None  # 9,000 + 1,000 = limit
    d = denied(rule, intent(11, 100, gross_exposure=9_000.0))
    assert d is not None and d.code == "max_gross_exposure" and "10,100.00" in d.message
    # a short adds gross exposure too
    assert denied(rule, intent(-11, 100, gross_exposure=9_000.0)) is not None
    # above the limit already: an order that lowers gross passes, one that flips to the same size does not
    assert denied(rule, intent(-5, 100, position=50, gross_exposure=12_000.0)) is None
    assert denied(rule, intent(-100, 100, position=50, gross_exposure=12_000.0)) is not None


def test_max_net_exposure_is_absolute_and_lets_net_fall() -> None:
    rule = MaxNetExposure(D(5_000))
    assert denied(rule, intent(-50, 100, net_exposure=0.0)) is None  # -5,000
    assert denied(rule, intent(-51, 100, net_exposure=0.0)) is not None
    assert denied(rule, intent(30, 100, net_exposure=4_000.0)) is not None  # 7,000
    assert denied(rule, intent(-10, 100, position=80, net_exposure=8_000.0)) is None  # 7,000 < 8,000


def test_max_leverage_is_gross_after_over_equity() -> None:
    rule = MaxLeverage(2.0)
    assert denied(rule, intent(100, 100, gross_exposure=10_000.0, equity=10_000.0)) is None  # exactly 2x
    d = denied(rule, intent(101, 100, gross_exposure=10_000.0, equity=10_000.0))
    assert d is not None and d.code == "max_leverage" and "2.01x" in d.message
    assert denied(rule, intent(-10, 100, position=300, gross_exposure=30_000.0, equity=10_000.0)) is None
    assert denied(rule, intent(1, 100, equity=0.0)) is not None, "no equity: nothing that adds exposure"
    assert denied(rule, intent(1, 100, equity=-5.0)) is not None
    assert denied(rule, intent(10**6, 100)) is None, "equity unknown (NaN): not judged"


# ---------------------------------------------------------------------------------------- price, size
def test_price_collar_bounds_limit_prices_around_the_last_trade() -> None:
    rule = PriceCollar(100)  # 1 %
    assert denied(rule, intent(10, 100, limit_price=D(101))) is None
    assert denied(rule, intent(10, 100, limit_price=D(99))) is None
    for limit in ("101.01", "98.99"):
        d = denied(rule, intent(10, 100, limit_price=D(limit)))
        assert d is not None and d.code == "price_collar" and "101.0 bps" in d.message
    assert denied(rule, intent(10, 100)) is None, "market orders have no limit price to collar"


def test_lot_size_min_quantity_and_tick() -> None:
    lot, minimum, tick = (
        LotSize({"AAA": D(5)}),
        MinQuantity(D(10), {"BBB": D(1)}),
        PriceTick({"AAA": D("0.05")}),
    )
    assert denied(lot, intent(10)) is None and denied(lot, intent(-15)) is None
    assert denied(lot, intent(12)).code == "lot_size"  # type: ignore[union-attr]
    assert denied(LotSize({"BBB": D(5)}), intent(12)) is None, "a symbol without a lot is not checked"
    assert denied(minimum, intent(10)) is None and denied(minimum, intent(-10)) is None
    assert denied(minimum, intent(-9)).code == "min_quantity"  # type: ignore[union-attr]
    assert denied(minimum, OrderIntent("BBB", D(2), D(1), D(0), ())) is None
    assert denied(tick, intent(10, limit_price=D("100.05"))) is None
    d = denied(tick, intent(10, limit_price=D("100.03")))
    assert d is not None and d.code == "price_tick" and "price_tick 0.05" in d.message
    assert denied(tick, intent(10)) is None


# ------------------------------------------------------------------------------------------ order rate
def test_order_rate_bucket_allows_a_burst_then_refills_in_bar_time() -> None:
    rule = OrderRateLimit(6, burst=2)  # one order every 10 s, two at once
    policy = RiskPolicy([rule])
    assert policy.check(intent(1, ts=0)) is None and policy.check(intent(1, ts=0)) is None
    d = policy.check(intent(1, ts=0))
    assert d is not None and d.code == "order_rate" and "10.0 s" in d.message
    assert policy.check(intent(1, ts=9 * S)) is not None
    assert policy.check(intent(1, ts=10 * S)) is None  # exactly one token refilled
    assert policy.check(intent(1, ts=11 * S)) is not None
    assert policy.check(intent(1, ts=3_600 * S)) is None and policy.check(intent(1, ts=3_600 * S)) is None
    assert policy.check(intent(1, ts=3_600 * S)) is not None, "refills up to the burst, not beyond"


def test_a_denied_or_unsent_order_spends_no_token() -> None:
    rule = OrderRateLimit(1, burst=1)
    policy = RiskPolicy([MaxOrderQuantity(D(5)), rule])
    assert policy.check(intent(6)) is not None  # denied by the size: no token spent
    assert policy.first_denial(intent(1)) is None  # judged, not sent
    assert rule.tokens == 1
    assert policy.check(intent(1)) is None and rule.tokens == 0


def test_default_burst_is_the_rate_rounded_up() -> None:
    assert OrderRateLimit(2.5).burst == 3 and OrderRateLimit(0.5).burst == 1


# ------------------------------------------------------------------------------------------ states
def test_reduces() -> None:
    assert reduces(10, -10) and reduces(10, -1) and reduces(-10, 4)
    assert not reduces(10, -11) and not reduces(10, 1) and not reduces(0, 1) and not reduces(0, -1)


def test_halted_denies_everything_and_reducing_only_what_adds() -> None:
    assert NotHalted().check(intent(-5, position=10, state=HALTED)) is not None
    assert NotHalted().check(intent(5, state=REDUCING)) is None
    rule = ReduceOnly()
    assert rule.check(intent(-5, position=10, state=REDUCING)) is None
    assert rule.check(intent(-10, position=10, state=REDUCING)) is None
    d = rule.check(intent(-11, position=10, state=REDUCING))
    assert d is not None and d.code == "reduce_only" and "from 10 to -1" in d.message
    assert rule.check(intent(1, position=0, state=REDUCING)) is not None
    assert rule.check(intent(1, position=0, state=ACTIVE)) is None
    assert STATE_RULES.check(intent(1, state=HALTED)).code == "halted"  # type: ignore[union-attr]


@given(st.integers(-50, 50), st.lists(st.integers(-80, 80), max_size=20))
def test_no_order_that_passes_reduce_only_grows_or_flips_a_position(start: int, orders: list[int]) -> None:
    position = start
    for q in orders:
        if ReduceOnly().check(intent(q, position=position, state=REDUCING)) is None:
            assert abs(position + q) < abs(position) and (position + q) * position >= 0
            position += q


@given(st.integers(-50, 50), st.integers(-120, 120))
def test_the_reducing_part_of_an_order_goes_at_most_to_flat(position: int, quantity: int) -> None:
    part = reducing_part(position, quantity)
    assert abs(position + part) <= abs(position) and (position + part) * position >= 0
    assert part == 0 or (part * quantity > 0 and abs(part) <= abs(quantity))
    if reduces(position, quantity):
        assert part == quantity, "an order that only reduces is not cut"
    elif position and position * quantity < 0:
        assert part == -position, "a flip is cut to flat"
    else:
        assert part == 0, "an order that only adds has no reducing part"
    assert reducing_part(D(position), D(quantity)) == part


def test_reduce_only_words_a_cut_to_flat() -> None:
    cut = ReduceOnly().cut(intent(-150, position=100, state=REDUCING), D(-100))
    assert cut.code == "reduce_only"
    assert "from 100 to -50" in cut.message and "cut to flat: -100 passed, -50 refused" in cut.message


def test_state_machine_holds_end_at_their_bar_time() -> None:
    m = TradingStateMachine()
    change = m.hold(REDUCING, ts=0, until=100, reason="loss")
    assert change is not None and (change.before, change.after, change.until) == (ACTIVE, REDUCING, 100)
    assert m.tick(99) is None and m.state is REDUCING
    back = m.tick(100)
    assert back is not None and back.after is ACTIVE and "loss" in back.reason and not m.held


def test_a_stronger_hold_wins_and_a_weaker_one_still_running_takes_over() -> None:
    m = TradingStateMachine()
    m.hold(REDUCING, ts=0, until=1_000, reason="drawdown")
    assert m.hold(HALTED, ts=10, until=50, reason="loss").after is HALTED  # type: ignore[union-attr]
    assert m.hold(REDUCING, ts=20, until=2_000, reason="again") is None, "weaker than HALTED: no change"
    back = m.tick(50)
    assert back is not None and (back.before, back.after) == (HALTED, REDUCING) and m.until == 2_000
    assert m.tick(2_000).after is ACTIVE  # type: ignore[union-attr]


def test_holds_extend_never_shorten_and_none_is_for_the_rest_of_the_run() -> None:
    m = TradingStateMachine()
    m.hold(HALTED, ts=0, until=100, reason="breaker")
    m.hold(HALTED, ts=1, until=50, reason="shorter")
    assert m.until == 100
    m.hold(HALTED, ts=2, until=None, reason="kill switch")
    assert m.until is None and m.tick(10**18) is None and m.state is HALTED
    with pytest.raises(ValueError, match="ACTIVE"):
        m.hold(ACTIVE, ts=0, until=None, reason="")
    with pytest.raises(ValueError, match="ends before it starts"):
        TradingStateMachine().hold(REDUCING, ts=10, until=10, reason="")


# ---------------------------------------------------------------------------------------- breakers
def spec(
    loss: float | None = None,
    window: int = 5 * MIN,
    drawdown: float | None = None,
    cooldown: int = 10 * MIN,
    trips: int | None = None,
    action: TradingState = REDUCING,
) -> BreakerSpec:
    return BreakerSpec(loss, window, drawdown, action, cooldown, trips)


def run_path(bank: CircuitBreakers, path: list[tuple[int, float]]) -> list[tuple[int, str]]:
    """Feed (ts, equity of account 0) and return (ts, breaker) of each trip."""
    return [(ts, t.breaker) for ts, eq in path for t in bank.update(ts, np.array([eq]))]


def test_loss_in_window_trips_at_the_limit_not_before() -> None:
    bank = CircuitBreakers([spec(loss=5)], [10_000.0])
    trips = run_path(bank, [(0, 10_000), (MIN, 9_600), (2 * MIN, 9_500.01), (3 * MIN, 9_500)])
    assert trips == [(3 * MIN, "loss_window")]
    assert bank.trips.tolist() == [1]


def test_loss_in_window_looks_back_only_one_window() -> None:
    # 1 % down a minute: never 5 % within a 2-minute window, though 10 % down in total.
    bank = CircuitBreakers([spec(loss=5, window=2 * MIN)], [10_000.0])
    path = [(k * MIN, 10_000 * 0.99**k) for k in range(11)]
    assert run_path(bank, path) == []
    # 5 minutes lose 4.9 %; a 6-minute window trips once 5.85 % are lost within it
    bank = CircuitBreakers([spec(loss=5, window=5 * MIN)], [10_000.0])
    assert run_path(bank, path) == []
    bank = CircuitBreakers([spec(loss=5, window=6 * MIN)], [10_000.0])
    assert run_path(bank, path) == [(6 * MIN, "loss_window")]


def test_a_gain_earlier_in_the_window_is_the_reference() -> None:
    bank = CircuitBreakers([spec(loss=5, window=5 * MIN)], [10_000.0])
    # up to 11,000 then 10,400 within the window: the window started at 10,000, so 0 % lost
    assert run_path(bank, [(0, 10_000), (MIN, 11_000), (2 * MIN, 10_400)]) == []
    # at 6 min the window starts at the 1-min observation (11,000): 10,400 is 5.45 % below
    assert run_path(bank, [(6 * MIN, 10_400)]) == [(6 * MIN, "loss_window")]


def test_drawdown_from_peak() -> None:
    bank = CircuitBreakers([spec(drawdown=15)], [10_000.0])
    path = [(0, 10_000), (MIN, 12_000), (2 * MIN, 10_201), (3 * MIN, 10_200)]  # 15 % below 12,000
    trips = [
        (ts, t.breaker, round(t.loss_pct, 6), t.reference)
        for ts, eq in path
        for t in bank.update(ts, np.array([float(eq)]))
    ]
    assert trips == [(3 * MIN, "drawdown", 15.0, 12_000.0)]


def test_cooldown_then_rearmed_from_the_equity_at_its_end() -> None:
    bank = CircuitBreakers([spec(drawdown=10, cooldown=10 * MIN)], [100.0])
    assert run_path(bank, [(0, 100), (MIN, 90)]) == [(MIN, "drawdown")]
    trip_until = MIN + 10 * MIN
    # during the cooldown the breaker is tripped: a deeper loss is not a new trip
    assert run_path(bank, [(5 * MIN, 80), (trip_until - 1, 80)]) == []
    # cooldown over: re-armed at 80, so 80 is not a drawdown; 72 (10 % below 80) is
    assert run_path(bank, [(trip_until, 80), (trip_until + MIN, 73)]) == []
    assert run_path(bank, [(trip_until + 2 * MIN, 72)]) == [(trip_until + 2 * MIN, "drawdown")]


def test_the_last_trip_allowed_in_a_day_lasts_until_the_day_ends() -> None:
    bank = CircuitBreakers([spec(drawdown=10, cooldown=MIN, trips=2)], [100.0])
    t1 = bank.update(0, np.array([90.0]))
    assert [t.until for t in t1] == [MIN] and t1[0].trips_today == 1
    bank.update(MIN, np.array([90.0]))  # re-armed at 90
    t2 = bank.update(2 * MIN, np.array([81.0]))
    assert [(t.until, t.trips_today) for t in t2] == [(NS_PER_DAY, 2)]
    assert bank.update(NS_PER_DAY - 1, np.array([50.0])) == []
    # next day: re-armed at the day's first equity; the count starts again
    bank.update(NS_PER_DAY, np.array([50.0]))
    t3 = bank.update(NS_PER_DAY + MIN, np.array([45.0]))
    assert [(t.until, t.trips_today) for t in t3] == [(NS_PER_DAY + 2 * MIN, 1)]


def test_accounts_are_independent_and_only_those_with_a_spec_are_watched() -> None:
    bank = CircuitBreakers([spec(drawdown=10), None, spec(loss=10, action=HALTED)], [100.0, 100.0, 100.0])
    first = bank.update(0, np.array([89.0, 1.0, 95.0]))
    assert [(t.account, t.breaker) for t in first] == [(0, "drawdown")], "account 1 has no breaker"
    trips = bank.update(MIN, np.array([89.0, 1.0, 89.0]))
    assert [(t.account, t.breaker, t.action) for t in trips] == [(2, "loss_window", HALTED)]
    assert bank.trips.tolist() == [1, 0, 1]


def test_a_long_path_keeps_the_history_short() -> None:
    bank = CircuitBreakers([spec(loss=50, window=10 * MIN)], [100.0])
    for k in range(5_000):
        bank.update(k * MIN, np.array([100.0 + math.sin(k)]))
    assert bank._tail - bank._head <= 12 and len(bank._hist_ts) <= 64


def test_breaker_and_state_machine_on_a_scripted_path() -> None:
    bank = CircuitBreakers([spec(loss=5, window=5 * MIN, cooldown=3 * MIN)], [1_000.0])
    machine = TradingStateMachine()
    states = []
    for k, eq in enumerate([1_000, 990, 940, 930, 930, 930, 930, 880, 880]):
        ts = k * MIN
        machine.tick(ts)
        for trip in bank.update(ts, np.array([float(eq)])):
            machine.hold(trip.action, ts=ts, until=trip.until, reason=trip.breaker)
        states.append(machine.state.label[0])
    # 940 is 6 % below 1,000 -> REDUCING for 3 min; re-armed at 930 -> 880 is 5.4 % below -> again
    assert "".join(states) == "aarrraarr"


def test_a_transfer_shifts_the_references_so_only_real_losses_trip() -> None:
    bank = CircuitBreakers([spec(drawdown=15), spec(loss=5, window=5 * MIN), None], [10_000.0] * 3)
    assert bank.update(0, np.array([10_000.0, 10_000.0, 10_000.0])) == []
    assert bank.update(MIN, np.array([11_000.0, 10_000.0, 10_000.0])) == []  # a0's peak: 11,000
    # half of a0's and a1's capital moves to a2: a 50 % fall of equity that is no loss
    bank.shift(np.array([-5_500.0, -5_000.0, 10_500.0]), np.array([11_000.0, 10_000.0, 10_000.0]))
    assert bank.update(2 * MIN, np.array([5_500.0, 5_000.0, 20_500.0])) == []
    assert bank.update(3 * MIN, np.array([4_676.0, 4_751.0, 20_500.0])) == []
    trips = bank.update(4 * MIN, np.array([4_675.0, 4_750.0, 20_500.0]))  # 15 % / 5 % below, shifted
    assert [(t.account, t.breaker, t.reference, round(t.loss_pct, 6)) for t in trips] == [
        (0, "drawdown", 5_500.0, 15.0),
        (1, "loss_window", 5_000.0, 5.0),
    ]


def test_a_transfer_is_not_a_loss_or_a_gain_in_the_loss_window() -> None:
    bank = CircuitBreakers([spec(loss=5, window=2 * MIN)], [100.0])
    assert run_path(bank, [(0, 100), (MIN, 100)]) == []
    bank.shift(np.array([100.0]), np.array([100.0]))  # capital doubled: the window's start 100 -> 200
    assert run_path(bank, [(2 * MIN, 191)]) == [], "4.5 % below 200"
    assert run_path(bank, [(3 * MIN, 189)]) == [(3 * MIN, "loss_window")], "5.5 % lost of 200, not a gain"


def test_a_transfer_below_the_peak_keeps_the_drawdown_percentage() -> None:
    bank = CircuitBreakers([spec(drawdown=15)], [100_000.0])
    assert run_path(bank, [(0, 100_000), (MIN, 90_000)]) == []  # 10 % below the peak
    bank.shift(np.array([-60_000.0]), np.array([90_000.0]))  # 90k -> 30k: the peak scales to 33.3k
    assert run_path(bank, [(2 * MIN, 30_000)]) == [], "still 10 % below, not 25 %"
    assert run_path(bank, [(3 * MIN, 28_000)]) == [(3 * MIN, "drawdown")], "16 % below 33.3k"


def test_a_transfer_that_empties_an_account_rearms_its_breaker() -> None:
    bank = CircuitBreakers([spec(drawdown=15)], [100.0])
    bank.shift(np.array([-100.0]), np.array([100.0]))
    bank.shift(np.array([50.0]), np.array([0.0]))  # re-armed from 50
    assert run_path(bank, [(0, 50)]) == [] and run_path(bank, [(MIN, 42)]) == [(MIN, "drawdown")]


def test_breaker_spec_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="loss_pct or max_drawdown_pct"):
        spec()
    with pytest.raises(ValueError, match="REDUCING or HALTED"):
        spec(loss=1, action=ACTIVE)


# ------------------------------------------------------------------------------------ engine level
def bars(rows: list[dict[str, float | None]], step: int = 86_400 * S, t0: int = 0) -> BarBatch:
    """Per time step, symbol -> price (open = high = low = close, volume 1e6) or None (no bar)."""
    symbols = tuple(rows[0])
    shape = (len(rows), len(symbols))
    price = np.full(shape, np.nan)
    for t, row in enumerate(rows):
        for j, s in enumerate(symbols):
            if row[s] is not None:
                price[t, j] = row[s]
    valid = ~np.isnan(price)
    volume = np.where(valid, 1e6, np.nan)
    ts = t0 + np.arange(len(rows), dtype=np.int64) * step
    return BarBatch(
        symbols=symbols, ts=ts, open=price, high=price, low=price, close=price, volume=volume, valid=valid
    )


def flat(prices: list[float], symbol: str = "AAA") -> list[dict[str, float | None]]:
    return [{symbol: p} for p in prices]


def service(
    tmp_path: Path,
    agents: int = 2,
    symbols: tuple[str, ...] = ("AAA",),
    risk: RiskConfig | None = None,
    agent_risk: list[AgentRiskConfig | None] | None = None,
    **execution: object,
) -> ExecutionEngine:
    """The execution actor's service, in-process, with a ledger in ``tmp_path``; returns its engine."""
    return make_service(tmp_path, agents, symbols, risk, agent_risk, **execution).engine


def make_service(
    tmp_path: Path,
    agents: int = 2,
    symbols: tuple[str, ...] = ("AAA",),
    risk: RiskConfig | None = None,
    agent_risk: list[AgentRiskConfig | None] | None = None,
    **execution: object,
) -> _ExecutionService:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    ledger.begin_run(RunRecord("r1", 0, "{}", D(10_000) * agents, "USD", 0), [])
    ledger.close()
    return _ExecutionService(
        run_id="r1",
        agents=[f"a{i}" for i in range(agents)],
        capital=[D(10_000)] * agents,
        symbols=symbols,
        execution=ExecutionConfig(**{"slippage_bps": 0.0, "taker_fee_bps": 0.0, **execution}),
        risk=risk or RiskConfig(),
        ledger_url=f"sqlite:///{path}",
        agent_risk=agent_risk,
    )


def report_of(eng: ExecutionEngine) -> dict[str, Any]:
    return eng.report()


class _Written:
    """The engine's ledger for reading: each read first waits until what the engine wrote so far is
    written (the buffer writes behind)."""

    def __init__(self, ledger: BufferedLedger) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        assert self._ledger.flush(30)
        return getattr(self._ledger, name)


def ledger(eng: ExecutionEngine) -> Any:
    assert isinstance(eng.ledger, BufferedLedger)
    return _Written(eng.ledger)


def test_an_agent_over_its_own_limit_is_left_out_of_the_netting_and_recorded_once(tmp_path: Path) -> None:
    eng = service(tmp_path, agents=2, agent_risk=[AgentRiskConfig(max_position=D(50)), None])
    eng.process_block(bars(flat([100.0] * 5)), updates((0, 0, 0, 60), (0, 1, 0, 40)))
    assert eng.books.lots[:, 0].tolist() == [0, 40, 40]
    orders = ledger(eng).orders("r1")
    assert [(o.status, o.quantity, o.allocations) for o in orders] == [("filled", D(40), ())]
    assert ledger(eng).query("SELECT agent FROM order_allocations") == [("a1",)]
    events = ledger(eng).events("r1", "risk_denial")
    assert len(events) == 1, "the same standing demand is checked every bar, recorded once"
    event = events[0]
    assert (event["agent"], event["code"], event["detail"]["level"]) == ("a0", "max_position", "agent")
    assert "agent 'a0'" in event["message"] and "above max_position 50" in event["message"]
    assert event["detail"]["quantity"] == "60"
    report = report_of(eng)
    assert [a["risk_denials"] for a in report["agents"]] == [1, 0]


def test_an_agent_demand_that_comes_within_its_limit_goes_out(tmp_path: Path) -> None:
    eng = service(tmp_path, agents=1, agent_risk=[AgentRiskConfig(max_order_notional=D(5_000))])
    eng.process_block(bars(flat([100.0, 100.0, 40.0, 40.0, 40.0])), updates((0, 0, 0, 100)))
    assert eng.books.lots[0, 0] == 100  # 100 x 40 = 4,000 fits from bar 2 on
    assert [e["code"] for e in ledger(eng).events("r1", "risk_denial")] == ["max_order_notional"]


def test_agent_order_rate_in_bar_time(tmp_path: Path) -> None:
    # one order every 5 minutes, minute bars, and the agent changes its mind every bar
    eng = service(tmp_path, agents=1, agent_risk=[AgentRiskConfig(max_orders_per_minute=0.2, order_burst=1)])
    n = 12
    targets = updates(*[(t, 0, 0, t + 1) for t in range(n)])
    eng.process_block(bars(flat([100.0] * (n + 1)), step=MIN), targets)
    orders = ledger(eng).orders("r1")
    assert [o.ts // MIN for o in orders] == [0, 5, 10]
    codes = {e["code"] for e in ledger(eng).events("r1", "risk_denial")}
    assert codes == {"order_rate"}


def test_a_demand_left_waiting_by_a_portfolio_denial_spends_no_agent_tokens(tmp_path: Path) -> None:
    eng = service(
        tmp_path,
        agents=1,
        risk=RiskConfig(max_order_notional=D(5_000)),
        agent_risk=[AgentRiskConfig(max_orders_per_minute=1, order_burst=1)],
    )
    eng.process_block(bars(flat([100.0, 100.0, 100.0, 40.0, 40.0]), step=S), updates((0, 0, 0, 100)))
    # bars one second apart: a token takes a minute; the portfolio denial did not spend it
    assert eng.books.lots[0, 0] == 100
    assert [o.status for o in ledger(eng).orders("r1")] == ["denied", "filled"]


def test_drawdown_breaker_moves_an_agent_to_reducing_where_only_reducing_orders_pass(tmp_path: Path) -> None:
    breaker = BreakerConfig(max_drawdown_pct=10, action="reducing", cooldown="3d")
    eng = service(tmp_path, agents=2, agent_risk=[AgentRiskConfig(breakers=breaker), None])
    # a0 buys 100 @ 100 (all its capital); the price falls 10 % on bar 2 -> trip (until bar 5)
    prices = [100.0, 100.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0]
    targets = updates((0, 0, 0, 100), (2, 0, 0, 150), (2, 1, 0, 10), (3, 0, 0, 40), (5, 0, 0, 60))
    out = eng.process_block(bars(flat(prices)), targets)
    assert eng.books.lots[:2, 0].tolist() == [60, 10]  # 150 denied, 40 allowed, 60 allowed after cooldown
    trips = ledger(eng).events("r1", "circuit_breaker")
    assert [(e["agent"], e["code"], e["ts"] // NS_PER_DAY) for e in trips] == [("a0", "drawdown", 2)]
    assert "10.00% below its peak 10,000.00" in trips[0]["message"]
    states = ledger(eng).events("r1", "trading_state")
    assert [(e["agent"], e["code"], e["detail"]["from"], e["ts"] // NS_PER_DAY) for e in states] == [
        ("a0", "reducing", "active", 2),
        ("a0", "active", "reducing", 5),
    ]
    assert states[0]["detail"]["trigger"] == "circuit_breaker"
    denials = ledger(eng).events("r1", "risk_denial")
    assert [(e["agent"], e["code"]) for e in denials] == [("a0", "reduce_only")]
    report = report_of(eng)
    a0 = report["agents"][0]
    assert (a0["trading_state"], a0["breaker_trips"], a0["risk_denials"]) == ("active", 1, 1)
    assert out.equity.shape == (len(prices), 3)
    assert out.equity[2].tolist() == [9_000.0, 10_000.0, 19_000.0]


def test_portfolio_breaker_halts_the_federation_and_cancels_working_orders(tmp_path: Path) -> None:
    risk = RiskConfig(breakers=BreakerConfig(loss_pct=5, window="2d", action="halted", cooldown="10d"))
    eng = service(tmp_path, agents=1, symbols=("AAA", "BBB"), risk=risk)
    rows: list[dict[str, float | None]] = [
        {"AAA": 100.0, "BBB": 100.0},
        {"AAA": 100.0, "BBB": 100.0},  # buy 100 AAA fills here
        {"AAA": 80.0, "BBB": None},  # -20 % on AAA; a BBB order decided on bar 1 is still working
        {"AAA": 80.0, "BBB": 100.0},
        {"AAA": 80.0, "BBB": 100.0},
    ]
    eng.process_block(bars(rows), updates((0, 0, 0, 100), (1, 0, 1, 10), (3, 0, 0, 0)))
    assert eng.books.lots[:, 1].tolist() == [0, 0], "the BBB order was cancelled, nothing new sent"
    assert eng.books.lots[0, 0] == 100, "HALTED: not even a reducing order"
    orders = {o.symbol: o for o in ledger(eng).orders("r1")}
    assert orders["BBB"].status == "cancelled" and orders["BBB"].reason_code == "halted"
    assert "the federation is HALTED" in (orders["BBB"].reason or "")
    state = ledger(eng).events("r1", "trading_state")
    assert [(e["agent"], e["code"]) for e in state] == [(None, "halted")]
    assert state[0]["detail"]["cancelled"] == [orders["BBB"].client_order_id]
    breaker = ledger(eng).events("r1", "circuit_breaker")
    assert [(e["agent"], e["code"]) for e in breaker] == [(None, "loss_window")]
    halted = [e for e in ledger(eng).events("r1", "risk_denial") if e["code"] == "halted"]
    assert len(halted) == 2, "one per symbol whose demand stands, not one per bar"
    assert report_of(eng)["portfolio"]["trading_state"] == "halted"


def test_federation_reducing_checks_every_agent_and_the_net_order(tmp_path: Path) -> None:
    risk = RiskConfig(breakers=BreakerConfig(max_drawdown_pct=5, action="reducing", cooldown="30d"))
    eng = service(tmp_path, agents=2, risk=risk)
    prices = [100.0, 100.0, 90.0, 90.0, 90.0, 90.0]
    # both long 50; after the trip a0 wants to add, a1 to cut
    targets = updates((0, 0, 0, 50), (0, 1, 0, 50), (2, 0, 0, 80), (2, 1, 0, 20))
    eng.process_block(bars(flat(prices)), targets)
    assert eng.books.lots[:, 0].tolist() == [50, 20, 70]
    denials = ledger(eng).events("r1", "risk_denial")
    assert [(e["agent"], e["code"], e["detail"]["state"]) for e in denials] == [
        ("a0", "reduce_only", "reducing")
    ]


def test_a_reducing_agent_asking_to_flip_is_cut_to_flat_and_the_rest_refused(tmp_path: Path) -> None:
    breaker = BreakerConfig(max_drawdown_pct=10, action="reducing", cooldown="3d")
    eng = service(tmp_path, agents=2, agent_risk=[AgentRiskConfig(breakers=breaker), None])
    # a0 long 100 @ 100; the price falls 10 % on bar 2 (REDUCING until bar 5) and a0 asks for short 50
    prices = [100.0, 100.0, 90.0, 90.0, 90.0, 90.0, 90.0]
    eng.process_block(bars(flat(prices)), updates((0, 0, 0, 100), (2, 0, 0, -50)))
    orders = [(o.ts // NS_PER_DAY, o.side, o.quantity, o.status) for o in ledger(eng).orders("r1")]
    assert orders == [
        (0, "buy", D(100), "filled"),
        (2, "sell", D(100), "filled"),  # the losing long is closed while REDUCING
        (5, "sell", D(50), "filled"),  # the short only once the agent is ACTIVE again
    ]
    assert eng.books.lots[:, 0].tolist() == [-50, 0, -50]
    (event,) = ledger(eng).events("r1", "risk_denial")  # once: flat on bars 3-4, the rest still refused
    assert (event["agent"], event["code"], event["ts"] // NS_PER_DAY) == ("a0", "reduce_only", 2)
    assert "AAA -150 @ 90.0000 would take the position from 100 to -50" in event["message"]
    assert "cut to flat: -100 passed, -50 refused" in event["message"]
    assert "agent 'a0' is REDUCING" in event["message"]
    detail = event["detail"]
    assert (detail["level"], detail["quantity"], detail["passed"], detail["position"]) == (
        "agent",
        "-150",
        "-100",
        "100",
    )
    assert report_of(eng)["agents"][0]["risk_denials"] == 1


@pytest.mark.parametrize("action", ["reducing", "halted"])
def test_a_demand_that_only_adds_is_still_denied_and_halted_denies_a_flip(
    tmp_path: Path, action: str
) -> None:
    breaker = BreakerConfig(max_drawdown_pct=10, action=action, cooldown="30d")
    eng = service(tmp_path, agents=1, symbols=("AAA", "BBB"), agent_risk=[AgentRiskConfig(breakers=breaker)])
    rows: list[dict[str, float | None]] = [{"AAA": 100.0, "BBB": 10.0}] * 2 + [{"AAA": 90.0, "BBB": 10.0}] * 3
    # after the trip: flip AAA (long 100 -> short 50) and open BBB
    eng.process_block(bars(rows), updates((0, 0, 0, 100), (2, 0, 0, -50), (2, 0, 1, 10)))
    codes = sorted((e["detail"]["symbol"], e["code"]) for e in ledger(eng).events("r1", "risk_denial"))
    if action == "reducing":
        assert eng.books.lots[0].tolist() == [0, 0]
        assert codes == [("AAA", "reduce_only"), ("BBB", "reduce_only")]
    else:
        assert eng.books.lots[0].tolist() == [100, 0], "HALTED: not even the reducing part"
        assert codes == [("AAA", "halted"), ("BBB", "halted")]


def test_federation_reducing_cuts_the_net_order_to_flat_and_splits_its_fills_pro_rata(
    tmp_path: Path,
) -> None:
    risk = RiskConfig(breakers=BreakerConfig(max_drawdown_pct=2, action="reducing", cooldown="30d"))
    eng = service(tmp_path, agents=3, risk=risk)
    # a0 +100 and a1 +60 buy, a2 -120 sells: 120 crossed, the portfolio buys 40. The price falls 20 %
    # (portfolio -2.7 %): REDUCING. a0 and a1 close (each reduces its own position), a2 stays short, so
    # the net sell of 160 would take the portfolio from +40 to -120: cut to 40.
    prices = [100.0, 100.0, 80.0, 80.0, 80.0, 80.0]
    targets = updates((0, 0, 0, 100), (0, 1, 0, 60), (0, 2, 0, -120), (2, 0, 0, 0), (2, 1, 0, 0))
    eng.process_block(bars(flat(prices)), targets)
    assert eng.books.lots[:, 0].tolist() == [75, 45, -120, 0], "40 split 25/15 over the 100/60 asked"
    db = ledger(eng)
    orders = db.orders("r1")
    assert [(o.side, o.quantity, o.filled_quantity, o.status) for o in orders] == [
        ("buy", D(40), D(40), "filled"),
        ("sell", D(40), D(40), "filled"),
    ], "the rest (-120 at flat) is refused while REDUCING and not sent nor recorded again"
    cut = orders[1].client_order_id
    assert db.query(
        f"SELECT agent, qty_e8 FROM order_allocations WHERE client_order_id = '{cut}' ORDER BY agent"
    ) == [("a0", -100 * 10**8), ("a1", -60 * 10**8)], "allocations stay as asked"
    assert db.query(
        "SELECT a.agent, a.qty_e8 FROM fill_allocations a JOIN fills f USING (run_id, fill_id) "
        f"WHERE f.client_order_id = '{cut}' ORDER BY a.agent"
    ) == [("a0", -25 * 10**8), ("a1", -15 * 10**8)]
    (event,) = db.events("r1", "risk_denial")
    assert (event["agent"], event["code"], event["ts"] // NS_PER_DAY) == (None, "reduce_only", 2)
    assert event["detail"]["client_order_id"] == cut
    assert (event["detail"]["quantity"], event["detail"]["passed"], event["detail"]["position"]) == (
        "-160",
        "-40",
        "40",
    )
    assert "cut to flat: -40 passed, -120 refused" in event["message"]
    assert "the federation is REDUCING" in event["message"]
    eng.finish()
    # the books stay consistent: agents add up to the portfolio, in positions and in cash
    cash = {a: db.cash("r1", a) for a in ("a0", "a1", "a2")}
    assert sum(cash.values(), D(0)) == db.cash("r1") == D(30_000) - 40 * 100 + 40 * 80
    assert cash == {
        "a0": D(10_000) - 100 * 100 + 25 * 80,
        "a1": D(10_000) - 60 * 100 + 15 * 80,
        "a2": D(22_000),
    }
    positions = db.query("SELECT account, qty_e8 FROM positions WHERE symbol = 'AAA' ORDER BY account")
    assert dict(positions) == {"__portfolio__": 0, "a0": 75 * 10**8, "a1": 45 * 10**8, "a2": -120 * 10**8}


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-150, 150)), min_size=4, max_size=40))
def test_while_reducing_no_position_grows_or_flips(entries: list[tuple[int, int]]) -> None:
    eng = ExecutionEngine(
        run_id="r",
        agents=["a0", "a1", "a2", "a3"],
        capital=[D(10_000)] * 4,
        symbols=("AAA",),
        config=ExecutionConfig(max_volume_share=0.0001),  # 100 lots a bar: cut orders fill in parts
        risk=RiskPolicy([]),
        ledger=None,
        agent_risk=[build_agent_risk_policy(AgentRiskConfig(max_position=D(10**6)))] * 4,
    )
    # the first four entries open positions (all filled by the end of the block), then REDUCING for good
    opening = [(0, a, 0, q) for a, (_, q) in enumerate(entries[:4])]
    eng.process_block(bars(flat([100.0] * 10)), updates(*opening))
    assert not eng._pending and (eng.desired == eng.books.lots[:4]).all()
    eng.states[-1].hold(REDUCING, ts=10 * NS_PER_DAY, until=None, reason="test")
    prices = [99.0 + k % 3 for k in range(len(entries) + 2)]
    for t, price in enumerate(prices):  # one bar per block: check after every bar
        before = eng.books.lots[:, 0].copy()
        step = [(0, a, 0, q) for a, q in entries[4:][t : t + 1]]
        eng.process_block(bars(flat([price]), t0=(t + 10) * NS_PER_DAY), updates(*step))
        assert eng.states[-1].state is REDUCING
        after = eng.books.lots[:, 0]
        assert np.all(np.abs(after) <= np.abs(before)) and np.all(after * before >= 0)
        assert after[:4].sum() == after[4]


def test_kill_switch_halts_everything_and_cancels_every_working_order(tmp_path: Path) -> None:
    eng = service(tmp_path, agents=2, symbols=("AAA", "BBB"))
    # the last bar decides orders for both symbols; they would execute on the next block's first bar
    eng.process_block(bars([{"AAA": 100.0, "BBB": 50.0}] * 2), updates((1, 0, 0, 10), (1, 1, 1, -5)))
    assert eng.halt("operator pressed the button") == 2
    db = ledger(eng)
    assert [(o.symbol, o.status, o.reason_code) for o in db.orders("r1")] == [
        ("AAA", "cancelled", "halted"),
        ("BBB", "cancelled", "halted"),
    ], "written at once, not at the next block"
    (event,) = db.events("r1", "trading_state")
    assert (event["agent"], event["code"], event["detail"]["trigger"]) == (None, "halted", "kill_switch")
    assert event["detail"]["reason"] == "kill switch: operator pressed the button"
    assert event["detail"]["until"] is None
    eng.process_block(bars([{"AAA": 100.0, "BBB": 50.0}] * 3, t0=2 * NS_PER_DAY), updates())
    assert eng.books.lots.sum() == 0 and eng.states[-1].state is HALTED
    denials = db.events("r1", "risk_denial")
    assert sorted(e["detail"]["symbol"] for e in denials) == ["AAA", "BBB"]
    assert all(e["code"] == "halted" and e["agent"] is None for e in denials)
    assert eng.halt("again") == 0 and len(db.events("r1", "trading_state")) == 2


def test_the_execution_service_exposes_the_kill_switch(tmp_path: Path) -> None:
    svc = make_service(tmp_path, agents=1)
    svc.process_block(bars(flat([100.0])), updates((0, 0, 0, 10)))
    assert svc.halt("risk desk") == 1
    report = svc.finish()
    assert report["portfolio"]["trading_state"] == "halted"
    db = SQLiteLedger(tmp_path / "ledger.db")
    assert [o.status for o in db.orders("r1")] == ["cancelled"]
    assert [e["detail"]["trigger"] for e in db.events("r1", "trading_state")] == ["kill_switch"]


def test_agent_halted_by_its_breaker_cancels_only_orders_it_is_in(tmp_path: Path) -> None:
    breaker = BreakerConfig(loss_pct=10, window="5d", action="halted", cooldown="10d")
    eng = service(
        tmp_path,
        agents=2,
        symbols=("AAA", "BBB", "CCC"),
        agent_risk=[AgentRiskConfig(breakers=breaker), None],
    )
    rows: list[dict[str, float | None]] = [
        {"AAA": 100.0, "BBB": 100.0, "CCC": 100.0},
        {"AAA": 100.0, "BBB": 100.0, "CCC": 100.0},
        {"AAA": 85.0, "BBB": None, "CCC": None},
        {"AAA": 85.0, "BBB": 100.0, "CCC": 100.0},
    ]
    # a0: all-in AAA on bar 0; on bar 1 a0 wants BBB, a1 wants CCC (both wait for their next bar)
    targets = updates((0, 0, 0, 90), (1, 0, 1, 1), (1, 1, 2, 1))
    eng.process_block(bars(rows), targets)
    statuses = {o.symbol: o.status for o in ledger(eng).orders("r1")}
    assert statuses == {"AAA": "filled", "BBB": "cancelled", "CCC": "filled"}
    (state,) = ledger(eng).events("r1", "trading_state")
    assert (state["agent"], state["code"], len(state["detail"]["cancelled"])) == ("a0", "halted", 1)


def test_an_agent_halt_leaves_working_the_orders_it_shares_with_agents_still_trading(tmp_path: Path) -> None:
    halting = AgentRiskConfig(
        breakers=BreakerConfig(loss_pct=10, window="5d", action="halted", cooldown="10d")
    )
    eng = service(
        tmp_path, agents=3, symbols=("AAA", "BBB", "CCC", "DDD"), agent_risk=[halting, halting, None]
    )
    rows: list[dict[str, float | None]] = [
        {"AAA": 100.0, "BBB": 100.0, "CCC": 100.0, "DDD": 100.0},
        {"AAA": 100.0, "BBB": 100.0, "CCC": 100.0, "DDD": 100.0},
        {"AAA": 85.0, "BBB": None, "CCC": None, "DDD": None},  # a0 and a1 lose 13.5 %: both HALTED
        {"AAA": 85.0, "BBB": 100.0, "CCC": 100.0, "DDD": 100.0},
        {"AAA": 85.0, "BBB": 100.0, "CCC": 100.0, "DDD": 100.0},
    ]
    # a0, a1 all-in AAA on bar 0; on bar 1: BBB for a0 + a2, CCC for a0 + a1, DDD for a0 alone
    targets = updates(
        (0, 0, 0, 90), (0, 1, 0, 90), (1, 0, 1, 1), (1, 2, 1, 2), (1, 0, 2, 1), (1, 1, 2, 1), (1, 0, 3, 1)
    )
    eng.process_block(bars(rows), targets)
    statuses = {o.symbol: o.status for o in ledger(eng).orders("r1")}
    assert statuses == {"AAA": "filled", "BBB": "filled", "CCC": "cancelled", "DDD": "cancelled"}
    assert eng.books.lots[:, 1].tolist() == [1, 0, 2, 3], "decided before the halt, shared: a0's share fills"
    states = ledger(eng).events("r1", "trading_state")
    assert [(e["agent"], e["code"], len(e["detail"]["cancelled"])) for e in states] == [
        ("a0", "halted", 1),  # DDD (a0's alone); CCC waits: a1 is still trading
        ("a1", "halted", 1),  # CCC: every agent in it is HALTED now
    ]


def test_rebalance_moves_cash_between_sub_accounts_and_is_recorded_at_once(tmp_path: Path) -> None:
    svc = make_service(tmp_path, agents=3, agent_risk=[None, AgentRiskConfig(max_leverage=1.0), None])
    eng = svc.engine
    # a0 holds 50 @ 100; a1 may hold 100 x 100 = its 10,000 at leverage 1, but asks only 60 for now
    eng.process_block(bars(flat([100.0, 100.0])), updates((0, 0, 0, 50), (0, 1, 0, 60)))
    realized, fees = eng.books.realized(0), list(eng.books.fees)
    portfolio_cash = eng.books.cash[3]
    ts = NS_PER_DAY
    svc.rebalance([D("12500.5"), D("5000"), D("12499.5")], ts)
    assert eng.books.cash[:3] == [D(5_000) + D("2500.5"), D(4_000) - D(5_000), D("12499.5")]
    assert eng.books.cash[3] == portfolio_cash, "the portfolio's account does not change"
    assert eng.books.cash_f.tolist() == [float(c) for c in eng.books.cash]
    assert eng.books.realized(0) == realized and eng.books.fees == fees, "money moved, not P&L"
    db = ledger(eng)  # written at once, not at the next block
    assert [db.cash("r1", a) for a in ("a0", "a1", "a2")] == eng.books.cash[:3]
    assert db.cash("r1") == portfolio_cash == sum(eng.books.cash[:3], D(0)), "transfers sum to 0"
    (event,) = db.events("r1", "allocation_transfer")
    assert (event["ts"], event["agent"], event["code"]) == (ts, None, "rebalance")
    assert event["detail"] == {"a0": "2500.5", "a1": "-5000", "a2": "2499.5"}
    assert "a0 +2500.5, a1 -5000, a2 +2499.5" in event["message"]
    report = eng.report()
    assert [a["allocated_capital"] for a in report["agents"]] == [D("12500.5"), D(5_000), D("12499.5")]  # type: ignore[index]
    assert [a["equity"] for a in report["agents"]] == [D("12500.5"), D(5_000), D("12499.5")]  # type: ignore[index]
    # a1's leverage now reads its equity of 5,000: 60 held, 100 asked -> 10,000 / 5,000 = 2x, denied
    out = eng.process_block(bars(flat([100.0] * 3), t0=2 * NS_PER_DAY), updates((0, 1, 0, 100)))
    assert eng.books.lots[1, 0] == 60
    (denial,) = db.events("r1", "risk_denial")
    assert denial["code"] == "max_leverage" and "equity 5,000.00" in denial["message"]
    assert out.equity[0].tolist() == [12_500.5, 5_000.0, 12_499.5, 30_000.0]
    # the next rebalance moves money from the current allocation; an unchanged one records nothing
    svc.rebalance([D("10000"), D("10000"), D("10000")], 5 * NS_PER_DAY)
    svc.rebalance([D("10000"), D("10000"), D("10000")], 6 * NS_PER_DAY)
    transfers = [e["detail"] for e in db.events("r1", "allocation_transfer")]
    assert transfers[1:] == [{"a0": "-2500.5", "a1": "5000", "a2": "-2499.5"}]
    assert eng.books.cash[:3] == [D(5_000), D(4_000), D(10_000)]
    svc.finish()


def test_rebalance_refuses_capital_that_does_not_add_up(tmp_path: Path) -> None:
    eng = service(tmp_path, agents=2)
    with pytest.raises(ValueError, match="2 agents"):
        eng.rebalance([D(20_000)], 0)
    with pytest.raises(ValueError, match="sum to 20001, not the portfolio's total capital 20000"):
        eng.rebalance([D(10_000), D(10_001)], 0)
    with pytest.raises(ValueError, match=r"'a0' \(-1\)"):
        eng.rebalance([D(-1), D(20_001)], 0)
    with pytest.raises(ValueError, match=r"multiple of 1e-8 .*'a1' \(9999.999999999\)"):
        eng.rebalance([D("10000.000000001"), D("9999.999999999")], 0)
    assert eng.books.cash == [D(10_000), D(10_000), D(20_000)] and eng.allocated == [D(10_000)] * 2


def test_a_capital_cut_trips_no_breaker_and_a_loss_after_it_counts_from_the_shifted_peak(
    tmp_path: Path,
) -> None:
    drawdown = AgentRiskConfig(breakers=BreakerConfig(max_drawdown_pct=15, action="reducing", cooldown="30d"))
    eng = service(tmp_path, agents=2, agent_risk=[drawdown, None])
    eng.process_block(bars(flat([100.0, 100.0])), updates())
    eng.rebalance([D(5_000), D(15_000)], NS_PER_DAY)  # a0's equity halves: no loss
    # a0 buys 50 @ 100 with its 5,000; 86 is 14 % below the shifted peak of 5,000, 85 is 15 %
    prices = [100.0, 100.0, 86.0, 85.0, 85.0]
    eng.process_block(bars(flat(prices), t0=2 * NS_PER_DAY), updates((0, 0, 0, 50)))
    trips = ledger(eng).events("r1", "circuit_breaker")
    assert [(e["agent"], e["code"], e["ts"] // NS_PER_DAY) for e in trips] == [("a0", "drawdown", 5)]
    assert trips[0]["detail"]["reference"] == "5000.00" and trips[0]["detail"]["equity"] == "4250.00"


def test_portfolio_gross_exposure_counts_orders_decided_earlier_in_the_same_bar(tmp_path: Path) -> None:
    eng = service(tmp_path, agents=1, symbols=("AAA", "BBB"), risk=RiskConfig(max_gross_exposure=D(15_000)))
    eng.process_block(bars([{"AAA": 100.0, "BBB": 100.0}] * 3), updates((0, 0, 0, 100), (0, 0, 1, 100)))
    assert eng.books.lots[1].tolist() == [100, 0]
    (denied_order,) = [o for o in ledger(eng).orders("r1") if o.status == "denied"]
    assert denied_order.symbol == "BBB" and denied_order.reason_code == "max_gross_exposure"
    assert "from 10,000.00 to 20,000.00" in (denied_order.reason or "")


def test_agent_leverage_uses_its_own_equity(tmp_path: Path) -> None:
    eng = service(tmp_path, agents=2, agent_risk=[AgentRiskConfig(max_leverage=1.5), None])
    eng.process_block(bars(flat([100.0] * 3)), updates((0, 0, 0, 160), (0, 1, 0, 160)))
    assert eng.books.lots[:2, 0].tolist() == [0, 160]
    (event,) = ledger(eng).events("r1", "risk_denial")
    assert event["code"] == "max_leverage" and "1.60x" in event["message"]


def test_price_collar_and_instrument_tick_on_limit_orders(tmp_path: Path) -> None:
    risk = RiskConfig(price_collar_bps=100, instruments={"AAA": InstrumentConfig(price_tick=D("0.05"))})
    eng = service(tmp_path, agents=1, risk=risk, order_type="limit", limit_offset_bps=50)
    eng.process_block(bars(flat([100.13, 99.0, 99.0])), updates((0, 0, 0, 10)))
    (order,) = ledger(eng).orders("r1")
    assert order.limit_price == D("99.65"), "99.62935 rounded to the instrument's 0.05 tick"
    assert order.status == "filled"
    eng = service(tmp_path / "b", agents=1, risk=risk, order_type="limit", limit_offset_bps=150)
    eng.process_block(bars(flat([100.0] * 3)), updates((0, 0, 0, 10)))
    (order,) = ledger(eng).orders("r1")
    assert order.status == "denied" and order.reason_code == "price_collar"


def test_instrument_lot_and_minimum_size_deny_the_net_order(tmp_path: Path) -> None:
    risk = RiskConfig(instruments={"AAA": InstrumentConfig(lot_size=D(5), min_quantity=D(10))})
    eng = service(tmp_path, agents=1, risk=risk)
    eng.process_block(bars(flat([100.0] * 6)), updates((0, 0, 0, 5), (2, 0, 0, 12), (4, 0, 0, 15)))
    assert [(o.status, o.reason_code) for o in ledger(eng).orders("r1")] == [
        ("denied", "min_quantity"),
        ("denied", "lot_size"),
        ("filled", None),
    ]


def test_empty_risk_config_changes_nothing(tmp_path: Path) -> None:
    eng = service(tmp_path, agents=3)
    assert eng.risk.rules == [] and eng.agent_risk == [None, None, None] and not eng.breakers
    out = eng.process_block(bars(flat([100.0, 101.0, 102.0])), updates((0, 0, 0, 10), (0, 1, 0, -4)))
    assert eng.books.lots[:, 0].tolist() == [10, -4, 0, 6]
    assert ledger(eng).events("r1") == []
    # a0 bought 10 @ 101 (4 crossed with a1), the portfolio 6; marked at 102
    assert out.equity[-1].tolist() == [10_010.0, 9_996.0, 10_000.0, 30_006.0]


def test_block_equity_matches_the_exact_books(tmp_path: Path) -> None:
    eng = service(tmp_path, agents=2, symbols=("AAA", "BBB"), taker_fee_bps=3, slippage_bps=2)
    rng = np.random.default_rng(5)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(40, 2)), axis=0))
    rows: list[dict[str, float | None]] = [
        {"AAA": round(a, 2), "BBB": round(b, 2)} for a, b in prices.tolist()
    ]
    entries = [
        (t, int(rng.integers(2)), int(rng.integers(2)), int(rng.integers(-60, 60))) for t in range(0, 38, 3)
    ]
    out = eng.process_block(bars(rows), updates(*entries))
    report = report_of(eng)
    exact = [float(a["equity"]) for a in report["agents"]] + [float(report["portfolio"]["equity"])]
    assert np.allclose(out.equity[-1], exact, rtol=0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 29), st.integers(0, 2), st.integers(-120, 120)), max_size=40))
def test_no_demand_that_passes_an_agent_limit_leaves_its_position_above_it(
    entries: list[tuple[int, int, int]],
) -> None:
    limits = [AgentRiskConfig(max_position=D(50)), AgentRiskConfig(max_position=D(80)), None]
    eng = ExecutionEngine(
        run_id="r",
        agents=["a0", "a1", "a2"],
        capital=[D(10_000)] * 3,
        symbols=("AAA",),
        config=ExecutionConfig(),
        risk=RiskPolicy([]),
        ledger=None,
        agent_risk=[build_agent_risk_policy(c) for c in limits],
    )
    rng = np.random.default_rng(len(entries))
    prices = (100 * np.exp(np.cumsum(rng.normal(0, 0.01, 31)))).tolist()
    for t, price in enumerate(prices):  # one bar per block: the limit holds after every bar
        eng.process_block(
            bars(flat([price]), t0=t * NS_PER_DAY), updates(*[(0, a, 0, q) for r, a, q in entries if r == t])
        )
        assert abs(eng.books.lots[0, 0]) <= 50 and abs(eng.books.lots[1, 0]) <= 80
