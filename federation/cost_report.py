"""``federation costs``: a run's usage, cost, budget, remaining and actions per agent and meter."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.console import Console
from rich.table import Table

from federation.run_control import open_existing_ledger
from federation.summary import cost_summary

COLUMNS = (
    "agent",
    "kind",
    "usage",
    "cost",
    "budget",
    "period",
    "remaining",
    "peak_period_usage",
    "reservations",
    "refusals",
    "actions",
    "state",
)


def cost_rows(ledger_url: str, run_id: str) -> list[dict[str, Any]]:
    """The run's cost rows as plain dicts (the same fields as the run summary's ``costs``)."""
    ledger = open_existing_ledger(ledger_url)
    try:
        rows = ledger.costs(run_id)
    finally:
        ledger.close()
    return [cost_summary(r).model_dump() for r in rows]


def rows_as_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with a header; ``actions`` as ``code=count`` pairs joined by ``;``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        actions = ";".join(f"{k}={v}" for k, v in sorted(row["actions"].items()))
        writer.writerow({**{k: row[k] for k in COLUMNS}, "actions": actions})
    return out.getvalue()


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.8g}"


def render_costs(run_id: str, rows: list[dict[str, Any]], console: Console) -> None:
    """A table, one row per agent and meter."""
    if not rows:
        console.print(f"run {run_id}: no cost records (runs recorded before budgets existed have none)")
        return
    table = Table(title=f"costs of run {run_id}", title_justify="left")
    for col in ("agent", "kind", "usage", "cost", "budget", "period", "remaining", "actions", "state"):
        table.add_column(
            col, justify="left" if col in ("agent", "kind", "period", "actions", "state") else "right"
        )
    for r in rows:
        actions = ", ".join(f"{k} x{v}" for k, v in sorted(r["actions"].items())) or "-"
        table.add_row(
            r["agent"],
            r["kind"],
            _num(r["usage"]),
            _num(r["cost"]),
            _num(r["budget"]),
            r["period"] or "-",
            _num(r["remaining"]),
            actions,
            r["state"],
        )
    console.print(table)
