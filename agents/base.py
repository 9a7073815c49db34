"""The ``Agent`` base class: subclass it, declare parameters as class attributes, override ``on_bar``.

Smallest complete agent::

    from agents import Agent, Signal

    class BuyTheDip(Agent):
        drop = 0.02                     # a parameter: class attribute with a default

        def on_start(self):
            self.last = {}

        def on_bar(self, bar):
            prev = self.last.get(bar.symbol)
            self.last[bar.symbol] = bar.close
            if prev and bar.close < prev * (1 - self.drop):
                return Signal(bar.symbol, weight=0.5)
            return None
"""

from __future__ import annotations

import difflib
import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, ValidationError, create_model

from agents.budget import BudgetBackend, Refusal, Reservation, reserve
from agents.model import Bar, BarBatch, Fill, FloatArray, Signal

SignalOutput = Signal | list[Signal] | None
_RUNTIME_ATTRIBUTES = frozenset({"name", "symbols", "capital", "log"})
"""Set by ``Agent.__init__``; a parameter of the same name would be overwritten or break the agent."""
BatchOutput = FloatArray | tuple[FloatArray, FloatArray] | None


@dataclass(frozen=True, slots=True)
class HookError:
    """An exception raised by an agent's hook: which hook, at which bar time, and the traceback."""

    hook: str
    ts: int
    message: str
    traceback: str

    @staticmethod
    def capture(hook: str, ts: int, exc: BaseException) -> HookError:
        return HookError(hook, ts, f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))


class ParameterError(ValueError):
    """A parameter given to an agent is unknown or has the wrong type."""


