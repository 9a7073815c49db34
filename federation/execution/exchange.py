"""The simulated exchange as its own Ray actor (:data:`VenueActor`), so it outlives the execution actor.

The matching rules are :class:`~federation.execution.venue.SimulatedVenue`'s (module docstring there); the
fault modes are :class:`~federation.execution.venue_faults.VenueFaults`. The venue is the truth of what was
accepted and filled: :meth:`Exchange.truth` reports it for the chaos invariants.

Calls (every one idempotent, so a caller retries a call whose answer it did not get):

- ``submit(orders, cancel=())`` -> ``(acks, cancelled)``. Cancels first, then orders. An order is keyed by
  its client order id: the same order sent again while it is working (a retry) is acknowledged again and
  counted in ``requests``, not created twice; an id that comes again for a different order, or after its
  order was matched or cancelled, is refused (``duplicate_client_order_id``) and listed in
  ``reused_ids``. A rejected order sent again gets the same rejection (its first answer may have been
  lost). At most one order per symbol works at a time (a second is rejected, ``symbol_busy``).
- ``advance(ts, cols, open, high, low, volume, cursor)`` -> ``(events, cursor)``: each working order of
  the given columns is matched against this bar if the bar is later than the order's decision time
  (once per order: sending the same bar again matches nothing new). Returns every event due after
  ``cursor`` (fills and final order reports, in delivery order) and the new cursor; an answer that was
  lost is read again by calling with the same cursor.
- ``read(cursor)`` -> ``(entries, cursor)``: the due events after ``cursor`` with the bar time of the call
  that made each due (``(due_ts, event)``), without matching anything (for reconciliation).
- ``orders(prefix)``: the state of every order whose id starts with ``prefix``.
- ``truth()``, ``set_faults(faults)``, ``disconnect(seconds)``, ``attach(symbols)``: control calls, never
  faulted.

Every final status (matched, expired, rejected, cancelled) is an event in the delivery log, so reading it
from cursor 0 gives the whole history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import numpy as np
import ray

from federation.config import ExecutionConfig
from federation.execution.venue import (
    FinalStatus,
    SimulatedVenue,
    VenueEvent,
    VenueFill,
    VenueOrder,
    VenueReport,
)
from federation.execution.venue_faults import (
    VenueDisconnected,
    VenueFaults,
    VenueRateLimited,
    VenueTimeout,
)

T = TypeVar("T")
Ack = tuple[str, Literal["accepted", "rejected"], str | None, str | None]
"""(client order id, accepted | rejected, reason code, reason)."""
CancelResult = tuple[str, Literal["cancelled", "final", "unknown"]]
"""(client order id, what the cancel found: cancelled now, already final, never received)."""

_REASONS = {
    "limit_not_reached": "the limit price was not reached on the symbol's next bar",
    "volume_cap": "nothing could fill within max_volume_share of the bar's volume",
    "venue_reject": "the venue rejected the order (simulated reject fault)",
    "symbol_busy": "the venue already has a working order for this symbol",
    "duplicate_client_order_id": "the client order id was used before for another or a finished order",
    "cancelled": "cancelled at the client's request",
}


@dataclass(slots=True)
class _Order:
    order: VenueOrder
    status: Literal["working", "filled", "partially_filled", "expired", "rejected", "cancelled"] = "working"
    filled: int = 0
    requests: int = 1
    reason_code: str | None = None


class Exchange:
    """The venue's state and rules (plain class: the actor's body, also usable in-process in tests)."""

    def __init__(
        self,
        config: ExecutionConfig,
        symbols: Sequence[str] | None = None,
        faults: VenueFaults | None = None,
    ) -> None:
        self.config = config
        self.symbols: tuple[str, ...] = tuple(symbols or ())
        self._rules = SimulatedVenue(config)
        self._orders: dict[str, _Order] = {}
        self._working: dict[int, str] = {}
        """Column -> id of its working order."""
        self._log: list[tuple[int, VenueEvent]] = []
        """Delivery log: (bar time of the call that made it due, event)."""
        self._delayed: list[tuple[int, VenueEvent]] = []
        """(advance call number when due, event) of reports held back."""
        self._fills: list[VenueFill] = []
        self._reused: list[str] = []
        self._calls = 0
        self._trade_seq = 0
        self._down_until = 0.0
        self._counts = dict.fromkeys(
            (
                "timeouts",
                "timeouts_applied",
                "rejects",
                "rate_limited",
                "disconnected_calls",
                "partial_fills",
                "delayed_fills",
                "duplicate_fills",
            ),
            0,
        )
        self.set_faults(faults or VenueFaults())

    # ------------------------------------------------------------------------------------------ control
    def set_faults(self, faults: VenueFaults | dict[str, Any]) -> None:
        """Change the fault modes (the generator restarts from ``faults.seed``)."""
        self.faults = faults if isinstance(faults, VenueFaults) else VenueFaults(**faults)
        self._rng = np.random.default_rng(self.faults.seed)

    def disconnect(self, seconds: float) -> None:
        """Every trading call fails as disconnected for ``seconds`` from now (0: connected again)."""
        self._down_until = time.monotonic() + seconds

    def attach(self, symbols: Sequence[str]) -> None:
        """Name the symbol columns orders use (the execution engine's order); an execution actor calls
        this when it starts. A venue keeps its symbols: another list is refused."""
        symbols = tuple(symbols)
        if self.symbols and self.symbols != symbols:
            raise ValueError(
                f"this venue trades symbols {list(self.symbols)}, not {list(symbols)}: start a venue "
                "actor per run (the columns of its orders must mean the same symbols)"
            )
        self.symbols = symbols

    # ------------------------------------------------------------------------------------------- calls
    def submit(
        self, orders: Sequence[VenueOrder], cancel: Sequence[str] = ()
    ) -> tuple[list[Ack], list[CancelResult]]:
        """Cancel ``cancel`` (client order ids), then accept or reject each order (see the module)."""
        return self._gate(lambda: self._submit(orders, cancel))

    def advance(
        self,
        ts: int,
        cols: Sequence[int],
        open_: Sequence[float],
        high: Sequence[float],
        low: Sequence[float],
        volume: Sequence[float],
        cursor: int,
    ) -> tuple[list[VenueEvent], int]:
        """Match the working orders of ``cols`` against the bar at ``ts`` (values aligned with ``cols``)
        and return the events due after ``cursor`` (see the module)."""
        return self._gate(lambda: self._advance(ts, cols, open_, high, low, volume, cursor))

    def read(self, cursor: int = 0) -> tuple[list[tuple[int, VenueEvent]], int]:
        """The due events after ``cursor`` with the bar time they became due at; matches nothing."""
        return self._gate(lambda: (self._log[cursor:], len(self._log)))

    def orders(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """State of every order whose client order id starts with ``prefix``: ``status`` (``working`` or
        final), ``col``, ``lots`` (signed), ``filled`` (unsigned lots), ``ts`` (decision time),
        ``order_type``, ``limit_price``."""

        def view() -> dict[str, dict[str, Any]]:
            return {
                cid: {
                    "status": o.status,
                    "col": o.order.col,
                    "lots": o.order.lots,
                    "filled": o.filled,
                    "ts": o.order.ts,
                    "order_type": o.order.order_type,
                    "limit_price": o.order.limit_price,
                }
                for cid, o in self._orders.items()
                if cid.startswith(prefix)
            }

        return self._gate(view)

    def truth(self) -> dict[str, Any]:
        """What the venue did, as plain JSON-able values (the chaos invariants' reference)."""
        lot = self.config.lot_size
        net: dict[int, int] = {}
        for f in self._fills:
            net[f.col] = net.get(f.col, 0) + f.lots
        return {
            "positions": {self._name(c): str(lots * lot) for c, lots in sorted(net.items()) if lots},
            "fills": [
                {
                    "fill_id": f.fill_id,
                    "client_order_id": f.client_order_id,
                    "symbol": self._name(f.col),
                    "quantity": str(f.lots * lot),
                    "price": str(f.price),
                    "fee": str(f.fee),
                    "ts": f.ts,
                }
                for f in self._fills
            ],
            "orders": {
                cid: {
                    "symbol": self._name(o.order.col),
                    "quantity": str(o.order.lots * lot),
                    "status": o.status,
                    "filled": str(o.filled * lot),
                    "requests": o.requests,
                }
                for cid, o in self._orders.items()
            },
            "reused_ids": list(self._reused),
            "faults": dict(self._counts),
        }

    # --------------------------------------------------------------------------------------- internals
    def _name(self, col: int) -> str:
        return self.symbols[col] if col < len(self.symbols) else f"col{col}"

    def _gate(self, apply: Callable[[], T]) -> T:
        """Apply a trading call through the fault modes: disconnected, rate limited, or timed out
        (before or after it was applied)."""
        if time.monotonic() < self._down_until:
            self._counts["disconnected_calls"] += 1
            raise VenueDisconnected(
                f"the venue is disconnected for {self._down_until - time.monotonic():.2f} s more"
            )
        faults = self.faults
        if faults.rate_limit_rate and self._rng.random() < faults.rate_limit_rate:
            self._counts["rate_limited"] += 1
            raise VenueRateLimited(
                f"rate limited (HTTP 429), retry after {faults.retry_after_ms:g} ms",
                faults.retry_after_ms / 1000,
            )
        if faults.timeout_rate and self._rng.random() < faults.timeout_rate:
            self._counts["timeouts"] += 1
            if self._rng.random() < 0.5:
                self._counts["timeouts_applied"] += 1
                apply()
                raise VenueTimeout("the venue call timed out after it was applied (the answer was lost)")
            raise VenueTimeout("the venue call timed out before it was applied")
        return apply()

    def _submit(
        self, orders: Sequence[VenueOrder], cancel: Sequence[str]
    ) -> tuple[list[Ack], list[CancelResult]]:
        cancelled: list[CancelResult] = []
        for cid in cancel:
            known = self._orders.get(cid)
            if known is None:
                cancelled.append((cid, "unknown"))
            elif known.status != "working":
                cancelled.append((cid, "final"))
            else:
                self._final(known, "cancelled", "cancelled")
                cancelled.append((cid, "cancelled"))
        acks = [self._accept(order) for order in orders]
        return acks, cancelled

    def _accept(self, order: VenueOrder) -> Ack:
        cid = order.client_order_id
        known = self._orders.get(cid)
        if known is not None:
            same = known.order == order
            if same and known.status in ("working", "rejected"):
                known.requests += 1  # a retry: its answer was lost
                if known.status == "working":
                    return (cid, "accepted", None, None)
                return (cid, "rejected", known.reason_code, _REASONS.get(known.reason_code or ""))
            known.requests += 1
            if cid not in self._reused:
                self._reused.append(cid)
            return (cid, "rejected", "duplicate_client_order_id", _REASONS["duplicate_client_order_id"])
        if order.lots == 0:
            raise ValueError(f"order {cid}: quantity is zero")
        entry = self._orders[cid] = _Order(order)
        code = None
        if order.col in self._working:
            code = "symbol_busy"
        elif self.faults.reject_rate and self._rng.random() < self.faults.reject_rate:
            code = "venue_reject"
            self._counts["rejects"] += 1
        if code is not None:
            self._final(entry, "rejected", code)
            return (cid, "rejected", code, _REASONS[code])
        self._working[order.col] = cid
        return (cid, "accepted", None, None)

    def _final(self, entry: _Order, status: FinalStatus, code: str | None) -> None:
        """Close an order now, rejected or cancelled (the report is due at once, at its decision time)."""
        entry.status, entry.reason_code = status, code
        order = entry.order
        if self._working.get(order.col) == order.client_order_id:
            del self._working[order.col]
        report = VenueReport(
            order.client_order_id, order.col, status, entry.filled, code, _REASONS.get(code or ""), order.ts
        )
        self._log.append((order.ts, report))

    def _advance(
        self,
        ts: int,
        cols: Sequence[int],
        open_: Sequence[float],
        high: Sequence[float],
        low: Sequence[float],
        volume: Sequence[float],
        cursor: int,
    ) -> tuple[list[VenueEvent], int]:
        self._calls += 1
        if self._delayed:
            due = [e for e in self._delayed if e[0] <= self._calls]
            if due:
                self._delayed = [e for e in self._delayed if e[0] > self._calls]
                self._log.extend((ts, event) for _, event in due)
        for k, col in enumerate(cols):
            cid = self._working.get(col)
            if cid is None:
                continue
            entry = self._orders[cid]
            if entry.order.ts >= ts:
                continue  # decided on this bar or later: it executes on a later one
            del self._working[col]
            self._match(entry, ts, open_[k], high[k], low[k], volume[k])
        return [event for _, event in self._log[cursor:]], len(self._log)

    def _match(self, entry: _Order, ts: int, open_: float, high: float, low: float, volume: float) -> None:
        order = entry.order
        rules, rng, faults = self._rules, self._rng, self.faults
        rules.submit(order)
        matched = rules.match(order.col, open_, high, low, volume, ts)
        assert matched is not None
        fill, why = matched
        if fill is None:
            entry.status, entry.reason_code = "expired", why
            report = VenueReport(order.client_order_id, order.col, "expired", 0, why, _REASONS[why or ""], ts)
            self._log.append((ts, report))
            return
        lots = abs(fill.lots)
        if faults.partial_fill_rate and lots > 1 and rng.random() < faults.partial_fill_rate:
            lots = int(rng.integers(1, lots))
            fee = rules.fee(fill.price, lots, fill.liquidity)
            fill = replace(fill, lots=lots if order.lots > 0 else -lots, fee=fee)
            self._counts["partial_fills"] += 1
        self._fills.append(fill)
        entry.filled = lots
        entry.status = "filled" if lots == abs(order.lots) else "partially_filled"
        report = VenueReport(order.client_order_id, order.col, entry.status, lots, None, None, ts)
        events: list[VenueEvent] = [fill, report]
        if faults.duplicate_fill_rate and rng.random() < faults.duplicate_fill_rate:
            self._counts["duplicate_fills"] += 1
            events.append(fill)  # after the final report: the repeat comes for a closed order
        if faults.delayed_fill_rate and rng.random() < faults.delayed_fill_rate:
            self._counts["delayed_fills"] += 1
            due = self._calls + int(rng.integers(1, faults.max_delay_calls + 1))
            self._delayed.extend((due, e) for e in events)
        else:
            self._log.extend((ts, e) for e in events)


VenueActor: Any = ray.remote(Exchange)
"""The Ray actor class (arguments as :class:`Exchange`'s); start it with :func:`start_venue_actor`."""


def start_venue_actor(
    config: ExecutionConfig,
    symbols: Sequence[str] | None = None,
    faults: VenueFaults | None = None,
    scheduling_strategy: Any = None,
    name: str | None = None,
) -> Any:
    """Create the venue actor (no CPU reserved, one call at a time, not restarted by Ray); returns its
    handle. ``symbols`` in the run's column order (or left to the execution actor, which attaches
    them when it starts); ``faults`` default to none."""
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_concurrency": 1}
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    if name is not None:
        options["name"] = name
    return VenueActor.options(**options).remote(config, tuple(symbols or ()), faults)
