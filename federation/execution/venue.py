"""The built-in simulated exchange. Deterministic: same orders and bars, same fills.

Price rule (orders are decided on a bar's close and executed on the symbol's next bar):

- **market**: fills at that bar's open, ``slippage_bps`` worse (buy higher, sell lower); taker fee.
- **limit** buy at L: if open <= L fills at open (taker); elif low <= L fills at L (maker); else no fill.
  Sells mirror this with high.
- At most ``max_volume_share`` of the bar's volume fills (whole lots); the rest of the order **expires**
  at the end of that bar (it is not carried: the next decision re-sizes from the new targets). A bar
  with volume 0 is read as "volume unknown" and caps nothing.
- Slippage is rounded to the tick against the trader (up for buys, down for sells).
- Fees: ``price * quantity * fee_bps / 10,000``, rounded to 1e-8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from federation.config import ExecutionConfig
from federation.money import quantize, round_to_tick

_BPS = Decimal(10_000)


Liquidity = Literal["taker", "maker"]
FinalStatus = Literal["filled", "partially_filled", "expired", "rejected", "cancelled"]


@dataclass(slots=True)
class VenueOrder:
    client_order_id: str
    col: int
    lots: int
    """Signed: + buy, - sell."""
    order_type: Literal["market", "limit"]
    limit_price: Decimal | None
    ts: int = 0
    """The bar time it was decided at: it executes on the symbol's first bar after that."""


@dataclass(frozen=True, slots=True)
class VenueFill:
    fill_id: str
    client_order_id: str
    col: int
    lots: int
    price: Decimal
    fee: Decimal
    liquidity: Liquidity
    ts: int = 0
    """Bar time of the bar it executed on."""


@dataclass(slots=True)
class VenueReport:
    """The venue's final word on an order: after it, no fill of the order comes (except repeats of fills
    already reported, which carry their fill ids)."""

    client_order_id: str
    col: int
    status: FinalStatus
    filled_lots: int
    """Unsigned lots filled in all."""
    reason_code: str | None
    reason: str | None
    ts: int


VenueEvent = VenueFill | VenueReport


class SimulatedVenue:
    """Holds working orders (at most one per symbol) and matches them against the next bar."""

    def __init__(self, config: ExecutionConfig) -> None:
        self.config = config
        self._working: dict[int, VenueOrder] = {}
        self._trade_seq = 0
        self._slip = Decimal(repr(config.slippage_bps)) / _BPS
        self._taker = Decimal(repr(config.taker_fee_bps)) / _BPS
        self._maker = Decimal(repr(config.maker_fee_bps)) / _BPS
        self._lot_volume = float(config.lot_size)

    def submit(self, order: VenueOrder) -> None:
        if order.col in self._working:
            raise RuntimeError(f"symbol column {order.col} already has a working order")
        if order.lots == 0:
            raise ValueError("order quantity is zero")
        self._working[order.col] = order

    def cancel(self, col: int) -> VenueOrder | None:
        """Remove the working order of ``col`` (if any) without matching it."""
        return self._working.pop(col, None)

    def match(
        self, col: int, open_: float, high: float, low: float, volume: float, ts: int = 0
    ) -> tuple[VenueFill | None, str | None] | None:
        """Match the working order of ``col`` against one bar (at bar time ``ts``); the order is done
        afterwards.

        Returns ``(fill, None)``, or ``(None, reason_code)`` when nothing filled (``limit_not_reached``,
        ``volume_cap``), or None if no order was working for the symbol.
        """
        order = self._working.pop(col, None)
        if order is None:
            return None
        tick = self.config.price_tick
        buy = order.lots > 0
        liquidity: Liquidity = "taker"
        if order.order_type == "market":
            # Slippage is rounded to the tick against the trader, so a coarse tick cannot erase it.
            factor = 1 + self._slip if buy else 1 - self._slip
            price = round_to_tick(Decimal(repr(open_)) * factor, tick, ROUND_CEILING if buy else ROUND_FLOOR)
        else:
            assert order.limit_price is not None
            limit = order.limit_price
            o = round_to_tick(open_, tick)
            if (buy and o <= limit) or (not buy and o >= limit):
                price = o
            elif (buy and round_to_tick(low, tick) <= limit) or (
                not buy and round_to_tick(high, tick) >= limit
            ):
                price, liquidity = limit, "maker"
            else:
                return None, "limit_not_reached"
        # Volume 0 means the data has no volume (common for FX and indices): no cap then.
        cap = (
            math.floor(volume * self.config.max_volume_share / self._lot_volume + 1e-9)
            if volume > 0
            else None
        )
        lots = abs(order.lots) if cap is None else min(abs(order.lots), cap)
        if lots == 0 or price <= 0:
            return None, "volume_cap"
        signed = lots if buy else -lots
        rate = self._taker if liquidity == "taker" else self._maker
        fee = quantize(price * lots * self.config.lot_size * rate)
        self._trade_seq += 1
        return VenueFill(
            f"SIM-{self._trade_seq:08d}", order.client_order_id, col, signed, price, fee, liquidity, ts
        ), None

    def fee(self, price: Decimal, lots: int, liquidity: Liquidity) -> Decimal:
        """The fee of ``lots`` (unsigned) at ``price``, rounded to 1e-8 (negative: a maker rebate)."""
        rate = self._taker if liquidity == "taker" else self._maker
        return quantize(price * lots * self.config.lot_size * rate)
