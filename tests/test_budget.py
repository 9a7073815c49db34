"""Budgets without Ray: the budget book's rules, no overshoot (property and threaded stress), the agent's
``spend`` API and the budget config.

Every test of the rules runs twice (``authority``): on the in-memory book of the actor, and on Redis (the
same rules as Lua scripts, ``[budgets] authority = "redis"``), where agents' calls go to Redis directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents import Agent, BarBatch, BudgetExceeded, Fill, Signal
from agents.budget import BudgetBackend, Refusal
from agents.model import FillRow
from federation.aggregator import Aggregator
from federation.budget_authority import BudgetService, LocalBudgetBackend
from federation.budget_redis import RedisBudgetBook, RedisTallies
from federation.config import BudgetEntry, BudgetSettings, duration_ns
from federation.runners.host import AgentHost
from policies.aggregation import FixedWeights
from policies.budget import E8, NS_PER_DAY, BudgetBook, BudgetLimit, BudgetState

HOUR = 3600 * 10**9


def units(x: float) -> int:
    return round(x * E8)


MakeBook = Callable[..., BudgetBook]
MakeService = Callable[..., BudgetService]


@pytest.fixture(params=["memory", "redis"])
def authority(request: pytest.FixtureRequest) -> str:
    """Where the budgets are kept: the in-memory book (the actor's) or Redis."""
    return str(request.param)


@pytest.fixture
def redis_settings(authority: str, request: pytest.FixtureRequest) -> dict[str, object]:
    """``[budgets]`` keys that put the tallies in the test's own Redis keys (none: in memory)."""
    if authority == "memory":
        return {}
    prefix = request.getfixturevalue("redis_prefix")
    return {
        "authority": "redis",
        "redis": request.getfixturevalue("redis_url"),
        "key_prefix": f"{prefix}budget",
    }


@pytest.fixture
def make_book(redis_settings: dict[str, object]) -> MakeBook:
    """``make_book(*limits, prices=..., ttl_s=...)``: a book of agent "a" with these budgets and "b" with none."""

    def make(*limits: BudgetLimit, prices: dict[str, float] | None = None, ttl_s: float = 300) -> BudgetBook:
        priced = {k: Decimal(repr(v)) for k, v in (prices or {}).items()}
        budgets = {"a": list(limits), "b": []}
        if not redis_settings:
            return BudgetBook(budgets, priced, reservation_ttl_ns=int(ttl_s * 1e9))
        config = BudgetSettings(prices=priced, reservation_ttl_s=ttl_s).model_copy(update=redis_settings)
        return RedisBudgetBook(RedisTallies.from_settings(budgets, config))

    return make


@pytest.fixture
def make_service(redis_settings: dict[str, object]) -> MakeService:
    """``make_service(budgets, settings=None, **kwargs)``: a :class:`BudgetService` of this authority."""

    def make(
        budgets: dict[str, list[BudgetLimit]], config: BudgetSettings | None = None, **kw: object
    ) -> BudgetService:
        return BudgetService(budgets, (config or BudgetSettings()).model_copy(update=redis_settings), **kw)  # type: ignore[arg-type]

    return make


def agent_side(service: BudgetService) -> BudgetBackend:
    """What agents call: the actor's calls in-process, or Redis directly."""
    return (
        service.agent_backend() if isinstance(service.book, RedisBudgetBook) else LocalBudgetBackend(service)
    )


def limit(kind: str, cap: float, **kw: object) -> BudgetLimit:
    return BudgetLimit(kind=kind, limit_e8=units(cap), **kw)  # type: ignore[arg-type]


def codes(b: BudgetBook) -> list[str]:
    return [e.code for e in b.drain_events()]


# ------------------------------------------------------------------------------------------- the rules
def test_reserve_counts_outstanding_reservations_and_refuses_what_does_not_fit(make_book: MakeBook) -> None:
    b = make_book(limit("api_calls", 10))
    first = b.reserve("a", "api_calls", units(6), 0, 0)
    assert isinstance(first, int)
    refused = b.reserve("a", "api_calls", units(5), 0, 0)  # 6 reserved + 5 > 10, nothing used yet
    assert isinstance(refused, Refusal)
    assert refused.remaining_e8 == units(4) and refused.limit_e8 == units(10)
    assert "past 10" in refused.message and "left 4" in refused.message
    assert isinstance(b.reserve("a", "api_calls", units(4), 0, 0), int)  # exactly to the cap: allowed


def test_settle_charges_the_actual_and_releases_the_rest(make_book: MakeBook) -> None:
    b = make_book(limit("llm_tokens", 1000))
    rid = b.reserve("a", "llm_tokens", units(800), 0, 0)
    assert isinstance(rid, int)
    b.settle(rid, units(300))
    assert b.remaining("a", "llm_tokens") == units(700)
    row = next(r for r in b.report() if r["kind"] == "llm_tokens")
    assert row["usage_e8"] == units(300) and row["reservations"] == 1


def test_cancel_releases_without_charge_and_settling_twice_changes_nothing(make_book: MakeBook) -> None:
    b = make_book(limit("api_calls", 2))
    rid = b.reserve("a", "api_calls", units(2), 0, 0)
    assert isinstance(rid, int)
    b.cancel(rid)
    assert b.remaining("a", "api_calls") == units(2)
    b.settle(rid, units(2))  # unknown id now: ignored
    assert b.remaining("a", "api_calls") == units(2)


def test_unsettled_reservation_expires_and_is_charged_in_full(make_book: MakeBook) -> None:
    b = make_book(limit("api_calls", 5), ttl_s=10)
    rid = b.reserve("a", "api_calls", units(3), 0, wall_ns=0)
    assert b.expire(wall_ns=9 * 10**9) == 0
    assert b.expire(wall_ns=10 * 10**9) == 1
    assert b.remaining("a", "api_calls") == units(2)
    assert "expired" in codes(b)
    assert isinstance(rid, int)
    b.settle(rid, 0)  # a late settle does not refund an expired reservation
    assert b.remaining("a", "api_calls") == units(2)


def test_money_budget_prices_every_meter_and_caps_them_together(make_book: MakeBook) -> None:
    b = make_book(limit("money", 1.0), prices={"api_calls": 0.1, "llm_tokens": 0.001})
    rid = b.reserve("a", "api_calls", units(5), 0, 0)  # 0.50
    assert isinstance(rid, int)
    b.settle(rid, units(5))
    assert isinstance(b.reserve("a", "llm_tokens", units(501), 0, 0), Refusal)  # 0.501 > 0.50 left
    rid = b.reserve("a", "llm_tokens", units(500), 0, 0)
    assert isinstance(rid, int)
    b.settle(rid, units(500))
    assert b.remaining("a", "api_calls") == 0
    money = next(r for r in b.report() if r["kind"] == "money")
    assert money["usage_e8"] == units(1.0) and money["cost_e8"] == units(1.0)


def test_fees_and_unpriced_meters_do_not_count_toward_money(make_book: MakeBook) -> None:
    b = make_book(limit("money", 1.0), prices={"api_calls": 0.5})
    b.charge("a", "fees", units(100), 0)
    b.charge("a", "my_meter", units(100), 0)
    assert b.remaining("a", "api_calls") == units(2)
    assert b.state("a") is BudgetState.ACTIVE


def test_soft_limit_warns_once_then_hard_limit_applies_the_action(make_book: MakeBook) -> None:
    b = make_book(limit("api_calls", 10, soft=0.5, action="suspend"))
    for _ in range(4):
        b.charge("a", "api_calls", units(1), 0)
    assert codes(b) == []
    b.charge("a", "api_calls", units(1), 0)
    assert codes(b) == ["soft_limit"]
    b.charge("a", "api_calls", units(4), 0)
    assert codes(b) == []
    assert b.state("a") is BudgetState.ACTIVE
    b.charge("a", "api_calls", units(1), 0)
    events = b.drain_events()
    assert [e.code for e in events] == ["suspend"]
    assert events[0].amount_e8 == events[0].limit_e8 == units(10)
    assert b.state("a") is BudgetState.SUSPENDED


def test_a_refusal_applies_the_action_before_the_cap_is_used_up(make_book: MakeBook) -> None:
    b = make_book(limit("llm_tokens", 100, action="throttle", throttle_factor=3))
    rid = b.reserve("a", "llm_tokens", units(90), 0, 0)
    assert isinstance(rid, int)
    b.settle(rid, units(90))
    assert isinstance(b.reserve("a", "llm_tokens", units(20), 0, 0), Refusal)
    assert codes(b) == ["soft_limit", "refused", "throttle"]
    assert b.state("a") is BudgetState.THROTTLED
    assert isinstance(b.reserve("a", "llm_tokens", units(20), 0, 0), Refusal)
    assert codes(b) == []  # one refusal event per period; all are counted
    row = next(r for r in b.report() if r["kind"] == "llm_tokens")
    assert row["refusals"] == 2 and row["actions"] == {"throttle": 1}


def test_an_oversized_request_or_room_held_by_open_reservations_is_refused_without_action(
    make_book: MakeBook,
) -> None:
    b = make_book(limit("llm_tokens", 1000, action="suspend"))
    assert isinstance(b.reserve("a", "llm_tokens", units(2000), 0, 0), Refusal)  # nothing used yet
    assert b.state("a") is BudgetState.ACTIVE
    rid = b.reserve("a", "llm_tokens", units(900), 0, 0)
    assert isinstance(rid, int)
    assert isinstance(b.reserve("a", "llm_tokens", units(200), 0, 0), Refusal)  # 900 only reserved
    assert b.state("a") is BudgetState.ACTIVE
    b.cancel(rid)
    assert isinstance(b.reserve("a", "llm_tokens", units(200), 0, 0), int)  # free again, no lasting effect
    assert [e.code for e in b.drain_events()] == ["refused"]  # one refusal event per period


def test_prices_are_exact_below_one_hundred_millionth(make_book: MakeBook) -> None:
    b = make_book(limit("money", 1), prices={"llm_tokens": 0.000000125})  # 0.125 per million tokens
    assert b.remaining("a", "llm_tokens") == units(8_000_000)
    assert isinstance(b.reserve("a", "llm_tokens", units(8_000_001), 0, 0), Refusal)
    rid = b.reserve("a", "llm_tokens", units(8_000_000), 0, 0)
    assert isinstance(rid, int)
    b.settle(rid, units(8_000_000))
    assert b.spent_e8("a") == units(1)


def test_throttle_factor_and_flatten_come_from_the_budgets_that_were_hit(make_book: MakeBook) -> None:
    b = make_book(
        limit("api_calls", 1, action="suspend", on_suspend="hold"),
        limit("fees", 1, action="stop", on_suspend="flatten"),
        limit("llm_tokens", 1, action="throttle", throttle_factor=50),
    )
    b.charge("a", "api_calls", units(1), 0)
    assert b.state("a") is BudgetState.SUSPENDED and b.mode("a") == (1, False)
    b.charge("a", "fees", units(1), 0)
    assert b.state("a") is BudgetState.STOPPED and b.mode("a") == (1, True)


def test_money_spent_counts_each_meter_once_whatever_the_budgets(make_book: MakeBook) -> None:
    b = make_book(limit("api_calls", 10, period="day"), limit("api_calls", 100), prices={"api_calls": 0.05})
    rid = b.reserve("a", "api_calls", units(1), 0, 0)
    assert isinstance(rid, int)
    b.settle(rid, units(1))
    b.charge("a", "fees", units(0.3), 0)
    assert b.spent_e8("a") == units(0.35)
    assert [r["period"] for r in b.report() if r["kind"] == "api_calls"] == ["day 1970-01-01", "run"]


def test_compute_is_reserved_per_step_and_cut_to_what_is_left(make_service: MakeService) -> None:
    service = make_service({"a": [limit("compute_s", 1.0)]}, BudgetSettings())
    service.step({}, 0)  # first step: twice the minimum estimate (10 ms) is reserved
    assert service.book.remaining("a", "compute_s") == units(0.98)
    report = service.step({"a": {"compute_s": units(0.3)}}, 1)  # 0.3 s used: reserve 0.6 for the next
    assert report.statuses == {} and service.book.remaining("a", "compute_s") == units(0.1)
    service.step({"a": {"compute_s": units(0.3)}}, 2)  # 0.6 used, 0.4 left: the rest is reserved
    assert service.book.remaining("a", "compute_s") == 0 and service._compute_rid
    report = service.step({"a": {"compute_s": units(0.395)}}, 3)  # 0.995 used: 5 ms left, too little
    assert report.statuses["a"].state is BudgetState.SUSPENDED and not report.statuses["a"].compute_granted
    assert [e.code for e in report.events] == ["soft_limit", "refused", "suspend"]


def test_a_heavy_first_step_does_not_set_the_compute_pace(make_service: MakeService) -> None:
    service = make_service({"a": [limit("compute_s", 1.0)]}, BudgetSettings())
    service.step({}, 0)
    service.step({"a": {"compute_s": units(0.6)}}, 1)  # on_start + first block: 0.6 s; 0.4 reserved
    service.step({"a": {"compute_s": units(0.005)}}, 2)  # then 5 ms steps
    service.step({"a": {"compute_s": units(0.005)}}, 3)
    # the lower median of (0.6, 5 ms, 5 ms) is 5 ms: 20 ms (twice the 10 ms minimum) is reserved
    assert service.book.remaining("a", "compute_s") == units(1 - 0.61 - 0.02)
    assert service.book.state("a") is BudgetState.ACTIVE


def test_compute_refused_for_room_held_by_an_open_reservation_is_retried_not_acted_on(
    make_service: MakeService,
) -> None:
    service = make_service(
        {"a": [limit("money", 1.0)]},
        BudgetSettings(prices={"compute_s": Decimal(1), "api_calls": Decimal("0.5")}),
    )
    rid = service.reserve("a", "api_calls", units(1.98), 0)  # 0.99 of the money budget, still open
    assert isinstance(rid, int)
    service.step({}, 0)  # 0.01 left: reserved for the first step
    report = service.step({"a": {"compute_s": units(0.001)}}, 1)  # 9 ms left: too little, retried
    assert not report.statuses["a"].compute_granted and report.statuses["a"].state is BudgetState.ACTIVE
    service.cancel(rid)
    report = service.step({}, 2)
    assert report.statuses == {}  # granted again: no lasting action


def test_finish_charges_the_last_step_without_reserving_another(make_service: MakeService) -> None:
    service = make_service({"a": [limit("compute_s", 0.1)]}, BudgetSettings())
    for t in range(3):
        service.step({"a": {"compute_s": units(0.03)}} if t else {}, t)
    final = service.finish({"a": {"compute_s": units(0.03)}})
    assert "suspend" not in [e.code for e in final.events]
    assert [r["state"] for r in final.rows] == ["active"]


def test_finish_returns_the_events_of_the_last_charges(make_service: MakeService) -> None:
    service = make_service({"a": [limit("fees", 1, action="stop")]}, BudgetSettings())
    final = service.finish({"a": {"fees": units(2)}})
    assert [e.code for e in final.events] == ["soft_limit", "stop"]
    assert final.spent_e8 == {"a": units(2)}


def test_day_budget_resets_at_the_next_utc_day_and_resumes_the_agent(make_book: MakeBook) -> None:
    day0 = 19_000 * NS_PER_DAY
    b = make_book(limit("api_calls", 2, period="day", action="suspend"))
    for _ in range(2):
        b.charge("a", "api_calls", units(1), day0 + HOUR)
    assert b.state("a") is BudgetState.SUSPENDED
    b.advance(day0 + 23 * HOUR)
    assert b.state("a") is BudgetState.SUSPENDED
    b.advance(day0 + NS_PER_DAY)
    assert b.state("a") is BudgetState.ACTIVE
    assert codes(b)[-1] == "resume"
    assert b.remaining("a", "api_calls") == units(2)
    rows = [r for r in b.report() if r["kind"] == "api_calls"]
    assert [r["period"] for r in rows] == ["day 2022-01-08", "day 2022-01-09"]
    assert [r["usage_e8"] for r in rows] == [units(2), 0]
    assert rows[0]["actions"] == {"suspend": 1} and rows[1]["actions"] == {"resume": 1}


def test_rolling_budget_frees_what_leaves_the_window(make_book: MakeBook) -> None:
    b = make_book(limit("api_calls", 3, period="rolling", window_ns=HOUR, action="throttle"))
    for minute in (0, 10, 20):
        rid = b.reserve("a", "api_calls", units(1), minute * 60 * 10**9, 0)
        assert isinstance(rid, int)
        b.settle(rid, units(1))
    assert isinstance(b.reserve("a", "api_calls", units(1), 30 * 60 * 10**9, 0), Refusal)
    assert b.state("a") is BudgetState.THROTTLED
    b.advance(HOUR + 1)  # the first call (minute 0) left the window
    assert b.state("a") is BudgetState.ACTIVE
    assert isinstance(b.reserve("a", "api_calls", units(1), HOUR + 1, 0), int)
    assert isinstance(b.reserve("a", "api_calls", units(1), HOUR + 2, 0), Refusal)


def test_stop_is_for_the_rest_of_the_run_and_the_strongest_action_wins(make_book: MakeBook) -> None:
    b = make_book(
        limit("api_calls", 1, period="day", action="throttle"),
        limit("llm_tokens", 1, period="day", action="stop"),
    )
    b.charge("a", "api_calls", units(1), 0)
    assert b.state("a") is BudgetState.THROTTLED
    b.charge("a", "llm_tokens", units(1), 0)
    assert b.state("a") is BudgetState.STOPPED
    b.advance(3 * NS_PER_DAY)
    assert b.state("a") is BudgetState.STOPPED


def test_settling_more_than_reserved_is_recorded_truthfully_as_an_overrun(make_book: MakeBook) -> None:
    b = make_book(limit("llm_tokens", 100))
    rid = b.reserve("a", "llm_tokens", units(50), 0, 0)
    assert isinstance(rid, int)
    b.settle(rid, units(120))
    events = b.drain_events()
    assert events[0].code == "overrun" and "more than the 50 it reserved" in events[0].message
    row = next(r for r in b.report() if r["kind"] == "llm_tokens")
    assert row["usage_e8"] == units(120) and row["remaining_e8"] == 0


def test_unknown_agent_and_negative_amounts_are_errors(make_book: MakeBook) -> None:
    b = make_book(limit("api_calls", 1))
    with pytest.raises(KeyError, match="unknown agent 'zz'"):
        b.reserve("zz", "api_calls", 1, 0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        b.reserve("a", "api_calls", -1, 0, 0)


# ------------------------------------------------------------------------------------- no overshoot
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "cancel", "expire", "advance"]),
        st.sampled_from(["api_calls", "llm_tokens"]),
        st.integers(0, 40),  # amount
        st.integers(0, 100),  # settle fraction in percent of the estimate
        st.integers(0, 3 * HOUR),  # time step
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, period=st.sampled_from(["run", "day", "rolling"]))
def test_property_usage_plus_reservations_never_pass_any_cap(
    make_book: MakeBook, ops: list[tuple[str, str, int, int, int]], period: str
) -> None:
    """Random reserve / settle / cancel / expire / advance sequences (each example its own book: in Redis,
    its own keys)."""
    window = HOUR if period == "rolling" else 0
    b = make_book(
        BudgetLimit("api_calls", units(50), period, window),  # type: ignore[arg-type]
        BudgetLimit("money", units(3), period, window),  # type: ignore[arg-type]
        prices={"api_calls": 0.01, "llm_tokens": 0.02},
    )
    now = wall = 0
    open_: list[tuple[int, int]] = []
    for op, kind, amount, fraction, step in ops:
        now += step
        wall += 10**9
        if op == "reserve":
            rid = b.reserve("a", kind, units(amount), now, wall)
            if isinstance(rid, int):
                open_.append((rid, units(amount)))
        elif op == "settle" and open_:
            rid, estimate = open_.pop(0)
            b.settle(rid, estimate * fraction // 100)  # honest agents settle at most the estimate
        elif op == "cancel" and open_:
            b.cancel(open_.pop()[0])
        elif op == "expire":
            b.expire(wall + 400 * 10**9)
            open_.clear()
        else:
            b.advance(now)
        for tally in b.tally_figures("a"):
            assert tally.used_e8 + tally.reserved_e8 <= tally.limit.limit_e8
            assert tally.peak_e8 <= tally.limit.limit_e8
    assert not any(e.code == "overrun" for e in b.drain_events())


def test_threaded_stress_100_callers_at_once_grant_exactly_the_cap(make_service: MakeService) -> None:
    """100 threads reserve 1 call each, 20 times, against one capped agent and one capped agent each
    (Redis: every thread's call is a script run in Redis, nothing serializes them in this process)."""
    callers = 100
    budgets = {"shared": [limit("api_calls", 777)]} | {
        f"a{i}": [limit("api_calls", 7)] for i in range(callers)
    }
    service = make_service(budgets, BudgetSettings())
    backend = agent_side(service)
    granted = [0] * callers
    own = [0] * callers
    start = threading.Barrier(callers)

    def work(i: int) -> None:
        start.wait()
        for _ in range(20):
            for agent, counter in (("shared", granted), (f"a{i}", own)):
                answer = backend.reserve(agent, "api_calls", units(1), 0)
                if isinstance(answer, int):
                    counter[i] += 1
                    backend.settle(answer, units(1))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 777
    assert own == [7] * callers
    rows = {r["agent"]: r for r in service.book.report()}
    assert rows["shared"]["usage_e8"] == units(777) and rows["shared"]["refusals"] == 2000 - 777


# ---------------------------------------------------------------------------------- the agent's API
class Spender(Agent):
    def on_bar(self, bar):  # type: ignore[no-untyped-def]
        return Signal(bar.symbol, 0.0)


MakeSpender = Callable[..., tuple[Spender, BudgetService]]


@pytest.fixture
def spender(make_service: MakeService) -> MakeSpender:
    """``spender(*limits)``: an agent "s" with these budgets, reserving as in a run of this authority."""

    def make(*limits: BudgetLimit) -> tuple[Spender, BudgetService]:
        service = make_service({"s": list(limits)}, BudgetSettings(prices={"api_calls": Decimal("0.5")}))
        agent = Spender(name="s", symbols=("AAA",))
        agent._budget = agent_side(service)
        return agent, service

    return make


def test_spend_settles_the_actual_and_releases_the_rest(spender: MakeSpender) -> None:
    agent, service = spender(limit("llm_tokens", 1000))
    with agent.spend("llm_tokens", estimate=800) as s:
        s.settle(250)
    assert service.book.remaining("s", "llm_tokens") == units(750)


def test_leaving_the_block_without_settling_charges_the_estimate_even_on_error(spender: MakeSpender) -> None:
    agent, service = spender(limit("api_calls", 10))
    with agent.spend("api_calls", estimate=2):
        pass
    with pytest.raises(RuntimeError), agent.spend("api_calls", estimate=3):
        raise RuntimeError("the vendor timed out after the request was sent")
    assert service.book.remaining("s", "api_calls") == units(5)


def test_cancel_releases_and_a_refusal_raises_before_anything_is_spent(spender: MakeSpender) -> None:
    agent, _ = spender(limit("money", 1))  # api_calls cost 0.5 each
    with agent.spend("api_calls", estimate=1) as s:
        s.cancel()
    with agent.spend("api_calls", estimate=2):
        pass
    with pytest.raises(BudgetExceeded) as info:
        agent.spend("api_calls", estimate=1)
    assert info.value.kind == "money" and info.value.remaining == 0 and info.value.limit == 1
    assert "refused, nothing spent" in str(info.value)
    reservation = agent.spend("my_meter", estimate=5)  # unpriced, unbudgeted: granted
    reservation.settle(5)
    with pytest.raises(RuntimeError, match="already settled"):
        reservation.settle(1)


@pytest.mark.parametrize(
    ("kind", "estimate", "error"),
    [
        ("API calls", 1, "'API calls' is not a meter name"),
        ("money", 1, "'money' names budgets"),
        ("llm_token", 1, "did you mean 'llm_tokens'"),
        ("api_calls", -1, "must be >= 0"),
        ("api_calls", float("nan"), "must be finite"),
        ("api_calls", "1", "must be a number"),
    ],
)
def test_spend_rejects_bad_input_with_a_clear_message(
    kind: str, estimate: object, error: str, spender: MakeSpender
) -> None:
    agent, _ = spender()
    with pytest.raises((ValueError, TypeError), match=error):
        agent.spend(kind, estimate)  # type: ignore[arg-type]


def test_outside_a_run_spending_is_granted_and_tallied() -> None:
    agent = Spender(name="s", symbols=("AAA",))
    with agent.spend("llm_tokens", estimate=100) as s:
        s.settle(42)
    with agent.spend("api_calls", estimate=1):
        pass
    assert agent.budget_usage == {"llm_tokens": 42.0, "api_calls": 1.0}


# ------------------------------------------------------------------------------------------ config
def test_budget_entry_converts_to_exact_units() -> None:
    entry = BudgetEntry(kind="money", limit=Decimal("0.2"), period="rolling", window="90m", action="throttle")
    assert entry.to_limit() == BudgetLimit("money", units(0.2), "rolling", 90 * 60 * 10**9, 0.8, "throttle")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "API", "limit": 1}, "is not a meter name"),
        ({"kind": "api_call", "limit": 1}, "did you mean 'api_calls'"),
        ({"kind": "compute", "limit": 1}, "did you mean 'compute_s'"),
        ({"kind": "money", "limit": "0.000000001"}, "finer than 1e-8"),
        ({"kind": "compute_s", "limit": "0.005"}, "below 0.01 s"),
        ({"kind": "api_calls", "limit": 0}, "greater than 0"),
        ({"kind": "api_calls", "limit": 1, "period": "rolling"}, "needs a window"),
        ({"kind": "api_calls", "limit": 1, "window": "1h"}, "only for period 'rolling'"),
        ({"kind": "api_calls", "limit": 1, "period": "rolling", "window": "soon"}, "is not a duration"),
        ({"kind": "api_calls", "limit": 1, "action": "panic"}, "throttle"),
    ],
)
def test_budget_entry_errors_say_what_to_fix(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        BudgetEntry.model_validate(fields)


def test_prices_refuse_fees_and_money() -> None:
    with pytest.raises(ValidationError, match="fees are money already"):
        BudgetSettings.model_validate({"prices": {"fees": 1}})
    with pytest.raises(ValidationError, match="did you mean 'llm_tokens'"):
        BudgetSettings.model_validate({"prices": {"llm_token": 1}})


@pytest.mark.parametrize(("text", "ns"), [("90s", 90 * 10**9), ("5m", 300 * 10**9), ("1.5h", 5400 * 10**9)])
def test_durations(text: str, ns: int) -> None:
    assert duration_ns(text, "window") == ns


# ------------------------------------------------------------------------------ holding agents back
class Counter(Agent):
    """Signals +0.5 on AAA at its first bar ever, then nothing; records what each call saw."""

    def on_start(self) -> None:
        self.calls: list[int] = []
        self.fills: list[float] = []
        self.seen = 0

    def on_batch(self, batch):  # type: ignore[no-untyped-def]
        self.calls.append(len(batch))
        weights = np.full((len(batch), 1), np.nan)
        if self.seen == 0 and len(batch):
            weights[0, 0] = 0.5
        self.seen += len(batch)
        return weights

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill.quantity)


