"""Pieces of the chaos harness: private PostgreSQL and Redis servers that really stop and restart, data
corruption of CSV feeds that the validation layer skips record for record, and the ledger's agent
checkpoints (upserted with their batch, merged and spilled by the write-behind buffer, migrated)."""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
import redis

from federation.chaos.corrupt import (
    KINDS,
    CorruptedFeed,
    corrupt_csv_feed,
    count_issues,
    issue_kind,
    with_corrupted_feed,
)
from federation.chaos.servers import PostgresServer, RedisServer, ServerError
from federation.config import FleetConfig
from federation.errors import ConfigError, LedgerError
from federation.feeds import MarketData, load_feed
from federation.ledger import (
    BufferedLedger,
    CheckpointRecord,
    EventRecord,
    FillRecord,
    Ledger,
    LedgerBatch,
    LedgerUnavailable,
    PostgresLedger,
    RunRecord,
    SQLiteLedger,
    open_ledger,
    replay_unwritten,
)
from federation.ledger.buffer import _merge
from federation.ledger.migrations import BOOKKEEPING, LATEST, MIGRATIONS
from federation.ledger.sqlite import SCHEMA_VERSION
from tests.conftest import EXAMPLES

DAILY = EXAMPLES / "data" / "lean" / "daily"
MINUTE = EXAMPLES / "data" / "lean" / "minute" / "spy"


# ----------------------------------------------------------------------------------------------- servers
def _pg_value(url: str, sql: str) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_private_postgres_stops_restarts_crashes_and_cleans_up() -> None:
    with PostgresServer() as pg:
        folder = pg.directory
        assert pg.running
        _pg_value(pg.url, "CREATE TABLE t AS SELECT 41 + 1 AS x")
        pg.stop()
        assert not pg.running
        with pytest.raises(OSError):
            _pg_value(pg.url, "SELECT 1")
        pg.start()
        pg.kill()  # a crash: recovery at the next start keeps what was committed
        pg.restart(down_s=0.1)
        assert _pg_value(pg.url, "SELECT x FROM t") == 42
    assert not folder.exists(), "close() deletes the server's folder"


def test_private_redis_kill_restart_pause_and_clean_up() -> None:
    with RedisServer(persist=True) as server:
        folder = server.directory
        client = redis.Redis.from_url(server.url, socket_timeout=0.3)
        client.set("k", "v")
        server.kill()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.restart(down_s=0.1)  # stop of a dead server does nothing; the same port again
        assert client.get("k") == b"v", "persisted data survives a crash"
        server.pause()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        server.resume()
        assert redis.Redis.from_url(server.url, socket_timeout=2).ping()
        server.stop()
        with pytest.raises(ServerError, match="not running"):
            server.pause()
        client.close()
    assert not folder.exists()


def test_a_missing_server_program_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ServerError, match="apt-get install redis-server"):
        RedisServer()
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    with pytest.raises(ServerError, match=r"initdb is not installed .*apt-get install postgresql"):
        PostgresServer()


# ------------------------------------------------------------------------------------------- corruption
def _config(tmp_path: Path, feed: dict[str, Any]) -> FleetConfig:
    return FleetConfig.model_validate(
        {
            "federation": {"ledger": f"sqlite:///{tmp_path / 'l.db'}"},
            "feed": {"kind": "csv", **feed},
            "agents": [{"class": "agents.momentum:MomentumAgent"}],
            "base_dir": tmp_path,
        }
    )


def _load(config: FleetConfig) -> MarketData:
    return load_feed(config.feed, base_dir=config.base_dir, seed=0)


def _bars(market: MarketData) -> dict[tuple[str, int], tuple[float, ...]]:
    """(symbol, ts) -> its OHLCV, for every bar the feed has."""
    out = {}
    for j, symbol in enumerate(market.symbols):
        for i in np.flatnonzero(market.valid[:, j]).tolist():
            values = (market.open, market.high, market.low, market.close, market.volume)
            out[(symbol, int(market.ts[i]))] = tuple(float(v[i, j]) for v in values)
    return out


