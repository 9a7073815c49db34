"""Pre-trade risk checks. Every rule is a small class with ``code`` and ``check(intent) -> Denial | None``.

The execution engine runs them at two levels (see :mod:`federation.execution.engine`):

- **agent**: on each agent's own demand, before netting, against that agent's sub-account; a denied
  demand is left out of the bar's netting;
- **portfolio**: on the net order that would go to the venue, against the whole portfolio.

Rules (a limit of None disables a rule):

==========================  =========================================================================
code                        denies an order when
==========================  =========================================================================
``halted``                  the trading state is HALTED
``reduce_only``             the trading state is REDUCING and the order does not reduce |position|
                            (the engine first cuts an order that would flip the position to flat:
                            only the part past flat is refused, see :func:`reducing_part`)
``max_order_quantity``      |quantity| is above the limit
``max_order_notional``      |quantity x reference price| is above the limit
``max_position``            |position after| is above the limit for the symbol (and not reduced)
``max_gross_exposure``      the account's gross exposure after the order is above the limit (and grows)
``max_net_exposure``        |net exposure| after the order is above the limit (and grows)
``max_leverage``            gross exposure after / equity is above the limit (and gross grows)
``price_collar``            a limit price is further than the collar from the last trade price
``lot_size``                |quantity| is not a whole multiple of the instrument's lot
``min_quantity``            |quantity| is below the instrument's minimum size
``price_tick``              a limit price is not a whole multiple of the instrument's tick
``order_rate``              the account's order bucket is empty (``max_orders_per_minute`` + burst)
==========================  =========================================================================

Quantities and prices are exact Decimals; exposures and equity are floats marked at the last closes (the
engine's float mirrors of the books), which is what a limit on them needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, TypeVar

from policies.trading_state import TradingState

_NS_PER_MINUTE = 60 * 10**9
_RATE_SCALE = 1_000_000
"""Order-rate buckets count in units of 1/(_NS_PER_MINUTE x _RATE_SCALE) order: integers, so exact."""
_N = TypeVar("_N", int, Decimal)


@dataclass(slots=True)
class OrderIntent:
    """An order the execution engine wants to send, with what a rule needs to judge it.

    Not frozen: one is built per order and per agent demand on the hot path, and a frozen dataclass's
    ``__init__`` costs three times as much. Rules only read it.
    """

    symbol: str
    quantity: Decimal
    """Signed: + buy, - sell."""
    price: Decimal
    """Reference price: the symbol's last trade price known to the engine (the decision bar's close)."""
    position: Decimal
    """The account's position in ``symbol`` before the order."""
    agents: tuple[str, ...]
    """Agents whose demand the order carries (for the message)."""
    limit_price: Decimal | None = None
    """Limit orders: the limit price; market orders: None."""
    ts: int = 0
    """Bar time of the decision, epoch ns (the order-rate bucket refills in bar time)."""
    state: TradingState = TradingState.ACTIVE
    """Trading state that applies: the stronger of the account's and the federation's."""
    gross_exposure: float = 0.0
    """The account's gross exposure before the order, sum of |position x last close| (incl. orders in
    flight)."""
    net_exposure: float = 0.0
    """The account's net exposure before the order, sum of position x last close (incl. orders in flight)."""
    equity: float = math.nan
    """The account's equity (cash + positions at the last closes); NaN if unknown."""
    account: str | None = None
    """The agent whose own limits judge the order; None for the portfolio."""


@dataclass(frozen=True, slots=True)
class Denial:
    code: str
    message: str


class RiskRule(Protocol):
    code: str

    def check(self, intent: OrderIntent) -> Denial | None: ...


class StatefulRiskRule(RiskRule, Protocol):
    """A rule with memory (the order-rate bucket): ``commit`` is called for each order that passed."""

    def commit(self, intent: OrderIntent) -> None: ...


def _who(intent: OrderIntent) -> str:
    if intent.account is not None:
        return f"agent {intent.account!r}"
    shown = ", ".join(repr(a) for a in intent.agents[:3])
    more = f" and {len(intent.agents) - 3} more" if len(intent.agents) > 3 else ""
    return f"order for {shown}{more}"


def _order(intent: OrderIntent) -> str:
    return f"{intent.symbol} {intent.quantity:+} @ {intent.price}"


