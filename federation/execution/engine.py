"""The execution engine: turns agents' desired positions into netted orders, fills and ledger records.

Per bar, in order:

1. Orders and internal crosses decided on a symbol's previous bar execute on this bar (venue rules in
   :mod:`federation.execution.venue`; crosses at this bar's open, without fee or slippage).
2. Agents' new desired positions for this bar (from the aggregator) are applied.
3. Every account's equity is marked at this bar's close (float mirrors of the books, one vectorized
   step); trading-state holds that ended are released; the circuit breakers see the equity and may move an
   agent or the federation to REDUCING or HALTED. The federation's HALTED cancels every working order; an
   agent's cancels the working orders (and crosses) only HALTED agents are in. An order an agent shares
   with agents still trading stays working, and the halted agent's share of it fills: cancelling it would
   delay the healthy agents a bar and spend another of their order-rate tokens, for an order decided
   before the halt. The halted agent's new demands are refused from then on.
4. For each symbol with a bar and no working order, every agent's demand is ``desired - position``. Each
   demand first passes the agent's own checks (its trading state, its limits, its order rate); a denied
   demand is left out of this bar's netting. Opposite demands are crossed internally (pro rata); only the
   net goes to the venue as one order, after the portfolio's checks approved it. The order's fills are
   split among the agents that asked, pro rata.

In REDUCING (the agent's or the federation's) a demand that would flip a position is cut to flat, not
denied: the losing position is still closed and only the part past flat is refused. At agent level the
agent's demand is cut to ``-position``; at portfolio level the net order is cut to the portfolio's flat
while its allocations stay as asked, so its fills are split pro rata over them like a partial fill.

Every decision is recorded: approved orders as ``orders`` rows, denials as ``orders`` rows with status
``denied`` (portfolio checks) and ``risk_denial`` events (both levels; a cut is a ``reduce_only`` event),
state changes as ``trading_state`` events and breaker trips as ``circuit_breaker`` events. A denied (or
cut) demand is checked again every bar but recorded once while it stands: while the same desired
positions are asked for, for the same reason. Everything a block produced is written to the ledger in one
transaction at the end of the block.

The venue is the simulated one in this process by default. With the venue actor (live mode; faults,
restarts) the engine talks to it through :class:`~federation.execution.venue_client.RemoteVenue`: one
``advance`` call per bar for step 1 and one ``submit`` call at the end of the bar for the orders of step 4,
each retried with the same client order ids; an order then stays pending for its symbol until the venue
reports it final (rejected: status ``rejected`` with the venue's reason), and orders are journaled before
they are sent (:mod:`federation.execution.journal`).

Capital rebalances (:meth:`ExecutionEngine.rebalance`) move cash between the agents' sub-accounts; the
portfolio's account does not change, and the breakers scale their references so a transfer is neither a
gain nor a loss.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from agents.model import BarBatch, FillRow
from federation.config import ExecutionConfig
from federation.execution.accounts import SubAccounts
from federation.execution.journal import CrossEntry, JournalEntry, OrderJournal
from federation.execution.venue import VenueEvent, VenueFill, VenueOrder, VenueReport
from federation.execution.venue_client import LocalVenue, VenueClient
from federation.ledger import (
    PORTFOLIO,
    AllocationRecord,
    CashRecord,
    EventRecord,
    FillRecord,
    Ledger,
    LedgerBatch,
    OrderRecord,
    OrderStatus,
    PositionRecord,
)
from federation.money import from_e8, quantize, round_to_tick, to_e8
from policies.breakers import BreakerSpec, CircuitBreakers, Trip
from policies.risk import STATE_RULES, Denial, OrderIntent, ReduceOnly, RiskPolicy, reducing_part
from policies.trading_state import StateChange, TradingState, TradingStateMachine

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
_BPS = Decimal(10_000)
_EXPIRY_REASONS = {
    "limit_not_reached": "the limit price was not reached on the symbol's next bar",
    "volume_cap": "nothing could fill within max_volume_share of the bar's volume",
}
_MAX_DRAIN_CALLS = 2000
"""End of run: reads of a remote venue's delayed reports (each read moves its delays one call on)."""
REJECTED: OrderStatus = "rejected"
"""Status of an order the venue refused (the venue's reason in ``reason_code`` / ``reason``)."""
ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED
_REDUCE_ONLY = ReduceOnly()
Standing = tuple[tuple[int, int], ...]
"""A symbol's standing demand: (agent, desired lots) of each agent asking for a change."""


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
    """What was decided for one symbol on a bar's close and executes on its next bar (the cross), or
    when the venue reports it (the order)."""

    cross: list[tuple[int, int]]
    cross_id: str | None
    order: VenueOrder | None
    """None once the venue's final report came (or for a cross alone)."""
    record: OrderRecord | None
    allocations: list[tuple[int, int]]
    col: int = 0
    crossed: bool = False
    stage: int = 0
    """Of the order: 0 not acknowledged by the venue yet, 1 working there, 2 matched against a bar there
    (its report may come later)."""
    closing: tuple[OrderStatus, str, str] | None = None
    """(status, code, reason) to record when the venue confirms a cancel we sent (halt, end of run)."""


@dataclass(slots=True)
class AgentExecutionStats:
    orders: int = 0
    denied: int = 0
    fills: int = 0
    risk_denials: int = 0
    """Recorded denials of the agent's own demand by its agent-level checks (one per standing demand)."""