def _check(config: FleetConfig, corrupted: CorruptedFeed) -> MarketData:
    """Every injection is skipped as its kind at its file and line, nothing else is, and the good data is
    the original without the records whose prices were spoiled."""
    original = _load(config)
    market = _load(with_corrupted_feed(config, corrupted))
    before, after = count_issues(original.issues), count_issues(market.issues)
    assert {k: after[k] - before[k] for k in KINDS} == corrupted.counts
    assert len(market.issues) == len(original.issues) + corrupted.total
    skipped = {(Path(i.file), i.line): issue_kind(i.reason) for i in market.issues}
    for injection in corrupted.injections:
        assert skipped[(injection.file, injection.line)] == injection.kind, injection
    good = _bars(original)
    assert all(key in good for key in corrupted.spoiled)
    expected = {key: values for key, values in good.items() if key not in corrupted.spoiled}
    assert _bars(market) == expected, "the good data is unchanged"
    return market


def test_lean_daily_corruption_is_skipped_record_for_record(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {
            "format": "lean",
            "start": "2019-01-01",
            "end": "2020-06-30",
            "paths": {"SPY": str(DAILY / "spy.csv"), "QQQ": str(DAILY / "qqq.csv")},
        },
    )
    corrupted = corrupt_csv_feed(config, tmp_path / "bad", rate=0.02, seed=3)
    assert corrupted.total == round(0.02 * corrupted.records) and all(corrupted.counts.values())
    assert {i.symbol for i in corrupted.injections} == {"SPY", "QQQ"}
    _check(config, corrupted)
    again = corrupt_csv_feed(config, tmp_path / "again", rate=0.02, seed=3)
    assert again.counts == corrupted.counts
    assert (tmp_path / "bad/SPY/spy.csv").read_bytes() == (tmp_path / "again/SPY/spy.csv").read_bytes()
    assert corrupt_csv_feed(config, tmp_path / "none", rate=0.0, seed=3).total == 0


def test_lean_minute_files_keep_their_names_and_the_window(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {
            "format": "lean",
            "start": "2013-10-08",
            "end": "2013-10-09",
            "paths": {"SPY": str(MINUTE / "*.csv")},
        },
    )
    corrupted = corrupt_csv_feed(config, tmp_path / "bad", rate=0.01, seed=11)
    assert [p.name for p in corrupted.paths["SPY"]] == sorted(p.name for p in MINUTE.glob("*.csv"))
    touched = {i.file.name for i in corrupted.injections}
    assert touched <= {"20131008_spy_minute_trade.csv", "20131009_spy_minute_trade.csv"}
    outside = tmp_path / "bad/SPY/20131004_spy_minute_trade.csv"
    assert outside.read_bytes() == (MINUTE / outside.name).read_bytes(), "files outside the window: copied"
    assert all(corrupted.counts.values())
    _check(config, corrupted)


GENERIC = "\ufeffVolume,Close,timestamp,low,open,high\r\n" + "".join(
    f"{1000 + i},{100 + i % 7}.5,2024-01-{1 + i // 24:02d}T{i % 24:02d}:00:00Z,{99 + i % 7},{100 + i % 7},"
    f"{101 + i % 7}\r\n"
    for i in range(24 * 20)
)


def test_generic_csv_with_bad_records_of_its_own(tmp_path: Path) -> None:
    lines = GENERIC.split("\r\n")
    lines[30] = lines[29]  # a duplicate already in the data
    fields = lines[50].split(",")
    lines[50] = ",".join([*fields[:4], "nan", fields[5]])  # open is NaN
    lines[70] = "1,2,2024-01-03T00:00:00Z,3"  # a short row
    (tmp_path / "x.csv").write_text("\r\n".join(lines), encoding="utf-8", newline="")
    config = _config(tmp_path, {"start": "2024-01-02", "end": "2024-01-15", "paths": {"X": "x.csv"}})
    original_issues = len(_load(config).issues)
    assert original_issues >= 2
    corrupted = corrupt_csv_feed(config, tmp_path / "bad", rate=0.03, seed=5)
    assert all(corrupted.counts.values())
    market = _check(config, corrupted)
    assert int(market.ts[0]) >= 1_704_153_600_000_000_000  # 2024-01-02: the window still holds
    text = (tmp_path / "bad/X/x.csv").read_bytes()
    assert text.startswith(b"\xef\xbb\xbfVolume,Close") and b"\r\n" in text and b"\n\n" not in text


