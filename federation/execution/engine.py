"""The execution engine: turns agents' desired positions into netted orders, fills and ledger records.

Per bar, in order:

1. Orders and internal crosses decided on a symbol's previous bar execute on this bar (venue rules in
   :mod:`federation.execution.venue`; crosses at this bar's open, without fee or slippage).
2. Agents' new desired positions for this bar (from the aggregator) are applied.
3. For each symbol with a bar and no working order, every agent's demand is ``desired - position``.
   Opposite demands are crossed internally (pro rata); only the net goes to the venue as one order, after
   the risk policy approved it. The order's fills are split among the agents that asked, pro rata.

Everything a block produced is written to the ledger in one transaction at the end of the block.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from agents.model import BarBatch, FillRow
from federation.config import ExecutionConfig
from federation.execution.accounts import SubAccounts
from federation.execution.venue import SimulatedVenue, VenueFill, VenueOrder
from federation.ledger import (
    PORTFOLIO,
    AllocationRecord,
    CashRecord,
    EventRecord,
    FillRecord,
    LedgerBatch,
    OrderRecord,
    OrderStatus,
    PositionRecord,
    SQLiteLedger,
)
from federation.money import from_e8, round_to_tick, to_e8
from policies.risk import OrderIntent, RiskPolicy

IntArray = npt.NDArray[np.int64]
_BPS = Decimal(10_000)
_EXPIRY_REASONS = {
    "limit_not_reached": "the limit price was not reached on the symbol's next bar",
    "volume_cap": "nothing could fill within max_volume_share of the bar's volume",
}


@dataclass(frozen=True, slots=True)
class TargetUpdates:
    """Sparse changes of desired positions in a block: at ``rows[k]`` agent ``agents[k]`` wants
    ``lots[k]`` lots of symbol column ``cols[k]``. Sorted by row."""

    rows: IntArray
    agents: IntArray
    cols: IntArray
    lots: IntArray

    @staticmethod
    def empty() -> TargetUpdates:
        e = np.zeros(0, dtype=np.int64)
        return TargetUpdates(e, e, e, e)


@dataclass(slots=True)
class _Pending:
    """What was decided for one symbol on a bar's close and executes on its next bar."""

    cross: list[tuple[int, int]]
    cross_id: str | None
    order: VenueOrder | None
    record: OrderRecord | None
    allocations: list[tuple[int, int]]


@dataclass(slots=True)
class AgentExecutionStats:
    orders: int = 0
    denied: int = 0
    fills: int = 0


@dataclass(slots=True)
class BlockOutcome:
    """Fills attributed to each agent in the block (to deliver through ``on_fill``), as rows."""

    fills: dict[str, list[FillRow]] = field(default_factory=dict)
    received_ns: int = 0
    """``time.monotonic_ns()`` when the execution actor received the block's targets (live latency)."""


