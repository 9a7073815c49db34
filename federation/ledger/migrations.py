"""Versioned schema migrations of the PostgreSQL ledger.

Each migration is applied once, in its own transaction, and recorded in ``schema_migrations``
(version, name, applied time). Opening a ledger applies the ones the database lacks, holding an advisory
lock so two processes starting at once do not race; a database recorded at a higher version than
:data:`LATEST` (written by a newer strategy-federation) is refused with a clear message, never altered.

Add a migration by appending to :data:`MIGRATIONS` (never edit one that was released). Money and
quantities are BIGINT counts of 1e-8 units (suffix ``_e8``), as in the SQLite ledger.

Indexes are few on purpose: every fill writes about ten rows (its allocations to agents, the order's),
and each index costs the write path. The primary keys lead with ``run_id``, so reading one run is an
index range scan; ``allocations_by_agent`` serves per-agent reports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, agents, orders, fills, positions, cash, events",
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, started_ns BIGINT NOT NULL, ended_ns BIGINT,
            status TEXT NOT NULL, config_json TEXT NOT NULL, capital_e8 BIGINT NOT NULL,
            currency TEXT NOT NULL, seed BIGINT NOT NULL, summary_json TEXT
        );
        CREATE TABLE agents (
            run_id TEXT NOT NULL REFERENCES runs(run_id), name TEXT NOT NULL, class_path TEXT NOT NULL,
            isolation TEXT NOT NULL, symbols_json TEXT NOT NULL, params_json TEXT NOT NULL,
            capital_e8 BIGINT NOT NULL, PRIMARY KEY (run_id, name)
        );
        CREATE TABLE orders (
            run_id TEXT NOT NULL REFERENCES runs(run_id), client_order_id TEXT NOT NULL,
            seq BIGINT NOT NULL, ts BIGINT NOT NULL, symbol TEXT NOT NULL,
            side TEXT NOT NULL CHECK (side IN ('buy', 'sell')), order_type TEXT NOT NULL,
            qty_e8 BIGINT NOT NULL CHECK (qty_e8 > 0), limit_price_e8 BIGINT, status TEXT NOT NULL,
            filled_qty_e8 BIGINT NOT NULL, reason_code TEXT, reason TEXT,
            PRIMARY KEY (run_id, client_order_id)
        );
        CREATE TABLE order_allocations (
            run_id TEXT NOT NULL, client_order_id TEXT NOT NULL, agent TEXT NOT NULL,
            qty_e8 BIGINT NOT NULL, PRIMARY KEY (run_id, client_order_id, agent)
        );
        CREATE TABLE fills (
            run_id TEXT NOT NULL REFERENCES runs(run_id), fill_id TEXT NOT NULL,
            client_order_id TEXT NOT NULL, ts BIGINT NOT NULL, symbol TEXT NOT NULL,
            qty_e8 BIGINT NOT NULL, price_e8 BIGINT NOT NULL, fee_e8 BIGINT NOT NULL,
            liquidity TEXT NOT NULL, PRIMARY KEY (run_id, fill_id)
        );
        CREATE TABLE fill_allocations (
            run_id TEXT NOT NULL, fill_id TEXT NOT NULL, agent TEXT NOT NULL, symbol TEXT NOT NULL,
            qty_e8 BIGINT NOT NULL, price_e8 BIGINT NOT NULL, fee_e8 BIGINT NOT NULL,
            PRIMARY KEY (run_id, fill_id, agent)
        );
        CREATE TABLE positions (
            run_id TEXT NOT NULL, account TEXT NOT NULL, symbol TEXT NOT NULL, qty_e8 BIGINT NOT NULL,
            avg_price_e8 BIGINT NOT NULL, realized_pnl_e8 BIGINT NOT NULL,
            PRIMARY KEY (run_id, account, symbol)
        );
        CREATE TABLE cash (
            run_id TEXT NOT NULL, account TEXT NOT NULL, balance_e8 BIGINT NOT NULL,
            PRIMARY KEY (run_id, account)
        );
        CREATE TABLE events (
            id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, ts BIGINT NOT NULL, kind TEXT NOT NULL,
            agent TEXT, code TEXT NOT NULL, message TEXT NOT NULL, detail_json TEXT NOT NULL
        );
        CREATE INDEX allocations_by_agent ON fill_allocations (run_id, agent);
        CREATE INDEX events_by_run ON events (run_id, kind);
        """,
    ),
    Migration(
        2,
        "budget_usage (cost report) and controls (kill switch requests)",
        """
        CREATE TABLE budget_usage (
            id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
            usage_e8 BIGINT NOT NULL, cost_e8 BIGINT NOT NULL, budget_e8 BIGINT, period TEXT,
            peak_period_usage_e8 BIGINT, remaining_e8 BIGINT, reservations BIGINT NOT NULL,
            refusals BIGINT NOT NULL, actions_json TEXT NOT NULL, state TEXT NOT NULL
        );
        CREATE INDEX budget_usage_by_run ON budget_usage (run_id, agent);
        CREATE TABLE controls (
            id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, requested_ns BIGINT NOT NULL,
            command TEXT NOT NULL, reason TEXT NOT NULL, handled_ns BIGINT
        );
        """,
    ),
    Migration(
        3,
        "ledger_writes: the write-behind buffer's batch tokens (a retried batch is applied once)",
        """
        CREATE TABLE ledger_writes (
            writer TEXT NOT NULL, seq BIGINT NOT NULL, written_ns BIGINT NOT NULL,
            PRIMARY KEY (writer, seq)
        );
        """,
    ),
    Migration(
        4,
        "checkpoints: each agent's latest state (restored after its process is restarted)",
        """
        CREATE TABLE checkpoints (
            run_id TEXT NOT NULL, agent TEXT NOT NULL, ts BIGINT NOT NULL, bars BIGINT NOT NULL,
            state BYTEA NOT NULL, PRIMARY KEY (run_id, agent)
        );
        """,
    ),
)

LATEST = MIGRATIONS[-1].version

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

LOCK_KEY = 0x5F3D_2A11
"""``pg_advisory_xact_lock`` key held while migrating (one process migrates, the others wait)."""
