"""What must still hold after a chaos run: checked from the ledger, the venue's truth and what the
supervisor measured.

Each check returns an :class:`Invariant` with its measured value (JSON-able; exact amounts as strings), what
was required and a sentence for the report. Exact checks (fills, positions, cash) compare Decimals; the
venue's truth is the dict ``VenueActor.truth()`` returns (amounts as strings, see
``federation/execution``), the venue being the authority on what was accepted and filled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from federation.chaos.plan import ChaosPlan
from federation.config import RiskLimits
from federation.ledger.base import Ledger
from federation.ledger.records import PORTFOLIO, FillRecord
from federation.money import from_e8

SHOWN = 5
"""Examples listed in an invariant's detail (the count is always complete)."""


@dataclass(frozen=True, slots=True)
class Invariant:
    """One check of the chaos report."""

    name: str
    ok: bool
    value: Any
    """What was measured (JSON-able: numbers, strings, lists, dicts; exact amounts as strings)."""
    required: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "value": self.value, "required": self.required, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class AgentKill:
    """One agent process the harness killed, and how long until the agent answered again."""

    agent: str
    at_s: float
    """When it was killed, in seconds from the start of trading."""
    recovery_s: float | None
    """From the kill to the restored agent's first answer; None if it never came back (quarantined, or
    still down at the end)."""


@dataclass(slots=True)
class RunStats:
    """What the supervisor and the harness measured during the chaos run (the rest comes from the ledger
    and the venue)."""

    initial_capital: Decimal
    """The portfolio's starting cash ([federation] capital)."""
    kills: list[AgentKill] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    """Every agent restart, whatever its cause: ``{"agent", "cause", "down_s"}`` (for the report)."""
    quarantined: dict[str, str] = field(default_factory=dict)
    """Agents in quarantine at the end -> why."""
    execution_restarts: int = 0
    healthy_latency_ms: list[float] = field(default_factory=list)
    """Tick-to-orders of each answer of a healthy agent (no hook faults) during the faulted run."""
    baseline_latency_ms: list[float] | None = None
    """The same measure in the fault-free baseline run (None: no baseline was run)."""
    risk: RiskLimits | None = None
    """The fleet's portfolio limits ([risk]); None: no limit to check at the venue."""


def check_invariants(
    ledger: Ledger, run_id: str, venue_truth: dict[str, Any], stats: RunStats, plan: ChaosPlan
) -> list[Invariant]:
    """Every invariant of the chaos report, in report order."""
    fills = ledger.fills(run_id)
    venue_fills = _unique_venue_fills(venue_truth)
    return [
        fills_missing(ledger, run_id, fills, venue_fills),
        fills_duplicated(ledger, run_id, fills, venue_fills, venue_truth),
        fills_phantom(fills, venue_fills),
        client_ids_sent_twice(venue_truth),
        positions_match(ledger, run_id, venue_truth),
        cash_consistent(ledger, run_id, fills, stats.initial_capital),
        budget_not_exceeded(ledger, run_id),
        risk_limits_at_venue(venue_truth, stats.risk),
        agents_recovered(stats, plan),
        quarantined(stats, plan),
        healthy_latency(stats, plan),
        execution_restarts(stats, plan),
    ]


# ------------------------------------------------------------------------------------------------ fills
@dataclass(frozen=True, slots=True)
class _VenueFill:
    fill_id: str
    client_order_id: str
    symbol: str
    quantity: Decimal
    price: Decimal
    fee: Decimal


def _unique_venue_fills(truth: dict[str, Any]) -> dict[str, _VenueFill]:
    """The venue's fills by id, in venue order (the venue lists each once)."""
    out: dict[str, _VenueFill] = {}
    for f in truth.get("fills", []):
        out.setdefault(
            str(f["fill_id"]),
            _VenueFill(
                str(f["fill_id"]),
                str(f["client_order_id"]),
                str(f["symbol"]),
                Decimal(str(f["quantity"])),
                Decimal(str(f["price"])),
                Decimal(str(f["fee"])),
            ),
        )
    return out


def _external(fills: list[FillRecord]) -> list[FillRecord]:
    """The ledger's venue fills (internal crosses between agents never reached the venue)."""
    return [f for f in fills if f.liquidity != "internal"]


@dataclass(frozen=True, slots=True)
class _Allocated:
    """The sums over one fill's allocations to agents."""

    quantity: Decimal = Decimal(0)
    bought: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)


