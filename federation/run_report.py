"""``federation report``: a run's accounts (cash, realized P&L, fees, fills, positions) and order history,
from either ledger, as tables or JSON."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from federation.errors import UserInputError
from federation.ledger.reports import account_report, order_history
from federation.run_control import open_existing_ledger


def run_report(
    ledger_url: str, run_id: str, *, agent: str | None = None, orders: bool = False, status: str | None = None
) -> dict[str, Any]:
    """``accounts`` (every agent and the portfolio, or one agent) and, with ``orders``, ``orders``."""
    ledger = open_existing_ledger(ledger_url)
    try:
        accounts = account_report(ledger, run_id)
        names = [a.account for a in accounts]
        if agent is not None and agent not in names:
            raise UserInputError(
                f"agent {agent!r} is not in run {run_id!r}; its accounts: {', '.join(names)}"
            )
        out: dict[str, Any] = {
            "run_id": run_id,
            "accounts": [
                {
                    "account": a.account,
                    "cash": None if a.cash is None else format(a.cash, "f"),
                    "realized_pnl": format(a.realized_pnl, "f"),
                    "fees": format(a.fees, "f"),
                    "fills": a.fills,
                    "positions": {s: format(q, "f") for s, q in a.positions.items()},
                }
                for a in accounts
                if agent is None or a.account == agent
            ],
        }
        if orders:
            out["orders"] = [r.as_dict() for r in order_history(ledger, run_id, agent=agent, status=status)]
        return out
    finally:
        ledger.close()


def render_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"accounts of run {report['run_id']}", title_justify="left")
    for col in ("account", "cash", "realized_pnl", "fees", "fills", "positions"):
        table.add_column(col, justify="left" if col in ("account", "positions") else "right")
    for a in report["accounts"]:
        positions = ", ".join(f"{s} {q}" for s, q in a["positions"].items()) or "-"
        table.add_row(
            a["account"], a["cash"] or "-", a["realized_pnl"], a["fees"], str(a["fills"]), positions
        )
    console.print(table)
    if "orders" not in report:
        return
    history = Table(title="orders", title_justify="left")
    for col in ("ts", "symbol", "side", "quantity", "filled", "status", "agents", "reason"):
        history.add_column(col)
    for o in report["orders"]:
        agents = ", ".join(f"{k} {v}" for k, v in o["agents"].items())
        reason = f"{o['reason_code']}: {o['reason']}" if o["reason_code"] else ""
        history.add_row(
            str(o["ts"]),
            o["symbol"],
            o["side"] or "-",
            o["quantity"] or "-",
            o["filled_quantity"] or "-",
            o["status"] if o["kind"] == "order" else "denied (agent)",
            agents,
            reason,
        )
    console.print(history)
