"""Trading states of an agent or of the whole federation, and the small machine that holds them.

- ``ACTIVE``: every order the risk checks allow.
- ``REDUCING``: only orders that bring |position| closer to zero, never past it: the engine cuts an order
  that would flip the position to flat and refuses only the rest.
- ``HALTED``: no new orders. The engine cancels the working orders only halted accounts are in (all of
  them when the federation halts); an order an agent shares with agents still trading stays working.

A state is entered with a *hold*: until a bar time, or for the rest of the run (``until=None``: the kill
switch). Holds of different states stack, and the state is the strongest hold still running, so a
HALTED hold that ends falls back to a REDUCING hold still running, not straight to ACTIVE. Time is the bar
timestamp (epoch ns), so backtests are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class TradingState(IntEnum):
    """A larger value is stronger and wins."""

    ACTIVE = 0
    REDUCING = 1
    HALTED = 2

    @property
    def label(self) -> str:
        """Lower-case name, as in config (``action = "halted"``) and ledger codes."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class StateChange:
    """The state moved from ``before`` to ``after`` at bar time ``ts``."""

    before: TradingState
    after: TradingState
    ts: int
    reason: str
    until: int | None
    """When the new state's hold ends (None: the rest of the run, or ACTIVE)."""


@dataclass(slots=True)
class _Hold:
    until: int | None
    reason: str


class TradingStateMachine:
    """The trading state of one agent or of the federation.

    >>> m = TradingStateMachine()
    >>> m.hold(TradingState.REDUCING, ts=0, until=60, reason="loss breaker").after.label
    'reducing'
    >>> m.tick(60).after.label
    'active'
    """

    __slots__ = ("_holds", "state")

    def __init__(self) -> None:
        self.state = TradingState.ACTIVE
        self._holds: dict[TradingState, _Hold] = {}

    @property
    def held(self) -> bool:
        """True while some hold runs (the state is not ACTIVE)."""
        return bool(self._holds)

    @property
    def until(self) -> int | None:
        """When the current state's hold ends (None: never, or the state is ACTIVE)."""
        hold = self._holds.get(self.state)
        return None if hold is None else hold.until

    @property
    def reason(self) -> str:
        hold = self._holds.get(self.state)
        return "" if hold is None else hold.reason

    def hold(self, state: TradingState, *, ts: int, until: int | None, reason: str) -> StateChange | None:
        """Hold ``state`` until bar time ``until`` (None: for the rest of the run).

        A hold of a state already held is extended (never shortened). Returns the change of state, or None
        if the state stays (a weaker or equal state than the current one).
        """
        if state is TradingState.ACTIVE:
            raise ValueError("ACTIVE is the absence of holds; it cannot be held")
        if until is not None and until <= ts:
            raise ValueError(f"a hold until {until} ends before it starts at {ts}")
        current = self._holds.get(state)
        if current is None:
            self._holds[state] = _Hold(until, reason)
        elif current.until is not None and (until is None or until > current.until):
            current.until, current.reason = until, reason
        return self._settle(ts, reason)

    def tick(self, ts: int) -> StateChange | None:
        """End the holds due at bar time ``ts``; returns the change of state, if any."""
        due = [s for s, h in self._holds.items() if h.until is not None and h.until <= ts]
        if not due:
            return None
        ended = self._holds[self.state].reason if self.state in due else ""
        for state in due:
            del self._holds[state]
        return self._settle(ts, f"{ended}: hold ended" if ended else "hold ended")

    def _settle(self, ts: int, reason: str) -> StateChange | None:
        after = max(self._holds, default=TradingState.ACTIVE)
        if after is self.state:
            return None
        before, self.state = self.state, after
        return StateChange(before, after, ts, reason, self.until)
