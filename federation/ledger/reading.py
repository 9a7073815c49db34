"""The ledger's reads, written once for both backends over ``query()`` (``?`` placeholders)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from federation.ledger.records import PORTFOLIO, CheckpointRecord, CostRow, FillRecord, OrderRecord
from federation.money import from_e8


def _dec(units: int | None) -> Decimal | None:
    return None if units is None else from_e8(units)


class LedgerReads:
    """Mixin: runs, positions, cash, fills, orders, events, costs, checkpoints and summaries of a ledger whose
    ``query(sql, *args)`` runs read-only SQL."""

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def runs(self) -> list[dict[str, Any]]:
        """All runs, newest first: run_id, status, started_ns, ended_ns."""
        rows = self.query("SELECT run_id, status, started_ns, ended_ns FROM runs ORDER BY started_ns DESC")
        return [dict(zip(("run_id", "status", "started_ns", "ended_ns"), r, strict=True)) for r in rows]

    def run_status(self, run_id: str) -> str | None:
        rows = self.query("SELECT status FROM runs WHERE run_id = ?", run_id)
        return None if not rows else str(rows[0][0])

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """The run summary recorded at the end of the run (None while it runs, or if unknown)."""
        rows = self.query("SELECT summary_json FROM runs WHERE run_id = ?", run_id)
        return None if not rows or rows[0][0] is None else dict(json.loads(rows[0][0]))

    def costs(self, run_id: str) -> list[CostRow]:
        """The run's cost report in the order it was written (empty if the run recorded none)."""
        rows = self.query(
            "SELECT agent, kind, usage_e8, cost_e8, budget_e8, period, peak_period_usage_e8, "
            "remaining_e8, reservations, refusals, actions_json, state "
            "FROM budget_usage WHERE run_id = ? ORDER BY id",
            run_id,
        )
        return [
            CostRow(
                r[0],
                r[1],
                from_e8(r[2]),
                from_e8(r[3]),
                _dec(r[4]),
                r[5],
                _dec(r[6]),
                _dec(r[7]),
                int(r[8]),
                int(r[9]),
                json.loads(r[10]),
                r[11],
            )
            for r in rows
        ]

    def positions(self, run_id: str, account: str = PORTFOLIO) -> dict[str, Decimal]:
        """Recorded positions of ``account`` (the portfolio by default), nonzero only."""
        rows = self.query(
            "SELECT symbol, qty_e8 FROM positions WHERE run_id = ? AND account = ? AND qty_e8 != 0",
            run_id,
            account,
        )
        return {s: from_e8(q) for s, q in rows}

    def cash(self, run_id: str, account: str = PORTFOLIO) -> Decimal | None:
        rows = self.query("SELECT balance_e8 FROM cash WHERE run_id = ? AND account = ?", run_id, account)
        return None if not rows else from_e8(rows[0][0])

    def fills(self, run_id: str) -> list[FillRecord]:
        rows = self.query(
            "SELECT fill_id, client_order_id, ts, symbol, qty_e8, price_e8, fee_e8, liquidity FROM fills "
            "WHERE run_id = ? ORDER BY ts, fill_id",
            run_id,
        )
        return [
            FillRecord(r[0], r[1], r[2], r[3], from_e8(r[4]), from_e8(r[5]), from_e8(r[6]), r[7])
            for r in rows
        ]

    def orders(self, run_id: str) -> list[OrderRecord]:
        rows = self.query(
            "SELECT client_order_id, seq, ts, symbol, side, order_type, qty_e8, limit_price_e8, status, "
            "filled_qty_e8, reason_code, reason FROM orders WHERE run_id = ? ORDER BY seq",
            run_id,
        )
        return [
            OrderRecord(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                from_e8(r[6]),
                _dec(r[7]),
                r[8],
                from_e8(r[9]),
                r[10],
                r[11],
            )
            for r in rows
        ]

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT ts, kind, agent, code, message, detail_json FROM events WHERE run_id = ?"
        args: tuple[Any, ...] = (run_id,)
        if kind is not None:
            sql += " AND kind = ?"
            args += (kind,)
        rows = self.query(sql + " ORDER BY id", *args)
        keys = ("ts", "kind", "agent", "code", "message")
        return [{**dict(zip(keys, r[:5], strict=True)), "detail": json.loads(r[5])} for r in rows]

    def latest_checkpoints(self, run_id: str) -> dict[str, CheckpointRecord]:
        """Each agent's latest state checkpoint in ``run_id`` (agents without one are absent)."""
        rows = self.query(
            "SELECT agent, ts, bars, state FROM checkpoints WHERE run_id = ? ORDER BY agent", run_id
        )
        return {r[0]: CheckpointRecord(r[0], int(r[1]), int(r[2]), bytes(r[3])) for r in rows}