def _allocations(ledger: Ledger, run_id: str) -> dict[str, _Allocated]:
    rows = ledger.query(
        "SELECT fill_id, SUM(qty_e8), SUM(CASE WHEN qty_e8 > 0 THEN qty_e8 ELSE 0 END), SUM(fee_e8) "
        "FROM fill_allocations WHERE run_id = ? GROUP BY fill_id",
        run_id,
    )
    return {str(r[0]): _Allocated(from_e8(int(r[1])), from_e8(int(r[2])), from_e8(int(r[3]))) for r in rows}


def _s(value: Decimal) -> str:
    """An exact amount as plain digits without trailing zeros (``10``, ``-0.00000001``)."""
    return format(value.normalize(), "f")


def _tally(problems: list[tuple[str, list[str]]], clean: str) -> tuple[int, str]:
    """How many problems in all, and the detail: each non-empty kind with examples, or ``clean``."""
    parts = [f"{label}: {_examples(found)}" for label, found in problems if found]
    return sum(len(found) for _, found in problems), " | ".join(parts) or clean


def _examples(items: Iterable[str]) -> str:
    listed = list(items)
    shown = "; ".join(listed[:SHOWN])
    return shown + (f"; and {len(listed) - SHOWN} more" if len(listed) > SHOWN else "")


def fills_missing(
    ledger: Ledger, run_id: str, fills: list[FillRecord], venue: dict[str, _VenueFill]
) -> Invariant:
    """Venue fills the ledger does not hold as the venue made them (absent, or booked with another
    symbol, quantity, price or fee), and venue fills whose agent allocations fall short of the fill."""
    booked = {f.fill_id: f for f in _external(fills)}
    absent = [v.fill_id for v in venue.values() if v.fill_id not in booked]
    differ: list[str] = []
    for v in venue.values():
        f = booked.get(v.fill_id)
        if f is None:
            continue
        got = (f.client_order_id, f.symbol, f.quantity, f.price, f.fee)
        want = (v.client_order_id, v.symbol, v.quantity, v.price, v.fee)
        if got != want:
            differ.append(
                f"{v.fill_id}: venue {_s(v.quantity)} {v.symbol} at {_s(v.price)} fee {_s(v.fee)} "
                f"(order {v.client_order_id}), ledger {_s(f.quantity)} {f.symbol} at {_s(f.price)} "
                f"fee {_s(f.fee)} (order {f.client_order_id})"
            )
    allocated = _allocations(ledger, run_id)
    short = [
        f"{fid}: agents got {_s(allocated.get(fid, _Allocated()).quantity)} of {_s(f.quantity)}"
        for fid, f in booked.items()
        if fid in venue and abs(allocated.get(fid, _Allocated()).quantity) < abs(f.quantity)
    ]
    count, detail = _tally(
        [
            (f"{len(absent)} venue fills not in the ledger", absent),
            (f"{len(differ)} booked differently", differ),
            (f"{len(short)} not fully allocated to agents", short),
        ],
        f"all {len(venue)} venue fills are in the ledger as the venue made them",
    )
    return Invariant("fills_missing", count == 0, count, "0", detail)


def fills_duplicated(
    ledger: Ledger,
    run_id: str,
    fills: list[FillRecord],
    venue: dict[str, _VenueFill],
    truth: dict[str, Any],
) -> Invariant:
    """Fills counted more than once: a fill id on several ledger rows, an order whose ledger fills add
    up to more than the venue filled (or than the order's quantity), a fill whose allocations to agents
    add up to more than the fill (for an internal cross: the two sides do not balance)."""
    repeated = [
        f"{r[0]} on {r[1]} rows"
        for r in ledger.query(
            "SELECT fill_id, COUNT(*) FROM fills WHERE run_id = ? GROUP BY fill_id HAVING COUNT(*) > 1",
            run_id,
        )
    ]
    ledger_by_order: dict[str, Decimal] = defaultdict(Decimal)
    for f in _external(fills):
        ledger_by_order[f.client_order_id] += f.quantity
    venue_by_order: dict[str, Decimal] = defaultdict(Decimal)
    for v in venue.values():
        venue_by_order[v.client_order_id] += v.quantity
    orders = truth.get("orders", {})
    over_order = []
    for order_id, qty in ledger_by_order.items():
        filled = venue_by_order.get(order_id, Decimal(0))
        if order_id in venue_by_order and abs(qty) > abs(filled):
            over_order.append(f"order {order_id}: ledger fills {_s(qty)}, the venue filled {_s(filled)}")
        elif order_id in orders and abs(qty) > abs(Decimal(str(orders[order_id]["quantity"]))):
            over_order.append(
                f"order {order_id}: ledger fills {_s(qty)} of an order for {orders[order_id]['quantity']}"
            )
    over_alloc = []
    allocated = _allocations(ledger, run_id)
    for f in fills:
        got = allocated.get(f.fill_id, _Allocated())
        if f.liquidity == "internal":
            if got.quantity != 0 or got.bought > f.quantity:
                sold = got.bought - got.quantity
                over_alloc.append(
                    f"cross {f.fill_id}: agents bought {_s(got.bought)} and sold {_s(sold)} "
                    f"of {_s(f.quantity)}"
                )
        elif abs(got.quantity) > abs(f.quantity) or abs(got.fee) > abs(f.fee):
            over_alloc.append(
                f"{f.fill_id}: agents got {_s(got.quantity)} (fees {_s(got.fee)}) of {_s(f.quantity)} "
                f"(fee {_s(f.fee)})"
            )
    count, detail = _tally(
        [
            ("fill ids on several rows", repeated),
            ("orders filled more than once", over_order),
            ("allocations counted more than once", over_alloc),
        ],
        f"each of the {len(fills)} ledger fills and its allocations is counted once",
    )
    return Invariant("fills_duplicated", count == 0, count, "0", detail)


