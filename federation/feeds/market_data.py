"""Loaded market data: every symbol's bars aligned on one time axis, and the records that were skipped."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from agents.model import BarBatch, BoolArray, FloatArray, IntArray

OHLCV = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class DataIssue:
    """A record a feed skipped, and why. ``line`` is 1-based in ``file``; 0 when there is no line.

    ``str(issue)`` is ``"file:line: symbol: reason"`` (``"file: symbol: reason"`` when ``line`` is 0).
    """

    file: str
    line: int
    symbol: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        return f"{where}: {self.symbol}: {self.reason}"


def forward_fill(values: FloatArray, seed: FloatArray) -> FloatArray:
    """Each column's last non-NaN value at or before each row of ``values`` (T, S); ``seed`` (S,) is the
    value before the first row (NaN for none)."""
    stacked = np.vstack([seed[None, :], values])
    rows = np.where(~np.isnan(stacked), np.arange(stacked.shape[0])[:, None], 0)
    np.maximum.accumulate(rows, axis=0, out=rows)
    return stacked[rows, np.arange(stacked.shape[1])[None, :]][1:]


@dataclass(frozen=True, eq=False, slots=True)
class SymbolBars:
    """One symbol's records in file order, as 1-D columns; ``line`` is each record's line in ``file``.

    This is what a parser produces and what validation filters; :meth:`MarketData.align` joins them.
    """

    symbol: str
    file: str
    line: IntArray
    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, rows: BoolArray | IntArray) -> SymbolBars:
        """The records selected by a boolean mask or index array."""
        return SymbolBars(
            self.symbol,
            self.file,
            self.line[rows],
            self.ts[rows],
            self.open[rows],
            self.high[rows],
            self.low[rows],
            self.close[rows],
            self.volume[rows],
        )


@dataclass(frozen=True, eq=False, slots=True)
class MarketData:
    """Bars of several symbols on one time axis: ``ts`` has shape (T,), the other arrays (T, S).

    ``ts`` is epoch nanoseconds, UTC, strictly increasing. Columns follow ``symbols``. Where a symbol has
    no bar at a time, ``valid`` is False and its prices and volume are NaN. The arrays are read-only.
    ``issues`` lists the records the feed skipped. Replay it block by block::

        for batch in data.blocks(256):
            ...  # batch is an agents.model.BarBatch
    """

    symbols: tuple[str, ...]
    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    valid: BoolArray
    issues: tuple[DataIssue, ...] = ()

    def __post_init__(self) -> None:
        rows, cols = self.ts.shape[0], len(self.symbols)
        if len(set(self.symbols)) != cols:
            raise ValueError(f"symbols are not unique: {self.symbols}")
        if self.ts.shape != (rows,) or self.ts.dtype != np.int64:
            raise ValueError(f"ts must be int64 of shape (T,), got {self.ts.dtype} {self.ts.shape}")
        if rows > 1 and not bool(np.all(self.ts[1:] > self.ts[:-1])):
            raise ValueError("ts must be strictly increasing")
        for name in (*OHLCV, "valid"):
            array = getattr(self, name)
            dtype = np.bool_ if name == "valid" else np.float64
            if array.shape != (rows, cols) or array.dtype != dtype:
                raise ValueError(f"{name} must be {np.dtype(dtype)} of shape {(rows, cols)}")
        for name in ("ts", *OHLCV, "valid"):
            getattr(self, name).flags.writeable = False

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def align(cls, series: Sequence[SymbolBars], issues: Sequence[DataIssue] = ()) -> MarketData:
        """Outer join on time: the union of all timestamps; a symbol without a bar there is invalid.

        Each series must have strictly increasing ``ts`` (validation guarantees it).
        """
        all_ts = np.unique(np.concatenate([s.ts for s in series])) if series else np.empty(0, np.int64)
        shape = (all_ts.shape[0], len(series))
        columns = {name: np.full(shape, np.nan) for name in OHLCV}
        valid = np.zeros(shape, dtype=np.bool_)
        for j, bars in enumerate(series):
            rows = np.searchsorted(all_ts, bars.ts)
            valid[rows, j] = True
            for name in OHLCV:
                columns[name][rows, j] = getattr(bars, name)
        return cls(
            symbols=tuple(s.symbol for s in series),
            ts=all_ts.astype(np.int64, copy=False),
            valid=valid,
            issues=tuple(issues),
            **columns,
        )

    def blocks(self, size: int) -> Iterator[BarBatch]:
        """Consecutive blocks of ``size`` rows (the last may be shorter); arrays are views, not copies."""
        if size < 1:
            raise ValueError(f"block size must be >= 1, got {size}")
        for start in range(0, len(self), size):
            rows = slice(start, start + size)
            yield BarBatch(
                symbols=self.symbols,
                ts=self.ts[rows],
                open=self.open[rows],
                high=self.high[rows],
                low=self.low[rows],
                close=self.close[rows],
                volume=self.volume[rows],
                valid=self.valid[rows],
            )

    def last_close(self) -> FloatArray:
        """Closes forward-filled over rows where a symbol has no bar (NaN before its first bar).

        Use it to value positions at every row, e.g. ``data.last_close()[-1]`` is each symbol's last price.
        """
        return forward_fill(self.close, np.full(len(self.symbols), np.nan))
