"""Pre-trade risk checks on the portfolio's net orders. Each denial carries a reason code and a message.

This is the minimal set (max position per symbol, max order notional); every rule is a small class with
``check(intent) -> Denial | None``, so more rules slot in without touching the execution actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order the execution actor wants to send, with what a rule needs to judge it."""

    symbol: str
    quantity: Decimal
    """Signed: + buy, - sell."""
    price: Decimal
    """Reference price (the decision bar's close)."""
    position: Decimal
    """The portfolio's position in ``symbol`` before the order."""
    agents: tuple[str, ...]
    """Agents whose demand the order carries (for the message)."""


@dataclass(frozen=True, slots=True)
class Denial:
    code: str
    message: str


class RiskRule(Protocol):
    code: str

    def check(self, intent: OrderIntent) -> Denial | None: ...


def _who(intent: OrderIntent) -> str:
    shown = ", ".join(repr(a) for a in intent.agents[:3])
    more = f" and {len(intent.agents) - 3} more" if len(intent.agents) > 3 else ""
    return f"order for {shown}{more}"


class MaxPosition:
    """|position after the order| must not exceed the limit for the symbol (units)."""

    code = "max_position"

    def __init__(self, default: Decimal | None, by_symbol: dict[str, Decimal] | None = None) -> None:
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


class RiskPolicy:
    """Runs the rules in order; the first denial wins."""

    def __init__(self, rules: list[RiskRule]) -> None:
        self.rules = rules

    def check(self, intent: OrderIntent) -> Denial | None:
        for rule in self.rules:
            denial = rule.check(intent)
            if denial is not None:
                return denial
        return None
