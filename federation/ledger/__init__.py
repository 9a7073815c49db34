"""The ledger: runs, agents, orders, fills, positions, cash, audit events, costs and agent checkpoints.

``open_ledger(url)`` picks the backend from the URL: an SQLite file (``sqlite:///path.db`` or a plain
path; the zero-setup default) or a PostgreSQL database (``postgresql://user@host:5432/db``, asyncpg,
pooled, versioned migrations). Both have the :class:`Ledger` interface and the same tables.
``open_buffered_ledger`` puts the write-behind buffer (:mod:`federation.ledger.buffer`) in front of
either: what a run writes while trading goes through it.
"""

from __future__ import annotations

from collections.abc import Callable

from federation.errors import ConfigError, LedgerError
from federation.ledger.base import Ledger
from federation.ledger.buffer import BufferedLedger, Outage, WriterReport, replay_unwritten
from federation.ledger.postgres import LedgerUnavailable, PostgresLedger, is_postgres_url, mask_url
from federation.ledger.records import (
    PORTFOLIO,
    AgentRecord,
    AllocationRecord,
    CashRecord,
    CheckpointRecord,
    CostRow,
    EventRecord,
    FillRecord,
    LedgerBatch,
    OrderRecord,
    OrderStatus,
    PositionRecord,
    RunRecord,
)
from federation.ledger.sqlite import SQLiteLedger, sqlite_path

__all__ = [
    "PORTFOLIO",
    "AgentRecord",
    "AllocationRecord",
    "BufferedLedger",
    "CashRecord",
    "CheckpointRecord",
    "CostRow",
    "EventRecord",
    "FillRecord",
    "Ledger",
    "LedgerBatch",
    "LedgerUnavailable",
    "OrderRecord",
    "OrderStatus",
    "Outage",
    "PositionRecord",
    "PostgresLedger",
    "RunRecord",
    "SQLiteLedger",
    "WriterReport",
    "absolute_ledger_url",
    "check_ledger_url",
    "is_postgres_url",
    "mask_url",
    "open_buffered_ledger",
    "open_ledger",
    "replay_unwritten",
]


def check_ledger_url(url: str) -> None:
    """Raise :class:`ConfigError` if ``url`` names no backend this version has."""
    if is_postgres_url(url):
        if not url.split("://", 1)[1].strip("/"):
            raise ConfigError(
                f"ledger {url!r} names no server; e.g. postgresql://user@127.0.0.1:5432/federation"
            )
        return
    if "://" in url and not url.startswith("sqlite:///"):
        raise ConfigError(
            f"ledger {mask_url(url)!r}: unknown scheme; use sqlite:///path/to/file.db (or a plain file "
            "path) or postgresql://user@host:5432/database"
        )
    if url.startswith("sqlite:///") and not url[len("sqlite:///") :]:
        raise ConfigError(f"ledger {url!r} has no file path; e.g. sqlite:///federation.db")


def absolute_ledger_url(url: str) -> str:
    """``url`` as every process can open it: an SQLite file path made absolute (processes with another
    working folder open the same file); a PostgreSQL URL as it is."""
    check_ledger_url(url)
    if is_postgres_url(url):
        return url
    return f"sqlite:///{sqlite_path(url).resolve()}"


def open_ledger(url: str, *, pool_size: int = 4, migrate: bool = True) -> Ledger:
    """Open (creating or upgrading the schema if needed) the ledger at ``url``. ``migrate=False`` (for
    reading) leaves a PostgreSQL schema as it is, so a read-only role can open it."""
    check_ledger_url(url)
    if is_postgres_url(url):
        try:
            return PostgresLedger(url, pool_size=pool_size, migrate=migrate)
        except LedgerUnavailable as exc:
            raise ConfigError(
                f"ledger {mask_url(url)!r}: cannot connect ({exc.__cause__ or exc}); check that the "
                "PostgreSQL server runs and that host, port, user and database are right"
            ) from None
        except LedgerError as exc:
            if exc.__cause__ is None:  # our own message (e.g. a newer schema) says what to do
                raise ConfigError(f"ledger {mask_url(url)!r}: {exc}") from None
            raise ConfigError(
                f"ledger {mask_url(url)!r}: {exc.__cause__}; check the user, password and database in the URL"
            ) from None
    try:
        return SQLiteLedger(sqlite_path(url))
    except LedgerError as exc:
        raise ConfigError(f"ledger {url!r}: {exc}; check the path or choose another file") from None


def open_buffered_ledger(
    url: str,
    *,
    writer: str,
    buffer_batches: int = 1000,
    merge_batches: int = 64,
    flush_timeout_s: float = 600.0,
    retry_initial_s: float = 0.05,
    retry_max_s: float = 2.0,
    pool_size: int = 4,
    on_outage: Callable[[Outage], None] | None = None,
) -> BufferedLedger:
    """The ledger at ``url`` behind a write-behind buffer (see :class:`BufferedLedger`); ``writer``
    names this process's writes (``supervisor``, ``execution``)."""
    check_ledger_url(url)

    def opener(u: str) -> Ledger:
        if is_postgres_url(u):
            return PostgresLedger(u, pool_size=pool_size)
        return SQLiteLedger(sqlite_path(u))

    return BufferedLedger(
        url,
        opener,
        reader=open_ledger(url, pool_size=pool_size),  # opened here: a bad ledger fails the run at once
        writer=writer,
        capacity=buffer_batches,
        merge_batches=merge_batches,
        flush_timeout_s=flush_timeout_s,
        retry_initial_s=retry_initial_s,
        retry_max_s=retry_max_s,
        on_outage=on_outage,
    )
