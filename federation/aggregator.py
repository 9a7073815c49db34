"""The aggregator: agents' signals -> each agent's desired position (its virtual sub-account's target).

A signal is sized once, at the close of the bar it arrives on: ``lots = trunc(notional / close / lot)``
with ``notional`` from the aggregation policy (:mod:`policies.aggregation`). The agent's desired position
then stays put until its next signal for that symbol (no drift re-sizing, so no churn). The portfolio's
target in a symbol is the sum over agents, and each agent's share is kept, so P&L and costs are
attributed exactly. The execution engine nets the agents' demands.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from agents.model import BarBatch
from federation.execution.engine import TargetUpdates
from federation.feeds.market_data import forward_fill
from federation.runners.host import AgentBlockResult
from policies.aggregation import AggregationPolicy

_MAX_LOTS = 2.0**53
"""Desired lots beyond this (exact integers in a float64) come from a bad price, not a strategy."""


class Aggregator:
    """Turns each block's new signals into target updates (the last close carries across blocks)."""

    def __init__(
        self,
        policy: AggregationPolicy,
        symbols: tuple[str, ...],
        agent_names: Sequence[str],
        agent_symbols: Sequence[tuple[str, ...]],
        capital: Sequence[float],
        lot_size: float,
    ) -> None:
        self.policy = policy
        self.symbols = symbols
        self._index = {name: i for i, name in enumerate(agent_names)}
        self._columns = [np.array([symbols.index(s) for s in syms], dtype=np.int64) for syms in agent_symbols]
        self._capital = np.asarray(capital, dtype=np.float64)
        self._lot = lot_size
        self._last_close = np.full(len(symbols), np.nan)
        self._flatten: list[int] = []

    def set_capital(self, capital: Sequence[float]) -> None:
        """New capital per agent (a rebalance): signals from now on are sized with it; desired positions
        already set stay until the agent signals again."""
        self._capital = np.asarray(capital, dtype=np.float64)

    def flatten(self, agent: str) -> None:
        """Set ``agent``'s desired position in each of its symbols to zero at the next block's first bar
        (a budget action); it stays there until the agent signals again."""
        self._flatten.append(self._index[agent])

    def targets(self, batch: BarBatch, results: Sequence[AgentBlockResult]) -> TargetUpdates:
        """Target updates for ``batch`` from the agents' results (any subset of agents, any order)."""
        close = forward_fill(batch.close, self._last_close)
        if len(batch):
            self._last_close = close[-1].copy()
        parts: list[tuple[npt.NDArray[np.int64], ...]] = []
        if self._flatten and len(batch):
            for i in self._flatten:
                cols = self._columns[i]
                zero = np.zeros(cols.shape, dtype=np.int64)
                parts.append((zero, np.full(cols.shape, i, dtype=np.int64), cols, zero))
            self._flatten = []
        for result in results:
            i = self._index[result.name]
            rows, local = np.nonzero(~np.isnan(result.weights))
            if rows.size == 0:
                continue
            cols = self._columns[i][local]
            price = close[rows, cols]
            weight = result.weights[rows, local]
            priced = ~np.isnan(price) & (price > 0)
            rows, cols, price, weight = rows[priced], cols[priced], price[priced], weight[priced]
            notional = self.policy.notional(
                weight, result.confidences[rows, local[priced]], np.full(rows.shape, self._capital[i])
            )
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                raw = notional / price / self._lot
            # A price so small (a bad feed value that passed as > 0) that the lots overflow: no target, so a
            # long never wraps around into the largest short.
            sane = np.isfinite(raw) & (np.abs(raw) < _MAX_LOTS)
            if not sane.all():
                rows, cols, raw = rows[sane], cols[sane], raw[sane]
            # 0.29 * 100 / 1 is 28.999999999999996 in binary floats: nudge by 1e-9 lot before truncating.
            lots = np.trunc(raw + np.sign(raw) * 1e-9).astype(np.int64)
            parts.append((rows.astype(np.int64), np.full(rows.shape, i, dtype=np.int64), cols, lots))
        if not parts:
            return TargetUpdates.empty()
        rows, agents, cols, lots = (np.concatenate(p) for p in zip(*parts, strict=True))
        # By row, then agent: independent of the answers' order (stable, so a flatten comes before the
        # same agent's signals on the first row).
        order = np.lexsort((agents, rows))
        return TargetUpdates(rows[order], agents[order], cols[order], lots[order])
