"""The PostgreSQL ledger (asyncpg, pooled): the same interface and schema as the SQLite one.

Select it by URL: ``ledger = "postgresql://user@host:5432/db"`` (``postgres://`` too). Query parameters
are passed to the server as settings, e.g. ``?search_path=team_a`` keeps a ledger in its own schema.
The schema is created and upgraded by :mod:`federation.ledger.migrations` when the ledger opens.

The interface is synchronous, like the SQLite ledger's: one private event loop thread runs asyncpg and
each call waits for its result. Writes:

- a :class:`LedgerBatch` is one transaction, so a fill and the position and cash it changed (and the
  agent checkpoints taken with them) are committed together; rows go in with one
  ``INSERT ... SELECT FROM unnest(...)`` per table (a round trip per table, not per row), orders,
  positions, cash and checkpoints as upserts;
- a write may carry a *token* ``(writer, seq)``, recorded in ``ledger_writes`` in the same
  transaction: a batch retried after a commit whose answer was lost (the server went away) is applied
  once, never twice.

Errors: a lost or refused connection (server down, restarting, unreachable, too many clients) raises
:class:`LedgerUnavailable`, which the write-behind buffer (:mod:`federation.ledger.buffer`) retries;
anything else raises :class:`LedgerError` with the ledger's URL (password masked).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from federation.errors import LedgerError
from federation.ledger.migrations import BOOKKEEPING, LATEST, LOCK_KEY, MIGRATIONS
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

# asyncpg's pool logs a traceback each time it fails to reconnect; during a database outage that is one
# per retry. The write-behind buffer reports outages itself (ledger_outage events, the run summary).
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

T = TypeVar("T")
_TRANSIENT_STATES = ("08", "57P", "53300", "25006", "57014")
"""SQLSTATEs that pass: a connection lost (08), a server shutting down or starting (57P), too many
clients, a read-only server (a standby during a failover: 25006), a statement cancelled by an operator
(57014)."""


class LedgerUnavailable(LedgerError):
    """The database cannot be reached right now (down, restarting, unreachable): try again later."""


def mask_url(url: str) -> str:
    """``url`` with its password (in the address or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    if "password=" in parts.query:
        parts = parts._replace(query=re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query))
    return urlunsplit(parts)


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _transient(exc: BaseException) -> bool:
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.InternalClientError,  # e.g. no host of a multi-host URL is primary yet
    ):
        return True
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and "closed" in str(exc):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_TRANSIENT_STATES)


def _placeholders(sql: str) -> str:
    """``?`` placeholders (the SQLite style, used on every backend) -> ``$1, $2, ...``."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", number, sql)


_ORDERS_UPSERT = """
INSERT INTO orders SELECT $1, * FROM unnest(
    $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::bigint[],
    $9::bigint[], $10::text[], $11::bigint[], $12::text[], $13::text[])
ON CONFLICT (run_id, client_order_id) DO UPDATE SET status = excluded.status,
    filled_qty_e8 = excluded.filled_qty_e8, reason_code = excluded.reason_code, reason = excluded.reason
"""
_ORDER_ALLOCATION_COLUMNS = ("run_id", "client_order_id", "agent", "qty_e8")
_FILL_COLUMNS = (
    "run_id", "fill_id", "client_order_id", "ts", "symbol", "qty_e8", "price_e8", "fee_e8", "liquidity",
)  # fmt: skip
_FILL_ALLOCATION_COLUMNS = ("run_id", "fill_id", "agent", "symbol", "qty_e8", "price_e8", "fee_e8")
_EVENT_COLUMNS = ("run_id", "ts", "kind", "agent", "code", "message", "detail_json")
_POSITIONS = """
INSERT INTO positions SELECT $1, * FROM unnest(
    $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
ON CONFLICT (run_id, account, symbol) DO UPDATE SET qty_e8 = excluded.qty_e8,
    avg_price_e8 = excluded.avg_price_e8, realized_pnl_e8 = excluded.realized_pnl_e8
"""
_CHECKPOINTS = """
INSERT INTO checkpoints AS c SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bytea[])
ON CONFLICT (run_id, agent) DO UPDATE SET ts = excluded.ts, bars = excluded.bars, state = excluded.state
WHERE excluded.ts >= c.ts
"""
_CASH = """
INSERT INTO cash SELECT $1, * FROM unnest($2::text[], $3::bigint[])
ON CONFLICT (run_id, account) DO UPDATE SET balance_e8 = excluded.balance_e8
"""


def _text(value: str) -> str:
    """Text PostgreSQL accepts: NUL characters (which it refuses, and SQLite stores) and unpaired
    surrogates written as escapes. Events quote outside input (a bad feed entry), so they may hold any."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _last_per_key(rows: list[tuple[Any, ...]], key_width: int) -> list[tuple[Any, ...]]:
    """One row per key (its first ``key_width`` fields), the last written: an upsert may not touch a
    row twice in one statement."""
    return list({row[:key_width]: row for row in rows}.values())


