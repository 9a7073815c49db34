"""The embedded SQLite ledger (stdlib ``sqlite3``, WAL mode).

Money and quantities are INTEGER columns in 1e-8 units (suffix ``_e8``), never floats. Each
:class:`LedgerBatch` is one transaction, so an interrupted run leaves the file at the last whole batch.
Several processes may write one file (the driver: runs, agents, events; the execution actor: orders,
fills, positions, cash); each write takes SQLite's write lock for the length of one batch.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from federation.errors import LedgerError
from federation.ledger.reading import LedgerReads
from federation.ledger.records import (
    AgentRecord,
    CostRow,
    LedgerBatch,
    RunRecord,
    allocation_row,
    cash_row,
    checkpoint_row,
    cost_row_values,
    event_row,
    fill_row,
    order_allocation_rows,
    order_row,
    position_row,
)
from federation.money import to_e8

SCHEMA_VERSION = 3
"""2: budget_usage (cost report per agent and meter) and controls (kill switch requests); 3: checkpoints
(each agent's latest state)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_ns INTEGER NOT NULL, ended_ns INTEGER,
    status TEXT NOT NULL, config_json TEXT NOT NULL, capital_e8 INTEGER NOT NULL,
    currency TEXT NOT NULL, seed INTEGER NOT NULL, summary_json TEXT
);
CREATE TABLE IF NOT EXISTS agents (
    run_id TEXT NOT NULL REFERENCES runs(run_id), name TEXT NOT NULL, class_path TEXT NOT NULL,
    isolation TEXT NOT NULL, symbols_json TEXT NOT NULL, params_json TEXT NOT NULL,
    capital_e8 INTEGER NOT NULL, PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS orders (
    run_id TEXT NOT NULL REFERENCES runs(run_id), client_order_id TEXT NOT NULL, seq INTEGER NOT NULL,
    ts INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type TEXT NOT NULL, qty_e8 INTEGER NOT NULL CHECK (qty_e8 > 0), limit_price_e8 INTEGER,
    status TEXT NOT NULL, filled_qty_e8 INTEGER NOT NULL, reason_code TEXT, reason TEXT,
    PRIMARY KEY (run_id, client_order_id)
);
CREATE TABLE IF NOT EXISTS order_allocations (
    run_id TEXT NOT NULL, client_order_id TEXT NOT NULL, agent TEXT NOT NULL, qty_e8 INTEGER NOT NULL,
    PRIMARY KEY (run_id, client_order_id, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fills (
    run_id TEXT NOT NULL REFERENCES runs(run_id), fill_id TEXT NOT NULL, client_order_id TEXT NOT NULL,
    ts INTEGER NOT NULL, symbol TEXT NOT NULL, qty_e8 INTEGER NOT NULL, price_e8 INTEGER NOT NULL,
    fee_e8 INTEGER NOT NULL, liquidity TEXT NOT NULL, PRIMARY KEY (run_id, fill_id)
);
CREATE TABLE IF NOT EXISTS fill_allocations (
    run_id TEXT NOT NULL, fill_id TEXT NOT NULL, agent TEXT NOT NULL, symbol TEXT NOT NULL,
    qty_e8 INTEGER NOT NULL, price_e8 INTEGER NOT NULL, fee_e8 INTEGER NOT NULL,
    PRIMARY KEY (run_id, fill_id, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
    run_id TEXT NOT NULL, account TEXT NOT NULL, symbol TEXT NOT NULL, qty_e8 INTEGER NOT NULL,
    avg_price_e8 INTEGER NOT NULL, realized_pnl_e8 INTEGER NOT NULL,
    PRIMARY KEY (run_id, account, symbol)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cash (
    run_id TEXT NOT NULL, account TEXT NOT NULL, balance_e8 INTEGER NOT NULL,
    PRIMARY KEY (run_id, account)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts INTEGER NOT NULL, kind TEXT NOT NULL,
    agent TEXT, code TEXT NOT NULL, message TEXT NOT NULL, detail_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
    usage_e8 INTEGER NOT NULL, cost_e8 INTEGER NOT NULL, budget_e8 INTEGER, period TEXT,
    peak_period_usage_e8 INTEGER, remaining_e8 INTEGER, reservations INTEGER NOT NULL,
    refusals INTEGER NOT NULL, actions_json TEXT NOT NULL, state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_usage_by_run ON budget_usage (run_id, agent);
CREATE TABLE IF NOT EXISTS controls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, requested_ns INTEGER NOT NULL,
    command TEXT NOT NULL, reason TEXT NOT NULL, handled_ns INTEGER
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL, agent TEXT NOT NULL, ts INTEGER NOT NULL, bars INTEGER NOT NULL,
    state BLOB NOT NULL, PRIMARY KEY (run_id, agent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fills_by_symbol ON fills (run_id, symbol);
CREATE INDEX IF NOT EXISTS allocations_by_agent ON fill_allocations (run_id, agent);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, kind);
"""


CHECKPOINT_UPSERT = """
INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)
ON CONFLICT (run_id, agent) DO UPDATE SET ts = excluded.ts, bars = excluded.bars, state = excluded.state
WHERE excluded.ts >= checkpoints.ts
"""
"""One row per agent and run: a checkpoint replaces the agent's previous one, unless that one is of a
later bar (a batch replayed late never takes an agent back)."""


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel.db`` (relative to the working folder), ``sqlite:////abs.db`` or a plain path."""
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :]
    elif "://" in url:
        raise LedgerError(f"ledger URL {url!r} is not an SQLite URL")
    else:
        rest = url
    if not rest or rest == ":memory:":
        raise LedgerError(
            f"ledger URL {url!r} has no file path; use sqlite:///runs.db (several processes share it)"
        )
    return Path(rest)


class SQLiteLedger(LedgerReads):
    """Ledger in one SQLite file. Open one per process; all writes are whole transactions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
            with self._transaction():
                row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
                if row[0] is None or row[0] < SCHEMA_VERSION:  # older files gained tables above
                    self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                elif row[0] > SCHEMA_VERSION:
                    raise LedgerError(
                        f"ledger {self.path} has schema version {row[0]}, newer than this code's "
                        f"{SCHEMA_VERSION}; upgrade strategy-federation or use another ledger file"
                    )
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"cannot open SQLite ledger {self.path}: {exc}") from exc

    # ------------------------------------------------------------------------------------------- writes
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def begin_run(self, run: RunRecord, agents: list[AgentRecord]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, started_ns, status, config_json, capital_e8, currency, seed) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (run.run_id, run.started_ns, run.config_json, to_e8(run.capital), run.currency, run.seed),
            )
            db.executemany(
                "INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run.run_id,
                        a.name,
                        a.class_path,
                        a.isolation,
                        json.dumps(list(a.symbols)),
                        a.params_json,
                        to_e8(a.capital),
                    )
                    for a in agents
                ],
            )

    def write(self, run_id: str, batch: LedgerBatch) -> None:
        """Write a batch in one transaction (all of it or nothing)."""
        if not batch:
            return
        try:
            with self._transaction() as db:
                self._write(db, run_id, batch)
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: write failed, batch rolled back: {exc}") from exc

    @staticmethod
    def _write(db: sqlite3.Connection, run_id: str, batch: LedgerBatch) -> None:
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, client_order_id) DO UPDATE SET status = excluded.status, "
            "filled_qty_e8 = excluded.filled_qty_e8, reason_code = excluded.reason_code, "
            "reason = excluded.reason",
            [(run_id, *order_row(o)) for o in batch.orders],
        )
        db.executemany(
            "INSERT OR IGNORE INTO order_allocations VALUES (?, ?, ?, ?)",
            [(run_id, *r) for o in batch.orders for r in order_allocation_rows(o)],
        )
        db.executemany(
            "INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(run_id, *fill_row(f)) for f in batch.fills],
        )
        db.executemany(
            "INSERT INTO fill_allocations VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(run_id, *allocation_row(a)) for a in batch.allocations],
        )
        db.executemany(
            "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?, ?)",
            [(run_id, *position_row(p)) for p in batch.positions],
        )
        db.executemany(
            "INSERT OR REPLACE INTO cash VALUES (?, ?, ?)", [(run_id, *cash_row(c)) for c in batch.cash]
        )
        db.executemany(
            "INSERT INTO events (run_id, ts, kind, agent, code, message, detail_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(run_id, *event_row(e)) for e in batch.events],
        )
        db.executemany(CHECKPOINT_UPSERT, [(run_id, *checkpoint_row(c)) for c in batch.checkpoints])

    def write_costs(self, run_id: str, rows: Sequence[CostRow]) -> None:
        """Record (replace) the run's cost report: one row per agent and meter or money budget."""

        with self._transaction() as db:
            db.execute("DELETE FROM budget_usage WHERE run_id = ?", (run_id,))
            db.executemany(
                "INSERT INTO budget_usage (run_id, agent, kind, usage_e8, cost_e8, budget_e8, period, "
                "peak_period_usage_e8, remaining_e8, reservations, refusals, actions_json, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [cost_row_values(run_id, r) for r in rows],
            )

    def request_halt(self, run_id: str, reason: str) -> None:
        """Ask the supervisor of ``run_id`` (any process) to halt: it polls these requests every step."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO controls (run_id, requested_ns, command, reason) VALUES (?, ?, 'halt', ?)",
                (run_id, time.time_ns(), reason),
            )

    def pending_halt(self, run_id: str) -> str | None:
        """The reason of an unhandled halt request for ``run_id`` (marked handled), or None."""
        row = self._db.execute(
            "SELECT id, reason FROM controls WHERE run_id = ? AND command = 'halt' AND handled_ns IS NULL "
            "ORDER BY id LIMIT 1",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        with self._transaction() as db:
            db.execute("UPDATE controls SET handled_ns = ? WHERE id = ?", (time.time_ns(), row[0]))
        return str(row[1])

    def end_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, ended_ns = ?, summary_json = ? WHERE run_id = ?",
                (status, time.time_ns(), json.dumps(summary, default=str), run_id),
            )

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------------------------------ queries
    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read-only SQL for reports and tests (see the schema in this module)."""
        return list(self._db.execute(sql, args).fetchall())
