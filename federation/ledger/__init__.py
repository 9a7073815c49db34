"""The ledger: runs, agents, orders, fills, positions, cash and audit events.

``open_ledger(url)`` picks the backend from the URL. Built: SQLite (the zero-setup default). The PostgreSQL
ledger is not built yet (planned: asyncpg backend behind the same interface).
"""

from __future__ import annotations

from federation.errors import ConfigError, LedgerError
from federation.ledger.base import Ledger
from federation.ledger.records import (
    PORTFOLIO,
    AgentRecord,
    AllocationRecord,
    CashRecord,
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
    "CashRecord",
    "CostRow",
    "EventRecord",
    "FillRecord",
    "Ledger",
    "LedgerBatch",
    "OrderRecord",
    "OrderStatus",
    "PositionRecord",
    "RunRecord",
    "SQLiteLedger",
    "absolute_ledger_url",
    "check_ledger_url",
    "open_ledger",
]


def check_ledger_url(url: str) -> None:
    """Raise :class:`ConfigError` if ``url`` names no backend this version has."""
    if url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"ledger {url!r}: the PostgreSQL ledger is not built in this version; use an SQLite file, "
            "e.g. --ledger sqlite:///runs/federation.db"
        )
    if "://" in url and not url.startswith("sqlite:///"):
        raise ConfigError(
            f"ledger {url!r}: unknown scheme; use sqlite:///path/to/file.db (or a plain file path)"
        )
    if url.startswith("sqlite:///") and not url[len("sqlite:///") :]:
        raise ConfigError(f"ledger {url!r} has no file path; e.g. sqlite:///federation.db")


def absolute_ledger_url(url: str) -> str:
    """``url`` with its file path made absolute (processes with another working folder open the same file)."""
    check_ledger_url(url)
    return f"sqlite:///{sqlite_path(url).resolve()}"


def open_ledger(url: str) -> SQLiteLedger:
    """Open (creating if needed) the ledger at ``url``."""
    check_ledger_url(url)
    try:
        return SQLiteLedger(sqlite_path(url))
    except LedgerError as exc:
        raise ConfigError(f"ledger {url!r}: {exc}; check the path or choose another file") from None
