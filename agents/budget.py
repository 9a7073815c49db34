"""Spending from inside an agent: reserve first, settle what was really spent (``Agent.spend``).

Smallest use, in any hook::

    with self.spend("llm_tokens", estimate=1200) as s:     # refused here, before anything is spent
        reply = my_llm(prompt, max_tokens=1200)
        s.settle(reply.total_tokens)                        # the unused part is released

A reservation that would push the agent's usage plus its outstanding reservations past a cap is refused
with :class:`BudgetExceeded`, which the agent may catch (for example to keep its last view). Leaving the
``with`` block without :meth:`Reservation.settle` charges the whole estimate (the money may have been
spent, and nobody said how much); :meth:`Reservation.cancel` releases it when nothing was spent. A
reservation used without ``with`` and never settled expires after ``[budgets] reservation_ttl_s`` and is
then charged in full.

Amounts are in the unit of the meter (``api_calls``: calls, ``llm_tokens``: tokens, ``sandbox_s``:
seconds, or the unit of a meter you name yourself); the price table in ``[budgets] prices`` turns them
into money. Reserve the most the call can cost (e.g. an LLM's ``max_tokens``): settling more than the
estimate is recorded truthfully and may pass the cap, which the ledger then reports as an overrun.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from types import TracebackType
from typing import Protocol

METER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
"""User-defined meter names: lower-case letters, digits and ``_``, starting with a letter."""
BUILTIN_METERS = ("compute_s", "api_calls", "llm_tokens", "sandbox_s", "fees")
"""Meters the federation knows: CPU seconds of the agent's callbacks (measured by its runner), paid API
calls, LLM tokens, sandbox seconds and trading fees (money, charged from the agent's fills)."""


def meter_problem(name: object, *, budget: bool = False) -> str | None:
    """Why ``name`` cannot name a meter (or, with ``budget``, a budget kind: a meter or ``money``).

    Names of your own are fine, except one a letter or two away from a built-in meter: that is almost
    always a typo, and a typo would silently leave the real meter uncapped."""
    if budget and name == "money":
        return None
    if not isinstance(name, str) or not METER_NAME.match(name):
        return (
            f"{name!r} is not a meter name; use lower-case letters, digits and _ (built-in meters: "
            f"{', '.join(BUILTIN_METERS)})"
        )
    if name == "money":
        return "'money' names budgets over every priced meter, not a meter to spend on"
    if name not in BUILTIN_METERS:
        close = difflib.get_close_matches(name, [*BUILTIN_METERS, *(["money"] if budget else [])], 1, 0.75)
        if close:
            return f"meter {name!r} is not a built-in one; did you mean {close[0]!r}?"
    return None


_E8 = 100_000_000


class BudgetExceeded(Exception):
    """A reservation was refused: it would take ``kind`` past a budget of the agent. Nothing was spent.

    ``limit`` and ``remaining`` are in the budget's unit (the meter's, or money for a ``money`` budget).
    """

    def __init__(self, message: str, *, kind: str, requested: float, limit: float, remaining: float) -> None:
        super().__init__(message)
        self.kind = kind
        self.requested = requested
        self.limit = limit
        self.remaining = remaining


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the budget authority refused a reservation (sent back to the agent's process)."""

    message: str
    budget_kind: str
    limit_e8: int
    remaining_e8: int


class BudgetBackend(Protocol):
    """Where reservations go: the federation's budget authority (or an in-process one in tests)."""

    def reserve(self, agent: str, kind: str, amount_e8: int, ts: int) -> int | Refusal:
        """A reservation id, or the refusal."""

    def settle(self, reservation_id: int, actual_e8: int) -> None: ...

    def cancel(self, reservation_id: int) -> None: ...

    def remaining(self, agent: str, kind: str) -> int | None:
        """What ``agent`` may still reserve of ``kind`` now (1e-8 units), None if no budget caps it."""

    def flush(self) -> None:
        """Return once every settle and cancel sent so far has been handled."""


def to_units_e8(value: float | int | Decimal, what: str) -> int:
    """A non-negative amount as integer 1e-8 units (rounded up: a reservation never covers too little)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        units = int(amount.scaleb(8).to_integral_value(ROUND_CEILING))
    except InvalidOperation:
        raise ValueError(f"{what} must be a finite number, got {value!r}") from None
    if units < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return units


class Reservation:
    """An amount held against the agent's budgets until :meth:`settle` or :meth:`cancel` (or expiry).

    Returned by ``Agent.spend``; also a context manager (see the module documentation).
    """

    __slots__ = ("_backend", "_done", "estimate", "kind", "reservation_id")

    def __init__(self, backend: BudgetBackend, reservation_id: int, kind: str, estimate: float) -> None:
        self._backend = backend
        self.reservation_id = reservation_id
        self.kind = kind
        self.estimate = estimate
        self._done = False

    @property
    def open(self) -> bool:
        """True until settled or cancelled."""
        return not self._done

    def settle(self, actual: float | int | Decimal) -> None:
        """Charge ``actual`` (in the meter's unit) and release the rest of the estimate."""
        units = to_units_e8(actual, f"settle({self.kind!r}) amount")
        if self._done:
            raise RuntimeError(f"reservation of {self.kind!r} is already settled or cancelled")
        self._done = True
        self._backend.settle(self.reservation_id, units)

    def cancel(self) -> None:
        """Release the whole estimate: nothing was spent (e.g. the call failed before it was sent)."""
        if self._done:
            raise RuntimeError(f"reservation of {self.kind!r} is already settled or cancelled")
        self._done = True
        self._backend.cancel(self.reservation_id)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:  # not settled: whatever happened, the estimate may have been spent
            self._done = True
            self._backend.settle(self.reservation_id, to_units_e8(self.estimate, "estimate"))

    def __repr__(self) -> str:
        state = "open" if self.open else "closed"
        return f"Reservation({self.kind!r}, estimate={self.estimate}, {state})"


def reserve(
    backend: BudgetBackend, agent: str, kind: str, estimate: float | int | Decimal, ts: int
) -> Reservation:
    """Ask ``backend`` for a reservation; :class:`BudgetExceeded` when refused."""
    problem = meter_problem(kind)
    if problem is not None:
        raise ValueError(f"agent {agent!r}: spend({kind!r}): {problem}")
    units = to_units_e8(estimate, f"spend({kind!r}) estimate")
    answer = backend.reserve(agent, kind, units, ts)
    if isinstance(answer, Refusal):
        raise BudgetExceeded(
            answer.message,
            kind=answer.budget_kind,
            requested=float(estimate),
            limit=answer.limit_e8 / _E8,
            remaining=answer.remaining_e8 / _E8,
        )
    return Reservation(backend, answer, kind, float(estimate))
