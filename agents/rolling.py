"""Rolling sums over a window, O(1) per value, shared by the built-in agents' per-bar and batch paths."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.base import Agent, BatchOutput
from agents.model import BarBatch, FloatArray

SMALL_BATCH = 16
"""Batches of fewer rows go through ``on_bar``: below this, numpy's per-call overhead costs more."""


@dataclass
class RollingSums:
    """Sums of the last ``n`` values (any ``n <= span``) of ``width`` parallel series, O(1) per value.

    :meth:`push` (one bar) and :meth:`extend` (a block of rows, vectorized) do the same float operations
    in the same order, so per-bar and batch agents get bit-identical sums and hence identical signals.
    Both keep cumulative sums in a ring of ``span + 1`` slots; a window sum is the difference of two.
    Whenever the ring has turned once, every stored sum is re-expressed relative to the newest one
    (which becomes 0), so the sums stay small and rounding error does not grow with the series.
    """

    span: int
    rings: list[list[float]]  # rings[i][c % (span + 1)]: cumulative sum of series i after c values
    totals: list[float]  # the cumulative sums after the newest value
    count: int = 0

    @classmethod
    def empty(cls, span: int, width: int) -> RollingSums:
        """Nothing pushed yet; windows up to ``span`` values, ``width`` series."""
        return cls(span, [[0.0] * (span + 1) for _ in range(width)], [0.0] * width)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RollingSums:
        """Inverse of ``dataclasses.asdict`` (copies the lists)."""
        return cls(saved["span"], [list(r) for r in saved["rings"]], list(saved["totals"]), saved["count"])

    def push(self, *values: float) -> None:
        """Add one value to each series."""
        self.count += 1
        slot = self.count % (self.span + 1)
        for i, value in enumerate(values):
            self.totals[i] += value
            self.rings[i][slot] = self.totals[i]
        if slot == 0:
            for i, ring in enumerate(self.rings):
                base = self.totals[i]
                self.rings[i] = [v - base for v in ring]
                self.totals[i] = 0.0

    def sum(self, series: int, n: int) -> float:
        """Sum of the last ``n`` values of ``series`` (needs ``count >= n``)."""
        return self.totals[series] - self.rings[series][(self.count - n) % (self.span + 1)]

    def extend(self, values: FloatArray, spans: tuple[int, ...]) -> list[FloatArray]:
        """Push the rows of ``values`` (m, width); for each n in ``spans``, the (m, width) sums of the last
        n values after each row (meaningful where at least n values have been pushed)."""
        size, (m, width) = self.span + 1, values.shape
        start = self.count
        base = start - start % size  # count at the last rebase: frame 0 holds counts base+1..base+size
        done = start - base  # values of frame 0 pushed before this block
        frames = (done + m) // size + 1  # up to the frame that will receive the next value
        ring = np.array(self.rings).T  # (size, width); count c is in row c % size
        x = np.zeros((frames * size, width))
        x[done : done + m] = values
        if done:
            x[done - 1] = self.totals
        # ext[f]: in frame f's terms, cumulative sums for counts base + f*size - size + 1 .. + size.
        ext = np.full((frames, 2 * size, width), np.nan)
        ext[:, size:] = np.cumsum(x.reshape(frames, size, width), axis=1)
        known = np.arange(max(0, start - size + 1, base - size + 1), start + 1)
        ext[0, known - base + size - 1] = ring[known % size]
        ext[1:, :size] = ext[:-1, size:] - ext[:-1, -1:]
        counts = np.arange(start + 1, start + m + 1)
        frame = (counts - base) // size
        pos = counts - base - frame * size + size - 1
        sums = [ext[frame, pos] - ext[frame, pos - n] for n in spans]
        end = start + m
        last = (end - base) // size
        kept = np.arange(max(0, end - size + 1), end + 1)
        ring[kept % size] = ext[last, kept - base - last * size + size - 1]
        self.rings, self.totals = ring.T.tolist(), ext[last, end - base - last * size + size - 1].tolist()
        self.count = end
        return sums


@dataclass
class SymbolWindow:
    """One symbol's rolling sums, the first close they are centred on, and the last target weight."""

    sums: RollingSums
    ref: float | None = None
    weight: float | None = None


def save_windows(windows: dict[str, SymbolWindow]) -> dict[str, Any]:
    """Plain, picklable data for ``Agent.state()``."""
    return {symbol: asdict(window) for symbol, window in windows.items()}


def load_windows(
    windows: dict[str, SymbolWindow], saved: dict[str, Any], *, span: int, parameter: str, agent: str
) -> None:
    """Inverse of :func:`save_windows`; the saved window must have the same ``span`` (``parameter``)."""
    for symbol, data in saved.items():
        if symbol in windows:
            sums = RollingSums.from_dict(data["sums"])
            if sums.span != span:
                raise ValueError(
                    f"agent {agent!r}: saved state for {symbol} has a window of {sums.span} bars "
                    f"but {parameter} = {span}; restore with the same {parameter}."
                )
            windows[symbol] = SymbolWindow(sums, data["ref"], data["weight"])


def hold_last(wanted: FloatArray, last: float) -> FloatArray:
    """``wanted`` with each NaN replaced by the last value before it (``last`` before the first)."""
    decided = np.maximum.accumulate(np.where(np.isnan(wanted), -1, np.arange(wanted.size)))
    return np.where(decided >= 0, wanted[decided], last)


class WindowedAgent(Agent):
    """Base of the built-in agents: a rolling window per symbol (``_state``), a per-bar path (``on_bar``)
    and a vectorized one (``_column``) that must give the same signals. Declares the ``size`` parameter.
    """

    size: float = 1.0
    _state: dict[str, SymbolWindow]

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """size in (0, 1]."""
        size = params["size"]
        if not 0.0 < size <= 1.0:
            raise ValueError(
                f"size = {size} is outside (0, 1]; it is the weight magnitude as a fraction "
                "of the agent's capital; e.g. size = 0.5 for half."
            )

    def on_batch(self, batch: BarBatch) -> BatchOutput:
        """Vectorized :meth:`on_bar` over a block of rows, one symbol at a time; same signals."""
        if len(batch) < SMALL_BATCH:
            return super().on_batch(batch)
        weights = np.full((len(batch), len(self.symbols)), np.nan)
        confidences = np.ones_like(weights)
        for out, symbol in enumerate(self.symbols):
            if symbol in batch.symbols:
                col = batch.column(symbol)
                rows = np.flatnonzero(batch.valid[:, col] & np.isfinite(batch.close[:, col]))
                if rows.size:
                    at, weight, confidence = self._column(self._state[symbol], batch.close[rows, col])
                    weights[rows[at], out], confidences[rows[at], out] = weight, confidence
        return weights, confidences

    def _column(
        self, st: SymbolWindow, closes: FloatArray
    ) -> tuple[npt.NDArray[np.intp], FloatArray, FloatArray]:
        """Advance one symbol over its valid ``closes``: (positions that emit, their weights, confidences)."""
        raise NotImplementedError
