"""Moving-average crossover: long while the fast average of closes is above the slow one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.base import SignalOutput
from agents.model import Bar, FloatArray, Signal
from agents.rolling import RollingSums, SymbolWindow, WindowedAgent, hold_last, load_windows, save_windows

FULL_CONFIDENCE_GAP = 0.05
"""Relative gap ``|fast - slow| / slow`` at which confidence reaches 1 (it rises linearly from 0)."""
TIE = 1e-12
"""Averages closer than this fraction of the slow average are a tie (rounding noise, not a crossing)."""


class MomentumAgent(WindowedAgent):
    """Per symbol: weight ``+size`` while SMA(fast) > SMA(slow), ``-size`` while below (0 if long_only).

    Both averages are simple means of the last ``fast`` / ``slow`` valid closes, current bar included.
    While they are equal (within ``TIE``) the weight is held (0 if nothing was emitted yet). A Signal is
    emitted when the weight changes, and once when the slow window first fills (after ``slow`` bars of
    that symbol). Bars with ``valid`` False or a non-finite close are skipped, as if they did not exist.

    Confidence = ``min(1, |SMA(fast) - SMA(slow)| / |SMA(slow)| / FULL_CONFIDENCE_GAP)``, so a 5% gap
    or more gives confidence 1 (1 also when SMA(slow) is 0).

    Parameters: ``fast`` (int, 20) and ``slow`` (int, 100) bars, with 1 <= fast < slow; ``long_only``
    (bool, False); ``size`` (float, 1.0) the weight magnitude, in (0, 1].

    Smallest config::

        [[agents]]
        class = "agents.momentum:MomentumAgent"
        params = { fast = 50, slow = 200 }
    """

    fast: int = 20
    slow: int = 100
    long_only: bool = False

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """fast < slow (and size, see WindowedAgent), checked when the fleet loads."""
        fast, slow = params["fast"], params["slow"]
        if not 1 <= fast < slow:
            raise ValueError(
                f"fast = {fast} and slow = {slow} are invalid: need 1 <= fast < slow, "
                "the fast average must cover fewer bars than the slow one; e.g. fast = 20, slow = 100."
            )
        super().check_params(params)

    def on_start(self) -> None:
        """Start with empty windows."""
        self._size = float(self.size)
        self._short = 0.0 if self.long_only else -self._size
        self._state = {s: SymbolWindow(RollingSums.empty(self.slow, 1)) for s in self.symbols}

    def on_bar(self, bar: Bar) -> SignalOutput:
        """Add the close to the symbol's window; return a Signal if the target weight changed."""
        st = self._state.get(bar.symbol)
        if st is None or not math.isfinite(bar.close):
            return None
        if st.ref is None:
            st.ref = bar.close
        st.sums.push(bar.close - st.ref)
        if st.sums.count < self.slow:
            return None
        fast = st.sums.sum(0, self.fast) / self.fast
        slow = st.sums.sum(0, self.slow) / self.slow
        level = abs(st.ref + slow)
        if fast - slow > TIE * level:
            weight = self._size
        elif fast - slow < -TIE * level:
            weight = self._short
        elif st.weight is None:
            weight = 0.0
        else:
            return None
        if weight == st.weight:
            return None
        st.weight = weight
        confidence = min(1.0, abs(fast - slow) / level / FULL_CONFIDENCE_GAP) if level else 1.0
        return Signal(bar.symbol, weight, confidence)

    def _column(
        self, st: SymbolWindow, closes: FloatArray
    ) -> tuple[npt.NDArray[np.intp], FloatArray, FloatArray]:
        """Advance one symbol over its valid ``closes``: (positions that emit, their weights, confidences)."""
        if st.ref is None:
            st.ref = float(closes[0])
        fast_sums, slow_sums = st.sums.extend((closes - st.ref)[:, None], (self.fast, self.slow))
        full = np.arange(st.sums.count - closes.size + 1, st.sums.count + 1) >= self.slow
        fast, slow = fast_sums[full, 0] / self.fast, slow_sums[full, 0] / self.slow
        level = np.abs(st.ref + slow)
        tie = TIE * level
        wanted = np.where(fast - slow > tie, self._size, np.where(fast - slow < -tie, self._short, np.nan))
        # On a tie the weight is held: carry the last decided one forward (0 if none yet).
        weight = hold_last(wanted, 0.0 if st.weight is None else st.weight)
        emitted = weight != np.concatenate(([np.nan if st.weight is None else st.weight], weight[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.abs(fast - slow) / level / FULL_CONFIDENCE_GAP
        confidence = np.where(level != 0, np.minimum(1.0, gap), 1.0)
        if weight.size:
            st.weight = float(weight[-1])
        return np.flatnonzero(emitted) + (closes.size - weight.size), weight[emitted], confidence[emitted]

    def state(self) -> dict[str, Any]:
        """Per symbol: the rolling sums, reference close and last emitted weight (plain, picklable data)."""
        return save_windows(self._state)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (call after ``on_start``); ``slow`` must be the same."""
        load_windows(self._state, state, span=self.slow, parameter="slow", agent=self.name)
