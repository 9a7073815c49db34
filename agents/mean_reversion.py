"""Mean reversion: short when the close is far above its rolling mean, long when far below."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.base import SignalOutput
from agents.model import Bar, FloatArray, Signal
from agents.rolling import RollingSums, SymbolWindow, WindowedAgent, hold_last, load_windows, save_windows

MIN_RELATIVE_STD = 1e-9
"""A window whose standard deviation is at most this fraction of the close counts as flat: z = 0."""


class MeanReversionAgent(WindowedAgent):
    """Per symbol: z = (close - mean) / std over the last ``lookback`` valid closes, current bar included.

    ``std`` is the sample standard deviation (ddof = 1); z is 0 when the window is flat. Target weight:
    ``-size`` when z > entry_z, ``+size`` when z < -entry_z (a direct flip is allowed), 0 when
    |z| < exit_z, otherwise unchanged. The agent starts flat and emits a Signal only when the target
    changes. Confidence is ``min(1, |z| / (2 * entry_z))`` on entries and flips, 1 on exits. Bars with
    ``valid`` False or a non-finite close are skipped, as if they did not exist.

    Parameters: ``lookback`` (int, 20, at least 2); ``entry_z`` (float, 2.0) and ``exit_z`` (float, 0.5)
    with 0 <= exit_z < entry_z; ``size`` (float, 1.0) the weight magnitude, in (0, 1].

    Smallest config::

        [[agents]]
        class = "agents.mean_reversion:MeanReversionAgent"
        params = { lookback = 20, entry_z = 2.0 }
    """

    lookback: int = 20
    entry_z: float = 2.0
    exit_z: float = 0.5

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """lookback >= 2 and 0 <= exit_z < entry_z (and size, see WindowedAgent), checked at load."""
        lookback, entry_z, exit_z = (params[k] for k in ("lookback", "entry_z", "exit_z"))
        if lookback < 2:
            raise ValueError(
                f"lookback = {lookback} is below 2; a standard deviation needs at least two "
                "closes; e.g. lookback = 20."
            )
        if not 0.0 <= exit_z < entry_z:
            raise ValueError(
                f"exit_z = {exit_z} and entry_z = {entry_z} are invalid: need "
                "0 <= exit_z < entry_z so that a position is entered before it can be exited; "
                "e.g. entry_z = 2.0, exit_z = 0.5."
            )
        super().check_params(params)

    def on_start(self) -> None:
        """Start with empty windows."""
        self._size = float(self.size)
        self._entry, self._exit = float(self.entry_z), float(self.exit_z)
        self._state = {s: SymbolWindow(RollingSums.empty(self.lookback, 2), weight=0.0) for s in self.symbols}

    def on_bar(self, bar: Bar) -> SignalOutput:
        """Add the close to the symbol's window; return a Signal if the target weight changed."""
        st = self._state.get(bar.symbol)
        if st is None or not math.isfinite(bar.close):
            return None
        if st.ref is None:
            st.ref = bar.close
        k, x = self.lookback, bar.close - st.ref
        st.sums.push(x, x * x)
        if st.sums.count < k:
            return None
        total = st.sums.sum(0, k)
        mean = total / k
        var = (st.sums.sum(1, k) - total * mean) / (k - 1)
        floor = MIN_RELATIVE_STD * abs(bar.close)
        z = (x - mean) / math.sqrt(var) if var > floor * floor else 0.0
        if z > self._entry:
            weight = -self._size
        elif z < -self._entry:
            weight = self._size
        elif abs(z) < self._exit:
            weight = 0.0
        else:
            return None
        if weight == st.weight:
            return None
        st.weight = weight
        return Signal(bar.symbol, weight, min(1.0, abs(z) / (2.0 * self._entry)) if weight else 1.0)

    def _column(
        self, st: SymbolWindow, closes: FloatArray
    ) -> tuple[npt.NDArray[np.intp], FloatArray, FloatArray]:
        """Advance one symbol over its valid ``closes``: (positions that emit, their weights, confidences)."""
        if st.ref is None:
            st.ref = float(closes[0])
        k, x = self.lookback, closes - st.ref
        (sums,) = st.sums.extend(np.stack((x, x * x), axis=1), (k,))
        full = np.arange(st.sums.count - closes.size + 1, st.sums.count + 1) >= k
        total, x = sums[full, 0], x[full]
        mean = total / k
        var = (sums[full, 1] - total * mean) / (k - 1)
        floor = MIN_RELATIVE_STD * np.abs(closes[full])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(var > floor * floor, (x - mean) / np.sqrt(var), 0.0)
        hold = np.where(np.abs(z) < self._exit, 0.0, np.nan)
        wanted = np.where(z > self._entry, -self._size, np.where(z < -self._entry, self._size, hold))
        # Between the thresholds the target is held: carry the last decided one forward.
        last = 0.0 if st.weight is None else st.weight
        weight = hold_last(wanted, last)
        emitted = weight != np.concatenate(([last], weight[:-1]))
        confidence = np.where(weight != 0, np.minimum(1.0, np.abs(z) / (2.0 * self._entry)), 1.0)
        if weight.size:
            st.weight = float(weight[-1])
        return np.flatnonzero(emitted) + (closes.size - weight.size), weight[emitted], confidence[emitted]

    def state(self) -> dict[str, Any]:
        """Per symbol: the rolling sums, reference close and current target (plain, picklable data)."""
        return save_windows(self._state)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (call after ``on_start``); ``lookback`` must be the same."""
        load_windows(self._state, state, span=self.lookback, parameter="lookback", agent=self.name)
