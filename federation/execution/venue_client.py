"""How the execution engine talks to a venue: two calls per bar at most, through one small interface.

- ``send(orders, cancels)`` -> ``(acks, cancel results)``: new orders (and orders not acknowledged yet,
  again with the same client order ids) and cancels, in one call.
- ``advance(ts, cols, batch, t)`` -> events: match the working orders of ``cols`` against row ``t`` of
  ``batch`` and return the fills and final order reports that came since the last call.

Either returns None when the venue could not be reached within the retry budget: the engine then keeps
its orders (unacknowledged orders are sent again with the next bar, unmatched ones are matched on a later
bar) and records a ``venue_error`` event.

:class:`LocalVenue` is the in-process simulated venue (no faults, never None; the backtest default).
:class:`RemoteVenue` calls the venue actor (:mod:`federation.execution.exchange`) with a deadline per call
(``venue_timeout_s``), retries timeouts, rate limits (after their retry-after) and disconnects with the
same arguments for up to ``venue_retry_s``, and drops fill reports whose fill id it has seen already.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import ray

from agents.model import BarBatch
from federation.config import ExecutionConfig
from federation.execution.exchange import Ack, CancelResult
from federation.execution.venue import (
    FinalStatus,
    SimulatedVenue,
    VenueEvent,
    VenueFill,
    VenueOrder,
    VenueReport,
)
from federation.execution.venue_faults import VenueFault, VenueRateLimited

SendAnswer = tuple[list[Ack], list[CancelResult]]


class VenueClient(Protocol):
    remote: bool
    """True when the venue lives outside this process (its answers may be late, lost or repeated)."""
    last_error: str
    """What made the last call give up (for the ``venue_error`` event)."""

    def send(self, orders: Sequence[VenueOrder], cancels: Sequence[str]) -> SendAnswer | None: ...

    def advance(
        self, ts: int, cols: list[int], batch: BarBatch | None, t: int
    ) -> list[VenueEvent] | None: ...

    def stats(self) -> dict[str, int]: ...


class LocalVenue:
    """The simulated venue in this process: today's matching, every call answered at once."""

    remote = False
    last_error = ""

    def __init__(self, config: ExecutionConfig) -> None:
        self.rules = SimulatedVenue(config)
        self._working: dict[int, VenueOrder] = {}

    def send(self, orders: Sequence[VenueOrder], cancels: Sequence[str]) -> SendAnswer:
        cancelled: list[CancelResult] = []
        for cid in cancels:
            col = next((c for c, o in self._working.items() if o.client_order_id == cid), None)
            if col is None:
                cancelled.append((cid, "unknown"))
                continue
            del self._working[col]
            self.rules.cancel(col)
            cancelled.append((cid, "cancelled"))
        submit, working = self.rules.submit, self._working
        for order in orders:
            submit(order)
            working[order.col] = order
        return [(o.client_order_id, "accepted", None, None) for o in orders], cancelled

    def advance(self, ts: int, cols: list[int], batch: BarBatch | None, t: int) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        if not cols:
            return events
        assert batch is not None
        rules, working = self.rules, self._working
        for col in cols:
            order = working.pop(col, None)
            if order is None:
                continue
            matched = rules.match(
                col,
                float(batch.open[t, col]),
                float(batch.high[t, col]),
                float(batch.low[t, col]),
                float(batch.volume[t, col]),
                ts,
            )
            assert matched is not None
            fill, why = matched
            cid = order.client_order_id
            if fill is None:
                events.append(VenueReport(cid, col, "expired", 0, why, None, ts))
                continue
            lots = abs(fill.lots)
            status: FinalStatus = "filled" if lots == abs(order.lots) else "partially_filled"
            events.append(fill)
            events.append(VenueReport(cid, col, status, lots, None, None, ts))
        return events

    def stats(self) -> dict[str, int]:
        return {}


class RemoteVenue:
    """The venue actor behind deadlines, retries with the same arguments, and fill de-duplication."""

    remote = True

    def __init__(self, handle: Any, *, timeout_s: float, retry_s: float) -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.cursor = 0
        """Position in the venue's delivery log up to which events were received."""
        self.fill_ids: set[str] = set()
        self.last_error = ""
        self._stats = dict.fromkeys(
            ("calls", "retries", "timeouts", "rate_limited", "disconnected", "gave_up", "duplicate_fills"), 0
        )

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def send(self, orders: Sequence[VenueOrder], cancels: Sequence[str]) -> SendAnswer | None:
        out: SendAnswer | None = self.call("submit", list(orders), list(cancels))
        return out

    def advance(self, ts: int, cols: list[int], batch: BarBatch | None, t: int) -> list[VenueEvent] | None:
        if cols:
            assert batch is not None
            row = [a[t, cols].tolist() for a in (batch.open, batch.high, batch.low, batch.volume)]
        else:
            row = [[], [], [], []]
        out = self.call("advance", ts, cols, *row, self.cursor)
        if out is None:
            return None
        events, self.cursor = out
        return self._fresh(events)

    def read(self, cursor: int = 0) -> tuple[list[tuple[int, VenueEvent]], int] | None:
        """The venue's due events after ``cursor`` with the bar time each became due (no de-duplication)."""
        out: tuple[list[tuple[int, VenueEvent]], int] | None = self.call("read", cursor)
        return out

    def orders(self, prefix: str) -> dict[str, dict[str, Any]] | None:
        out: dict[str, dict[str, Any]] | None = self.call("orders", prefix)
        return out

    def _fresh(self, events: list[VenueEvent]) -> list[VenueEvent]:
        """``events`` without the fills reported before (same fill id)."""
        out: list[VenueEvent] = []
        for event in events:
            if isinstance(event, VenueFill):
                if event.fill_id in self.fill_ids:
                    self._stats["duplicate_fills"] += 1
                    continue
                self.fill_ids.add(event.fill_id)
            out.append(event)
        return out

    def call(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the venue actor with a deadline per attempt, retrying timeouts, rate limits
        and disconnects (the same arguments: every venue call is idempotent) for up to ``retry_s``.
        Returns the answer, or None when the budget ran out (``last_error`` says why)."""
        give_up = time.monotonic() + self.retry_s
        attempt = 0
        remote = getattr(self.handle, method)
        while True:
            self._stats["calls"] += 1
            wait = 0.0
            try:
                return ray.get(remote.remote(*args), timeout=self.timeout_s)
            except ray.exceptions.GetTimeoutError:
                kind, error = "timeouts", f"no answer within venue_timeout_s = {self.timeout_s:g} s"
                wait = min(0.01 * 2**attempt, 0.5)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause
                if not isinstance(cause, VenueFault):
                    raise
                error = str(cause)
                if isinstance(cause, VenueRateLimited):
                    kind, wait = "rate_limited", cause.retry_after_s
                elif cause.kind == "timeout":
                    kind, wait = "timeouts", 0.0 if attempt == 0 else min(0.01 * 2**attempt, 0.5)
                else:
                    kind, wait = "disconnected", min(0.05 * 2**attempt, 1.0)
            except ray.exceptions.RayActorError as exc:  # the venue actor is gone or cannot be reached
                kind, error = "disconnected", f"the venue actor is unavailable: {exc}"
                wait = min(0.05 * 2**attempt, 1.0)
            self._stats[kind] += 1
            self.last_error = f"{method}: {error}"
            if time.monotonic() + wait > give_up:
                self._stats["gave_up"] += 1
                return None
            self._stats["retries"] += 1
            attempt += 1
            if wait:
                time.sleep(wait)