class Agent:
    """Base class of every strategy.

    Parameters are class attributes with defaults; configuration may override them (``params`` in the
    fleet config) and unknown or mistyped ones fail at load time. Inside the agent, read them as
    ``self.<name>`` or ``self.params``. Also available: ``self.name``, ``self.symbols``, ``self.capital``
    (capital allocated to this agent), ``self.position(symbol)``, ``self.log`` (a :mod:`logging` logger)
    and ``self.spend(kind, estimate)`` to reserve budget before a paid call (:mod:`agents.budget`);
    ``self.replaying`` is True while bars seen before a restart are fed again (skip paid calls then).

    Hooks, all optional except that an agent must override ``on_bar`` or ``on_batch`` to trade:

    - ``on_start()``: once, before the first bar.
    - ``on_bar(bar)``: per bar; return ``None``, a :class:`Signal` or a list of them.
    - ``on_batch(batch)``: per block of bars as numpy arrays (see :class:`BarBatch`); the default calls
      ``on_bar`` per bar. Vectorized agents override it and return an array of weights of shape (T, S)
      (NaN = no new signal at that bar), or ``(weights, confidences)``.
    - ``on_fill(fill)``: when part of the portfolio's trades is attributed to this agent.
    - ``on_stop()``: once, after the last bar.
    - ``state()`` / ``restore(state)``: checkpoint and restore everything the agent needs to continue.
    """

    _params: Mapping[str, Any]
    _base_attributes: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        name: str,
        symbols: Sequence[str],
        params: Mapping[str, Any] | None = None,
        capital: float = 0.0,
    ) -> None:
        if not symbols:
            raise ValueError(f"agent {name!r} needs at least one symbol")
        self.name = name
        self.symbols: tuple[str, ...] = tuple(symbols)
        self.capital = float(capital)
        values = self.validate_params(params or {}, agent_name=name)
        for key, value in values.items():
            setattr(self, key, value)
        self._params = MappingProxyType(values)
        self._positions: dict[str, float] = dict.fromkeys(self.symbols, 0.0)
        self._rejected: list[str] = []
        self._errors: list[HookError] = []
        self.log = logging.getLogger(f"agents.{name}")
        self._budget: BudgetBackend = UnlimitedBudget()
        self._now = 0
        """Time of the bar being processed (epoch ns): the budget clock in backtests."""
        self._replaying = False

    # ----------------------------------------------------------------------------------------- parameters
    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """The declared parameters and their defaults, from this class and its parents."""
        found: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if klass is object or klass is Agent:
                continue
            for key, value in vars(klass).items():
                if key.startswith("_"):
                    continue
                if callable(value) or isinstance(value, classmethod | staticmethod | property):
                    continue
                if key in Agent._base_attributes or key in _RUNTIME_ATTRIBUTES:
                    raise ParameterError(
                        f"{cls.__name__}: class attribute {key!r} would replace the Agent's own {key!r}; "
                        f"rename it (e.g. {key + '_'!r} or {'my_' + key!r})"
                    )
                found[key] = value
        return found

    @classmethod
    def validate_params(cls, params: Mapping[str, Any], *, agent_name: str = "") -> dict[str, Any]:
        """Defaults overridden by ``params``, type-checked; raises :class:`ParameterError` with a hint."""
        declared = cls.parameters()
        who = f"agent {agent_name!r} ({cls.__name__})" if agent_name else cls.__name__
        for key in params:
            if key not in declared:
                close = difflib.get_close_matches(key, list(declared), n=3, cutoff=0.5)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                valid = ", ".join(sorted(declared)) or "(none declared)"
                raise ParameterError(f"{who}: unknown parameter {key!r}{hint} Valid parameters: {valid}.")
        annotations: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            annotations.update(getattr(klass, "__annotations__", {}))
        fields: dict[str, Any] = {}
        for key, default in declared.items():
            hint_type = annotations.get(key)
            if not isinstance(hint_type, type):
                hint_type = Any if default is None else type(default)
            fields[key] = (hint_type, default)
        model = create_model(
            f"{cls.__name__}Params", __config__=ConfigDict(extra="forbid", strict=True), **fields
        )
        try:
            validated = model(**params)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            expected = fields.get(str(first["loc"][0]), (Any, None))[0]
            expected_name = getattr(expected, "__name__", str(expected))
            raise ParameterError(
                f"{who}: parameter {key!r} = {first.get('input')!r} is invalid: {first['msg']} "
                f"(expected {expected_name}, default {declared.get(str(first['loc'][0]))!r})."
            ) from None
        values = {key: getattr(validated, key) for key in fields}
        try:
            cls.check_params(values)
        except ValueError as exc:
            raise ParameterError(f"{who}: {exc}") from None
        return values

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Refuse a combination of parameter values: raise ValueError saying which, why and what to do.

        Called with the type-checked values when the fleet loads, before any process starts, so a bad
        combination is a config error (exit code 2). Default: accept everything.
        """

    @property
    def params(self) -> Mapping[str, Any]:
        """This instance's parameter values (read-only)."""
        return self._params

    # ------------------------------------------------------------------------------------------- hooks
    def on_start(self) -> None:
        """Called once before the first bar."""

    def on_bar(self, bar: Bar) -> SignalOutput:
        """Called for every bar of the agent's symbols; return None, a Signal or a list of Signals."""
        return None

    def on_batch(self, batch: BarBatch) -> BatchOutput:
        """Called with a block of bars; returns a (T, S) weight array (NaN = no new signal) or None.

        The default calls :meth:`on_bar` for each bar. Invalid signals are dropped and counted by the
        framework (see :meth:`Signal.problem`); an exception in ``on_bar`` is recorded (with traceback)
        and the next bar goes on. Override this hook only to vectorize.
        """
        weights = np.full((len(batch), len(self.symbols)), np.nan)
        confidences = np.ones_like(weights)
        columns = {s: j for j, s in enumerate(self.symbols)}
        for row, bar in batch.bars():
            self._now = bar.ts
            try:
                out = self.on_bar(bar)
            except Exception as exc:
                self._errors.append(HookError.capture("on_bar", bar.ts, exc))
                continue
            if out is None:
                continue
            for signal in out if isinstance(out, list) else [out]:
                problem = (
                    signal.problem(self.symbols)
                    if isinstance(signal, Signal)
                    else f"not a Signal: {signal!r}"
                )
                if problem is not None:
                    self._rejected.append(problem)
                    continue
                weights[row, columns[signal.symbol]] = signal.weight
                confidences[row, columns[signal.symbol]] = signal.confidence
        return weights, confidences

    def on_fill(self, fill: Fill) -> None:
        """Called when a fill is attributed to this agent (after its position was updated)."""

    def on_stop(self) -> None:
        """Called once after the last bar."""

    def state(self) -> dict[str, Any]:
        """Everything needed to continue after a restart; must be picklable. Default: nothing."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""

    # --------------------------------------------------------------------------------------- accessors
    def position(self, symbol: str) -> float:
        """This agent's attributed position in ``symbol`` (units, signed), as of the last delivered fill."""
        return self._positions.get(symbol, 0.0)

    def spend(self, kind: str, estimate: float) -> Reservation:
        """Reserve ``estimate`` units of meter ``kind`` before spending them; settle the actual amount.

        ::

            with self.spend("api_calls", estimate=1):
                quote = vendor.quote(symbol)            # charged 1 call when the block ends

            with self.spend("llm_tokens", estimate=1200) as s:
                reply = llm(prompt, max_tokens=1200)
                s.settle(reply.total_tokens)            # charges this, releases the rest

        Raises :class:`~agents.budget.BudgetExceeded` (nothing spent) when a budget of this agent would
        be exceeded. Outside a federation run (e.g. in your unit tests) nothing is refused and the usage
        is tallied in ``self.budget_usage``.
        """
        return reserve(self._budget, self.name, kind, estimate, self._now)

    def budget_remaining(self, kind: str) -> float | None:
        """What this agent may still reserve of meter ``kind`` now, in the meter's unit (the tightest of
        its budgets on it, money budgets converted at the meter's price); None if nothing caps it."""
        left = self._budget.remaining(self.name, kind)
        return None if left is None else left / 100_000_000

    @property
    def replaying(self) -> bool:
        """True while the agent is fed again bars it already saw, after its process was restarted from a
        checkpoint; its signals are then discarded. Skip paid calls meanwhile (``spend`` is granted but
        charged nothing, so a call made anyway is paid outside your budget)::

            if not self.replaying:
                with self.spend("api_calls", estimate=1):
                    self.quote = vendor.quote(bar.symbol)
        """
        return self._replaying

    @property
    def budget_usage(self) -> dict[str, float]:
        """Outside a run: what this agent settled per meter (inside a run see ``federation costs``)."""
        backend = self._budget
        return dict(backend.usage) if isinstance(backend, UnlimitedBudget) else {}

    # ----------------------------------------------------------------------------------------- runtime
    def _apply_fill(self, fill: Fill) -> None:
        self._positions[fill.symbol] = self._positions.get(fill.symbol, 0.0) + fill.quantity

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, symbols={list(self.symbols)!r})"


