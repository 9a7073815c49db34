"""The values an agent receives (bars, fills) and returns (signals).

Timestamps are integers: nanoseconds since the Unix epoch, UTC (``Bar.ts``). ``Bar.time`` gives the same
instant as a timezone-aware :class:`datetime.datetime` in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def ns_to_datetime(ts: int) -> datetime:
    """Epoch nanoseconds (UTC) to a timezone-aware UTC datetime."""
    return datetime.fromtimestamp(ts / 1e9, tz=UTC)


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar of one symbol. ``ts`` is the bar's time in epoch nanoseconds, UTC."""

    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def time(self) -> datetime:
        """``ts`` as a timezone-aware UTC datetime."""
        return ns_to_datetime(self.ts)


@dataclass(frozen=True, slots=True)
class Signal:
    """An agent's desired exposure in one symbol.

    ``weight`` is a fraction of the capital allocated to the agent: -1 fully short, 0 flat, +1 fully long.
    ``confidence`` in [0, 1] is used by confidence-aware aggregation policies.
    """

    symbol: str
    weight: float
    confidence: float = 1.0

    def problem(self, symbols: tuple[str, ...] | frozenset[str]) -> str | None:
        """Why this signal is invalid for an agent trading ``symbols``, or None if it is valid."""
        if not isinstance(self.symbol, str) or self.symbol not in symbols:
            return f"unknown symbol {self.symbol!r} (the agent trades {', '.join(sorted(symbols))})"
        if not isinstance(self.weight, int | float) or not math.isfinite(self.weight):
            return f"weight {self.weight!r} for {self.symbol} is not a finite number"
        if not -1.0 <= self.weight <= 1.0:
            return f"weight {self.weight} for {self.symbol} is outside [-1, 1]"
        if not isinstance(self.confidence, int | float) or not 0.0 <= self.confidence <= 1.0:
            return f"confidence {self.confidence!r} for {self.symbol} is outside [0, 1]"
        return None


@dataclass(frozen=True, slots=True)
class Fill:
    """The agent's share of an execution: ``quantity`` is signed (+ bought, - sold).

    ``internal`` is True when the quantity was crossed against another agent of the federation instead of
    being sent to the venue (no fee, no slippage). Exact values (Decimal) are in the ledger.
    """

    symbol: str
    ts: int
    quantity: float
    price: float
    fee: float
    client_order_id: str
    internal: bool = False

    def row(self) -> FillRow:
        """The fill as a plain tuple (``Fill(*row)`` gives it back)."""
        return (
            self.symbol,
            self.ts,
            self.quantity,
            self.price,
            self.fee,
            self.client_order_id,
            self.internal,
        )


FillRow = tuple[str, int, float, float, float, str, bool]
"""A :class:`Fill` between processes: plain tuples pickle about 4 times faster than dataclass objects,
which matters when a block carries tens of thousands of fills. ``Fill(*row)`` turns one into a Fill."""


@dataclass(frozen=True, slots=True)
class BarBatch:
    """A block of bars as columnar arrays: ``ts`` has shape (T,), price arrays (T, S).

    Columns follow ``symbols``. Where a symbol has no bar at a time (``valid`` False) its prices are NaN.
    A vectorized agent reads the arrays directly; :meth:`bars` yields the same data as :class:`Bar` objects.
    """

    symbols: tuple[str, ...]
    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    valid: BoolArray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def column(self, symbol: str) -> int:
        """Column index of ``symbol``."""
        return self.symbols.index(symbol)

    def select(self, symbols: tuple[str, ...]) -> BarBatch:
        """The same bars restricted to ``symbols`` (in that column order)."""
        if symbols == self.symbols:
            return self
        cols = [self.symbols.index(s) for s in symbols]
        return BarBatch(
            symbols=symbols,
            ts=self.ts,
            open=self.open[:, cols],
            high=self.high[:, cols],
            low=self.low[:, cols],
            close=self.close[:, cols],
            volume=self.volume[:, cols],
            valid=self.valid[:, cols],
        )

    @staticmethod
    def concat(batches: Sequence[BarBatch]) -> BarBatch:
        """Consecutive batches of the same symbols as one batch (live mode's coalesced ticks)."""
        if len(batches) == 1:
            return batches[0]
        if not batches or any(b.symbols != batches[0].symbols for b in batches):
            raise ValueError("concat needs at least one batch, all with the same symbols")
        return BarBatch(
            symbols=batches[0].symbols,
            ts=np.concatenate([b.ts for b in batches]),
            open=np.concatenate([b.open for b in batches]),
            high=np.concatenate([b.high for b in batches]),
            low=np.concatenate([b.low for b in batches]),
            close=np.concatenate([b.close for b in batches]),
            volume=np.concatenate([b.volume for b in batches]),
            valid=np.concatenate([b.valid for b in batches]),
        )

    def bars(self) -> Iterator[tuple[int, Bar]]:
        """``(row, bar)`` for every valid bar, in time order, then column order."""
        ts, o, h, low, c, v = (
            self.ts.tolist(),
            self.open.tolist(),
            self.high.tolist(),
            self.low.tolist(),
            self.close.tolist(),
            self.volume.tolist(),
        )
        valid = self.valid.tolist()
        for t, row_valid in enumerate(valid):
            for j, ok in enumerate(row_valid):
                if ok:
                    yield t, Bar(self.symbols[j], ts[t], o[t][j], h[t][j], low[t][j], c[t][j], v[t][j])
