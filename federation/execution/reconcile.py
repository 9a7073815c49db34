"""Rebuilding a restarted execution actor's engine from the ledger, its order journal and the venue.

The venue (an actor of its own in live mode) is the truth of what was accepted and filled. The ledger is
a consistent prefix of what the dead actor recorded (each write is one transaction, written in order); the
journal holds every order that was about to leave the process. :func:`reconcile`:

1. **Books** from the ledger: positions (lots, average cost, realized P&L) and cash of every account,
   the portfolio's included; fees per agent from the fill allocations and the portfolio's from its venue
   fills; order, fill and cross counters, per agent too; every fill id; the allocated capital (the
   rebalances' transfers); each account's latest ``trading_state`` (a HALTED account stays halted).
2. **Internal crosses** the ledger lacks are booked from the journal (see
   :mod:`federation.execution.journal`).
3. **Orders**: those the ledger has as ``submitted``, plus those only in the journal (the ledger write
   was lost), are matched against the venue's orders: the venue's reports from cursor 0 close them
   (fills the ledger lacks are booked, allocated to the agents as the order was), orders still working
   at the venue become pending again, and orders the venue never received are closed (``expired``,
   reason ``not_sent``).
4. **Ids**: the next sequence number is above every one used in the ledger, the journal and the venue,
   so no client order id is ever sent twice.

What restarts fresh (written down here because it is not restored): the circuit breakers (their peak and
window start from the equity at recovery), the order-rate buckets of the risk policies, holds of weaker
states under an account's latest one, and the once-per-standing-demand memory of denials (a standing
denial may be recorded once more). Marks start from the last fill price of each symbol until its next bar.

The reconciled fills that agents have not received are returned as a :class:`BlockOutcome`: those whose
venue report became due (or, for internal crosses, which executed) after ``delivered_ts``, the bar time
of the last block whose outcome the supervisor received. One case is not told apart: a venue answer lost
(and read again on a later bar) just before the old actor died may make a fill look delivered.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np

from federation.execution.engine import BlockOutcome, ExecutionEngine, _Pending
from federation.execution.journal import CrossEntry, Journal
from federation.execution.venue import VenueFill, VenueOrder, VenueReport
from federation.execution.venue_client import RemoteVenue
from federation.ledger import PORTFOLIO, EventRecord, Ledger, OrderRecord
from federation.money import from_e8, round_to_tick, to_e8
from policies.breakers import CircuitBreakers
from policies.trading_state import TradingState


class RecoveryError(RuntimeError):
    """Reconciliation could not be done (the venue could not be reached within the retry budget)."""


@dataclass(slots=True)
class _Known:
    """An order the ledger or the journal knows, with what booking its fills needs."""

    record: OrderRecord
    allocations: list[tuple[int, int]]
    order: VenueOrder
    in_ledger: bool


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def reconcile(
    engine: ExecutionEngine,
    ledger: Ledger,
    journal: Journal,
    venue: RemoteVenue,
    delivered_ts: int,
) -> BlockOutcome:
    """Rebuild ``engine`` (fresh, as constructed) from ``ledger``, ``journal`` and ``venue``; write what
    reconciliation booked and closed to the ledger (with an ``execution_recovered`` event) and return the
    fills agents have not received (see the module)."""
    run, lot, n = engine.run_id, engine.config.lot_size, engine.n
    names = {name: i for i, name in enumerate([*engine.agents, PORTFOLIO])}
    cols = {symbol: c for c, symbol in enumerate(engine.symbols)}
    counts: dict[str, int] = defaultdict(int)

    def q(sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return ledger.query(sql, run, *args)

    # ---- books
    for account, symbol, qty, avg, realized in q(
        "SELECT account, symbol, qty_e8, avg_price_e8, realized_pnl_e8 FROM positions WHERE run_id = ?"
    ):
        if account in names and symbol in cols:
            lots = int(from_e8(qty) / lot)
            engine.books.restore(names[account], cols[symbol], lots, from_e8(avg), from_e8(realized))
    for account, balance in q("SELECT account, balance_e8 FROM cash WHERE run_id = ?"):
        if account in names:
            engine.books.set_cash(names[account], from_e8(balance))
    for agent, fee in q("SELECT agent, SUM(fee_e8) FROM fill_allocations WHERE run_id = ? GROUP BY agent"):
        if agent in names:
            engine.books.fees[names[agent]] = from_e8(_int(fee))
    for agent, count in q("SELECT agent, COUNT(*) FROM fill_allocations WHERE run_id = ? GROUP BY agent"):
        if agent in names and names[agent] < n:
            engine.stats[names[agent]].fills = _int(count)
    fee_rows = q("SELECT SUM(fee_e8) FROM fills WHERE run_id = ? AND liquidity <> 'internal'")
    engine.books.fees[n] = from_e8(_int(fee_rows[0][0])) if fee_rows else Decimal(0)

    # ---- fills and ids
    seq = 0
    ledger_fills: dict[str, tuple[int, str]] = {}
    last_price: dict[int, tuple[int, int]] = {}
    for fill_id, ts, liquidity, symbol, price in q(
        "SELECT fill_id, ts, liquidity, symbol, price_e8 FROM fills WHERE run_id = ?"
    ):
        ledger_fills[fill_id] = (int(ts), liquidity)
        if liquidity == "internal":
            engine.crosses += 1
            seq = max(seq, _seq_of(run, fill_id))
        else:
            engine.fills += 1
        col = cols.get(symbol)
        if col is not None and (col not in last_price or last_price[col][0] <= int(ts)):
            last_price[col] = (int(ts), int(price))

    # ---- orders
    allocs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for cid, agent, qty in q("SELECT client_order_id, agent, qty_e8 FROM order_allocations WHERE run_id = ?"):
        if agent in names:
            allocs[cid].append((names[agent], int(from_e8(qty) / lot)))
    records = {o.client_order_id: o for o in ledger.orders(run)}
    known: dict[str, _Known] = {}
    for cid, record in records.items():
        seq = max(seq, record.seq)
        engine.orders += 1
        denied = record.status == "denied"
        engine.denied += denied
        for i, _ in allocs.get(cid, []):
            if i < n:
                engine.stats[i].orders += 1
                engine.stats[i].denied += denied
        col = cols.get(record.symbol)
        if denied or col is None:
            continue
        sign = 1 if record.side == "buy" else -1
        lots = sign * int(record.quantity / lot)
        order = VenueOrder(cid, col, lots, record.order_type, record.limit_price, record.ts)
        known[cid] = _Known(record, sorted(allocs.get(cid, [])), order, True)
    for cid, entry in journal.orders.items():
        seq = max(seq, entry.seq)
        if cid in known:
            continue
        counts["journal_only_orders"] += 1
        shares = [(names[a], x) for a, x in entry.allocations if a in names]
        record = OrderRecord(
            cid,
            entry.seq,
            entry.ts,
            entry.symbol,
            "buy" if entry.lots > 0 else "sell",
            entry.order_type,
            abs(entry.lots) * lot,
            entry.limit_price,
            "submitted",
            allocations=tuple((engine.agents[i], x * lot) for i, x in shares),
        )
        order = VenueOrder(cid, entry.col, entry.lots, entry.order_type, entry.limit_price, entry.ts)
        known[cid] = _Known(record, shares, order, False)
        engine._batch.orders.append(record)  # the ledger never got it: recorded now, with its allocations
        engine.orders += 1
        for i, _ in shares:
            engine.stats[i].orders += 1

    for agent, count in q(
        "SELECT agent, COUNT(*) FROM events WHERE run_id = ? AND kind = 'risk_denial' GROUP BY agent"
    ):
        if agent is None:
            engine.risk_denials = _int(count)
        elif agent in names and names[agent] < n:
            engine.stats[names[agent]].risk_denials = _int(count)
    _restore_states(engine, q, names)
    _restore_allocation(engine, q)

    # ---- the venue
    states = venue.orders(f"{run}-")
    read = venue.read(0) if states is not None else None
    if states is None or read is None:
        raise RecoveryError(
            f"execution recovery of run {run!r}: the venue could not be reached within venue_retry_s = "
            f"{engine.config.venue_retry_s:g} s ({venue.last_error}); start the execution actor again "
            "when the venue answers (nothing was changed)"
        )
    for cid in states:
        seq = max(seq, _seq_of(run, cid))
    for cross in journal.crosses.values():
        seq = max(seq, cross.seq)
    entries, cursor = read
    engine._seq = seq
    # Bar time of what is recorded at recovery (and of a halt sent before the next block): the latest seen.
    latest = [delivered_ts, *(k.record.ts for k in known.values()), *(ts for ts, _ in ledger_fills.values())]
    engine._ts = max(engine._ts, *latest)
    # Every order not final in the ledger is open until the venue's reports say otherwise.
    pendings: dict[str, _Pending] = {}

    def pending_of(cid: str) -> _Pending | None:
        if cid not in pendings and cid in known:
            k = known[cid]
            pendings[cid] = _Pending([], None, k.order, k.record, k.allocations, k.order.col, True, 1)
        return pendings.get(cid)

    for cid, k in known.items():
        if not k.in_ledger or k.record.status == "submitted":
            engine._open[cid] = pending_of(cid)  # type: ignore[assignment]
    due_of: dict[str, int] = {}
    for due_ts, event in entries:
        if isinstance(event, VenueFill):
            due_of.setdefault(event.fill_id, due_ts)
    outcome = BlockOutcome(fills=defaultdict(list), fees_e8=defaultdict(int))
    _undelivered(engine, q, ledger_fills, due_of, delivered_ts, outcome)
    scratch = BlockOutcome(fills=defaultdict(list), fees_e8=defaultdict(int))
    # Crosses the ledger lost are booked from the journal, in time order with the venue's reports.
    crosses = sorted(
        (c for c in journal.crosses.values() if c.cross_id not in ledger_fills), key=lambda c: (c.ts, c.seq)
    )
    counts["crosses_booked"] = len(crosses)

    def book_crosses(until: int | None) -> None:
        while crosses and (until is None or crosses[0].ts <= until):
            cross = crosses.pop(0)
            _book_cross(engine, cross, names, outcome if cross.ts > delivered_ts else scratch)

    booked: set[str] = set()
    for due_ts, event in entries:
        engine._ts = max(engine._ts, due_ts)
        book_crosses(due_ts)
        if isinstance(event, VenueFill):
            venue.fill_ids.add(event.fill_id)
            last = last_price.get(event.col)
            if last is None or last[0] <= event.ts:
                last_price[event.col] = (event.ts, to_e8(event.price))
            if event.fill_id in ledger_fills or event.fill_id in booked:
                continue  # recorded already, or a repeat of a report
            booked.add(event.fill_id)
            pending = pending_of(event.client_order_id)
            counts["fills_booked"] += 1
            if pending is None:
                counts["unknown_fills"] += 1
                engine._orphan_fill(event)
            else:
                engine._book_fill(event, pending, event.ts, outcome if due_ts > delivered_ts else scratch)
        elif isinstance(event, VenueReport):
            pending = engine._open.get(event.client_order_id)
            if pending is not None:
                counts["orders_closed"] += 1
                engine._close(pending, event)
    book_crosses(None)
    venue.cursor = cursor

    # ---- what is still open: working at the venue, or never sent
    for cid, pending in sorted(engine._open.items(), key=lambda kv: kv[1].record.seq):  # type: ignore[union-attr]
        state = states.get(cid)
        assert pending.record is not None and pending.order is not None
        if state is None:
            del engine._open[cid]
            counts["orders_not_sent"] += 1
            engine._batch.orders.append(
                replace(
                    pending.record,
                    allocations=(),
                    status="expired",
                    reason_code="not_sent",
                    reason="the order never reached the venue (the execution actor stopped before sending "
                    "it); closed when a new execution actor recovered",
                )
            )
            continue
        counts["orders_resumed"] += 1
        if state["status"] != "working":  # matched there; its report comes with a later call
            pending.stage = 2
            engine._offered.add(cid)
        other = engine._pending.get(pending.col)
        if other is not None:  # cannot happen with one engine per run; kept visible if it does
            counts["orders_same_symbol"] += 1
            continue
        engine._pending[pending.col] = pending
    if engine.states[n].state is TradingState.HALTED:  # its working orders were to be cancelled
        for col in sorted(engine._pending):
            engine._cancel(col, engine._ts, "the federation is HALTED (restored at recovery)")
        if engine._cancels:
            engine._send(engine._ts)

    # ---- marks, breakers, what agents have not received
    for col, (_, price) in last_price.items():
        close = float(round_to_tick(from_e8(price), engine.config.price_tick))
        engine.last_close[col] = close
        engine._mark[col] = close * engine._lot_f
    engine.books.sync_floats()
    engine._equity = engine.books.equity(engine._mark)
    engine.breakers = CircuitBreakers(engine.breakers.specs, engine._equity.tolist())
    counts["fills_delivered"] = sum(len(rows) for rows in outcome.fills.values())
    detail = {
        "delivered_ts": delivered_ts,
        "ledger_fills": len(ledger_fills),
        "journal_orders": len(journal.orders),
        "venue_orders": len(states),
        "venue_events": len(entries),
        "next_seq": engine._seq + 1,
        **{k: counts.get(k, 0) for k in (
            "fills_booked", "crosses_booked", "unknown_fills", "orders_closed", "orders_resumed",
            "orders_not_sent",
            "journal_only_orders", "orders_same_symbol", "fills_delivered",
        )},
    }  # fmt: skip
    engine._batch.events.append(
        EventRecord(
            engine._ts,
            "execution_recovered",
            "reconciled",
            f"execution actor recovered from the ledger, its journal and the venue: "
            f"{detail['fills_booked']} venue fill(s) and {detail['crosses_booked']} internal cross(es) "
            f"booked that the ledger lacked, {detail['orders_closed']} "
            f"order(s) closed as the venue reported, {detail['orders_resumed']} still working, "
            f"{detail['orders_not_sent']} never sent (expired, not_sent)",
            None,
            detail,
        )
    )
    engine.flush()
    outcome.fills = dict(outcome.fills)
    outcome.fees_e8 = dict(outcome.fees_e8)
    outcome.equity = np.zeros((0, n + 1))
    return outcome


def _book_cross(
    engine: ExecutionEngine, cross: CrossEntry, names: dict[str, int], outcome: BlockOutcome
) -> None:
    shares = [(names[a], lots) for a, lots in cross.shares if a in names]
    engine._book_cross(cross.cross_id, cross.col, cross.ts, cross.price, shares, outcome)


_SEQ = re.compile(r"-[A-Z](\d+)$")


def _seq_of(run: str, client_id: str) -> int:
    """The sequence number in an id this run made (``<run>-O0000012``, ``<run>-X0000013``), else 0."""
    if not client_id.startswith(f"{run}-"):
        return 0
    match = _SEQ.search(client_id)
    return int(match.group(1)) if match else 0


def _restore_states(engine: ExecutionEngine, q: Any, names: dict[str, int]) -> None:
    """Each account's latest trading state (``trading_state`` events) held again until its end."""
    latest: dict[int, tuple[int, dict[str, Any]]] = {}
    for ts, agent, detail in q(
        "SELECT ts, agent, detail_json FROM events WHERE run_id = ? AND kind = 'trading_state' ORDER BY id"
    ):
        account = engine.n if agent is None else names.get(agent)
        if account is not None and account <= engine.n:
            latest[account] = (int(ts), json.loads(detail))
    for account, (ts, detail) in latest.items():
        state = TradingState[str(detail.get("to", "active")).upper()]
        if state is TradingState.ACTIVE:
            continue
        until = detail.get("until")
        if until is not None and int(until) <= ts:
            continue
        engine.states[account].hold(
            state, ts=ts, until=None if until is None else int(until), reason=str(detail.get("reason", ""))
        )
        engine._held.add(account)


