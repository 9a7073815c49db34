"""What the ledger stores. Quantities and money are Decimal here and integer 1e-8 units on disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from federation.money import to_e8

OrderStatus = Literal["submitted", "filled", "partially_filled", "expired", "denied", "cancelled", "rejected"]
Side = Literal["buy", "sell"]
Liquidity = Literal["taker", "maker", "internal"]
PORTFOLIO = "__portfolio__"
"""Account name of the whole portfolio in the positions and cash tables (agents use their own names)."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    started_ns: int
    config_json: str
    capital: Decimal
    currency: str
    seed: int


@dataclass(frozen=True, slots=True)
class AgentRecord:
    name: str
    class_path: str
    isolation: str
    symbols: tuple[str, ...]
    params_json: str
    capital: Decimal


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order's latest state; written again (upserted) when its status changes."""

    client_order_id: str
    seq: int
    ts: int
    symbol: str
    side: Side
    order_type: Literal["market", "limit"]
    quantity: Decimal
    limit_price: Decimal | None
    status: OrderStatus
    filled_quantity: Decimal = Decimal(0)
    reason_code: str | None = None
    reason: str | None = None
    allocations: tuple[tuple[str, Decimal], ...] = ()
    """(agent, quantity) shares of the order, signed like the order's side; carried by the record that
    creates the order (status ``submitted`` or ``denied``), not by its later status updates."""


@dataclass(frozen=True, slots=True)
class FillRecord:
    """An execution at the venue (``liquidity`` taker/maker) or an internal cross between agents."""

    fill_id: str
    client_order_id: str
    ts: int
    symbol: str
    quantity: Decimal
    """Signed: + bought, - sold (for internal crosses: the sum over its allocations is zero)."""
    price: Decimal
    fee: Decimal
    liquidity: Liquidity


@dataclass(frozen=True, slots=True)
class AllocationRecord:
    """One agent's share of a fill: what the agent's virtual sub-account booked."""

    fill_id: str
    agent: str
    symbol: str
    quantity: Decimal
    price: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class PositionRecord:
    account: str
    symbol: str
    quantity: Decimal
    avg_price: Decimal
    realized_pnl: Decimal


@dataclass(frozen=True, slots=True)
class CashRecord:
    account: str
    balance: Decimal


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An audit event: agent errors, rejected signals, risk denials, trading states, circuit breakers,
    run lifecycle."""

    ts: int
    kind: str
    code: str
    message: str
    agent: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """An agent's saved state, to restore it after its process is restarted. The ledger keeps one per
    agent and run: the latest (a checkpoint never replaces one of a later bar)."""

    agent: str
    ts: int
    """Bar time (epoch ns) of the last bar the agent had processed when its state was taken."""
    bars: int
    """Bars the agent had processed by then (the replay after a restore starts after them)."""
    state: bytes
    """``Agent.state()``, serialized by the runner."""


@dataclass(slots=True)
class LedgerBatch:
    """Everything from one step of the run, written in one transaction."""

    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)
    allocations: list[AllocationRecord] = field(default_factory=list)
    positions: list[PositionRecord] = field(default_factory=list)
    cash: list[CashRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    """Agent state checkpoints: each replaces the agent's previous one (see :func:`latest_per_agent`)."""

    def __bool__(self) -> bool:
        return bool(
            self.orders
            or self.fills
            or self.allocations
            or self.positions
            or self.cash
            or self.events
            or self.checkpoints
        )


def latest_per_agent(checkpoints: list[CheckpointRecord]) -> list[CheckpointRecord]:
    """One checkpoint per agent, the last in the list (an agent's checkpoints are in time order), in
    the order of each agent's first: what a ledger keeps of ``checkpoints`` written one after another."""
    return list({c.agent: c for c in checkpoints}.values())


@dataclass(frozen=True, slots=True)
class CostRow:
    """One agent's usage of one meter (or of its money budget) over a run: the cost report's row.

    A row is one budget of the agent in one period (``period``: ``run``, ``day 2024-05-01`` or
    ``rolling 3600 s``), or a meter used without a budget (``budget`` and ``period`` None). ``usage`` is
    in the meter's unit (money for ``money`` and ``fees``) and, for run and day rows, is what counted
    against ``budget`` in that period; ``cost`` is in money; ``remaining`` is what was left at the end;
    ``peak_period_usage`` is the most any period (for rolling budgets: any window) held; ``actions``
    counts what the budget did (throttle, suspend, stop, resume)."""

    agent: str
    kind: str
    usage: Decimal
    cost: Decimal
    budget: Decimal | None
    period: str | None
    peak_period_usage: Decimal | None
    remaining: Decimal | None
    reservations: int
    refusals: int
    actions: dict[str, int]
    state: str


def cost_row_values(run_id: str, row: CostRow) -> tuple[Any, ...]:
    """The ``budget_usage`` columns (after ``id``) of a cost row, both backends: money and usage in 1e-8
    units, actions as JSON."""

    def e8(value: Decimal | None) -> int | None:
        return None if value is None else to_e8(value)

    return (
        run_id,
        row.agent,
        row.kind,
        to_e8(row.usage),
        to_e8(row.cost),
        e8(row.budget),
        row.period,
        e8(row.peak_period_usage),
        e8(row.remaining),
        row.reservations,
        row.refusals,
        json.dumps(row.actions, sort_keys=True),
        row.state,
    )


# Rows as both ledgers store them (after ``run_id``): the column order of each table, money in 1e-8 units.
def order_row(o: OrderRecord) -> tuple[Any, ...]:
    limit = None if o.limit_price is None else to_e8(o.limit_price)
    return (
        o.client_order_id, o.seq, o.ts, o.symbol, o.side, o.order_type, to_e8(o.quantity), limit, o.status,
        to_e8(o.filled_quantity), o.reason_code, o.reason,
    )  # fmt: skip


def order_allocation_rows(o: OrderRecord) -> list[tuple[str, str, int]]:
    return [(o.client_order_id, agent, to_e8(q)) for agent, q in o.allocations]


def fill_row(f: FillRecord) -> tuple[Any, ...]:
    quantity, price, fee = to_e8(f.quantity), to_e8(f.price), to_e8(f.fee)
    return (f.fill_id, f.client_order_id, f.ts, f.symbol, quantity, price, fee, f.liquidity)


def allocation_row(a: AllocationRecord) -> tuple[Any, ...]:
    return (a.fill_id, a.agent, a.symbol, to_e8(a.quantity), to_e8(a.price), to_e8(a.fee))


def position_row(p: PositionRecord) -> tuple[Any, ...]:
    return (p.account, p.symbol, to_e8(p.quantity), to_e8(p.avg_price), to_e8(p.realized_pnl))


def cash_row(c: CashRecord) -> tuple[str, int]:
    return (c.account, to_e8(c.balance))


def checkpoint_row(c: CheckpointRecord) -> tuple[str, int, int, bytes]:
    """``agent, ts, bars, state``."""
    return (c.agent, c.ts, c.bars, c.state)


def event_row(e: EventRecord) -> tuple[Any, ...]:
    """``ts, kind, agent, code, message, detail_json``."""
    return (e.ts, e.kind, e.agent, e.code, e.message, json.dumps(e.detail, default=str))
