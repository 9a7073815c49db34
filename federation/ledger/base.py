"""The ledger interface every backend (SQLite, PostgreSQL) implements."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

from federation.ledger.records import (
    PORTFOLIO,
    AgentRecord,
    CheckpointRecord,
    CostRow,
    FillRecord,
    LedgerBatch,
    OrderRecord,
    RunRecord,
)


class Ledger(Protocol):
    """Runs, agents, orders, fills, positions, cash, events, costs, agent checkpoints and kill-switch
    requests.

    Writes are whole transactions: a :class:`LedgerBatch` is written entirely or not at all. One ledger
    object belongs to one process (open another in each process that writes).
    """

    url: str
    """Where the ledger is (passwords masked): for messages."""

    def begin_run(self, run: RunRecord, agents: list[AgentRecord]) -> None: ...

    def write(self, run_id: str, batch: LedgerBatch) -> None:
        """Write a batch in one transaction (all of it or nothing)."""

    def write_costs(self, run_id: str, rows: Sequence[CostRow]) -> None:
        """Record (replace) the run's cost report."""

    def end_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None: ...

    def request_halt(self, run_id: str, reason: str) -> None: ...

    def pending_halt(self, run_id: str) -> str | None:
        """The reason of an unhandled halt request for ``run_id`` (marked handled), or None."""

    def close(self) -> None: ...

    # queries
    def runs(self) -> list[dict[str, Any]]:
        """All runs, newest first: run_id, status, started_ns, ended_ns."""

    def run_status(self, run_id: str) -> str | None: ...

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """The run summary recorded at the end of the run (None while it runs, or if unknown)."""

    def costs(self, run_id: str) -> list[CostRow]: ...

    def positions(self, run_id: str, account: str = PORTFOLIO) -> dict[str, Decimal]: ...

    def cash(self, run_id: str, account: str = PORTFOLIO) -> Decimal | None: ...

    def fills(self, run_id: str) -> list[FillRecord]: ...

    def orders(self, run_id: str) -> list[OrderRecord]: ...

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]: ...

    def latest_checkpoints(self, run_id: str) -> dict[str, CheckpointRecord]:
        """Each agent's latest state checkpoint in ``run_id`` (agents without one are absent)."""

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read-only SQL for reports and tests; placeholders are ``?`` on every backend."""