def pro_rata(total: int, weights: list[int]) -> list[int]:
    """Split ``total >= 0`` whole units in proportion to positive ``weights`` (largest remainder, stable).

    The shares always add up to ``total`` exactly."""
    whole = sum(weights)
    if total == whole:
        return list(weights)
    base = [total * w // whole for w in weights]
    left = total - sum(base)
    order = sorted(range(len(weights)), key=lambda k: (-(total * weights[k] % whole), k))
    for k in order[:left]:
        base[k] += 1
    return base


class ExecutionEngine:
    """One per run; owns the venue, the sub-accounts and the ledger writes of orders and fills."""

    def __init__(
        self,
        *,
        run_id: str,
        agents: list[str],
        capital: list[Decimal],
        symbols: tuple[str, ...],
        config: ExecutionConfig,
        risk: RiskPolicy,
        ledger: SQLiteLedger | None,
    ) -> None:
        self.run_id = run_id
        self.agents = agents
        self.symbols = symbols
        self.config = config
        self.risk = risk
        self.ledger = ledger
        self.n = len(agents)
        self.books = SubAccounts(
            [*agents, PORTFOLIO], symbols, [*capital, sum(capital, Decimal(0))], config.lot_size
        )
        self.initial_capital = sum(capital, Decimal(0))
        self.venue = SimulatedVenue(config)
        self.desired: IntArray = np.zeros((self.n, len(symbols)), dtype=np.int64)
        self.last_close = np.full(len(symbols), np.nan)
        self.stats = [AgentExecutionStats() for _ in agents]
        self.orders = self.fills = self.denied = self.crosses = 0
        self._pending: dict[int, _Pending] = {}
        self._last_denied: dict[int, tuple[int, tuple[tuple[int, int], ...], str]] = {}
        self._seq = 0
        self._batch = LedgerBatch()
        self._touched: set[tuple[int, int]] = set()

    # ------------------------------------------------------------------------------------------ blocks
    def process_block(self, batch: BarBatch, targets: TargetUpdates) -> BlockOutcome:
        """Run every bar of ``batch``; write the block to the ledger; return the agents' fills."""
        outcome = BlockOutcome(fills=defaultdict(list))
        k, n_updates = 0, len(targets.rows)
        valid = batch.valid
        for t in range(len(batch)):
            ts = int(batch.ts[t])
            for col in [c for c in self._pending if valid[t, c]]:
                self._execute(col, t, ts, batch, outcome)
            while k < n_updates and targets.rows[k] == t:
                self.desired[targets.agents[k], targets.cols[k]] = targets.lots[k]
                k += 1
            row_valid = valid[t]
            self.last_close[row_valid] = batch.close[t, row_valid]
            delta = self.desired - self.books.lots[: self.n]
            demand = (delta != 0).any(axis=0)
            if self._last_denied:
                # A denial is remembered only while the same demand stands; gone, it is forgotten.
                for col in [c for c in self._last_denied if row_valid[c] and not demand[c]]:
                    del self._last_denied[col]
            wanted = np.flatnonzero(row_valid & demand)
            for col in wanted.tolist():
                if col not in self._pending:
                    self._decide(col, ts, delta[:, col])
        self.flush()
        outcome.fills = dict(outcome.fills)
        return outcome

    def _next_id(self, kind: str) -> str:
        self._seq += 1
        return f"{self.run_id}-{kind}{self._seq:07d}"

    def _decide(self, col: int, ts: int, delta: IntArray) -> None:
        buyers = [(i, int(d)) for i, d in enumerate(delta.tolist()) if d > 0]
        sellers = [(i, int(-d)) for i, d in enumerate(delta.tolist()) if d < 0]
        bought, sold = sum(d for _, d in buyers), sum(d for _, d in sellers)
        crossed = min(bought, sold)
        cross: list[tuple[int, int]] = []
        residual: list[tuple[int, int]] = []
        if crossed:
            for side, sign in ((buyers, 1), (sellers, -1)):
                shares = pro_rata(crossed, [d for _, d in side])
                cross += [(i, sign * x) for (i, _), x in zip(side, shares, strict=True) if x]
                residual += [(i, sign * (d - x)) for (i, d), x in zip(side, shares, strict=True) if d > x]
        else:
            residual = [(i, d) for i, d in buyers] + [(i, -d) for i, d in sellers]
        net = bought - sold
        pending = _Pending(cross, self._next_id("X") if cross else None, None, None, [])
        if net:
            self._place(col, ts, net, residual, pending)
        if pending.cross or pending.order is not None:
            self._pending[col] = pending

    def _place(
        self,
        col: int,
        ts: int,
        net: int,
        residual: list[tuple[int, int]],
        pending: _Pending,
    ) -> None:
        symbol, lot = self.symbols[col], self.config.lot_size
        ref = round_to_tick(float(self.last_close[col]), self.config.price_tick)
        position = self.books.holding(self.n, col)[0]
        names = tuple(self.agents[i] for i, _ in residual)
        denial = self.risk.check(OrderIntent(symbol, net * lot, ref, position, names))
        key = (net, tuple(residual), denial.code if denial else "")
        if denial and self._last_denied.get(col) == key:
            return  # the same demand was denied for the same reason already: checked again, not re-recorded
        limit = None
        if self.config.order_type == "limit":
            offset = Decimal(repr(self.config.limit_offset_bps)) / _BPS
            limit = round_to_tick(
                float(ref * (1 - offset if net > 0 else 1 + offset)), self.config.price_tick
            )
        client_id = self._next_id("O")
        record = OrderRecord(
            client_order_id=client_id,
            seq=self._seq,
            ts=ts,
            symbol=symbol,
            side="buy" if net > 0 else "sell",
            order_type=self.config.order_type,
            quantity=abs(net) * lot,
            limit_price=limit,
            status="denied" if denial else "submitted",
            reason_code=denial.code if denial else None,
            reason=denial.message if denial else None,
            allocations=tuple((self.agents[i], lots * lot) for i, lots in residual),
        )
        self._batch.orders.append(record)
        self.orders += 1
        for i, _ in residual:
            self.stats[i].orders += 1
            self.stats[i].denied += bool(denial)
        if denial:
            self.denied += 1
            self._last_denied[col] = key
            self._batch.events.append(
                EventRecord(
                    ts,
                    "risk_denial",
                    denial.code,
                    denial.message,
                    None,
                    {"client_order_id": client_id, "symbol": symbol, "agents": list(names)},
                )
            )
            return
        self._last_denied.pop(col, None)
        pending.order = VenueOrder(client_id, col, net, self.config.order_type, limit)
        pending.record = record
        pending.allocations = residual
        self.venue.submit(pending.order)

    def _execute(self, col: int, t: int, ts: int, batch: BarBatch, outcome: BlockOutcome) -> None:
        pending = self._pending.pop(col)
        symbol = self.symbols[col]
        if pending.cross:
            assert pending.cross_id is not None
            price = round_to_tick(float(batch.open[t, col]), self.config.price_tick)
            units = sum(lots for _, lots in pending.cross if lots > 0) * self.config.lot_size
            self._batch.fills.append(
                FillRecord(
                    pending.cross_id, pending.cross_id, ts, symbol, units, price, Decimal(0), "internal"
                )
            )
            self.crosses += 1
            for i, lots in pending.cross:
                self._book_agent(
                    i,
                    col,
                    lots,
                    price,
                    Decimal(0),
                    pending.cross_id,
                    pending.cross_id,
                    ts,
                    outcome,
                    internal=True,
                )
        if pending.order is None or pending.record is None:
            return
        matched = self.venue.match(
            col,
            float(batch.open[t, col]),
            float(batch.high[t, col]),
            float(batch.low[t, col]),
            float(batch.volume[t, col]),
        )
        assert matched is not None
        fill, why = matched
        record = pending.record
        if fill is None:
            reason = _EXPIRY_REASONS.get(why or "", why)
            self._batch.orders.append(replace(record, status="expired", reason_code=why, reason=reason))
            return
        self._book_fill(fill, pending, ts, outcome)
        filled = abs(fill.lots) * self.config.lot_size
        status: OrderStatus = "filled" if filled == record.quantity else "partially_filled"
        self._batch.orders.append(replace(record, status=status, filled_quantity=filled))

    def _book_fill(self, fill: VenueFill, pending: _Pending, ts: int, outcome: BlockOutcome) -> None:
        symbol, lot = self.symbols[fill.col], self.config.lot_size
        self.fills += 1
        self._batch.fills.append(
            FillRecord(
                fill.fill_id,
                fill.client_order_id,
                ts,
                symbol,
                fill.lots * lot,
                fill.price,
                fill.fee,
                fill.liquidity,
            )
        )
        self.books.book(self.n, fill.col, fill.lots, fill.price, fill.fee)
        self._touched.add((self.n, fill.col))
        sign = 1 if fill.lots > 0 else -1
        shares = pro_rata(abs(fill.lots), [abs(lots) for _, lots in pending.allocations])
        takers = [(i, share) for (i, _), share in zip(pending.allocations, shares, strict=True) if share]
        fee_sign = -1 if fill.fee < 0 else 1
        fee_units = pro_rata(abs(to_e8(fill.fee)), [share for _, share in takers])
        for (i, share), units in zip(takers, fee_units, strict=True):
            fee = fee_sign * from_e8(units)
            self._book_agent(
                i,
                fill.col,
                sign * share,
                fill.price,
                fee,
                fill.fill_id,
                fill.client_order_id,
                ts,
                outcome,
                internal=False,
            )

    def _book_agent(
        self,
        i: int,
        col: int,
        lots: int,
        price: Decimal,
        fee: Decimal,
        fill_id: str,
        order_id: str,
        ts: int,
        outcome: BlockOutcome,
        *,
        internal: bool,
    ) -> None:
        symbol, units = self.symbols[col], lots * self.config.lot_size
        self.books.book(i, col, lots, price, fee)
        self._touched.add((i, col))
        self.stats[i].fills += 1
        self._batch.allocations.append(AllocationRecord(fill_id, self.agents[i], symbol, units, price, fee))
        outcome.fills[self.agents[i]].append(
            (symbol, ts, float(units), float(price), float(fee), order_id, internal)
        )

    # ----------------------------------------------------------------------------------------- ledger
    def flush(self) -> None:
        """Write what the engine recorded since the last flush (one transaction)."""
        names = [*self.agents, PORTFOLIO]
        for account, col in sorted(self._touched):
            qty, avg, realized = self.books.holding(account, col)
            self._batch.positions.append(
                PositionRecord(names[account], self.symbols[col], qty, avg, realized)
            )
        for account in sorted({a for a, _ in self._touched}):
            self._batch.cash.append(CashRecord(names[account], self.books.cash[account]))
        self._touched.clear()
        batch, self._batch = self._batch, LedgerBatch()
        if self.ledger is not None:
            self.ledger.write(self.run_id, batch)

    def finish(self) -> dict[str, object]:
        """Expire what is still working, flush, and report per-agent and portfolio results."""
        for col, pending in sorted(self._pending.items()):
            if pending.record is not None:
                self._batch.orders.append(
                    replace(
                        pending.record,
                        status="expired",
                        reason_code="run_ended",
                        reason="the run ended before the order's next bar",
                    )
                )
                self.venue.cancel(col)
        self._pending.clear()
        self.flush()
        return self.report()

    def marks(self) -> list[Decimal | None]:
        return [
            None if np.isnan(p) else round_to_tick(float(p), self.config.price_tick) for p in self.last_close
        ]

    def report(self) -> dict[str, object]:
        marks = self.marks()
        agents = []
        for i, name in enumerate(self.agents):
            net, gross = self.books.market_value(i, marks)
            agents.append(
                {
                    "name": name,
                    "orders": self.stats[i].orders,
                    "orders_denied": self.stats[i].denied,
                    "fills": self.stats[i].fills,
                    "realized_pnl": self.books.realized(i),
                    "unrealized_pnl": self.books.unrealized(i, marks),
                    "fees": self.books.fees[i],
                    "equity": self.books.cash[i] + net,
                    "gross_exposure": gross,
                }
            )
        net, gross = self.books.market_value(self.n, marks)
        equity = self.books.cash[self.n] + net
        positions = {
            s: self.books.holding(self.n, c)[0]
            for c, s in enumerate(self.symbols)
            if self.books.lots[self.n, c]
        }
        portfolio = {
            "equity": equity,
            "cash": self.books.cash[self.n],
            "gross_exposure": gross,
            "net_exposure": net,
            "orders": self.orders,
            "orders_denied": self.denied,
            "fills": self.fills,
            "internal_crosses": self.crosses,
            "fees": self.books.fees[self.n],
            "pnl": equity - self.initial_capital,
            "positions": positions,
        }
        return {"agents": agents, "portfolio": portfolio}
