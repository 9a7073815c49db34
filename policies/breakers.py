"""Circuit breakers on equity (realized + unrealized P&L), for many accounts at once.

Two breakers per account, each optional:

- **loss in a window**: trips when equity is ``loss_pct`` % or more below the equity at the start of the
  trailing ``window`` (the last observation at or before ``ts - window``; the run's start, or the end of
  the last trip, if that is later).
- **drawdown from peak**: trips when equity is ``max_drawdown_pct`` % or more below its highest value
  (since the run's start, or since the end of the last trip).

A trip holds the account in ``action`` (REDUCING or HALTED) for ``cooldown``; then the breaker re-arms
from the equity of that moment, so a loss is never counted twice. The ``max_trips_per_day``-th trip of a
UTC day holds until the end of that day. Time is the bar timestamp (epoch ns): backtests are deterministic.
Money moved into or out of an account that is not P&L (a capital rebalance) shifts its references with it
(:meth:`CircuitBreakers.shift`).

Equity comes in as one float64 vector per bar (the engine's float mirrors of the sub-accounts), so a bar
costs a few numpy operations whatever the number of accounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from policies.trading_state import TradingState

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
NS_PER_DAY = 86_400 * 10**9
BreakerKind = Literal["loss_window", "drawdown"]


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    """The breakers of one account (percentages as in config: 5.0 means 5 %)."""

    loss_pct: float | None
    window_ns: int
    max_drawdown_pct: float | None
    action: TradingState
    cooldown_ns: int
    max_trips_per_day: int | None

    def __post_init__(self) -> None:
        if self.loss_pct is None and self.max_drawdown_pct is None:
            raise ValueError("a breaker needs loss_pct or max_drawdown_pct")
        if self.action is TradingState.ACTIVE:
            raise ValueError("a breaker's action is REDUCING or HALTED")
        if self.window_ns <= 0 or self.cooldown_ns < 0:
            raise ValueError("window must be > 0 and cooldown >= 0")


@dataclass(frozen=True, slots=True)
class Trip:
    """A breaker of ``account`` tripped at ``ts``: hold it in ``action`` until ``until``."""

    account: int
    breaker: BreakerKind
    ts: int
    loss_pct: float
    """How far equity is below ``reference``, in %."""
    limit_pct: float
    equity: float
    reference: float
    """Equity at the window's start (loss_window) or the peak (drawdown)."""
    action: TradingState
    until: int
    trips_today: int
    max_trips_per_day: int | None