def reduces(position: Decimal | int, quantity: Decimal | int) -> bool:
    """True if the order brings |position| closer to zero without crossing it."""
    if position > 0:
        return -position <= quantity < 0
    if position < 0:
        return 0 < quantity <= -position
    return False


def reducing_part(position: _N, quantity: _N) -> _N:
    """The part of ``quantity`` that brings |position| closer to zero, at most to flat (0 if none).

    What a REDUCING account may still trade of an order: a long 100 asked to sell 150 may sell 100.

    >>> reducing_part(100, -150), reducing_part(100, -30), reducing_part(100, 20), reducing_part(0, -5)
    (-100, -30, 0, 0)
    """
    if position > 0 and quantity < 0:
        return max(quantity, -position)
    if position < 0 and quantity > 0:
        return min(quantity, -position)
    return quantity - quantity  # 0 of the quantity's own type (int or Decimal)


def _exposure(intent: OrderIntent) -> tuple[float, float, float]:
    """(gross before, gross after, net after) of the account if the order filled at the reference price."""
    price, position = float(intent.price), float(intent.position)
    before = abs(position * price)
    after = abs((position + float(intent.quantity)) * price)
    gross = intent.gross_exposure
    return gross, gross - before + after, intent.net_exposure + float(intent.quantity) * price


# ------------------------------------------------------------------------------------ trading state
class NotHalted:
    """No order at all while the trading state is HALTED."""

    code = "halted"

    def check(self, intent: OrderIntent) -> Denial | None:
        if intent.state is not TradingState.HALTED:
            return None
        return Denial(
            self.code, f"{_who(intent)}: {_order(intent)} not sent: trading state is HALTED; order denied"
        )


class ReduceOnly:
    """While the trading state is REDUCING, only orders that reduce |position| (without flipping) pass.

    The engine cuts an order that would flip the position to flat before this check (so the losing
    position is still closed); :meth:`cut` words the record of such a cut."""

    code = "reduce_only"

    def check(self, intent: OrderIntent) -> Denial | None:
        if intent.state is not TradingState.REDUCING or reduces(intent.position, intent.quantity):
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {_order(intent)} would take the position from {intent.position} to "
            f"{intent.position + intent.quantity}; trading state is REDUCING, only orders that reduce "
            "|position| pass; order denied",
        )

    def cut(self, intent: OrderIntent, passed: Decimal) -> Denial:
        """The record of ``intent`` cut to ``passed`` (what takes the position to flat); the rest is
        refused."""
        after = intent.position + intent.quantity
        return Denial(
            self.code,
            f"{_who(intent)}: {_order(intent)} would take the position from {intent.position} to {after}; "
            f"trading state is REDUCING, so the order was cut to flat: {passed:+} passed, "
            f"{intent.quantity - passed:+} refused",
        )


# ---------------------------------------------------------------------------------------- order size
class MaxOrderQuantity:
    """|quantity| of one order must not exceed the limit (units)."""

    code = "max_order_quantity"

    def __init__(self, limit: Decimal | None) -> None:
        self.limit = limit

    def check(self, intent: OrderIntent) -> Denial | None:
        if self.limit is None or abs(intent.quantity) <= self.limit:
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {_order(intent)} has quantity {abs(intent.quantity)}, above "
            f"max_order_quantity {self.limit}; order denied",
        )


class MaxOrderNotional:
    """|quantity x reference price| of one order must not exceed the limit (account currency)."""

    code = "max_order_notional"

    def __init__(self, limit: Decimal | None) -> None:
        self.limit = limit

    def check(self, intent: OrderIntent) -> Denial | None:
        notional = abs(intent.quantity * intent.price)
        if self.limit is None or notional <= self.limit:
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {intent.symbol} {intent.quantity:+} @ {intent.price} has notional "
            f"{notional:.2f}, above max_order_notional {self.limit}; order denied",
        )


# ------------------------------------------------------------------------------------------ position
class MaxPosition:
    """|position after the order| must not exceed the limit for the symbol (units)."""

    code = "max_position"

    def __init__(self, default: Decimal | None, by_symbol: Mapping[str, Decimal] | None = None) -> None:
        self.default = default
        self.by_symbol = dict(by_symbol or {})

    def check(self, intent: OrderIntent) -> Denial | None:
        limit = self.by_symbol.get(intent.symbol, self.default)
        after = intent.position + intent.quantity
        if limit is None or abs(after) <= limit or abs(after) < abs(intent.position):
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {intent.symbol} position would be {after} (now {intent.position}, order "
            f"{intent.quantity:+}), above max_position {limit}; order denied",
        )