def test_corruption_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    synthetic = FleetConfig.model_validate(
        {
            "feed": {"kind": "synthetic", "symbols": ["A"]},
            "agents": [{"class": "agents.momentum:MomentumAgent"}],
        }
    )
    with pytest.raises(ConfigError, match=r"needs a CSV feed; .*'synthetic'"):
        corrupt_csv_feed(synthetic, tmp_path, rate=0.01, seed=0)
    config = _config(tmp_path, {"format": "lean", "paths": {"SPY": str(DAILY / "spy.csv")}})
    with pytest.raises(ConfigError, match=r"outside 0 \.\. 0\.25"):
        corrupt_csv_feed(config, tmp_path, rate=0.5, seed=0)
    with pytest.raises(ConfigError, match="choose one or more of"):
        corrupt_csv_feed(config, tmp_path, rate=0.01, seed=0, kinds=["typo"])  # type: ignore[list-item]
    only = corrupt_csv_feed(config, tmp_path / "d", rate=0.001, seed=0, kinds=["duplicate"])
    assert set(corrupted_kinds(only)) == {"duplicate"}


def corrupted_kinds(corrupted: CorruptedFeed) -> list[str]:
    return [kind for kind, n in corrupted.counts.items() if n]


# ------------------------------------------------------------------------------------------ checkpoints
def _cp(agent: str, ts: int, state: bytes = b"") -> CheckpointRecord:
    return CheckpointRecord(agent, ts, ts * 10, state or f"{agent}@{ts}".encode())