def fills_phantom(fills: list[FillRecord], venue: dict[str, _VenueFill]) -> Invariant:
    """Ledger venue fills the venue never made."""
    phantom = [f.fill_id for f in _external(fills) if f.fill_id not in venue]
    detail = (
        f"{len(phantom)} ledger fills the venue never made: {_examples(phantom)}"
        if phantom
        else "every ledger venue fill was made by the venue"
    )
    return Invariant("fills_phantom", not phantom, len(phantom), "0", detail)


def client_ids_sent_twice(truth: dict[str, Any]) -> Invariant:
    """Client order ids the venue saw again for a different order, or after the order was final."""
    reused = [str(x) for x in truth.get("reused_ids", [])]
    retries = sum(max(int(o.get("requests", 1)) - 1, 0) for o in truth.get("orders", {}).values())
    detail = (
        f"reused for another order or after the order was final: {_examples(reused)}"
        if reused
        else f"no client order id reused ({retries} safe retries of in-flight orders)"
    )
    return Invariant("client_ids_sent_twice", not reused, len(reused), "0", detail)


# ------------------------------------------------------------------------------------- positions, cash
def positions_match(ledger: Ledger, run_id: str, truth: dict[str, Any]) -> Invariant:
    """The ledger's portfolio positions equal the venue's exactly, and the agents' positions add up to
    the portfolio's, per symbol."""
    portfolio = ledger.positions(run_id)
    at_venue = {s: Decimal(str(q)) for s, q in truth.get("positions", {}).items() if Decimal(str(q)) != 0}
    venue_diff = [
        {"symbol": s, "ledger": _s(portfolio.get(s, Decimal(0))), "venue": _s(at_venue.get(s, Decimal(0)))}
        for s in sorted(portfolio.keys() | at_venue.keys())
        if portfolio.get(s, Decimal(0)) != at_venue.get(s, Decimal(0))
    ]
    agents: dict[str, Decimal] = defaultdict(Decimal)
    for symbol, qty_e8 in ledger.query(
        "SELECT symbol, qty_e8 FROM positions WHERE run_id = ? AND account != ?", run_id, PORTFOLIO
    ):
        agents[str(symbol)] += from_e8(int(qty_e8))
    agent_diff = [
        {"symbol": s, "agents": _s(agents.get(s, Decimal(0))), "portfolio": _s(portfolio.get(s, Decimal(0)))}
        for s in sorted(portfolio.keys() | agents.keys())
        if portfolio.get(s, Decimal(0)) != agents.get(s, Decimal(0))
    ]
    ok = not venue_diff and not agent_diff
    parts = [f"{d['symbol']}: ledger {d['ledger']}, venue {d['venue']}" for d in venue_diff]
    parts += [
        f"{d['symbol']}: agents add up to {d['agents']}, portfolio {d['portfolio']}" for d in agent_diff
    ]
    detail = _examples(parts) if parts else f"{len(at_venue)} symbols held, ledger = venue = sum of agents"
    value = {"venue_mismatches": venue_diff, "agent_mismatches": agent_diff}
    return Invariant("positions_match", ok, value, "equal per symbol, exactly", detail)