class PostgresLedger(LedgerReads):
    """Ledger in a PostgreSQL database. Open one per process; every write is a whole transaction."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 60.0,
        migrate: bool = True,
    ) -> None:
        if not is_postgres_url(url):
            raise LedgerError(f"ledger URL {mask_url(url)!r} is not a postgresql:// URL")
        self.url = mask_url(url)
        self._dsn = "postgresql://" + url.split("://", 1)[1]
        self._timeout = connect_timeout_s + command_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ledger-postgres", daemon=True)
        self._thread.start()
        self._pool: asyncpg.Pool | None = None
        try:
            self._pool = self._call(self._open_pool(pool_size, connect_timeout_s, command_timeout_s))
            self._call(self._migrate(apply=migrate))
        except BaseException:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                self._loop.call_soon_threadsafe(pool.terminate)
            self._stop_loop()
            raise

    # ------------------------------------------------------------------------------------------ plumbing
    def _call(self, work: Awaitable[T], timeout: float | None = None) -> T:
        async def wrapped() -> T:
            return await work

        future = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        try:
            return future.result(timeout or self._timeout)
        except LedgerError:
            raise
        except (
            asyncpg.PostgresError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.InternalClientError,
            OSError,
            TimeoutError,
        ) as exc:
            future.cancel()
            if _transient(exc):
                raise LedgerUnavailable(
                    f"PostgreSQL ledger {self.url} is unavailable ({type(exc).__name__}: {exc})"
                ) from exc
            raise LedgerError(f"PostgreSQL ledger {self.url}: {type(exc).__name__}: {exc}") from exc

    async def _open_pool(self, size: int, connect_s: float, command_s: float) -> asyncpg.Pool:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=size, timeout=connect_s, command_timeout=command_s
        )
        return pool

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._call(coro)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise LedgerError(f"PostgreSQL ledger {self.url} is closed")
        return self._pool

    async def _migrate(self, *, apply: bool) -> None:
        """Apply the migrations the database lacks (under an advisory lock), or with ``apply=False`` only
        check that it is not newer. An up-to-date database is only read (read-only roles can open it)."""
        async with self.pool.acquire() as conn:
            newest = 0
            if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
                newest = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
            self._refuse_newer(newest)
            if newest == LATEST or not apply:
                return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await conn.execute(BOOKKEEPING)
            applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            self._refuse_newer(max(applied, default=0))
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )

    def _refuse_newer(self, version: int) -> None:
        if version > LATEST:
            raise LedgerError(
                f"PostgreSQL ledger {self.url} has schema version {version}, newer than this code's "
                f"{LATEST} (it was written by a newer strategy-federation); upgrade strategy-federation "
                "or use another database or schema"
            )

    def schema_version(self) -> int:
        """The newest migration applied to the database."""
        version: int = self._run(self.pool.fetchval("SELECT max(version) FROM schema_migrations"))
        return version

    # -------------------------------------------------------------------------------------------- writes
    def begin_run(self, run: RunRecord, agents: list[AgentRecord]) -> None:
        async def go() -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO runs (run_id, started_ns, status, config_json, capital_e8, currency, seed) "
                    "VALUES ($1, $2, 'running', $3, $4, $5, $6)",
                    run.run_id,
                    run.started_ns,
                    run.config_json,
                    to_e8(run.capital),
                    run.currency,
                    run.seed,
                )
                await conn.executemany(
                    "INSERT INTO agents VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

        self._run(go())

    def write(self, run_id: str, batch: LedgerBatch) -> None:
        """Write a batch in one transaction (all of it or nothing)."""
        if batch:
            try:
                self._run(self._write(run_id, batch, None))
            except LedgerUnavailable:
                raise
            except LedgerError as exc:
                raise LedgerError(f"{exc}; the batch was rolled back (nothing of it was written)") from exc

    def write_once(self, run_id: str, batch: LedgerBatch, token: tuple[str, int]) -> bool:
        """Write a batch in one transaction unless a batch with this ``token`` (writer, sequence number)
        was committed already; returns False when it was (a retry after a commit whose answer was lost)."""
        return self._run(self._write(run_id, batch, token))

    async def _write(self, run_id: str, batch: LedgerBatch, token: tuple[str, int] | None) -> bool:
        # An upsert may not touch a row twice in one statement: the last of each key is kept.
        orders = _last_per_key([order_row(o) for o in batch.orders], 1)
        order_allocs = _last_per_key([r for o in batch.orders for r in order_allocation_rows(o)], 2)
        fills = [fill_row(f) for f in batch.fills]
        allocs = [allocation_row(a) for a in batch.allocations]
        positions = _last_per_key([position_row(p) for p in batch.positions], 2)
        cash = _last_per_key([cash_row(c) for c in batch.cash], 1)
        checkpoints = _last_per_key([checkpoint_row(c) for c in batch.checkpoints], 1)
        events = [
            (ts, _text(kind), None if agent is None else _text(agent), _text(code), _text(msg), _text(detail))
            for ts, kind, agent, code, msg, detail in map(event_row, batch.events)
        ]
        async with self.pool.acquire() as conn, conn.transaction():
            if token is not None:
                fresh = await conn.fetchval(
                    "INSERT INTO ledger_writes VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
                    token[0],
                    token[1],
                    time.time_ns(),
                )
                if fresh is None:
                    return False
            for sql, rows, width in (
                (_ORDERS_UPSERT, orders, 12),
                (_POSITIONS, positions, 5),
                (_CASH, cash, 2),
                (_CHECKPOINTS, checkpoints, 4),
            ):
                if rows:
                    await conn.execute(sql, run_id, *_columns(rows, width))
            # Rows that are only ever inserted go in with COPY (binary; several times faster).
            for table, rows, columns in (
                ("order_allocations", order_allocs, _ORDER_ALLOCATION_COLUMNS),
                ("fills", fills, _FILL_COLUMNS),
                ("fill_allocations", allocs, _FILL_ALLOCATION_COLUMNS),
                ("events", events, _EVENT_COLUMNS),
            ):
                if rows:
                    await conn.copy_records_to_table(
                        table, records=[(run_id, *r) for r in rows], columns=columns
                    )
        return True

    def write_costs(self, run_id: str, rows: Sequence[CostRow]) -> None:
        """Record (replace) the run's cost report: one row per agent and meter or money budget."""

        async def go() -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("DELETE FROM budget_usage WHERE run_id = $1", run_id)
                await conn.executemany(
                    "INSERT INTO budget_usage (run_id, agent, kind, usage_e8, cost_e8, budget_e8, period, "
                    "peak_period_usage_e8, remaining_e8, reservations, refusals, actions_json, state) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    [cost_row_values(run_id, r) for r in rows],
                )

        self._run(go())

    def request_halt(self, run_id: str, reason: str) -> None:
        self._run(
            self.pool.execute(
                "INSERT INTO controls (run_id, requested_ns, command, reason) VALUES ($1, $2, 'halt', $3)",
                run_id,
                time.time_ns(),
                reason,
            )
        )

    def pending_halt(self, run_id: str) -> str | None:
        """The reason of an unhandled halt request for ``run_id`` (marked handled), or None."""
        reason: str | None = self._run(
            self.pool.fetchval(
                "UPDATE controls SET handled_ns = $2 WHERE id = (SELECT id FROM controls WHERE run_id = $1 "
                "AND command = 'halt' AND handled_ns IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING reason",
                run_id,
                time.time_ns(),
            )
        )
        return reason

    def end_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        self._run(
            self.pool.execute(
                "UPDATE runs SET status = $1, ended_ns = $2, summary_json = $3 WHERE run_id = $4",
                status,
                time.time_ns(),
                json.dumps(summary, default=str),
                run_id,
            )
        )

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                self._call(asyncio.wait_for(pool.close(), 5.0))
            except (LedgerError, TimeoutError):
                pool.terminate()
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)
        if not self._loop.is_running():
            self._loop.close()

    # ----------------------------------------------------------------------------------------- queries
    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read-only SQL for reports and tests; placeholders are ``?`` (as in the SQLite ledger). Every
        ``?`` becomes ``$n``, also one inside a string literal: pass such values as arguments."""
        rows = self._run(self.pool.fetch(_placeholders(sql), *args))
        return [tuple(r) for r in rows]
