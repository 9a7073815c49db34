"""Chaos plans (validation, schedule, seeded choices), the invariants checked after a chaos run (each on a
real SQLite ledger and a hand-written venue truth, holding and broken) and the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from federation.chaos.hooks import HookFaults
from federation.chaos.invariants import AgentKill, Invariant, RunStats, check_invariants
from federation.chaos.plan import ChaosPlan, load_plan, pick_agents
from federation.chaos.report import ChaosReport, render
from federation.config import RiskConfig
from federation.errors import ConfigError
from federation.execution.venue_faults import VenueFaults
from federation.ledger import (
    PORTFOLIO,
    AgentRecord,
    AllocationRecord,
    CashRecord,
    CostRow,
    FillRecord,
    LedgerBatch,
    OrderRecord,
    PositionRecord,
    RunRecord,
    SQLiteLedger,
)

FULL_PLAN = """
seed = 7
duration_s = 60

[agents]
kill_fraction = 0.1
kill_every_s = 5

[execution]
kill_at_s = [40, 15]

[venue]
timeout_rate = 0.01
reject_rate = 0.01
partial_fill_rate = 0.2

[data]
corrupt_rate = 0.005

[postgres]
restart_at_s = [25]

[redis]
down_at_s = [30]
down_s = 10
"""


def _plan_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ plan
def test_full_plan_loads_with_defaults(tmp_path: Path) -> None:
    plan = load_plan(_plan_file(tmp_path, FULL_PLAN))
    assert plan.baseline and plan.baseline_duration_s == 60
    assert plan.data.kinds == ["nan_price", "non_positive_price", "out_of_order", "duplicate"]
    assert plan.postgres.private and plan.postgres.down_s == 2.0
    assert plan.invariants.recovery_p99_s == 5.0 and plan.invariants.latency_ratio_max == 2.0
    venue = plan.venue.faults(plan.seed)
    assert plan.venue.active and isinstance(venue, VenueFaults) and type(venue) is VenueFaults
    assert venue.seed == 7 and venue.timeout_rate == 0.01 and venue.partial_fill_rate == 0.2
    assert not ChaosPlan(seed=0, duration_s=5).venue.active
    assert plan.hook_agents([f"a{i}" for i in range(10)]) == [], "no hook faults in the plan"


def test_schedule_is_time_ordered_and_complete(tmp_path: Path) -> None:
    plan = load_plan(_plan_file(tmp_path, FULL_PLAN))
    events = plan.schedule()
    assert [e.at_s for e in events] == sorted(e.at_s for e in events)
    kinds = [e.kind for e in events]
    assert kinds.count("kill_agents") == 11  # 5, 10, ..., 55
    assert [e.params["wave"] for e in events if e.kind == "kill_agents"] == list(range(11))
    assert [e.at_s for e in events if e.kind == "kill_execution"] == [15, 40]
    assert [(e.at_s, e.kind) for e in events if e.kind.startswith(("postgres", "redis"))] == [
        (25, "postgres_down"),
        (27, "postgres_up"),
        (30, "redis_down"),
        (40, "redis_up"),
    ]
    at_40 = [e.kind for e in events if e.at_s == 40]
    assert at_40 == ["redis_up", "kill_execution", "kill_agents"], "a server comes back before new faults"
    assert json.loads(json.dumps([e.to_dict() for e in events])) == [e.to_dict() for e in events]
    assert load_plan(_plan_file(tmp_path, FULL_PLAN)).schedule() == events


def test_kill_start_and_disconnects_in_the_schedule() -> None:
    plan = ChaosPlan.model_validate(
        {
            "seed": 1,
            "duration_s": 10,
            "agents": {"kill_fraction": 0.5, "kill_every_s": 4, "kill_start_s": 1},
            "venue": {"disconnects": [{"at_s": 6, "for_s": 2}, {"at_s": 2, "for_s": 1}]},
        }
    )
    assert [(e.at_s, e.kind, e.params) for e in plan.schedule()] == [
        (1, "kill_agents", {"wave": 0, "fraction": 0.5}),
        (2, "venue_disconnect", {"for_s": 1}),
        (5, "kill_agents", {"wave": 1, "fraction": 0.5}),
        (6, "venue_disconnect", {"for_s": 2}),
        (9, "kill_agents", {"wave": 2, "fraction": 0.5}),
    ]
    assert ChaosPlan(seed=0, duration_s=5).schedule() == [], "a plan without faults schedules nothing"


def test_agent_choices_are_seeded() -> None:
    names = [f"agent-{i:03d}" for i in range(100)]
    plan = ChaosPlan.model_validate(
        {"seed": 7, "duration_s": 60, "hooks": {"slow_rate": 0.5, "agents_fraction": 0.3}}
    )
    wave0 = plan.pick_agents(names, 0.1, 0)
    assert len(wave0) == 10 and wave0 == sorted(wave0) and set(wave0) <= set(names)
    assert plan.pick_agents(reversed(names), 0.1, 0) == wave0, "the order of the names does not matter"
    assert pick_agents(names, 0.1, 0, 7) == wave0
    assert plan.pick_agents(names, 0.1, 1) != wave0, "each wave draws again"
    assert pick_agents(names, 0.1, 0, 8) != wave0, "another seed draws other agents"
    assert plan.pick_agents(names[:3], 0.1, 0) != [], "a positive fraction kills at least one"
    assert plan.pick_agents(names, 0.0, 0) == [] and plan.pick_agents([], 0.5, 0) == []
    hooked = plan.hook_agents(names)
    assert len(hooked) == 30 and plan.hook_agents(names) == hooked
    faults = plan.hooks.faults(plan.seed)
    assert isinstance(faults, HookFaults) and faults.seed == 7 and faults.slow_rate == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed = 1\n", r"plan\.toml: duration_s: Field required"),
        ("seed = -1\nduration_s = 5\n", r"seed: Input should be greater than or equal to 0 \(got -1\)"),
        ("seed = 1\nduration_s = 5\nbogus = 1\n", r"bogus: Extra inputs are not permitted"),
        (
            "seed = 1\nduration_s = 5\n[agents]\nkill_fraction = 0.1\n",
            r"agents: kill_fraction = 0\.1 is set without kill_every_s; set how many seconds apart",
        ),
        (
            "seed = 1\nduration_s = 5\n[agents]\nkill_fraction = 1.5\nkill_every_s = 1\n",
            r"agents\.kill_fraction: Input should be less than or equal to 1 \(got 1\.5\)",
        ),
        (
            "seed = 1\nduration_s = 5\n[agents]\nkill_fraction = 0.1\nkill_every_s = 5\n",
            r"plan\.toml: agents\.kill_every_s = 5: the first kill wave is after the end of the run "
            r"\(duration_s = 5\), so no agent is killed",
        ),
        (
            "seed = 1\nduration_s = 5\n[hooks]\nraise_rate = 0.6\nhang_rate = 0.6\nagents_fraction = 0.1\n",
            r"hooks: raise_rate \+ hang_rate \+ slow_rate = 1\.2 is above 1",
        ),
        (
            "seed = 1\nduration_s = 5\n[hooks]\nraise_rate = 0.1\n",
            r"hooks: hook fault rates are set but agents_fraction is 0, so no agent gets them",
        ),
        (
            "seed = 1\nduration_s = 5\n[hooks]\nagents_fraction = 0.2\n",
            r"agents_fraction = 0\.2 but no hook fault rate is set",
        ),
        (
            "seed = 1\nduration_s = 5\n[hooks]\nseed = 3\nslow_rate = 0.1\nagents_fraction = 0.2\n",
            r"hooks: seed: the hook faults are seeded by the plan's top-level seed; remove seed",
        ),
        (
            "seed = 1\nduration_s = 5\n[execution]\nkill_at_s = [2, 2]\n",
            r"execution\.kill_at_s: 2\.0 appears twice in kill_at_s; list each once",
        ),
        (
            "seed = 1\nduration_s = 5\n[execution]\nkill_at_s = [7]\n",
            r"execution\.kill_at_s\[0\] = 7 is after the end of the run \(duration_s = 5\); kill it earlier",
        ),
        (
            "seed = 1\nduration_s = 5\n[execution]\nkill_at_s = [-1]\n",
            r"execution\.kill_at_s\[0\]: Input should be greater than or equal to 0 \(got -1\)",
        ),
        (
            "seed = 1\nduration_s = 5\n[venue]\nseed = 2\n",
            r"venue: seed: the venue faults are seeded by the plan's top-level seed; remove seed from \[venue\]",
        ),
        (
            "seed = 1\nduration_s = 5\n[data]\nkinds = ['duplicate', 'duplicate']\n",
            r"data\.kinds: 'duplicate' appears twice in kinds; list each once",
        ),
        (
            "seed = 1\nduration_s = 5\n[venue]\ntimeout_rate = 2\n",
            r"venue\.timeout_rate: Input should be less than or equal to 1 \(got 2\)",
        ),
        (
            "seed = 1\nduration_s = 9\n[venue]\ndisconnects = [{at_s = 1, for_s = 3}, {at_s = 2, for_s = 1}]\n",
            r"disconnects\[1\]\.at_s = 2 starts before disconnects\[0\] ends \(1 \+ for_s 3\); space them apart",
        ),
        (
            "seed = 1\nduration_s = 9\n[venue]\ndisconnects = [{at_s = 8, for_s = 3}]\n",
            r"venue\.disconnects\[0\] starts at 8 and, with for_s = 3, ends at 11, after the end of the run",
        ),
        (
            "seed = 1\nduration_s = 5\n[data]\ncorrupt_rate = 0.3\n",
            r"data\.corrupt_rate: Input should be less than or equal to 0\.25 \(got 0\.3\)",
        ),
        (
            "seed = 1\nduration_s = 5\n[data]\nkinds = ['nan_price', 'gibberish']\n",
            r"data\.kinds\[1\]: Input should be 'nan_price', 'non_positive_price', 'out_of_order' or 'duplicate'",
        ),
        ("seed = 1\nduration_s = 5\n[data]\nkinds = []\n", r"data\.kinds: List should have at least 1 item"),
        (
            "seed = 1\nduration_s = 20\n[postgres]\nrestart_at_s = [1, 2]\n",
            r"postgres: restart_at_s\[1\] = 2 starts before restart_at_s\[0\] ends \(1 \+ down_s 2\)",
        ),
        (
            "seed = 1\nduration_s = 20\n[redis]\ndown_at_s = [15]\n",
            r"redis\.down_at_s\[0\] starts at 15 and, with redis\.down_s = 10, ends at 25, after the end of "
            r"the run \(duration_s = 20\); the service must be back",
        ),
        (
            "seed = 1\nduration_s = 5\n[invariants]\nmax_quarantined = -1\n",
            r"invariants\.max_quarantined: Input should be greater than or equal to 0",
        ),
    ],
)
def test_plan_errors_name_the_file_the_field_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_plan(_plan_file(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path / 'plan.toml'}: ")
    assert "(top level)" not in str(info.value)


def test_unreadable_plans(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"missing\.toml: chaos plan not found; check the path given to --plan"
    ):
        load_plan(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"plan\.toml: invalid TOML"):
        load_plan(_plan_file(tmp_path, "seed = = 1"))


# ------------------------------------------------------------------------------------------ invariants
D = Decimal
RUN = "chaos-1"
CAPITAL = D(300_000)


@dataclass
class Case:
    """A run's ledger rows and the venue's truth; the default is consistent (every invariant holds).

    Agents a, b and c (100 000 each; c never trades, so it has no cash row). Venue fills: F1 buys 10 SPY
    at 100 (a 6, b 4), F2 sells 5 QQQ at 200 (a); internal cross X1: a sells 2 SPY to b at 101.
    """

    fills: list[FillRecord] = field(
        default_factory=lambda: [
            FillRecord("F1", "o1", 1, "SPY", D(10), D(100), D("0.1"), "taker"),
            FillRecord("F2", "o2", 2, "QQQ", D(-5), D(200), D("0.1"), "taker"),
            FillRecord("X1", "X1", 3, "SPY", D(2), D(101), D(0), "internal"),
        ]
    )
    allocations: list[AllocationRecord] = field(
        default_factory=lambda: [
            AllocationRecord("F1", "a", "SPY", D(6), D(100), D("0.06")),
            AllocationRecord("F1", "b", "SPY", D(4), D(100), D("0.04")),
            AllocationRecord("F2", "a", "QQQ", D(-5), D(200), D("0.1")),
            AllocationRecord("X1", "a", "SPY", D(-2), D(101), D(0)),
            AllocationRecord("X1", "b", "SPY", D(2), D(101), D(0)),
        ]
    )
    positions: dict[tuple[str, str], Decimal] = field(
        default_factory=lambda: {
            (PORTFOLIO, "SPY"): D(10),
            (PORTFOLIO, "QQQ"): D(-5),
            ("a", "SPY"): D(4),
            ("a", "QQQ"): D(-5),
            ("b", "SPY"): D(6),
        }
    )
    cash: dict[str, Decimal] = field(
        default_factory=lambda: {PORTFOLIO: D("299999.8"), "a": D("100601.84"), "b": D("99397.96")}
    )
    costs: list[CostRow] = field(
        default_factory=lambda: [
            _cost("a", "api_calls", usage="10", budget="10", period="run"),  # at the cap is not past it
            _cost("b", "compute_s", usage="30", budget="10", period="rolling 60 s", peak="9.5"),
            _cost("b", "llm_tokens", usage="500", budget=None, period=None),
        ]
    )
    venue_fills: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "fill_id": "F1",
                "client_order_id": "o1",
                "symbol": "SPY",
                "quantity": "10",
                "price": "100.0000",
                "fee": "0.1",
                "ts": 1,
            },
            {
                "fill_id": "F2",
                "client_order_id": "o2",
                "symbol": "QQQ",
                "quantity": "-5",
                "price": "200.0000",
                "fee": "0.10",
                "ts": 2,
            },
        ]
    )
    venue_positions: dict[str, str] = field(default_factory=lambda: {"SPY": "10", "QQQ": "-5"})
    reused_ids: list[str] = field(default_factory=list)

    def truth(self) -> dict[str, Any]:
        orders = {
            "o1": {"symbol": "SPY", "quantity": "10", "status": "filled", "filled": "10", "requests": 2},
            "o2": {"symbol": "QQQ", "quantity": "-5", "status": "filled", "filled": "5", "requests": 1},
        }
        return {
            "positions": dict(self.venue_positions),
            "fills": [dict(f) for f in self.venue_fills],
            "orders": orders,
            "reused_ids": list(self.reused_ids),
            "faults": {},
        }

    def write(self, url: str) -> SQLiteLedger:
        ledger = SQLiteLedger(url.removeprefix("sqlite:///"))
        ledger.begin_run(
            RunRecord(RUN, 1, "{}", CAPITAL, "USD", 7),
            [AgentRecord(n, "m:A", "actor", ("SPY", "QQQ"), "{}", D(100_000)) for n in ("a", "b", "c")],
        )
        orders = [
            OrderRecord("o1", 1, 1, "SPY", "buy", "market", D(10), None, "filled", D(10)),
            OrderRecord("o2", 2, 2, "QQQ", "sell", "market", D(5), None, "filled", D(5)),
        ]
        positions = [PositionRecord(a, s, q, D(100), D(0)) for (a, s), q in self.positions.items()]
        ledger.write(
            RUN,
            LedgerBatch(
                orders=orders,
                fills=self.fills,
                allocations=self.allocations,
                positions=positions,
                cash=[CashRecord(a, b) for a, b in self.cash.items()],
            ),
        )
        ledger.write_costs(RUN, self.costs)
        return ledger


def _cost(
    agent: str, kind: str, *, usage: str, budget: str | None, period: str | None, peak: str | None = None
) -> CostRow:
    money = None if budget is None else D(budget)
    return CostRow(agent, kind, D(usage), D(0), money, period, D(peak or usage), None, 1, 0, {}, "active")


def _stats(**changes: Any) -> RunStats:
    stats = RunStats(
        initial_capital=CAPITAL,
        kills=[AgentKill("a", 5.0, 1.2), AgentKill("b", 10.0, 2.5), AgentKill("a", 15.0, 0.8)],
        restarts=[{"agent": "a", "cause": "killed", "down_s": 1.2}],
        quarantined={},
        execution_restarts=2,
        healthy_latency_ms=[10.0] * 99 + [14.0],
        baseline_latency_ms=[9.0] * 99 + [10.0],
        risk=RiskConfig(max_position=D(10), max_order_quantity=D(10)),
    )
    return replace(stats, **changes)


PLAN = ChaosPlan.model_validate({"seed": 7, "duration_s": 60, "execution": {"kill_at_s": [15, 40]}})


def _check(
    url: str, case: Case, stats: RunStats | None = None, plan: ChaosPlan = PLAN
) -> dict[str, Invariant]:
    ledger = case.write(url)
    try:
        found = check_invariants(ledger, RUN, case.truth(), stats or _stats(), plan)
    finally:
        ledger.close()
    json.dumps([i.to_dict() for i in found])  # every measured value is JSON-able
    return {i.name: i for i in found}


def test_a_consistent_run_passes_every_invariant(ledger_url: str) -> None:
    found = _check(ledger_url, Case())
    assert list(found) == [
        "fills_missing", "fills_duplicated", "fills_phantom", "client_ids_sent_twice", "positions_match",
        "cash_consistent", "budget_not_exceeded", "risk_limits_at_venue", "agents_recovered", "quarantined",
        "healthy_latency", "execution_restarts",
    ]  # fmt: skip
    failed = {n: i.detail for n, i in found.items() if not i.ok}
    assert failed == {}
    assert found["fills_missing"].value == 0 and found["client_ids_sent_twice"].value == 0
    assert found["cash_consistent"].value["difference"] == "0"
    assert found["risk_limits_at_venue"].value["max_abs_position"] == {"QQQ": "5", "SPY": "10"}
    rec = found["agents_recovered"].value
    assert rec["kills"] == rec["recovered"] == 3 and rec["max"] == 2.5 and 1.2 <= rec["p50"] <= rec["p99"]
    lat = found["healthy_latency"].value
    assert lat["ratio"] == pytest.approx(lat["p99_ms"] / lat["baseline_p99_ms"]) and lat["ratio"] < 2
    assert "1 safe retries" in found["client_ids_sent_twice"].detail


Mutation = Callable[[Case], Case]


def _venue_fill(fill_id: str, order: str, symbol: str, qty: str, price: str, fee: str) -> dict[str, Any]:
    return {"fill_id": fill_id, "client_order_id": order, "symbol": symbol, "quantity": qty, "price": price,
            "fee": fee, "ts": 9}  # fmt: skip


def _edit_venue_fill(case: Case, fill_id: str, **changes: str) -> Case:
    fills = [{**f, **changes} if f["fill_id"] == fill_id else f for f in case.venue_fills]
    return replace(case, venue_fills=fills)


def _edit_allocation(case: Case, fill_id: str, agent: str, qty: str) -> Case:
    allocations = [
        replace(a, quantity=D(qty)) if (a.fill_id, a.agent) == (fill_id, agent) else a
        for a in case.allocations
    ]
    return replace(case, allocations=allocations)


LEDGER_BREAKS: list[tuple[str, str, Mutation, Any, str]] = [
    # (id, invariant that fails, mutation, its measured value, text in its detail)
    (
        "venue-fill-not-booked",
        "fills_missing",
        lambda c: replace(c, venue_fills=[*c.venue_fills, _venue_fill("F3", "o3", "SPY", "1", "100", "0")]),
        1,
        "1 venue fills not in the ledger: F3",
    ),
    (
        "venue-fill-booked-at-another-price",
        "fills_missing",
        lambda c: _edit_venue_fill(c, "F2", price="200.01"),
        1,
        "F2: venue -5 QQQ at 200.01",
    ),
    (
        "fill-short-allocated",
        "fills_missing",
        lambda c: replace(c, allocations=[a for a in c.allocations if (a.fill_id, a.agent) != ("F1", "b")]),
        1,
        "not fully allocated to agents: F1: agents got 6",
    ),
    (
        "ledger-fill-the-venue-never-made",
        "fills_phantom",
        lambda c: replace(c, venue_fills=c.venue_fills[:1]),
        1,
        "1 ledger fills the venue never made: F2",
    ),
    (
        "allocation-booked-twice",
        "fills_duplicated",
        lambda c: _edit_allocation(c, "F1", "b", "8"),
        1,
        "allocations counted more than once: F1: agents got 14",
    ),
    (
        "order-filled-twice",
        "fills_duplicated",
        lambda c: replace(
            c, fills=[*c.fills, FillRecord("F1b", "o1", 4, "SPY", D(10), D(100), D("0.1"), "taker")]
        ),
        1,
        "order o1: ledger fills 20, the venue filled 10",
    ),
    (
        "cross-sides-unbalanced",
        "fills_duplicated",
        lambda c: _edit_allocation(c, "X1", "b", "3"),
        1,
        "cross X1: agents bought 3 and sold 2 of 2",
    ),
    (
        "client-id-reused",
        "client_ids_sent_twice",
        lambda c: replace(c, reused_ids=["o1"]),
        1,
        "reused for another order or after the order was final: o1",
    ),
    (
        "ledger-position-differs-from-venue",
        "positions_match",
        lambda c: replace(c, venue_positions={"SPY": "9", "QQQ": "-5"}),
        {"venue_mismatches": [{"symbol": "SPY", "ledger": "10", "venue": "9"}], "agent_mismatches": []},
        "SPY: ledger 10, venue 9",
    ),
    (
        "agents-positions-do-not-add-up",
        "positions_match",
        lambda c: replace(c, positions={**c.positions, ("b", "SPY"): D(7)}),
        {"venue_mismatches": [], "agent_mismatches": [{"symbol": "SPY", "agents": "11", "portfolio": "10"}]},
        "SPY: agents add up to 11, portfolio 10",
    ),
    (
        "portfolio-cash-off-by-1e-8",
        "cash_consistent",
        lambda c: replace(c, cash={**c.cash, PORTFOLIO: c.cash[PORTFOLIO] - D("0.00000001")}),
        None,
        "off by -0.00000001",
    ),
    (
        "agents-cash-does-not-add-up",
        "cash_consistent",
        lambda c: replace(c, cash={**c.cash, "a": c.cash["a"] + D("0.01")}),
        None,
        "the agents' cash adds up to 299999.81, the portfolio holds 299999.8",
    ),
    (
        "run-budget-exceeded",
        "budget_not_exceeded",
        lambda c: replace(c, costs=[_cost("a", "api_calls", usage="11", budget="10", period="run")]),
        [{"agent": "a", "kind": "api_calls", "period": "run", "usage": "11", "budget": "10"}],
        "a api_calls (run): 11 of 10",
    ),
    (
        "rolling-window-exceeded",
        "budget_not_exceeded",
        lambda c: replace(
            c, costs=[_cost("b", "compute_s", usage="12", budget="10", period="rolling 60 s", peak="10.5")]
        ),
        [{"agent": "b", "kind": "compute_s", "period": "rolling 60 s", "usage": "10.5", "budget": "10"}],
        "b compute_s (rolling 60 s): 10.5 of 10",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "value", "detail"), [b[1:] for b in LEDGER_BREAKS], ids=[b[0] for b in LEDGER_BREAKS]
)
def test_each_ledger_invariant_fails_on_its_bad_case(
    ledger_url: str, name: str, mutate: Mutation, value: Any, detail: str
) -> None:
    found = _check(ledger_url, mutate(Case()))
    assert not found[name].ok
    if value is not None:
        assert found[name].value == value
    assert detail in found[name].detail


STATS_BREAKS: list[tuple[str, str, dict[str, Any], str]] = [
    ("position-above-max_position", "risk_limits_at_venue",
     {"risk": RiskConfig(max_position=D(9))}, "SPY at 10 after fill F1 (max_position 9)"),
    ("position-above-symbol-override", "risk_limits_at_venue",
     {"risk": RiskConfig(max_position=D(100), max_position_by_symbol={"QQQ": D(4)})},
     "QQQ at -5 after fill F2 (max_position 4)"),
    ("order-above-max_order_quantity", "risk_limits_at_venue",
     {"risk": RiskConfig(max_order_quantity=D(9))}, "order o1: 10 SPY (max_order_quantity 9)"),
    ("killed-agent-never-back", "agents_recovered",
     {"kills": [AgentKill("a", 5.0, 1.0), AgentKill("b", 30.0, None)]},
     "1 killed agents never came back: b (killed at 30 s)"),
    ("slow-recovery", "agents_recovered",
     {"kills": [AgentKill("a", 5.0, 1.0), AgentKill("b", 30.0, 9.0)]}, "p99 recovery 8.92 s is above 5 s"),
    ("healthy-agents-slowed", "healthy_latency",
     {"healthy_latency_ms": [25.0] * 100}, "2.77x"),
    ("no-healthy-answers", "healthy_latency",
     {"healthy_latency_ms": []}, "no answer of a healthy agent was measured in the faulted run"),
    ("execution-not-restarted", "execution_restarts",
     {"execution_restarts": 1}, "restarted 1 times, the plan killed it 2 times"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "changes", "detail"), [b[1:] for b in STATS_BREAKS], ids=[b[0] for b in STATS_BREAKS]
)
def test_each_measured_invariant_fails_on_its_bad_case(
    ledger_url: str, name: str, changes: dict[str, Any], detail: str
) -> None:
    found = _check(ledger_url, Case(), _stats(**changes))
    assert not found[name].ok, found[name]
    assert detail in found[name].detail
    assert [n for n, i in found.items() if not i.ok] == [name], "one break fails one invariant"


def test_quarantine_cap_and_missing_baseline(ledger_url: str) -> None:
    capped = PLAN.model_copy(update={"invariants": PLAN.invariants.model_copy(update={"max_quarantined": 0})})
    stats = _stats(quarantined={"b": "6 restarts within 60 s"}, baseline_latency_ms=None)
    found = _check(ledger_url, Case(), stats, capped)
    assert not found["quarantined"].ok and found["quarantined"].value == ["b"]
    assert found["quarantined"].required == "at most 0" and "b: 6 restarts" in found["quarantined"].detail
    assert found["healthy_latency"].ok and "no baseline" in found["healthy_latency"].detail
    assert PLAN.invariants.max_quarantined is None  # uncapped: any number is fine (as in the good case)


def test_report_json_and_table(ledger_url: str) -> None:
    found = _check(ledger_url, replace(Case(), reused_ids=["o1"]), _stats(execution_restarts=1))
    report = ChaosReport(
        plan="plan.toml",
        run_id=RUN,
        seed=7,
        duration_s=60,
        faults={"kill_agents": 11, "agents_killed": 110, "kill_execution": 2},
        invariants=list(found.values()),
        baseline_run_id="base-1",
    )
    assert not report.ok and report.failed == ["client_ids_sent_twice", "execution_restarts"]
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["seed"] == 7 and data["faults"]["kill_execution"] == 2
    assert set(data["invariants"]) == set(found)
    assert data["invariants"]["fills_missing"] == {
        "ok": True,
        "value": 0,
        "required": "0",
        "detail": "all 2 venue fills are in the ledger as the venue made them",
    }
    console = Console(record=True, width=240)
    render(report, console)
    text = console.export_text()
    assert "chaos run chaos-1" in text and "FAIL" in text and "kill_execution x2" in text
    assert "2 of 12 invariants failed: client_ids_sent_twice, execution_restarts" in text

    passing = replace(report, invariants=[i for i in report.invariants if i.ok])
    assert passing.ok and passing.to_dict()["ok"] is True
    console = Console(record=True, width=240)
    render(passing, console)
    assert "all 10 invariants hold" in console.export_text()