class CircuitBreakers:
    """The breakers of ``len(specs)`` accounts (None: no breaker), fed one equity vector per bar.

    >>> spec = BreakerSpec(5.0, 300 * 10**9, None, TradingState.REDUCING, 60 * 10**9, None)
    >>> bank = CircuitBreakers([spec], [100.0])
    >>> bank.update(0, np.array([100.0])), len(bank.update(10**9, np.array([95.0])))
    ([], 1)
    """

    def __init__(self, specs: Sequence[BreakerSpec | None], initial_equity: Sequence[float]) -> None:
        if len(specs) != len(initial_equity):
            raise ValueError("one spec (or None) per account and one initial equity per account")
        self.specs = list(specs)
        self.accounts: IntArray = np.asarray(
            [a for a, s in enumerate(specs) if s is not None], dtype=np.int64
        )
        watched = [s for s in specs if s is not None]
        nan = float("nan")
        self._loss = np.asarray([s.loss_pct / 100 if s.loss_pct else nan for s in watched], dtype=float)
        self._drawdown = np.asarray(
            [s.max_drawdown_pct / 100 if s.max_drawdown_pct else nan for s in watched], dtype=float
        )
        window = np.asarray([s.window_ns for s in watched], dtype=np.int64)
        # Accounts sharing a window length share one lookup in the history.
        self._windows = [
            (int(w), np.flatnonzero((window == w) & ~np.isnan(self._loss))) for w in np.unique(window)
        ]
        self._windows = [(w, idx) for w, idx in self._windows if len(idx)]
        self._max_window = max((w for w, _ in self._windows), default=0)
        start = np.asarray(initial_equity, dtype=float)[self.accounts]
        self._peak = start.copy()
        self._armed_ts = np.full(len(watched), np.iinfo(np.int64).min, dtype=np.int64)
        self._armed_equity = start.copy()
        self._until = np.full(len(watched), np.iinfo(np.int64).min, dtype=np.int64)
        self._tripped = np.zeros(len(watched), dtype=bool)
        self._day = np.full(len(watched), -1, dtype=np.int64)
        self._today = np.zeros(len(watched), dtype=np.int64)
        self.trips: IntArray = np.zeros(len(specs), dtype=np.int64)
        """Trips so far, per account (all accounts, also those without a breaker)."""
        # Equity history for the loss windows: rows [_head, _tail) of a buffer that grows by doubling.
        self._hist_ts: IntArray = np.zeros(64, dtype=np.int64)
        self._hist_equity: FloatArray = np.zeros((64, len(watched)))
        self._head = self._tail = 0

    def __bool__(self) -> bool:
        return bool(len(self.accounts))

    def update(self, ts: int, equity: FloatArray) -> list[Trip]:
        """Observe every account's equity at bar time ``ts`` (non-decreasing); return the new trips."""
        if not len(self.accounts):
            return []
        eq = equity[self.accounts]
        ended = self._tripped & (self._until <= ts)
        if ended.any():
            # Re-arm from here: what was lost before or during the trip is not counted again.
            self._tripped[ended] = False
            self._peak[ended] = eq[ended]
            self._armed_ts[ended] = ts
            self._armed_equity[ended] = eq[ended]
        live = ~self._tripped
        np.maximum(self._peak, np.where(live, eq, self._peak), out=self._peak)
        with np.errstate(divide="ignore", invalid="ignore"):
            drawdown = np.where(self._peak > 0, (self._peak - eq) / self._peak, np.nan)
            hit_dd = live & (drawdown >= self._drawdown)
            reference, loss, hit_loss = self._window_loss(ts, eq, live)
        if not (hit_dd.any() or hit_loss.any()):
            return []
        trips = []
        day = ts // NS_PER_DAY
        for k in np.flatnonzero(hit_loss | hit_dd).tolist():
            spec = self.specs[int(self.accounts[k])]
            assert spec is not None
            if self._day[k] != day:
                self._day[k], self._today[k] = day, 0
            self._today[k] += 1
            until = ts + spec.cooldown_ns
            if spec.max_trips_per_day is not None and self._today[k] >= spec.max_trips_per_day:
                until = max(until, (day + 1) * NS_PER_DAY)
            until = max(until, ts + 1)  # a zero cooldown still holds until the next bar
            self._tripped[k], self._until[k] = True, until
            account = int(self.accounts[k])
            self.trips[account] += 1
            if hit_loss[k]:
                kind: BreakerKind = "loss_window"
                value, limit, ref = float(loss[k]), float(self._loss[k]), float(reference[k])
            else:
                kind = "drawdown"
                value, limit, ref = float(drawdown[k]), float(self._drawdown[k]), float(self._peak[k])
            trips.append(
                Trip(
                    account,
                    kind,
                    ts,
                    value * 100,
                    limit * 100,
                    float(eq[k]),
                    ref,
                    spec.action,
                    until,
                    int(self._today[k]),
                    spec.max_trips_per_day,
                )
            )
        return trips

    def shift(self, amounts: FloatArray, equity: FloatArray) -> None:
        """Money ``amounts`` (one per account) moved into (or out of) accounts whose equity was
        ``equity``: neither gain nor loss, such as a capital rebalance.

        Each breaker scales what it measures losses from (the peak, the equity it was armed with, the
        equity history of its window) by ``(equity + amount) / equity``, so every percentage it tests
        is what it was: a cut of capital trips nothing, and a loss after it counts from the scaled peak.
        An account left with no positive equity on either side is re-armed from its new equity.

        >>> spec = BreakerSpec(None, 300 * 10**9, 15.0, TradingState.REDUCING, 60 * 10**9, None)
        >>> bank = CircuitBreakers([spec], [100.0])
        >>> bank.update(0, np.array([90.0]))  # 10 % below the peak
        []
        >>> bank.shift(np.array([-60.0]), np.array([90.0]))  # 90 -> 30: the peak 100 -> 33.3
        >>> bank.update(1, np.array([30.0])), round(bank.update(2, np.array([28.0]))[0].reference, 2)
        ([], 33.33)
        """
        if not len(self.accounts):
            return
        moved = np.asarray(amounts, dtype=float)[self.accounts]
        before = np.asarray(equity, dtype=float)[self.accounts]
        after = before + moved
        sound = (before > 0) & (after > 0)
        factor = np.where(sound, after / np.where(sound, before, 1.0), 1.0)
        self._peak = np.where(sound, self._peak * factor, after)
        self._armed_equity = np.where(sound, self._armed_equity * factor, after)
        rows = slice(self._head, self._tail)
        self._hist_equity[rows] = np.where(sound, self._hist_equity[rows] * factor, after)

    def _window_loss(
        self, ts: int, eq: FloatArray, live: npt.NDArray[np.bool_]
    ) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
        """(reference equity, loss fraction, tripped) per watched account."""
        n = len(eq)
        reference = np.full(n, np.nan)
        if not self._windows:
            return reference, reference, np.zeros(n, dtype=bool)
        self._append(ts, eq)
        stamps = self._hist_ts[self._head : self._tail]
        for window, idx in self._windows:
            j = int(np.searchsorted(stamps, ts - window, side="right")) - 1
            if j >= 0:
                seen = self._hist_equity[self._head + j, idx]
                reference[idx] = np.where(stamps[j] >= self._armed_ts[idx], seen, self._armed_equity[idx])
            else:
                reference[idx] = self._armed_equity[idx]
        # Keep the last observation at or before the longest window's start, drop what is older.
        self._head += max(int(np.searchsorted(stamps, ts - self._max_window, side="right")) - 1, 0)
        loss = np.where(reference > 0, (reference - eq) / reference, np.nan)
        return reference, loss, live & (loss >= self._loss)

    def _append(self, ts: int, eq: FloatArray) -> None:
        if self._tail == len(self._hist_ts):
            size = self._tail - self._head
            if size * 2 > len(self._hist_ts):
                self._hist_ts = np.resize(self._hist_ts, 2 * len(self._hist_ts))
                self._hist_equity = np.resize(self._hist_equity, (2 * len(self._hist_equity), len(eq)))
            self._hist_ts[:size] = self._hist_ts[self._head : self._tail]
            self._hist_equity[:size] = self._hist_equity[self._head : self._tail]
            self._head, self._tail = 0, size
        self._hist_ts[self._tail] = ts
        self._hist_equity[self._tail] = eq
        self._tail += 1
