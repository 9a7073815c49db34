"""SQLite ledger: URLs, atomic batches, schema version, exact money."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from federation.errors import ConfigError, LedgerError
from federation.ledger import (
    CashRecord,
    EventRecord,
    FillRecord,
    LedgerBatch,
    RunRecord,
    SQLiteLedger,
    check_ledger_url,
    open_ledger,
)
from federation.ledger.sqlite import SCHEMA_VERSION, sqlite_path


def test_urls() -> None:
    assert sqlite_path("sqlite:///runs/a.db") == Path("runs/a.db")
    assert sqlite_path("sqlite:////abs/a.db") == Path("/abs/a.db")
    assert sqlite_path("plain.db") == Path("plain.db")
    with pytest.raises(LedgerError, match="no file path"):
        sqlite_path("sqlite:///:memory:")
    with pytest.raises(ConfigError, match="PostgreSQL ledger is not built"):
        check_ledger_url("postgresql://u@localhost/db")
    with pytest.raises(ConfigError, match="unknown scheme"):
        check_ledger_url("mysql://x")


def _run(ledger: SQLiteLedger) -> None:
    ledger.begin_run(RunRecord("r", 1, "{}", Decimal("1000.5"), "USD", 0), [])


def test_batch_is_atomic(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    _run(ledger)
    fill = FillRecord("f1", "o1", 1, "AAA", Decimal("1.5"), Decimal("100.12345678"), Decimal("0.01"), "taker")
    ledger.write("r", LedgerBatch(fills=[fill], cash=[CashRecord("a", Decimal("5"))]))
    # the second batch repeats a fill id: nothing of it may land, not even its cash row
    bad = LedgerBatch(
        cash=[CashRecord("a", Decimal("999"))],
        events=[EventRecord(1, "x", "y", "z")],
        fills=[fill],
    )
    with pytest.raises(LedgerError, match="rolled back"):
        ledger.write("r", bad)
    assert ledger.cash("r", "a") == Decimal("5")
    assert ledger.events("r") == []
    assert ledger.fills("r") == [fill], "Decimal values round-trip exactly"


def test_money_is_stored_as_integers(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    _run(ledger)
    ledger.write("r", LedgerBatch(cash=[CashRecord("a", Decimal("0.1") + Decimal("0.2"))]))
    ((kind, value),) = ledger.query("SELECT typeof(balance_e8), balance_e8 FROM cash")
    assert kind == "integer" and value == 30_000_000


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SQLiteLedger(tmp_path / "l.db").close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerError, match="newer than this code"):
        SQLiteLedger(tmp_path / "l.db")


def test_end_run_records_status_and_summary(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    _run(ledger)
    assert ledger.run_status("r") == "running"
    ledger.end_run("r", "interrupted", {"a": 1})
    assert ledger.run_status("r") == "interrupted"
    assert ledger.runs()[0]["run_id"] == "r"


def test_a_file_that_is_not_a_ledger_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello " * 100)
    with pytest.raises(ConfigError, match=r"notes\.txt.*check the path"):
        open_ledger(f"sqlite:///{tmp_path / 'notes.txt'}")
    with pytest.raises(ConfigError, match="cannot open"):
        open_ledger("sqlite:////proc/nonexistent/x.db")