def block(t0: int, n: int = 3, symbols: tuple[str, ...] = ("AAA",)) -> BarBatch:
    close = np.full((n, len(symbols)), 100.0)
    return BarBatch(
        symbols,
        np.arange(t0, t0 + n, dtype=np.int64),
        close,
        close,
        close,
        close,
        close,
        np.ones((n, len(symbols)), dtype=bool),
    )


def fill(q: float) -> FillRow:
    return ("AAA", 0, q, 100.0, 0.0, "o", False)


def test_throttled_agent_gets_held_bars_and_fills_with_its_next_call() -> None:
    host = AgentHost(Counter, name="c", symbols=("AAA",), params={}, capital=1.0)
    host.start()
    first = host.hold(block(0), [fill(1)], keep_bars=True)
    assert first.held and first.weights.shape == (0, 1)
    host.hold(block(3), [fill(2)], keep_bars=True)
    res = host.process(block(6), [fill(3)])
    agent = host.agent
    assert isinstance(agent, Counter)
    assert agent.calls == [9] and agent.fills == [1, 2, 3] and agent.position("AAA") == 6
    # the signal decided on the first held bar is acted on at the first bar of the current block
    assert res.weights.shape == (3, 1) and res.weights[0, 0] == 0.5 and np.isnan(res.weights[1:]).all()
    assert res.bars == 9


def test_suspended_agent_loses_its_bars_but_not_its_fills() -> None:
    host = AgentHost(Counter, name="c", symbols=("AAA",), params={}, capital=1.0)
    host.start()
    host.hold(block(0), [fill(1)], keep_bars=False)
    host.process(block(3), [])
    agent = host.agent
    assert isinstance(agent, Counter)
    assert agent.calls == [3] and agent.fills == [1]
    host.hold(block(6), [fill(-1)], keep_bars=False)
    host.stop([])
    assert agent.fills == [1, -1]  # on_stop still delivers what was held


def test_flatten_zeroes_the_agents_targets_at_the_next_block_before_its_signals() -> None:
    agg = Aggregator(
        FixedWeights(), ("AAA", "BBB"), ["x", "y"], [("AAA", "BBB"), ("AAA",)], [1000.0, 1000.0], 1.0
    )
    agg.flatten("x")
    empty = agg.targets(block(0, symbols=("AAA", "BBB")), [])
    assert empty.agents.tolist() == [0, 0] and empty.lots.tolist() == [0, 0] and empty.rows.tolist() == [0, 0]
    assert len(agg.targets(block(3, symbols=("AAA", "BBB")), []).rows) == 0  # once only
