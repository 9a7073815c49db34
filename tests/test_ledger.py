"""Both ledgers (SQLite and a real PostgreSQL): URLs, atomic batches, schema versions, exact money,
queries. Every test of the shared interface runs on both backends."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from federation.errors import ConfigError, LedgerError
from federation.ledger import (
    AgentRecord,
    AllocationRecord,
    CashRecord,
    CostRow,
    EventRecord,
    FillRecord,
    Ledger,
    LedgerBatch,
    OrderRecord,
    PositionRecord,
    PostgresLedger,
    RunRecord,
    SQLiteLedger,
    check_ledger_url,
    mask_url,
    open_ledger,
)
from federation.ledger.migrations import LATEST, MIGRATIONS
from federation.ledger.sqlite import SCHEMA_VERSION, sqlite_path
from federation.run_control import find_run, open_existing_ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'l.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_ledger(url)
    yield opened
    opened.close()


def test_urls() -> None:
    assert sqlite_path("sqlite:///runs/a.db") == Path("runs/a.db")
    assert sqlite_path("sqlite:////abs/a.db") == Path("/abs/a.db")
    assert sqlite_path("plain.db") == Path("plain.db")
    with pytest.raises(LedgerError, match="no file path"):
        sqlite_path("sqlite:///:memory:")
    check_ledger_url("postgresql://u@localhost/db")
    check_ledger_url("postgres://u@localhost:5433/db?search_path=x")
    with pytest.raises(ConfigError, match="names no server"):
        check_ledger_url("postgresql://")
    with pytest.raises(ConfigError, match="unknown scheme"):
        check_ledger_url("mysql://x")
    assert mask_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"


def _run(ledger: Ledger) -> None:
    ledger.begin_run(
        RunRecord("r", 1, "{}", Decimal("1000.5"), "USD", 0),
        [AgentRecord("a", "m.A", "actor", ("AAA",), "{}", Decimal("1000.5"))],
    )


FILL = FillRecord("f1", "o1", 1, "AAA", Decimal("1.5"), Decimal("100.12345678"), Decimal("0.01"), "taker")


def test_batch_is_atomic(ledger: Ledger) -> None:
    _run(ledger)
    ledger.write("r", LedgerBatch(fills=[FILL], cash=[CashRecord("a", Decimal("5"))]))
    # the second batch repeats a fill id: nothing of it may land, not even its cash row
    bad = LedgerBatch(
        cash=[CashRecord("a", Decimal("999"))],
        events=[EventRecord(1, "x", "y", "z")],
        fills=[FILL],
    )
    with pytest.raises(LedgerError, match="rolled back"):
        ledger.write("r", bad)
    assert ledger.cash("r", "a") == Decimal("5")
    assert ledger.events("r") == []
    assert ledger.fills("r") == [FILL], "Decimal values round-trip exactly"


def test_orders_positions_and_events_round_trip(ledger: Ledger) -> None:
    _run(ledger)
    submitted = OrderRecord(
        "o1", 1, 10, "AAA", "buy", "limit", Decimal("2"), Decimal("99.5"), "submitted",
        allocations=(("a", Decimal("2")),),
    )  # fmt: skip
    filled = OrderRecord(
        "o1", 1, 10, "AAA", "buy", "limit", Decimal("2"), Decimal("99.5"), "filled", Decimal("2"),
        allocations=(("a", Decimal("2")),),
    )  # fmt: skip
    denied = OrderRecord(
        "o2", 2, 11, "AAA", "sell", "market", Decimal("7"), None, "denied", Decimal(0),
        "max_position", "agent a: position 9 > 5",
    )  # fmt: skip
    # one batch holds an order twice (submitted, then filled) and a position twice: the last wins
    ledger.write(
        "r",
        LedgerBatch(
            orders=[submitted, filled, denied],
            fills=[FILL],
            allocations=[AllocationRecord("f1", "a", "AAA", Decimal("1.5"), FILL.price, FILL.fee)],
            positions=[
                PositionRecord("a", "AAA", Decimal("1"), Decimal("1"), Decimal(0)),
                PositionRecord("a", "AAA", Decimal("1.5"), Decimal("100.12345678"), Decimal("-0.01")),
            ],
            cash=[CashRecord("a", Decimal("849.8"))],
            events=[EventRecord(11, "risk_denial", "max_position", "too big", "a", {"limit": "5"})],
        ),
    )
    orders = ledger.orders("r")
    assert [(o.client_order_id, o.status) for o in orders] == [("o1", "filled"), ("o2", "denied")]
    assert orders[0].filled_quantity == Decimal("2") and orders[0].limit_price == Decimal("99.5")
    assert orders[1].reason_code == "max_position" and orders[1].reason == "agent a: position 9 > 5"
    assert ledger.positions("r", "a") == {"AAA": Decimal("1.5")}
    assert ledger.cash("r", "a") == Decimal("849.8")
    assert ledger.events("r", "risk_denial")[0]["detail"] == {"limit": "5"}
    assert ledger.events("r", "other") == []
    ((n,),) = ledger.query("SELECT COUNT(*) FROM order_allocations WHERE run_id = ?", "r")
    assert n == 1


def test_costs_halts_and_summary(ledger: Ledger) -> None:
    _run(ledger)
    row = CostRow(
        "a", "api_calls", Decimal("40"), Decimal("0.4"), Decimal("40"), "run", Decimal("40"),
        Decimal("0"), 41, 1, {"suspend": 1}, "suspended",
    )  # fmt: skip
    ledger.write_costs("r", [row])
    ledger.write_costs("r", [row])  # replaced, not added
    assert ledger.costs("r") == [row]
    assert ledger.pending_halt("r") is None
    ledger.request_halt("r", "drill")
    assert ledger.pending_halt("r") == "drill"
    assert ledger.pending_halt("r") is None, "a request is handled once"
    assert ledger.run_status("r") == "running" and ledger.summary("r") is None
    ledger.end_run("r", "interrupted", {"a": 1})
    assert ledger.run_status("r") == "interrupted" and ledger.summary("r") == {"a": 1}
    assert ledger.runs()[0]["run_id"] == "r"


def test_money_is_stored_as_integers(ledger: Ledger) -> None:
    _run(ledger)
    ledger.write("r", LedgerBatch(cash=[CashRecord("a", Decimal("0.1") + Decimal("0.2"))]))
    ((value,),) = ledger.query("SELECT balance_e8 FROM cash WHERE account = ?", "a")
    assert value == 30_000_000 and isinstance(value, int)
    assert ledger.cash("r", "a") == Decimal("0.3")


def test_sqlite_columns_are_integers(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    _run(ledger)
    ledger.write("r", LedgerBatch(cash=[CashRecord("a", Decimal("0.3"))]))
    ((kind,),) = ledger.query("SELECT typeof(balance_e8) FROM cash")
    assert kind == "integer"


def test_newer_sqlite_schema_is_refused(tmp_path: Path) -> None:
    SQLiteLedger(tmp_path / "l.db").close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerError, match="newer than this code"):
        SQLiteLedger(tmp_path / "l.db")


def test_a_file_that_is_not_a_ledger_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello " * 100)
    with pytest.raises(ConfigError, match=r"notes\.txt.*check the path"):
        open_ledger(f"sqlite:///{tmp_path / 'notes.txt'}")
    with pytest.raises(ConfigError, match="cannot open"):
        open_ledger("sqlite:////proc/nonexistent/x.db")


# -------------------------------------------------------------------------------------- PostgreSQL only
def test_migrations_are_recorded_and_idempotent(postgres_url: str) -> None:
    first = PostgresLedger(postgres_url)
    assert first.schema_version() == LATEST
    first.close()
    again = PostgresLedger(postgres_url)  # nothing to apply, nothing duplicated
    rows = again.query("SELECT version, name FROM schema_migrations ORDER BY version")
    again.close()
    assert rows == [(m.version, m.name) for m in MIGRATIONS]


def test_concurrent_first_opens_migrate_once(postgres_url: str) -> None:
    ledgers: list[PostgresLedger] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            ledgers.append(PostgresLedger(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ledgers[0].query("SELECT COUNT(*) FROM schema_migrations") == [(LATEST,)]
    for ledger in ledgers:
        ledger.close()


def test_newer_postgres_schema_is_refused(postgres_url: str) -> None:
    PostgresLedger(postgres_url).close()
    schema = postgres_url.rsplit("search_path=", 1)[1]

    async def bump() -> None:
        conn = await asyncpg.connect(postgres_url)
        await conn.execute(
            f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ({LATEST + 1}, 'x')"
        )
        await conn.close()

    import asyncio

    asyncio.run(bump())
    with pytest.raises(ConfigError, match=rf"schema version {LATEST + 1}, newer than this code's {LATEST}"):
        open_ledger(postgres_url)


def test_a_token_applies_a_batch_once(postgres_url: str) -> None:
    ledger = PostgresLedger(postgres_url)
    _run(ledger)
    batch = LedgerBatch(fills=[FILL], events=[EventRecord(1, "k", "c", "m")])
    assert ledger.write_once("r", batch, ("exec", 7)) is True
    assert ledger.write_once("r", batch, ("exec", 7)) is False  # the retry of a commit whose answer was lost
    assert ledger.write_once("r", LedgerBatch(events=[EventRecord(2, "k", "c", "m")]), ("other", 7)) is True
    assert len(ledger.fills("r")) == 1 and len(ledger.events("r")) == 2
    ledger.close()


def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot connect .*check that the PostgreSQL server runs"):
        open_ledger("postgresql://postgres:pw@127.0.0.1:1/test")
    with pytest.raises(ConfigError, match=r"postgres:\*\*\*@"):  # the password is never printed
        open_ledger("postgresql://postgres:pw@127.0.0.1:1/test")


def test_reading_commands_find_runs_in_postgres(postgres_url: str) -> None:
    ledger = open_ledger(postgres_url)
    _run(ledger)
    ledger.close()
    assert find_run(postgres_url, None, "sqlite:///unused.db") == (postgres_url, "r")
    open_existing_ledger(postgres_url).close()


def test_an_empty_database_is_not_taken_for_a_ledger(postgres_url: str) -> None:
    from federation.errors import UserInputError

    with pytest.raises(UserInputError, match="holds no federation ledger"):
        open_existing_ledger(postgres_url)
