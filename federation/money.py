"""Exact money and quantity arithmetic: Decimal in memory, integers of 1e-8 units in the ledger."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

E8 = Decimal("0.00000001")
_SCALE = 100_000_000


def quantize(value: Decimal) -> Decimal:
    """Round to 1e-8 (banker's rounding), the precision the ledger stores."""
    return value.quantize(E8, rounding=ROUND_HALF_EVEN)


@lru_cache(maxsize=1 << 16)
def to_e8(value: Decimal) -> int:
    """Decimal -> integer count of 1e-8 units (rounded half-even to 1e-8 first)."""
    # Same result as int(quantize(value) * 10**8); scaling first is exact and about 3x faster. Cached:
    # a fill's price, lot quantities and limits repeat across its allocations and ledger rows.
    return int(value.scaleb(8).to_integral_value(ROUND_HALF_EVEN))


def from_e8(units: int) -> Decimal:
    """Integer count of 1e-8 units -> Decimal."""
    return Decimal(units).scaleb(-8)  # exact; same value and exponent as dividing and quantizing


def round_to_tick(price: float | Decimal, tick: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """A price as a Decimal on the instrument's tick (half-even unless ``rounding`` says otherwise)."""
    value = price if isinstance(price, Decimal) else Decimal(repr(price))
    return (value / tick).quantize(Decimal(1), rounding=rounding) * tick