def _begin(ledger: Ledger) -> None:
    ledger.begin_run(RunRecord("r", 1, "{}", Decimal(100), "USD", 0), [])


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url_any(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'l.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def ledger(ledger_url_any: str) -> Iterator[Ledger]:
    opened = open_ledger(ledger_url_any)
    yield opened
    opened.close()


def test_checkpoints_keep_the_latest_per_agent(ledger: Ledger) -> None:
    _begin(ledger)
    big = bytes(range(256)) * 4096  # 1 MiB with NUL bytes: stored exactly
    ledger.write("r", LedgerBatch(checkpoints=[_cp("a", 1), _cp("b", 1), _cp("a", 2, big)]))
    ledger.write("r", LedgerBatch(checkpoints=[_cp("b", 5)]))
    ledger.write("r", LedgerBatch(checkpoints=[_cp("b", 3)]))  # older than the one kept: ignored
    assert ledger.latest_checkpoints("r") == {"a": _cp("a", 2, big), "b": _cp("b", 5)}
    assert ledger.latest_checkpoints("other") == {}
    ((rows,),) = ledger.query("SELECT COUNT(*) FROM checkpoints")
    assert rows == 2


def test_a_checkpoint_is_written_with_its_batch_or_not_at_all(ledger: Ledger) -> None:
    _begin(ledger)
    fill = FillRecord("f1", "o1", 1, "AAA", Decimal(1), Decimal(10), Decimal(0), "taker")
    ledger.write("r", LedgerBatch(fills=[fill], checkpoints=[_cp("a", 1)]))
    with pytest.raises(LedgerError, match="rolled back"):
        ledger.write("r", LedgerBatch(fills=[fill], checkpoints=[_cp("a", 2)]))  # the fill id again
    assert ledger.latest_checkpoints("r") == {"a": _cp("a", 1)}
    assert LedgerBatch(checkpoints=[_cp("a", 1)]), "a batch of checkpoints only is written"


def test_the_buffer_merges_to_the_newest_per_agent() -> None:
    first = LedgerBatch(events=[EventRecord(1, "k", "c", "m")], checkpoints=[_cp("a", 1), _cp("b", 1)])
    second = LedgerBatch(checkpoints=[_cp("a", 2)])
    merged = _merge([first, second])
    assert merged.checkpoints == [_cp("a", 2), _cp("b", 1)] and len(merged.events) == 1


def _down(url: str) -> Ledger:
    """A database that never answers: every open fails as unavailable."""
    raise LedgerUnavailable(f"{url}: connection refused")


def test_checkpoints_go_into_the_spill_file_and_replay(ledger_url_any: str) -> None:
    reader = open_ledger(ledger_url_any)
    _begin(reader)
    buffered = BufferedLedger(
        ledger_url_any, _down, writer="t", reader=reader, retry_initial_s=0.01, retry_max_s=0.02
    )
    for ts in range(1, 6):
        buffered.write("r", LedgerBatch(checkpoints=[_cp("a", ts), _cp(f"x{ts}", ts)]))
    with pytest.raises(LedgerError, match="saved to"):
        buffered.close(timeout_s=0.2)
    path = buffered.report.unwritten_file
    assert path is not None
    with open(path, "rb") as f:
        ops = pickle.load(f)["ops"]
    spilled = [c for op in ops for c in op.batch.checkpoints]
    assert _cp("a", 5) in spilled and {c.agent for c in spilled} == {"a", "x1", "x2", "x3", "x4", "x5"}
    target = open_ledger(ledger_url_any)
    replay_unwritten(path, target)
    expected = {"a": _cp("a", 5), **{f"x{ts}": _cp(f"x{ts}", ts) for ts in range(1, 6)}}
    assert target.latest_checkpoints("r") == expected
    target.close()
    Path(path).unlink()


def test_a_buffered_ledger_reads_checkpoints(ledger_url_any: str) -> None:
    from federation.ledger import open_buffered_ledger

    buffered = open_buffered_ledger(ledger_url_any, writer="t", merge_batches=64)
    _begin(buffered)
    for ts in range(1, 50):
        buffered.write("r", LedgerBatch(checkpoints=[_cp("a", ts), _cp("b", ts)]))
    assert buffered.flush(30)
    assert buffered.latest_checkpoints("r") == {"a": _cp("a", 49), "b": _cp("b", 49)}
    buffered.close()


def test_a_version_3_postgres_ledger_gains_the_checkpoints_table(postgres_url: str) -> None:
    async def version_3() -> None:  # the schema as the previous release left it, with a run in it
        conn = await asyncpg.connect(postgres_url)
        try:
            async with conn.transaction():
                await conn.execute(BOOKKEEPING)
                for migration in MIGRATIONS[:3]:
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                await conn.execute(
                    "INSERT INTO runs (run_id, started_ns, status, config_json, capital_e8, currency, seed) "
                    "VALUES ('old', 1, 'completed', '{}', 100, 'USD', 0)"
                )
        finally:
            await conn.close()

    assert LATEST == 4 and MIGRATIONS[3].version == 4
    asyncio.run(version_3())
    ledger = PostgresLedger(postgres_url)
    assert ledger.schema_version() == LATEST
    assert ledger.run_status("old") == "completed"
    ledger.write("old", LedgerBatch(checkpoints=[_cp("a", 7)]))
    assert ledger.latest_checkpoints("old") == {"a": _cp("a", 7)}
    rows = ledger.query("SELECT version FROM schema_migrations ORDER BY version")
    assert rows == [(1,), (2,), (3,), (4,)]
    ledger.close()


def test_a_version_2_sqlite_ledger_gains_the_checkpoints_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SQLiteLedger(path).close()
    with sqlite3.connect(path) as db:  # as the previous release left it
        db.execute("DROP TABLE checkpoints")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (2)")
    db.close()
    ledger = SQLiteLedger(path)
    assert ledger.query("SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)] == [(3,)]
    _begin(ledger)
    ledger.write("r", LedgerBatch(checkpoints=[_cp("a", 1)]))
    assert ledger.latest_checkpoints("r") == {"a": _cp("a", 1)}
    ledger.close()
