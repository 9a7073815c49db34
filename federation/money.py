"""Exact money and quantity arithmetic: Decimal in memory, integers of 1e-8 units in the ledger."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

E8 = Decimal("0.00000001")
_SCALE = 100_000_000


def quantize(value: Decimal) -> Decimal:
    """Round to 1e-8 (banker's rounding), the precision the ledger stores."""
    return value.quantize(E8, rounding=ROUND_HALF_EVEN)


def to_e8(value: Decimal) -> int:
    """Decimal -> integer count of 1e-8 units (rounded half-even to 1e-8 first)."""
    return int(quantize(value) * _SCALE)


def from_e8(units: int) -> Decimal:
    """Integer count of 1e-8 units -> Decimal."""
    return (Decimal(units) / _SCALE).quantize(E8)


def round_to_tick(price: float | Decimal, tick: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """A price as a Decimal on the instrument's tick (half-even unless ``rounding`` says otherwise)."""
    value = price if isinstance(price, Decimal) else Decimal(repr(price))
    return (value / tick).quantize(Decimal(1), rounding=rounding) * tick