# ------------------------------------------------------------------------------------------ exposure
class MaxGrossExposure:
    """The account's gross exposure after the order must not exceed the limit, unless the order lowers it."""

    code = "max_gross_exposure"
    uses_exposure = True

    def __init__(self, limit: Decimal | None) -> None:
        self.limit = None if limit is None else float(limit)

    def check(self, intent: OrderIntent) -> Denial | None:
        if self.limit is None:
            return None
        before, after, _ = _exposure(intent)
        if after <= self.limit or after < before:
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {_order(intent)} would take gross exposure from {before:,.2f} to "
            f"{after:,.2f}, above max_gross_exposure {self.limit:,.2f}; order denied",
        )


class MaxNetExposure:
    """|net exposure| after the order must not exceed the limit, unless the order lowers it."""

    code = "max_net_exposure"
    uses_exposure = True

    def __init__(self, limit: Decimal | None) -> None:
        self.limit = None if limit is None else float(limit)

    def check(self, intent: OrderIntent) -> Denial | None:
        if self.limit is None:
            return None
        _, _, after = _exposure(intent)
        before = intent.net_exposure
        if abs(after) <= self.limit or abs(after) < abs(before):
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {_order(intent)} would take net exposure from {before:,.2f} to "
            f"{after:,.2f}, above max_net_exposure {self.limit:,.2f} in absolute value; order denied",
        )


class MaxLeverage:
    """Gross exposure after the order / equity must not exceed the limit, unless the order lowers gross.

    With equity at or below zero every order that adds exposure is denied."""

    code = "max_leverage"
    uses_exposure = True

    def __init__(self, limit: float | None) -> None:
        self.limit = limit

    def check(self, intent: OrderIntent) -> Denial | None:
        if self.limit is None or math.isnan(intent.equity):
            return None
        before, after, _ = _exposure(intent)
        if after < before or after == 0:
            return None
        leverage = after / intent.equity if intent.equity > 0 else math.inf
        if leverage <= self.limit:
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {_order(intent)} would take leverage to {leverage:.2f}x (gross exposure "
            f"{after:,.2f} / equity {intent.equity:,.2f}), above max_leverage {self.limit:g}; order denied",
        )


# ----------------------------------------------------------------------------------- price and size
class PriceCollar:
    """A limit price must be within ``bps`` basis points of the last trade price (the reference)."""

    code = "price_collar"

    def __init__(self, bps: float | None) -> None:
        self.bps = bps
        self.band = None if bps is None else Decimal(repr(bps)) / 10_000

    def check(self, intent: OrderIntent) -> Denial | None:
        limit = intent.limit_price
        if self.band is None or limit is None or intent.price <= 0:
            return None
        away = abs(limit - intent.price) / intent.price
        if away <= self.band:
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {intent.symbol} {intent.quantity:+} limit {limit} is {away * 10_000:.1f} bps "
            f"from the last trade {intent.price}, outside price_collar_bps {self.bps:g}; order denied",
        )


class LotSize:
    """|quantity| must be a whole multiple of the instrument's lot (symbols without one: not checked)."""

    code = "lot_size"

    def __init__(self, by_symbol: Mapping[str, Decimal]) -> None:
        self.by_symbol = dict(by_symbol)

    def check(self, intent: OrderIntent) -> Denial | None:
        lot = self.by_symbol.get(intent.symbol)
        if lot is None or intent.quantity % lot == 0:
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {intent.symbol} quantity {abs(intent.quantity)} is not a whole multiple of "
            f"the instrument's lot_size {lot}; order denied",
        )


class MinQuantity:
    """|quantity| must be at least the instrument's minimum size (``default`` for other symbols)."""

    code = "min_quantity"

    def __init__(self, default: Decimal | None, by_symbol: Mapping[str, Decimal] | None = None) -> None:
        self.default = default
        self.by_symbol = dict(by_symbol or {})

    def check(self, intent: OrderIntent) -> Denial | None:
        minimum = self.by_symbol.get(intent.symbol, self.default)
        if minimum is None or abs(intent.quantity) >= minimum:
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {intent.symbol} quantity {abs(intent.quantity)} is below the minimum "
            f"order size {minimum}; order denied",
        )