def cash_consistent(
    ledger: Ledger, run_id: str, fills: list[FillRecord], initial_capital: Decimal
) -> Invariant:
    """The portfolio's cash is the initial capital less the cost and fees of the ledger's venue fills,
    exactly; the agents' cash adds up to the portfolio's (an agent without a cash row still holds its
    starting capital)."""
    external = _external(fills)
    expected = initial_capital - sum((f.quantity * f.price + f.fee for f in external), Decimal(0))
    recorded = ledger.cash(run_id)
    portfolio = initial_capital if recorded is None else recorded
    capital = {
        str(name): from_e8(int(units))
        for name, units in ledger.query("SELECT name, capital_e8 FROM agents WHERE run_id = ?", run_id)
    }
    balances = {
        str(account): from_e8(int(units))
        for account, units in ledger.query(
            "SELECT account, balance_e8 FROM cash WHERE run_id = ? AND account != ?", run_id, PORTFOLIO
        )
    }
    agents = sum((balances.get(a, c) for a, c in capital.items()), Decimal(0))
    agents += sum((b for a, b in balances.items() if a not in capital), Decimal(0))
    ok = portfolio == expected and agents == portfolio
    value = {
        "portfolio": _s(portfolio),
        "expected": _s(expected),
        "difference": _s(portfolio - expected),
        "agents_sum": _s(agents),
    }
    if ok:
        detail = (
            f"capital {_s(initial_capital)} less {len(external)} venue fills' cost and fees = {_s(portfolio)}"
        )
    else:
        problems = []
        if portfolio != expected:
            problems.append(
                f"portfolio cash {_s(portfolio)} but capital {_s(initial_capital)} less {len(external)} "
                f"venue fills' cost and fees is {_s(expected)} (off by {_s(portfolio - expected)})"
            )
        if agents != portfolio:
            problems.append(f"the agents' cash adds up to {_s(agents)}, the portfolio holds {_s(portfolio)}")
        detail = "; ".join(problems)
    return Invariant("cash_consistent", ok, value, "equal, exactly", detail)


# --------------------------------------------------------------------------------------- budgets, risk
def budget_not_exceeded(ledger: Ledger, run_id: str) -> Invariant:
    """No budget's usage in a period (for rolling budgets: in any window) went past its cap."""
    rows = [r for r in ledger.costs(run_id) if r.budget is not None]
    over = []
    for r in rows:
        assert r.budget is not None
        rolling = r.period is not None and r.period.startswith("rolling")
        used = r.peak_period_usage if rolling and r.peak_period_usage is not None else r.usage
        if used > r.budget:
            over.append(
                {
                    "agent": r.agent,
                    "kind": r.kind,
                    "period": r.period,
                    "usage": _s(used),
                    "budget": _s(r.budget),
                }
            )
    detail = (
        _examples(f"{o['agent']} {o['kind']} ({o['period']}): {o['usage']} of {o['budget']}" for o in over)
        if over
        else f"{len(rows)} budget rows, none past its cap"
    )
    return Invariant("budget_not_exceeded", not over, over, "no usage above its budget", detail)


def risk_limits_at_venue(truth: dict[str, Any], risk: RiskLimits | None) -> Invariant:
    """Walking the venue's fills in order, the venue position per symbol never passed ``max_position``
    (or its ``max_position_by_symbol`` override), and no order the venue accepted was larger than
    ``max_order_quantity``."""
    position: dict[str, Decimal] = defaultdict(Decimal)
    peak: dict[str, Decimal] = defaultdict(Decimal)
    breaches: list[str] = []
    for f in truth.get("fills", []):
        symbol = str(f["symbol"])
        position[symbol] += Decimal(str(f["quantity"]))
        peak[symbol] = max(peak[symbol], abs(position[symbol]))
        limit = _position_limit(risk, symbol)
        if limit is not None and abs(position[symbol]) > limit:
            breaches.append(
                f"{symbol} at {_s(position[symbol])} after fill {f['fill_id']} (max_position {_s(limit)})"
            )
    big = []
    if risk is not None and risk.max_order_quantity is not None:
        cap = risk.max_order_quantity
        for order_id, o in truth.get("orders", {}).items():
            if abs(Decimal(str(o["quantity"]))) > cap:
                big.append(f"order {order_id}: {o['quantity']} {o['symbol']} (max_order_quantity {_s(cap)})")
    value = {
        "position_breaches": len(breaches),
        "order_breaches": len(big),
        "max_abs_position": {s: _s(q) for s, q in sorted(peak.items())},
    }
    ok = not breaches and not big
    if risk is None or (
        risk.max_position is None and not risk.max_position_by_symbol and risk.max_order_quantity is None
    ):
        detail = "no max_position or max_order_quantity in [risk]: nothing to check"
    else:
        detail = _examples([*breaches, *big]) if not ok else "every venue position and order within [risk]"
    return Invariant(
        "risk_limits_at_venue", ok, value, "within [risk] max_position, max_order_quantity", detail
    )