@dataclass(slots=True)
class BlockOutcome:
    """What a block produced for the supervisor: each agent's fills (to deliver through ``on_fill``), as
    rows, their fees exactly, and every account's equity at each bar's close."""

    fills: dict[str, list[FillRow]] = field(default_factory=dict)
    fees_e8: dict[str, int] = field(default_factory=dict)
    """Each agent's fees in the block, in integer 1e-8 units: the sum of the Decimal fees booked to its
    sub-account (maker rebates negative). Same agents as ``fills`` (0 for internal crosses only)."""
    received_ns: int = 0
    """``time.monotonic_ns()`` when the execution actor received the block's targets (live latency)."""
    equity: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    """Shape (bars, agents + 1): each agent's equity and, in the last column, the portfolio's, marked at
    each bar's close (cash + positions at the last closes; float mirrors of the Decimal books)."""


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


def _when(ns: int | None) -> str:
    if ns is None:
        return "the end of the run"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(ns: int) -> str:
    for unit, size in (("d", 86_400 * 10**9), ("h", 3_600 * 10**9), ("m", 60 * 10**9)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns / 1e9:g}s"


class ExecutionEngine:
    """One per run; owns the venue client, the sub-accounts, the risk state and the ledger writes of trades.

    ``risk`` checks the net orders (portfolio level); ``agent_risk`` (one policy or None per agent)
    checks each agent's own demand before netting; ``breakers`` holds one breaker spec or None per agent
    and, last, one for the portfolio; ``price_ticks`` are instrument ticks limit prices are rounded to.
    ``venue`` is how orders reach the venue (default: the simulated venue in this process,
    :class:`~federation.execution.venue_client.LocalVenue`; :class:`~federation.execution.venue_client.
    RemoteVenue` for the venue actor); ``journal`` is where orders are appended before they are sent to
    a remote venue.

    With a remote venue, orders of a bar are sent in one call at the end of the bar and matched with one
    call at the start of the next; answers may be late, lost or repeated (see the module
    :mod:`federation.execution.venue_client`). An order is pending for its symbol until the venue's final
    report: a symbol with a pending order gets no new order. Orders the venue has not acknowledged are
    sent again with the same ids with the next bar; fills are booked once per fill id.
    """

    def __init__(
        self,
        *,
        run_id: str,
        agents: list[str],
        capital: list[Decimal],
        symbols: tuple[str, ...],
        config: ExecutionConfig,
        risk: RiskPolicy,
        ledger: Ledger | None,
        agent_risk: Sequence[RiskPolicy | None] | None = None,
        breakers: Sequence[BreakerSpec | None] | None = None,
        price_ticks: Mapping[str, Decimal] | None = None,
        venue: VenueClient | None = None,
        journal: OrderJournal | None = None,
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
        self.allocated = list(capital)
        """Each agent's allocated capital: the constructor's, then the last :meth:`rebalance`'s."""
        self.venue: VenueClient = venue if venue is not None else LocalVenue(config)
        self._remote = self.venue.remote
        self.journal = journal
        self._outbox: list[_Pending] = []
        """Orders decided on this bar: sent at its end, in one call."""
        self._open: dict[str, _Pending] = {}
        """Client order id -> orders decided and not reported final by the venue (cancelled ones too,
        until the venue confirms)."""
        self._unacked: dict[str, _Pending] = {}
        """Remote: orders sent whose acknowledgement has not come (sent again with the next bar)."""
        self._offered: set[str] = set()
        """Remote: orders the venue matched against a bar, whose final report has not come."""
        self._cancels: list[str] = []
        """Remote: cancels the venue has not answered."""
        self._crossed: list[CrossEntry] = []
        """Remote: the block's executed crosses, journaled before the block's outcome is returned."""
        self.venue_errors = 0
        self.crash_hook: Callable[[str], None] | None = None
        """Test hook called at ``after_submit`` (the venue took the bar's orders, nothing is recorded
        yet) and ``after_advance``: tests kill the process there."""
        self.desired: IntArray = np.zeros((self.n, len(symbols)), dtype=np.int64)
        self.last_close = np.full(len(symbols), np.nan)
        self.stats = [AgentExecutionStats() for _ in agents]
        self.orders = self.fills = self.denied = self.crosses = 0
        self.risk_denials = 0
        """Recorded portfolio-level denials: denied orders plus demands refused while the federation is
        HALTED (those never become orders)."""
        self._pending: dict[int, _Pending] = {}
        self._last_denied: dict[int, tuple[Standing, str]] = {}
        self._seq = 0
        self._batch = LedgerBatch()
        self._touched: set[tuple[int, int]] = set()
        # ---- risk state
        if agent_risk is not None and len(agent_risk) != self.n:
            raise ValueError(f"agent_risk has {len(agent_risk)} entries for {self.n} agents")
        if breakers is not None and len(breakers) != self.n + 1:
            raise ValueError(f"breakers has {len(breakers)} entries; give one per agent plus the portfolio")
        self.agent_risk: list[RiskPolicy | None] = list(agent_risk or [None] * self.n)
        self.states = [TradingStateMachine() for _ in range(self.n + 1)]
        """Trading state of each agent and, last, of the federation."""
        self.breakers = CircuitBreakers(
            breakers or [None] * (self.n + 1), [float(c) for c in self.books.cash]
        )
        self.price_ticks = dict(price_ticks or {})
        self._screen_agents = any(p is not None for p in self.agent_risk)
        self._track_exposure = risk.uses_exposure or any(p.uses_exposure for p in self.agent_risk if p)
        self._held: set[int] = set()
        """Accounts (agents, n = the federation) whose state machine has holds to release."""
        self._agent_denied: dict[tuple[int, int], tuple[int, str]] = {}
        """(agent, column) -> (desired lots, code) of the agent-level denial or cut last recorded."""
        self._lot_f = float(config.lot_size)
        self._mark: FloatArray = np.zeros(len(symbols))
        """Value of one lot of each symbol at its last close (0 before its first bar)."""
        self._equity: FloatArray = self.books.equity(self._mark)
        self._inflight: IntArray = np.zeros((self.n + 1, len(symbols)), dtype=np.int64)
        """Lots decided but not executed yet, per account (tracked only for exposure limits)."""
        self._gross: FloatArray = np.zeros(self.n + 1)
        self._net: FloatArray = np.zeros(self.n + 1)
        self._ts = 0

    # ------------------------------------------------------------------------------------------ blocks
    def process_block(self, batch: BarBatch, targets: TargetUpdates) -> BlockOutcome:
        """Run every bar of ``batch``; write the block to the ledger; return the agents' fills and the
        accounts' equity per bar."""
        outcome = BlockOutcome(
            fills=defaultdict(list), fees_e8=defaultdict(int), equity=np.empty((len(batch), self.n + 1))
        )
        k, n_updates = 0, len(targets.rows)
        valid = batch.valid
        for t in range(len(batch)):
            ts = self._ts = int(batch.ts[t])
            due = [c for c in self._pending if valid[t, c]]
            if due or self._offered:
                self._execute(due, t, ts, batch, outcome)
            while k < n_updates and targets.rows[k] == t:
                self.desired[targets.agents[k], targets.cols[k]] = targets.lots[k]
                k += 1
            row_valid = valid[t]
            close = batch.close[t, row_valid]
            self.last_close[row_valid] = close
            self._mark[row_valid] = close * self._lot_f
            self._equity = outcome.equity[t] = self.books.equity(self._mark)
            if self._held:
                self._release(ts)
            if self.breakers:
                for trip in self.breakers.update(ts, self._equity):
                    self._trip(trip)
            delta = self.desired - self.books.lots[: self.n]
            demand = (delta != 0).any(axis=0)
            if self._last_denied:
                # A denial is remembered only while the same demand stands; gone, it is forgotten.
                for col in [c for c in self._last_denied if row_valid[c] and not demand[c]]:
                    del self._last_denied[col]
            if self._agent_denied:
                gone = [(i, c) for i, c in self._agent_denied if row_valid[c] and not delta[i, c]]
                for key in gone:
                    del self._agent_denied[key]
            wanted = np.flatnonzero(row_valid & demand)
            if self._track_exposure and len(wanted):
                self._exposures()
            for col in wanted.tolist():
                if col not in self._pending:
                    self._decide(col, ts, delta[:, col])
            if self._outbox or self._unacked or self._cancels:
                self._send(ts)
        if self._crossed:
            # Before the block's fills are handed out: a cross the ledger lost is rebooked from here.
            assert self.journal is not None
            self.journal.append(self._crossed)
            self._crossed = []
        self.flush()
        outcome.fills = dict(outcome.fills)
        outcome.fees_e8 = dict(outcome.fees_e8)
        return outcome

    def _next_id(self, kind: str) -> str:
        self._seq += 1
        return f"{self.run_id}-{kind}{self._seq:07d}"

    def _decide(self, col: int, ts: int, delta: IntArray) -> None:
        federation = self.states[self.n].state
        ref = round_to_tick(float(self.last_close[col]), self.config.price_tick)
        if federation is HALTED:
            self._deny_halted(col, ts, delta, ref)
            return
        passed: list[tuple[int, OrderIntent]] = []
        if self._screen_agents or self._held:
            delta, passed = self._screen(col, ts, delta, ref, federation)
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
        pending = _Pending(cross, self._next_id("X") if cross else None, None, None, [], col)
        if net:
            self._place(col, ts, net, residual, pending, ref, federation, delta)
        if pending.cross or pending.order is not None:
            self._pending[col] = pending
            if passed:
                # An agent's order rate counts the demands that went out (crossed or in an approved order).
                out = {i for i, _ in pending.cross} | {i for i, _ in pending.allocations}
                for i, intent in passed:
                    if i in out:
                        policy = self.agent_risk[i]
                        assert policy is not None
                        policy.commit(intent)
            if self._track_exposure:
                self._in_flight(col, pending)

    def _screen(
        self, col: int, ts: int, delta: IntArray, ref: Decimal, federation: TradingState
    ) -> tuple[IntArray, list[tuple[int, OrderIntent]]]:
        """Each agent's demand through its trading state and its own limits; the denied are left out, a
        flip while REDUCING is cut to flat.

        Returns the demand that passed and the intents of the agents whose policy has memory to commit."""
        symbol, lot = self.symbols[col], self.config.lot_size
        kept = delta.copy()
        passed: list[tuple[int, OrderIntent]] = []
        for i in np.flatnonzero(delta).tolist():
            policy = self.agent_risk[i]
            state = max(self.states[i].state, federation)
            if policy is None and state is ACTIVE:
                if self._agent_denied:
                    self._agent_denied.pop((i, col), None)
                continue
            asked = int(delta[i])
            position = int(self.books.lots[i, col])
            # A demand with no reducing part keeps its size, so the state check denies all of it.
            d = (reducing_part(position, asked) or asked) if state is REDUCING else asked
            name = self.agents[i]
            intent = OrderIntent(
                symbol,
                d * lot,
                ref,
                position * lot,
                (name,),
                None,
                ts,
                state,
                float(self._gross[i]),
                float(self._net[i]),
                float(self._equity[i]),
                name,
            )
            denial = self._state_check(intent, i) if state is not ACTIVE else None
            if denial is None and policy is not None:
                denial = policy.first_denial(intent)
            key, target = (i, col), position + asked
            if denial is None:
                if d == asked:
                    self._agent_denied.pop(key, None)
                else:
                    kept[i] = d
                    whole = replace(intent, quantity=asked * lot)
                    cut = self._cut(whole, intent.quantity, i)
                    self._agent_event(key, target, cut, whole, state, passed=intent.quantity)
                if policy is not None:
                    passed.append((i, intent))
                continue
            kept[i] = 0
            self._agent_event(key, target, denial, intent, state)
        return kept, passed

    def _agent_event(
        self,
        key: tuple[int, int],
        target: int,
        denial: Denial,
        intent: OrderIntent,
        state: TradingState,
        passed: Decimal | None = None,
    ) -> None:
        """Record an agent-level denial of the demand for ``target`` lots (or its cut to ``passed``), once
        while it stands."""
        if self._agent_denied.get(key) == (target, denial.code):
            return  # the same demand was denied for the same reason already: not re-recorded
        self._agent_denied[key] = (target, denial.code)
        i = key[0]
        self.stats[i].risk_denials += 1
        detail: dict[str, Any] = {
            "level": "agent",
            "symbol": intent.symbol,
            "quantity": intent.quantity,
            "price": intent.price,
            "position": intent.position,
            "state": state.label,
        }
        if passed is not None:
            detail["passed"] = passed
        self._batch.events.append(
            EventRecord(intent.ts, "risk_denial", denial.code, denial.message, self.agents[i], detail)
        )

    def _deny_halted(self, col: int, ts: int, delta: IntArray, ref: Decimal) -> None:
        """The federation is HALTED: nothing is crossed or sent; the demand is recorded once."""
        key = (self._standing(col, delta), HALTED.label)
        if self._last_denied.get(col) == key:
            return
        self._last_denied[col] = key
        symbol, lot = self.symbols[col], self.config.lot_size
        net = int(delta.sum())
        names = tuple(self.agents[i] for i, _ in key[0])
        intent = OrderIntent(
            symbol, net * lot, ref, self.books.holding(self.n, col)[0], names, ts=ts, state=HALTED
        )
        denial = self._state_check(intent, None)
        assert denial is not None
        self._deny(
            ts,
            denial,
            {
                "level": "portfolio",
                "symbol": symbol,
                "agents": list(names),
                "net_quantity": net * lot,
                "reason": self.states[self.n].reason,
            },
        )

    def _standing(self, col: int, delta: IntArray) -> Standing:
        """The demand standing for ``col``: what a portfolio-level denial is remembered by. Desired
        positions, not quantities: they stay while a cut order moves the positions toward them."""
        return tuple((i, int(self.desired[i, col])) for i in np.flatnonzero(delta).tolist())

    def _state_check(self, intent: OrderIntent, agent: int | None) -> Denial | None:
        """The trading-state rules; a denial says whose state it is, why, and until when."""
        denial = STATE_RULES.check(intent)
        return None if denial is None else Denial(denial.code, f"{denial.message} ({self._why(agent)})")

    def _cut(self, intent: OrderIntent, passed: Decimal, agent: int | None) -> Denial:
        """The record of ``intent`` cut to ``passed`` (to flat) because of a REDUCING state."""
        cut = _REDUCE_ONLY.cut(intent, passed)
        return Denial(cut.code, f"{cut.message} ({self._why(agent)})")

    def _why(self, agent: int | None) -> str:
        """Whose trading state applies to ``agent`` (None: the portfolio), why, and until when."""
        federation = self.states[self.n]
        account = self.n if agent is None or federation.state >= self.states[agent].state else agent
        machine = self.states[account]
        until = _when(machine.until)
        return f"{self._account(account)} is {machine.state.name} until {until}: {machine.reason}"

    def _deny(self, ts: int, denial: Denial, detail: dict[str, Any]) -> None:
        self.risk_denials += 1
        self._batch.events.append(EventRecord(ts, "risk_denial", denial.code, denial.message, None, detail))

    def _place(
        self,
        col: int,
        ts: int,
        net: int,
        residual: list[tuple[int, int]],
        pending: _Pending,
        ref: Decimal,
        federation: TradingState,
        delta: IntArray,
    ) -> None:
        """Check the net order (cut to flat if the federation is REDUCING and it would flip the portfolio's
        position) and send it, or record its denial; ``delta`` is the demand that passed the agents."""
        symbol, lot = self.symbols[col], self.config.lot_size
        position = int(self.books.lots[self.n, col])
        asked = net
        if federation is REDUCING:
            net = reducing_part(position, asked) or asked
        limit = None
        if self.config.order_type == "limit":
            offset = Decimal(repr(self.config.limit_offset_bps)) / _BPS
            limit = round_to_tick(
                float(ref * (1 - offset if net > 0 else 1 + offset)),
                self.price_ticks.get(symbol, self.config.price_tick),
            )
        names = tuple(self.agents[i] for i, _ in residual)
        intent = OrderIntent(
            symbol,
            net * lot,
            ref,
            position * lot,
            names,
            limit,
            ts,
            federation,
            float(self._gross[self.n]),
            float(self._net[self.n]),
            float(self._equity[self.n]),
        )
        denial = self._state_check(intent, None) if federation is not ACTIVE else None
        if denial is None:
            denial = self.risk.check(intent)
        key = None
        if denial or net != asked:
            key = (self._standing(col, delta), denial.code if denial else _REDUCE_ONLY.code)
        if denial and self._last_denied.get(col) == key:
            return  # the same demand was denied for the same reason already: checked again, not re-recorded
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
            assert key is not None
            self.denied += 1
            self._last_denied[col] = key
            self._deny(ts, denial, self._order_detail(client_id, symbol, names))
            return
        if key is None:
            self._last_denied.pop(col, None)
        elif self._last_denied.get(col) != key:
            # Cut to flat: recorded once while the demand stands (a partial fill may cut it again).
            self._last_denied[col] = key
            whole = replace(intent, quantity=asked * lot)
            detail = self._order_detail(client_id, symbol, names)
            detail |= {"quantity": whole.quantity, "passed": intent.quantity, "position": intent.position}
            self._deny(ts, self._cut(whole, intent.quantity, None), detail)
        pending.order = VenueOrder(client_id, col, net, self.config.order_type, limit, ts)
        pending.record = record
        pending.allocations = residual
        if self._remote:
            self._open[client_id] = pending
        self._outbox.append(pending)

    @staticmethod
    def _order_detail(client_id: str, symbol: str, names: tuple[str, ...]) -> dict[str, Any]:
        return {"level": "portfolio", "client_order_id": client_id, "symbol": symbol, "agents": list(names)}

    # --------------------------------------------------------------------------------------- exposure
    def _exposures(self) -> None:
        """Gross and net exposure of every account at the last closes, orders in flight included."""
        values = (self.books.lots + self._inflight) * self._mark
        self._gross = np.abs(values).sum(axis=1)
        self._net = values.sum(axis=1)

    def _in_flight(self, col: int, pending: _Pending) -> None:
        """Count a new decision in the exposures the next decisions of this bar are checked against."""
        before = (self.books.lots[:, col] + self._inflight[:, col]) * self._mark[col]
        for i, lots in pending.cross:
            self._inflight[i, col] += lots
        if pending.order is not None:
            lots = pending.order.lots
            shares = [x for _, x in pending.allocations]
            if sum(shares) != lots:  # cut to flat: each agent's share of what can fill
                sign = 1 if lots > 0 else -1
                shares = [sign * x for x in pro_rata(abs(lots), [abs(x) for x in shares])]
            for (i, _), x in zip(pending.allocations, shares, strict=True):
                self._inflight[i, col] += x
            self._inflight[self.n, col] += lots
        after = (self.books.lots[:, col] + self._inflight[:, col]) * self._mark[col]
        self._gross += np.abs(after) - np.abs(before)
        self._net += after - before

    # ----------------------------------------------------------------------------------- trading state
    def _account(self, account: int) -> str:
        return "the federation" if account == self.n else f"agent {self.agents[account]!r}"

    def _release(self, ts: int) -> None:
        """End the state holds due at ``ts`` (a breaker's cooldown, the end of the day)."""
        for account in sorted(self._held):
            machine = self.states[account]
            change = machine.tick(ts)
            if change is not None:
                self._state_event(account, change, "hold_ended")
            if not machine.held:
                self._held.discard(account)

    def _trip(self, trip: Trip) -> None:
        account = trip.account
        spec = self.breakers.specs[account]
        assert spec is not None
        if trip.breaker == "loss_window":
            what = (
                f"equity {trip.equity:,.2f} is {trip.loss_pct:.2f}% below {trip.reference:,.2f} at the "
                f"start of its {_span(spec.window_ns)} window, reaching loss_pct {trip.limit_pct:g}"
            )
        else:
            what = (
                f"equity {trip.equity:,.2f} is {trip.loss_pct:.2f}% below its peak {trip.reference:,.2f}, "
                f"reaching max_drawdown_pct {trip.limit_pct:g}"
            )
        cap = "" if trip.max_trips_per_day is None else f" of at most {trip.max_trips_per_day}"
        self._batch.events.append(
            EventRecord(
                trip.ts,
                "circuit_breaker",
                trip.breaker,
                f"{self._account(account)}: {what}; {trip.action.name} until {_when(trip.until)} "
                f"(trip {trip.trips_today}{cap} today)",
                None if account == self.n else self.agents[account],
                {
                    "breaker": trip.breaker,
                    "loss_pct": round(trip.loss_pct, 6),
                    "limit_pct": trip.limit_pct,
                    "equity": f"{trip.equity:.2f}",
                    "reference": f"{trip.reference:.2f}",
                    "action": trip.action.label,
                    "until": trip.until,
                    "trips_today": trip.trips_today,
                },
            )
        )
        change = self.states[account].hold(
            trip.action, ts=trip.ts, until=trip.until, reason=f"{trip.breaker} breaker"
        )
        self._held.add(account)
        if change is not None:
            self._state_event(account, change, "circuit_breaker")

    def _state_event(self, account: int, change: StateChange, trigger: str, **extra: Any) -> list[str]:
        """Record a state change; a move to HALTED cancels the working orders it concerns (their ids):
        all of them for the federation, for an agent those that only HALTED agents are in."""
        cancelled = []
        if change.after is HALTED:
            for col in sorted(self._pending):
                pending = self._pending[col]
                if account != self.n:
                    mine = {i for i, _ in pending.cross} | {i for i, _ in pending.allocations}
                    if account not in mine or any(self.states[i].state is not HALTED for i in mine):
                        continue  # not its order, or shared with agents still trading (module docstring)
                cancelled += self._cancel(col, change.ts, f"{self._account(account)} is HALTED")
        until = "" if change.after is ACTIVE else f" until {_when(change.until)}"
        self._batch.events.append(
            EventRecord(
                change.ts,
                "trading_state",
                change.after.label,
                f"{self._account(account)}: trading state {change.before.name} -> {change.after.name}"
                f"{until} ({change.reason})"
                + (f"; {len(cancelled)} working order(s) cancelled" if cancelled else ""),
                None if account == self.n else self.agents[account],
                {
                    "from": change.before.label,
                    "to": change.after.label,
                    "reason": change.reason,
                    "until": change.until,
                    "trigger": trigger,
                    "cancelled": cancelled,
                    **extra,
                },
            )
        )
        return cancelled

    def _cancel(self, col: int, ts: int, why: str) -> list[str]:
        """Cancel what was decided for ``col`` and not executed yet (the venue order and the cross)."""
        pending = self._pending.pop(col)
        self._inflight[:, col] = 0
        if pending.record is None or pending.order is None:
            return []
        self._cancel_order(pending, ("cancelled", "halted", f"{why}; working order cancelled"))
        return [pending.record.client_order_id]

    def _cancel_order(self, pending: _Pending, closing: tuple[OrderStatus, str, str]) -> None:
        """Cancel ``pending``'s order at the venue and record it with ``closing`` (status, code, reason):
        at once in-process; with a remote venue when the venue confirms it (sent with the bar's call; an
        order it had matched already is recorded as the venue reports it)."""
        assert pending.order is not None and pending.record is not None
        cid = pending.order.client_order_id
        if not self._remote:
            self.venue.send((), (cid,))
            status, code, reason = closing
            self._batch.orders.append(
                replace(pending.record, allocations=(), status=status, reason_code=code, reason=reason)
            )
            return
        pending.closing = closing
        self._unacked.pop(cid, None)  # not sent again: the cancel goes first in the next call
        self._cancels.append(cid)

    def halt(self, reason: str) -> int:
        """Kill switch: the federation goes HALTED for the rest of the run and every working order is
        cancelled (ledger status ``cancelled``); recorded as a ``trading_state`` event with trigger
        ``kill_switch``. Written to the ledger at once. Returns the number of orders cancelled."""
        machine = self.states[self.n]
        before = machine.state
        change = machine.hold(HALTED, ts=self._ts, until=None, reason=f"kill switch: {reason}")
        self._held.add(self.n)
        # Already HALTED (by a breaker): the hold is now for the rest of the run; recorded all the same.
        change = change or StateChange(before, HALTED, self._ts, f"kill switch: {reason}", None)
        cancelled = self._state_event(self.n, change, "kill_switch")
        if self._cancels:
            self._send(self._ts)
        self.flush()
        return len(cancelled)

    # -------------------------------------------------------------------------------------- capital
    def rebalance(self, capital: Sequence[Decimal], ts: int) -> None:
        """Give agent ``i`` the allocated capital ``capital[i]`` from bar time ``ts`` on, by moving cash
        between the agents' sub-accounts: ``capital[i] - allocated[i]`` into each (out if negative).

        The capitals must sum to the portfolio's total capital, so the transfers sum to zero and the
        portfolio's account does not change. Transfers are money moved, not P&L: realized P&L and fees stay,
        and each agent's breakers scale their references by its transfer, so a cut of capital trips
        nothing while a loss after it counts from the scaled peak. Limits on equity (``max_leverage``)
        read the new equity from the next bar on. Recorded at once: the agents' new cash balances and one
        ``allocation_transfer`` event (code ``rebalance``, detail ``{agent: transfer}`` for the agents whose
        capital changed).

        >>> engine.rebalance([Decimal(15_000), Decimal(5_000)], ts)  # doctest: +SKIP
        """
        if len(capital) != self.n:
            raise ValueError(f"rebalance got {len(capital)} capitals for {self.n} agents; give one per agent")
        new = [Decimal(c) for c in capital]
        bad = [
            f"{self.agents[i]!r} ({c})"
            for i, c in enumerate(new)
            if not c.is_finite() or c < 0 or c != quantize(c)
        ]
        if bad:
            raise ValueError(
                f"rebalance capital must be >= 0 and a multiple of 1e-8 (the ledger precision); got "
                f"{', '.join(bad)}"
            )
        total, before = sum(new, Decimal(0)), sum(self.allocated, Decimal(0))
        if total != before:
            raise ValueError(
                f"rebalance capitals sum to {total}, not the portfolio's total capital {before}: a rebalance "
                "moves money between agents and cannot add or remove any"
            )
        transfers = [c - old for c, old in zip(new, self.allocated, strict=True)]
        assert sum(transfers, Decimal(0)) == 0, "transfers between sub-accounts must sum to zero"
        self.allocated = new
        moved: dict[str, str] = {}
        shift = np.zeros(self.n + 1)
        for i, amount in enumerate(transfers):
            if amount:
                self.books.transfer(i, amount)
                shift[i] = float(amount)
                moved[self.agents[i]] = str(amount)
                self._batch.cash.append(CashRecord(self.agents[i], self.books.cash[i]))
        if not moved:
            return
        self.breakers.shift(shift, self._equity)
        self._equity = self._equity + shift  # the float mirror of equity moves with the cash
        shown = ", ".join(f"{a} {Decimal(x):+}" for a, x in list(moved.items())[:5])
        more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
        self._batch.events.append(
            EventRecord(
                ts,
                "allocation_transfer",
                "rebalance",
                f"capital moved between agent sub-accounts: {shown}{more} (portfolio cash unchanged)",
                None,
                moved,
            )
        )
        self.flush()

    # ------------------------------------------------------------------------------------------ fills
    def _execute(self, due: list[int], t: int, ts: int, batch: BarBatch, outcome: BlockOutcome) -> None:
        """Row ``t``: the crosses of the ``due`` columns (symbols with a bar and something decided), the
        venue's matching of their working orders, and every venue report that came."""
        pendings = self._pending
        # An order executes on a bar later than its decision (a bar sent again after a restart may not be).
        match = [c for c in due if pendings[c].stage == 1 and pendings[c].order.ts < ts]  # type: ignore[union-attr]
        by_order: dict[str, list[VenueEvent]] = {}
        if match or self._offered:
            events = self.venue.advance(ts, match, batch, t)
            if self.crash_hook is not None:
                self.crash_hook("after_advance")
            if events is None:
                self._venue_error(ts, "advance", [self._order_id(pendings[c]) for c in match])
                events = []
            elif self._remote:
                for col in match:
                    pending = pendings[col]
                    pending.stage = 2
                    self._offered.add(self._order_id(pending))
            for event in events:
                by_order.setdefault(event.client_order_id, []).append(event)
        for col in due:
            pending = pendings[col]
            if pending.cross and not pending.crossed:
                self._cross(pending, t, ts, batch, outcome)
            order = pending.order
            if order is None:
                self._done(pending)
                continue
            for event in by_order.pop(order.client_order_id, ()):
                if isinstance(event, VenueFill):
                    self._book_fill(event, pending, event.ts, outcome)
                elif pending.order is not None:  # not closed by an earlier report
                    self._close(pending, event)
        for late in by_order.values():
            for event in late:
                self._event(event, outcome)

    @staticmethod
    def _order_id(pending: _Pending) -> str:
        assert pending.order is not None
        return pending.order.client_order_id

    def _done(self, pending: _Pending) -> None:
        """Everything decided for the symbol was executed or reported final: it is free again."""
        col = pending.col
        if self._pending.get(col) is pending:
            del self._pending[col]
            if self._track_exposure:
                self._inflight[:, col] = 0

    def _cross(self, pending: _Pending, t: int, ts: int, batch: BarBatch, outcome: BlockOutcome) -> None:
        """Execute the internal cross of ``pending`` at this bar's open."""
        assert pending.cross_id is not None
        col = pending.col
        pending.crossed = True
        price = round_to_tick(float(batch.open[t, col]), self.config.price_tick)
        self._book_cross(pending.cross_id, col, ts, price, pending.cross, outcome)
        if self._track_exposure:
            for i, lots in pending.cross:
                self._inflight[i, col] -= lots
        if self.journal is not None:
            shares = tuple((self.agents[i], lots) for i, lots in pending.cross)
            self._crossed.append(
                CrossEntry(pending.cross_id, self._seq_of(pending.cross_id), ts, col, price, shares)
            )

    def _book_cross(
        self,
        cross_id: str,
        col: int,
        ts: int,
        price: Decimal,
        cross: list[tuple[int, int]],
        outcome: BlockOutcome,
    ) -> None:
        units = sum(lots for _, lots in cross if lots > 0) * self.config.lot_size
        self._batch.fills.append(
            FillRecord(cross_id, cross_id, ts, self.symbols[col], units, price, Decimal(0), "internal")
        )
        self.crosses += 1
        for i, lots in cross:
            self._book_agent(
                i, col, lots, price, Decimal(0), 0, cross_id, cross_id, ts, outcome, internal=True
            )

    @staticmethod
    def _seq_of(client_id: str) -> int:
        """The sequence number of an id :meth:`_next_id` made (``<run>-X0000012`` -> 12)."""
        return int(client_id.rsplit("-", 1)[1][1:])

    def _event(self, event: VenueEvent, outcome: BlockOutcome) -> None:
        """Book a fill the venue reported, or close an order on its final report."""
        pending = self._open.get(event.client_order_id)
        if isinstance(event, VenueFill):
            if pending is None:
                self._orphan_fill(event)
            else:
                self._book_fill(event, pending, event.ts, outcome)
            return
        if pending is None:
            return  # an order closed already (a repeated report, or a rejection acknowledged at once)
        self._close(pending, event)

    def _close(self, pending: _Pending, report: VenueReport) -> None:
        """Record the final status of ``pending``'s order as the venue reported it."""
        record = pending.record
        assert record is not None
        if self._remote:
            cid = record.client_order_id
            del self._open[cid]
            self._offered.discard(cid)
            self._unacked.pop(cid, None)
        status = report.status
        if status in ("filled", "partially_filled"):
            filled = report.filled_lots * self.config.lot_size
            self._batch.orders.append(
                replace(
                    record,
                    allocations=(),
                    status="filled" if filled == record.quantity else "partially_filled",
                    filled_quantity=filled,
                )
            )
        elif status == "cancelled" and pending.closing is not None:
            self._record_closing(pending)
        elif status == "rejected":
            code = report.reason_code
            self._batch.orders.append(
                replace(record, allocations=(), status=REJECTED, reason_code=code, reason=report.reason)
            )
        else:
            why = report.reason_code
            reason = report.reason or _EXPIRY_REASONS.get(why or "", why)
            final = cast(OrderStatus, status)
            self._batch.orders.append(
                replace(record, allocations=(), status=final, reason_code=why, reason=reason)
            )
        pending.order = None
        if pending.crossed or not pending.cross:
            self._done(pending)

    def _record_closing(self, pending: _Pending) -> None:
        assert pending.record is not None and pending.closing is not None
        status, code, reason = pending.closing
        self._batch.orders.append(
            replace(pending.record, allocations=(), status=status, reason_code=code, reason=reason)
        )

    def _orphan_fill(self, fill: VenueFill) -> None:
        """A fill of an order this engine does not know (it should not happen): the venue's truth is booked
        to the portfolio, so its positions stay equal to the venue's, and the fill is recorded as an event."""
        self.fills += 1
        self._batch.fills.append(
            FillRecord(
                fill.fill_id,
                fill.client_order_id,
                fill.ts,
                self.symbols[fill.col],
                fill.lots * self.config.lot_size,
                fill.price,
                fill.fee,
                fill.liquidity,
            )
        )
        self.books.book(self.n, fill.col, fill.lots, fill.price, fill.fee)
        self._touched.add((self.n, fill.col))
        self._batch.events.append(
            EventRecord(
                fill.ts,
                "venue_unknown_fill",
                "unknown_order",
                f"the venue reported fill {fill.fill_id} of order {fill.client_order_id}, which this engine "
                "does not know; booked to the portfolio only (no agent is charged)",
                None,
                {"fill_id": fill.fill_id, "client_order_id": fill.client_order_id},
            )
        )

    # -------------------------------------------------------------------------------------- the venue
    def _send(self, ts: int) -> None:
        """Send this bar's new orders (journaled first), the orders not acknowledged yet and the cancels
        in one venue call, and take the answers."""
        new, self._outbox = self._outbox, []
        if not self._remote:
            self.venue.send([p.order for p in new], ())  # type: ignore[misc]
            for pending in new:
                pending.stage = 1
            return
        if new and self.journal is not None:
            self.journal.append([self._journal_entry(p) for p in new])
        for pending in new:
            self._unacked[pending.order.client_order_id] = pending  # type: ignore[union-attr]
        orders = [p.order for p in self._unacked.values() if p.order is not None]
        cancels = list(self._cancels)
        answer = self.venue.send(orders, cancels)
        if self.crash_hook is not None:
            self.crash_hook("after_submit")
        if answer is None:
            self._venue_error(ts, "submit", [o.client_order_id for o in orders] + cancels)
            return
        acks, cancelled = answer
        answered = set(cancels)
        self._cancels = [c for c in self._cancels if c not in answered]
        for cid, found in cancelled:
            closing = self._open.get(cid)
            if closing is None:
                continue
            if found == "final":  # matched there already: its report is read with the next calls
                self._offered.add(cid)
            else:
                del self._open[cid]
                self._offered.discard(cid)
                self._record_closing(closing)
        for cid, result, code, reason in acks:
            sent = self._unacked.pop(cid, None)
            if sent is None or sent.order is None:
                continue
            if result == "accepted":
                sent.stage = max(sent.stage, 1)
            else:
                self._close(sent, VenueReport(cid, sent.col, "rejected", 0, code, reason, ts))

    def _journal_entry(self, pending: _Pending) -> JournalEntry:
        order, record = pending.order, pending.record
        assert order is not None and record is not None
        return JournalEntry(
            order.client_order_id,
            record.seq,
            order.ts,
            record.symbol,
            order.col,
            order.lots,
            order.order_type,
            order.limit_price,
            tuple((self.agents[i], lots) for i, lots in pending.allocations),
        )

    def _venue_error(self, ts: int, call: str, ids: list[str]) -> None:
        """A venue call gave up after ``venue_retry_s``: recorded; nothing is lost (see the class)."""
        self.venue_errors += 1
        then = (
            "the orders stay unacknowledged and are sent again with the same ids with the next bar"
            if call == "submit"
            else "the orders are matched (or their reports read) on a later bar"
        )
        self._batch.events.append(
            EventRecord(
                ts,
                "venue_error",
                call,
                f"venue {call} gave up after retrying for {self.config.venue_retry_s:g} s "
                f"({self.venue.last_error}); {then}",
                None,
                {"call": call, "error": self.venue.last_error, "orders": ids[:50], "order_count": len(ids)},
            )
        )

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
            fee_e8 = fee_sign * units
            self._book_agent(
                i,
                fill.col,
                sign * share,
                fill.price,
                from_e8(fee_e8),
                fee_e8,
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
        fee_e8: int,
        fill_id: str,
        order_id: str,
        ts: int,
        outcome: BlockOutcome,
        *,
        internal: bool,
    ) -> None:
        """Book agent ``i``'s share of a fill; ``fee_e8`` is ``fee`` in integer 1e-8 units."""
        symbol, units, name = self.symbols[col], lots * self.config.lot_size, self.agents[i]
        self.books.book(i, col, lots, price, fee)
        self._touched.add((i, col))
        self.stats[i].fills += 1
        self._batch.allocations.append(AllocationRecord(fill_id, name, symbol, units, price, fee))
        outcome.fills[name].append((symbol, ts, float(units), float(price), float(fee), order_id, internal))
        outcome.fees_e8[name] += fee_e8

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
        self.books.sync_floats()
        batch, self._batch = self._batch, LedgerBatch()
        if self.ledger is not None:
            self.ledger.write(self.run_id, batch)

    def finish(self) -> dict[str, object]:
        """Expire what is still working, flush, and report per-agent and portfolio results.

        With a remote venue the working orders are cancelled there, and the reports of orders it had
        matched already are read (for up to ``venue_retry_s``) and booked; the fills they bring, which
        no block delivered, are in the report as ``late_fills`` (agent -> fill rows) and
        ``late_fees_e8`` (agent -> fees), when there are any."""
        for _, pending in sorted(self._pending.items()):
            if pending.record is not None and pending.order is not None:
                self._cancel_order(
                    pending, ("expired", "run_ended", "the run ended before the order's next bar")
                )
        self._pending.clear()
        late = self._drain() if self._remote else None
        self.flush()
        if self.journal is not None:
            self.journal.close()
        report = self.report()
        if late is not None and late.fills:
            report["late_fills"] = dict(late.fills)
            report["late_fees_e8"] = dict(late.fees_e8)
        return report

    def _drain(self) -> BlockOutcome:
        """Remote venue, end of run: send the cancels, then read reports until every order is final;
        returns the fills booked meanwhile."""
        if self._cancels or self._unacked:
            self._send(self._ts)
        outcome = BlockOutcome(fills=defaultdict(list), fees_e8=defaultdict(int))
        give_up = time.monotonic() + self.config.venue_retry_s
        calls = 0
        while self._open and time.monotonic() < give_up and calls < _MAX_DRAIN_CALLS:
            calls += 1
            events = self.venue.advance(self._ts, [], None, 0)
            if events is None:
                break
            for event in events:
                self._event(event, outcome)
            if self._cancels:
                self._send(self._ts)
        if self._open:
            self._venue_error(self._ts, "finish", sorted(self._open))
        return outcome

    def marks(self) -> list[Decimal | None]:
        return [
            None if np.isnan(p) else round_to_tick(float(p), self.config.price_tick) for p in self.last_close
        ]

    def report(self) -> dict[str, object]:
        marks = self.marks()
        trips = self.breakers.trips
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
                    "trading_state": self.states[i].state.label,
                    "breaker_trips": int(trips[i]),
                    "risk_denials": self.stats[i].risk_denials,
                    "allocated_capital": self.allocated[i],
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
            "trading_state": self.states[self.n].state.label,
            "breaker_trips": int(trips[self.n]),
            "risk_denials": self.risk_denials,
        }
        if self._remote:
            return {
                "agents": agents,
                "portfolio": portfolio,
                "venue": {**self.venue.stats(), "errors": self.venue_errors},
            }
        return {"agents": agents, "portfolio": portfolio}