class PriceTick:
    """A limit price must be a whole multiple of the instrument's tick (symbols without one: not checked)."""

    code = "price_tick"

    def __init__(self, by_symbol: Mapping[str, Decimal]) -> None:
        self.by_symbol = dict(by_symbol)

    def check(self, intent: OrderIntent) -> Denial | None:
        tick = self.by_symbol.get(intent.symbol)
        limit = intent.limit_price
        if tick is None or limit is None or limit % tick == 0:
            return None
        return Denial(
            self.code,
            f"{_who(intent)}: {intent.symbol} limit price {limit} is not a whole multiple of the "
            f"instrument's price_tick {tick}; order denied",
        )


# ---------------------------------------------------------------------------------------- order rate
class OrderRateLimit:
    """Token bucket: ``per_minute`` orders a minute of bar time, up to ``burst`` at once.

    The bucket starts full; every order that passes all the checks takes one token (:meth:`commit`).
    Exact: the level is an integer count of small units, so the same bars give the same decisions.
    """

    code = "order_rate"

    def __init__(self, per_minute: float | None, burst: int | None = None) -> None:
        self.per_minute = per_minute
        self.burst = burst if burst is not None else max(1, math.ceil(per_minute or 1))
        self._token = _NS_PER_MINUTE * _RATE_SCALE
        self._rate = 0 if per_minute is None else max(1, round(per_minute * _RATE_SCALE))
        self._cap = self.burst * self._token
        self._level = self._cap
        self._last: int | None = None

    @property
    def tokens(self) -> float:
        """Orders the bucket allows now (a fraction: part of the next one has refilled)."""
        return self._level / self._token

    def _refill(self, ts: int) -> None:
        if self._last is not None and ts > self._last:
            self._level = min(self._cap, self._level + (ts - self._last) * self._rate)
        if self._last is None or ts > self._last:
            self._last = ts

    def check(self, intent: OrderIntent) -> Denial | None:
        if self.per_minute is None:
            return None
        self._refill(intent.ts)
        if self._level >= self._token:
            return None
        wait_s = (self._token - self._level) / self._rate / 1e9
        return Denial(
            self.code,
            f"{_who(intent)}: {_order(intent)} would exceed max_orders_per_minute {self.per_minute:g} "
            f"(burst {self.burst}); the next order fits in {wait_s:.1f} s of bar time; order denied",
        )

    def commit(self, intent: OrderIntent) -> None:
        if self.per_minute is not None:
            self._refill(intent.ts)
            self._level -= self._token


# -------------------------------------------------------------------------------------------- policy
class RiskPolicy:
    """Runs the rules in order; the first denial wins.

    :meth:`check` is for an order that is sent if it passes: then rules with memory are told (the
    order-rate bucket spends a token). For a demand whose fate is decided later (an agent's demand before
    netting), call :meth:`first_denial` and, once it went out, :meth:`commit`.
    """

    def __init__(self, rules: list[RiskRule]) -> None:
        self.rules = rules
        self._stateful: list[StatefulRiskRule] = [
            r  # type: ignore[misc]
            for r in rules
            if callable(getattr(r, "commit", None))
        ]
        self.uses_exposure = any(getattr(r, "uses_exposure", False) for r in rules)
        """True if a rule reads the intent's exposures (the engine tracks them only then)."""

    def first_denial(self, intent: OrderIntent) -> Denial | None:
        """The first rule's denial, or None if every rule passes (nothing is committed)."""
        for rule in self.rules:
            denial = rule.check(intent)
            if denial is not None:
                return denial
        return None

    def commit(self, intent: OrderIntent) -> None:
        """Tell the rules with memory that ``intent`` went out."""
        for rule in self._stateful:
            rule.commit(intent)

    def check(self, intent: OrderIntent) -> Denial | None:
        """:meth:`first_denial`, and :meth:`commit` if it passed."""
        denial = self.first_denial(intent)
        if denial is None and self._stateful:
            self.commit(intent)
        return denial


STATE_RULES = RiskPolicy([NotHalted(), ReduceOnly()])
"""The trading-state checks, which the engine applies to every order and demand whatever the config."""
