"""The chaos report: the plan that ran, the faults injected and each invariant with its measured value;
printed as a table or as JSON (``federation chaos ... --json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from federation.chaos.invariants import Invariant


@dataclass(frozen=True, slots=True)
class ChaosReport:
    """The outcome of one chaos run: ``ok`` when every invariant holds (the command's exit code is 0)."""

    plan: str
    """Path of the plan file."""
    run_id: str
    seed: int
    duration_s: float
    faults: dict[str, int]
    """Faults injected, counted per kind (kill_agents, agents_killed, kill_execution, venue timeouts...)."""
    invariants: list[Invariant]
    baseline_run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    """Anything the harness wants the reader to know (a fault it could not inject, ...)."""

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.invariants)

    @property
    def failed(self) -> list[str]:
        return [i.name for i in self.invariants if not i.ok]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: top-level ``ok``, the run, and ``invariants: {name: {ok, value, required, detail}}``."""
        return {
            "ok": self.ok,
            "plan": self.plan,
            "run_id": self.run_id,
            "baseline_run_id": self.baseline_run_id,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "faults": dict(self.faults),
            "invariants": {i.name: i.to_dict() for i in self.invariants},
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _shown(value: Any) -> str:
    """A measured value in one short cell (the JSON has it whole)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items() if not isinstance(v, list | dict) or v)
    if isinstance(value, list):
        return f"{len(value)}" if value else "0"
    return str(value)


def render(report: ChaosReport, console: Console) -> None:
    """Print the report: one row per invariant, then the faults injected and the verdict."""
    table = Table(
        title=f"chaos run {report.run_id} (plan {report.plan}, seed {report.seed}, {report.duration_s:g} s)",
        title_justify="left",
    )
    table.add_column("invariant", no_wrap=True)
    table.add_column("ok", no_wrap=True)
    table.add_column("measured", justify="right")
    table.add_column("required")
    table.add_column("detail")
    for inv in report.invariants:
        table.add_row(
            inv.name,
            "[green]ok[/green]" if inv.ok else "[red]FAIL[/red]",
            _shown(inv.value),
            inv.required,
            inv.detail,
        )
    console.print(table)
    if report.faults:
        shown = ", ".join(f"{k} x{v}" for k, v in sorted(report.faults.items()))
        console.print(f"faults injected: {shown}")
    else:
        console.print("[yellow]no fault was injected[/yellow]")
    if report.baseline_run_id:
        console.print(f"baseline run (no faults): {report.baseline_run_id}")
    for note in report.notes:
        console.print(f"[yellow]{note}[/yellow]")
    n = len(report.invariants)
    if report.ok:
        console.print(f"[green]all {n} invariants hold[/green]")
    else:
        console.print(f"[red]{len(report.failed)} of {n} invariants failed: {', '.join(report.failed)}[/red]")
