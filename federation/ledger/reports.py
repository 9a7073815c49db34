"""What users ask a ledger: P&L and positions per agent, and the order history with denials and reasons.

The same SQL runs on both backends (through :meth:`Ledger.query`). Values come back exact (Decimal).

- :func:`account_report`: per account (each agent, then the portfolio): cash, realized P&L (average
  cost, net of fees, as the books kept it), fees paid, fills and open positions. Unrealized P&L needs
  the last prices, which the ledger does not keep: it is in the run summary.
- :func:`order_history`: every order, optionally of one agent (its share of each order it took part
  in) and/or one status, with the reason code and message of denials and expiries, plus the agent-level
  risk denials (demands refused before netting, which never became orders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from federation.ledger.base import Ledger
from federation.ledger.records import PORTFOLIO
from federation.money import from_e8


@dataclass(frozen=True, slots=True)
class AccountReport:
    account: str
    cash: Decimal | None
    realized_pnl: Decimal
    fees: Decimal
    fills: int
    positions: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OrderHistoryRow:
    """One order (``kind = "order"``) or one agent-level risk denial (``kind = "agent_denial"``)."""

    kind: str
    ts: int
    symbol: str
    status: str
    """The order's status, or ``denied`` for an agent-level denial."""
    client_order_id: str | None
    side: str | None
    quantity: Decimal | None
    """The whole order's quantity (agent-level denials: the quantity the agent asked for)."""
    filled_quantity: Decimal | None
    agent_quantity: Decimal | None
    """With ``agent``: that agent's signed share of the order."""
    reason_code: str | None
    reason: str | None
    agents: dict[str, Decimal] = field(default_factory=dict)
    """Each agent's signed share of the order."""

    def as_dict(self) -> dict[str, Any]:
        def num(v: Decimal | None) -> str | None:
            return None if v is None else format(v, "f")

        return {
            "kind": self.kind,
            "ts": self.ts,
            "symbol": self.symbol,
            "status": self.status,
            "client_order_id": self.client_order_id,
            "side": self.side,
            "quantity": num(self.quantity),
            "filled_quantity": num(self.filled_quantity),
            "agent_quantity": num(self.agent_quantity),
            "reason_code": self.reason_code,
            "reason": self.reason,
            "agents": {k: format(v, "f") for k, v in self.agents.items()},
        }


def account_report(ledger: Ledger, run_id: str) -> list[AccountReport]:
    """Each agent's account (in the run's agent order), then the portfolio's."""
    capital = dict(ledger.query("SELECT name, capital_e8 FROM agents WHERE run_id = ? ORDER BY name", run_id))
    agents = list(capital)
    capital[PORTFOLIO] = ledger.query("SELECT capital_e8 FROM runs WHERE run_id = ?", run_id)[0][0]
    # an account that never traded has no cash row yet: it holds its starting capital
    cash = {**capital, **dict(ledger.query("SELECT account, balance_e8 FROM cash WHERE run_id = ?", run_id))}
    pnl = dict(
        ledger.query(
            "SELECT account, SUM(realized_pnl_e8) FROM positions WHERE run_id = ? GROUP BY account", run_id
        )
    )
    held: dict[str, dict[str, Decimal]] = {}
    for account, symbol, qty in ledger.query(
        "SELECT account, symbol, qty_e8 FROM positions WHERE run_id = ? AND qty_e8 != 0 ORDER BY symbol",
        run_id,
    ):
        held.setdefault(account, {})[symbol] = from_e8(qty)
    fees = {
        a: (int(f), int(n))
        for a, f, n in ledger.query(
            "SELECT agent, SUM(fee_e8), COUNT(*) FROM fill_allocations WHERE run_id = ? GROUP BY agent",
            run_id,
        )
    }
    ((portfolio_fees, portfolio_fills),) = ledger.query(
        "SELECT COALESCE(SUM(fee_e8), 0), COUNT(*) FROM fills WHERE run_id = ?", run_id
    )
    fees[PORTFOLIO] = (int(portfolio_fees), int(portfolio_fills))
    out = []
    for account in [*agents, PORTFOLIO]:
        fee_e8, fills = fees.get(account, (0, 0))
        balance = cash.get(account)
        out.append(
            AccountReport(
                account=account,
                cash=None if balance is None else from_e8(int(balance)),
                realized_pnl=from_e8(int(pnl.get(account) or 0)),
                fees=from_e8(fee_e8),
                fills=fills,
                positions=held.get(account, {}),
            )
        )
    return out


def order_history(
    ledger: Ledger, run_id: str, *, agent: str | None = None, status: str | None = None
) -> list[OrderHistoryRow]:
    """Orders in sequence, then agent-level denials, merged in time order (see the module)."""
    shares: dict[str, dict[str, Decimal]] = {}
    for coid, name, qty in ledger.query(
        "SELECT client_order_id, agent, qty_e8 FROM order_allocations WHERE run_id = ? ORDER BY agent", run_id
    ):
        shares.setdefault(coid, {})[name] = from_e8(qty)
    rows: list[OrderHistoryRow] = []
    for o in ledger.orders(run_id):
        mine = shares.get(o.client_order_id, {})
        if agent is not None and agent not in mine:
            continue
        if status is not None and o.status != status:
            continue
        rows.append(
            OrderHistoryRow(
                kind="order",
                ts=o.ts,
                symbol=o.symbol,
                status=o.status,
                client_order_id=o.client_order_id,
                side=o.side,
                quantity=o.quantity,
                filled_quantity=o.filled_quantity,
                agent_quantity=None if agent is None else mine[agent],
                reason_code=o.reason_code,
                reason=o.reason,
                agents=mine,
            )
        )
    if status in (None, "denied"):
        for e in ledger.events(run_id, "risk_denial"):
            detail = e["detail"]
            if detail.get("level") != "agent" or (agent is not None and e["agent"] != agent):
                continue
            asked = detail.get("quantity")
            rows.append(
                OrderHistoryRow(
                    kind="agent_denial",
                    ts=int(e["ts"]),
                    symbol=str(detail.get("symbol", "")),
                    status="denied",
                    client_order_id=None,
                    side=None,
                    quantity=None if asked is None else Decimal(str(asked)),
                    filled_quantity=None,
                    agent_quantity=None,
                    reason_code=e["code"],
                    reason=e["message"],
                    agents={} if e["agent"] is None else {e["agent"]: Decimal(str(asked or 0))},
                )
            )
    rows.sort(key=lambda r: (r.ts, r.kind != "order"))
    return rows