class UnlimitedBudget:
    """The budget backend of an agent whose run has no budget authority (no budgets configured) or that
    runs outside a federation: grants everything and tallies what was settled."""

    def __init__(self) -> None:
        self.usage: dict[str, float] = {}
        self.unreported: dict[str, int] = {}
        """Settled since the runner last collected it (1e-8 units), for the run's cost report."""
        self._open: dict[int, str] = {}
        self._next = 0

    def reserve(self, agent: str, kind: str, amount_e8: int, ts: int) -> int | Refusal:
        self._next += 1
        self._open[self._next] = kind
        return self._next

    def settle(self, reservation_id: int, actual_e8: int) -> None:
        kind = self._open.pop(reservation_id)
        self.usage[kind] = self.usage.get(kind, 0.0) + actual_e8 / 100_000_000
        self.unreported[kind] = self.unreported.get(kind, 0) + actual_e8

    def cancel(self, reservation_id: int) -> None:
        self._open.pop(reservation_id)

    def remaining(self, agent: str, kind: str) -> int | None:
        return None

    def flush(self) -> None:
        """Nothing is in flight."""

    def collect(self) -> dict[str, int]:
        """What was settled since the last call (1e-8 units per meter)."""
        out, self.unreported = self.unreported, {}
        return out


Agent._base_attributes = frozenset(k for k in vars(Agent) if not k.startswith("__"))