def _restore_allocation(engine: ExecutionEngine, q: Any) -> None:
    """Allocated capital: the constructor's plus every recorded rebalance transfer."""
    index = {name: i for i, name in enumerate(engine.agents)}
    for (detail,) in q(
        "SELECT detail_json FROM events WHERE run_id = ? AND kind = 'allocation_transfer' ORDER BY id"
    ):
        for agent, amount in json.loads(detail).items():
            if agent in index:
                engine.allocated[index[agent]] += Decimal(str(amount))


def _undelivered(
    engine: ExecutionEngine,
    q: Any,
    ledger_fills: dict[str, tuple[int, str]],
    due_of: dict[str, int],
    delivered_ts: int,
    outcome: BlockOutcome,
) -> None:
    """Add to ``outcome`` the fills the ledger already had that agents have not received: venue fills
    whose report became due after ``delivered_ts`` and internal crosses executed after it."""
    wanted = {
        fill_id
        for fill_id, (ts, liquidity) in ledger_fills.items()
        if (ts > delivered_ts if liquidity == "internal" else due_of.get(fill_id, ts) > delivered_ts)
    }
    if not wanted:
        return
    since = min(ledger_fills[f][0] for f in wanted)
    rows = q(
        "SELECT a.fill_id, a.agent, a.symbol, a.qty_e8, a.price_e8, a.fee_e8, f.ts, f.client_order_id, "
        "f.liquidity FROM fill_allocations a JOIN fills f ON f.run_id = a.run_id AND f.fill_id = a.fill_id "
        "WHERE a.run_id = ? AND f.ts >= ? ORDER BY f.ts, a.fill_id, a.agent",
        since,
    )
    agents = set(engine.agents)
    for fill_id, agent, symbol, qty, price, fee, ts, order_id, liquidity in rows:
        if fill_id not in wanted or agent not in agents:
            continue
        outcome.fills[agent].append(
            (
                symbol,
                int(ts),
                float(from_e8(qty)),
                float(from_e8(price)),
                float(from_e8(fee)),
                order_id,
                liquidity == "internal",
            )
        )
        outcome.fees_e8[agent] += int(fee)
