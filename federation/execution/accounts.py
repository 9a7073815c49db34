"""Virtual sub-accounts: each agent's (and the portfolio's) cash, positions, average price and P&L.

Positions are integer lots (``lot_size`` units each); cash, prices, fees and P&L are Decimal. Realized
P&L uses the average-cost method and is net of fees. The portfolio is one more account, booking only
venue fills; internal crosses move positions and cash between agents and leave the portfolio unchanged,
and so do capital transfers between agents (:meth:`SubAccounts.transfer`, a rebalance).

The Decimal books are the truth (the ledger is written from them). ``cash_f`` mirrors the cash as float64
(with ``lots``, already an integer array) so the equity of every account is one vectorized product per bar:
what the circuit breakers, the exposure limits and a capital allocator read. The mirror is re-synced from
the Decimal books at every flush, so float rounding never accumulates beyond a block.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt


@dataclass(slots=True)
class _Holding:
    lots: int = 0
    avg_price: Decimal = Decimal(0)
    realized: Decimal = Decimal(0)


class SubAccounts:
    """Books for ``names`` (agents, then the portfolio) over ``symbols``."""

    def __init__(
        self, names: list[str], symbols: tuple[str, ...], capital: list[Decimal], lot_size: Decimal
    ) -> None:
        self.names = names
        self.symbols = symbols
        self.lot_size = lot_size
        self.cash = list(capital)
        self.cash_f: npt.NDArray[np.float64] = np.asarray([float(c) for c in capital], dtype=np.float64)
        self.fees = [Decimal(0)] * len(names)
        self._holdings = [[_Holding() for _ in symbols] for _ in names]
        self.lots: npt.NDArray[np.int64] = np.zeros((len(names), len(symbols)), dtype=np.int64)

    def book(self, account: int, col: int, lots: int, price: Decimal, fee: Decimal) -> None:
        """Record a signed trade of ``lots`` at ``price`` paying ``fee`` in ``account``."""
        holding = self._holdings[account][col]
        units = lots * self.lot_size
        cost = units * price + fee
        self.cash[account] -= cost
        self.cash_f[account] -= float(cost)
        self.fees[account] += fee
        holding.realized -= fee
        old = holding.lots
        new = old + lots
        if old == 0 or (old > 0) == (lots > 0):
            holding.avg_price = (holding.avg_price * abs(old) + price * abs(lots)) / abs(new)
        else:
            closed = min(abs(lots), abs(old))
            sign = 1 if old > 0 else -1
            holding.realized += (price - holding.avg_price) * closed * self.lot_size * sign
            if new == 0:
                holding.avg_price = Decimal(0)
            elif (new > 0) != (old > 0):
                holding.avg_price = price
        holding.lots = new
        self.lots[account, col] = new

    def restore(self, account: int, col: int, lots: int, avg_price: Decimal, realized: Decimal) -> None:
        """Set one holding as a ledger recorded it (a restarted execution actor rebuilding its books)."""
        self._holdings[account][col] = _Holding(lots, avg_price, realized)
        self.lots[account, col] = lots

    def set_cash(self, account: int, cash: Decimal) -> None:
        """Set an account's cash as the ledger recorded it (float mirror included)."""
        self.cash[account] = cash
        self.cash_f[account] = float(cash)

    def transfer(self, account: int, amount: Decimal) -> None:
        """Move ``amount`` of cash into ``account`` (out of it if negative): money allocated to it, not
        P&L, so fees and realized P&L stay as they are."""
        self.cash[account] += amount
        self.cash_f[account] += float(amount)

    def sync_floats(self) -> None:
        """Reset the float mirror of cash to the Decimal books."""
        self.cash_f[:] = [float(c) for c in self.cash]

    def equity(self, marks: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Every account's equity (float) at ``marks``: the value of one lot per symbol, 0 if unknown."""
        result: npt.NDArray[np.float64] = self.cash_f + self.lots @ marks
        return result

    def holding(self, account: int, col: int) -> tuple[Decimal, Decimal, Decimal]:
        """(quantity in units, average price, realized P&L) of one account in one symbol."""
        h = self._holdings[account][col]
        return h.lots * self.lot_size, h.avg_price, h.realized

    def realized(self, account: int) -> Decimal:
        return sum((h.realized for h in self._holdings[account]), Decimal(0))

    def unrealized(self, account: int, marks: list[Decimal | None]) -> Decimal:
        total = Decimal(0)
        for h, mark in zip(self._holdings[account], marks, strict=True):
            if h.lots and mark is not None:
                total += (mark - h.avg_price) * h.lots * self.lot_size
        return total

    def market_value(self, account: int, marks: list[Decimal | None]) -> tuple[Decimal, Decimal]:
        """(net, gross) market value of the account's positions at ``marks``."""
        net = gross = Decimal(0)
        for h, mark in zip(self._holdings[account], marks, strict=True):
            if h.lots and mark is not None:
                value = mark * h.lots * self.lot_size
                net += value
                gross += abs(value)
        return net, gross