def _position_limit(risk: RiskLimits | None, symbol: str) -> Decimal | None:
    if risk is None:
        return None
    return risk.max_position_by_symbol.get(symbol, risk.max_position)


# ----------------------------------------------------------------------------------- agents, latency
def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def agents_recovered(stats: RunStats, plan: ChaosPlan) -> Invariant:
    """Every killed agent came back, and the p99 of the time to recover is within the plan's bound."""
    threshold = plan.invariants.recovery_p99_s
    times = [k.recovery_s for k in stats.kills if k.recovery_s is not None]
    lost = [k for k in stats.kills if k.recovery_s is None]
    value: dict[str, Any] = {
        "kills": len(stats.kills),
        "recovered": len(times),
        "restarts": len(stats.restarts),
        "p50": None,
        "p99": None,
        "max": None,
    }
    if times:
        value.update(p50=_percentile(times, 50), p99=_percentile(times, 99), max=max(times))
    p99 = value["p99"]
    ok = not lost and (p99 is None or p99 <= threshold)
    required = f"all back, p99 <= {threshold:g} s"
    if not stats.kills:
        return Invariant("agents_recovered", True, value, required, "no agent was killed")
    problems = []
    if lost:
        shown = _examples(f"{k.agent} (killed at {k.at_s:g} s)" for k in lost)
        problems.append(f"{len(lost)} killed agents never came back: {shown}")
    if p99 is not None and p99 > threshold:
        problems.append(f"p99 recovery {p99:.2f} s is above {threshold:g} s")
    detail = "; ".join(problems) or (
        f"{len(times)} kills recovered: p50 {value['p50']:.2f} s, p99 {p99:.2f} s, max {value['max']:.2f} s"
    )
    return Invariant("agents_recovered", ok, value, required, detail)


def quarantined(stats: RunStats, plan: ChaosPlan) -> Invariant:
    """The agents in quarantine at the end (fine unless more than ``max_quarantined``)."""
    cap = plan.invariants.max_quarantined
    names = sorted(stats.quarantined)
    ok = cap is None or len(names) <= cap
    required = "any number" if cap is None else f"at most {cap}"
    detail = _examples(f"{n}: {stats.quarantined[n]}" for n in names) if names else "no agent quarantined"
    return Invariant("quarantined", ok, names, required, detail)


def healthy_latency(stats: RunStats, plan: ChaosPlan) -> Invariant:
    """The tick-to-orders p99 of healthy agents during faults, over the fault-free baseline's."""
    bound = plan.invariants.latency_ratio_max
    required = f"p99 / baseline p99 <= {bound:g}"
    faulted, base = stats.healthy_latency_ms, stats.baseline_latency_ms
    value: dict[str, Any] = {
        "p99_ms": _percentile(faulted, 99) if faulted else None,
        "baseline_p99_ms": _percentile(base, 99) if base else None,
        "ratio": None,
    }
    if base is None:
        return Invariant("healthy_latency", True, value, required, "not compared: the plan ran no baseline")
    if not faulted or not base:
        run = "the faulted run" if not faulted else "the baseline"
        return Invariant(
            "healthy_latency",
            False,
            value,
            required,
            f"no answer of a healthy agent was measured in {run}; keep [hooks] agents_fraction below 1 and "
            "let both runs trade long enough for a tick",
        )
    ratio = value["p99_ms"] / value["baseline_p99_ms"] if value["baseline_p99_ms"] > 0 else float("inf")
    value["ratio"] = ratio if np.isfinite(ratio) else None
    ok = ratio <= bound
    detail = (
        f"healthy agents' p99 {value['p99_ms']:.1f} ms under faults vs {value['baseline_p99_ms']:.1f} ms "
        f"without ({ratio:.2f}x, {len(faulted)} and {len(base)} answers)"
    )
    return Invariant("healthy_latency", ok, value, required, detail)


def execution_restarts(stats: RunStats, plan: ChaosPlan) -> Invariant:
    """The execution actor was restarted once per kill of the plan."""
    planned = len(plan.execution.kill_at_s)
    ok = stats.execution_restarts == planned
    detail = f"restarted {stats.execution_restarts} times, the plan killed it {planned} times"
    return Invariant("execution_restarts", ok, stats.execution_restarts, f"{planned} (one per kill)", detail)
