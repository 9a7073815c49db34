"""The write-behind buffer: order, merging, back-pressure, failures, and a real PostgreSQL server that
stops and starts while batches are being written (nothing lost, nothing doubled)."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from federation.errors import LedgerError
from federation.ledger import (
    BufferedLedger,
    EventRecord,
    FillRecord,
    Ledger,
    LedgerBatch,
    LedgerUnavailable,
    PostgresLedger,
    RunRecord,
    open_buffered_ledger,
    open_ledger,
    replay_unwritten,
)
from tests.postgres_server import PrivateServer, private_postgres  # noqa: F401 (the server fixture)


def _fill(i: int) -> FillRecord:
    return FillRecord(f"f{i}", f"o{i}", i, "AAA", Decimal(1), Decimal("10.5"), Decimal("0.01"), "taker")


def _batch(i: int) -> LedgerBatch:
    return LedgerBatch(fills=[_fill(i)], events=[EventRecord(i, "step", "n", str(i))])


def _begin(ledger: Ledger) -> None:
    ledger.begin_run(RunRecord("r", 1, "{}", Decimal(100), "USD", 0), [])


def _steps(ledger: Ledger) -> list[int]:
    return [int(e["message"]) for e in ledger.events("r", "step")]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_batches_arrive_in_order_merged(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    ledger = open_buffered_ledger(url, writer="t", merge_batches=16)
    _begin(ledger)
    for i in range(300):
        ledger.write("r", _batch(i))
    assert ledger.flush(30)
    assert _steps(ledger) == list(range(300))
    assert len(ledger.fills("r")) == 300
    assert ledger.report.batches == 300
    assert ledger.report.transactions < 300, "waiting batches are merged into fewer transactions"
    ledger.close()


class _SlowLedger:
    """An SQLite ledger whose writes take ``delay`` seconds (to fill the buffer)."""

    def __init__(self, inner: Ledger, delay: float) -> None:
        self.inner, self.delay, self.url = inner, delay, inner.url

    def write(self, run_id: str, batch: LedgerBatch) -> None:
        time.sleep(self.delay)
        self.inner.write(run_id, batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_full_buffer_makes_the_writer_wait(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = BufferedLedger(
        url, lambda u: _SlowLedger(open_ledger(u), 0.05), writer="t", capacity=2, merge_batches=1
    )  # type: ignore[arg-type, return-value]
    _begin(ledger)
    started = time.perf_counter()
    for i in range(8):
        ledger.write("r", _batch(i))
    waited = time.perf_counter() - started
    ledger.close()
    assert ledger.report.backpressure_waits >= 5 and ledger.report.backpressure_s > 0.1
    assert waited > 0.2, "the producer was held back instead of queueing without bound"
    assert ledger.report.max_queued <= 2
    assert _steps(open_ledger(url)) == list(range(8))


def test_a_real_failure_stops_the_buffer_and_keeps_the_order(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = open_buffered_ledger(url, writer="t", merge_batches=1)
    _begin(ledger)
    ledger.write("r", _batch(1))
    ledger.write("r", _batch(1))  # the same fill id again: a constraint violation, not an outage
    ledger.write("r", _batch(2))
    with pytest.raises(LedgerError, match="buffer stopped"):
        ledger.flush(10)
    with pytest.raises(LedgerError, match="buffer stopped"):
        ledger.write("r", _batch(3))
    assert _steps(open_ledger(url)) == [1], "nothing after the failed batch was written out of order"
    with pytest.raises(LedgerError, match="saved to"):
        ledger.close()
    assert ledger.report.unwritten_file is not None
    Path(ledger.report.unwritten_file).unlink()


class _LostCommit:
    """A PostgreSQL ledger whose first tokened write (of any instance) commits, then loses the answer."""

    lost = False

    def __init__(self, inner: PostgresLedger) -> None:
        self.inner, self.url = inner, inner.url

    def write_once(self, run_id: str, batch: LedgerBatch, token: tuple[str, int]) -> bool:
        done = self.inner.write_once(run_id, batch, token)
        if not _LostCommit.lost:
            _LostCommit.lost = True
            raise LedgerUnavailable("connection lost after COMMIT was sent")
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_commit_whose_answer_was_lost_is_not_applied_twice(postgres_url: str) -> None:
    ledger = BufferedLedger(postgres_url, lambda u: _LostCommit(PostgresLedger(u)), writer="t")  # type: ignore[arg-type, return-value]
    _begin(ledger)
    ledger.write("r", _batch(1))
    ledger.write("r", _batch(2))
    ledger.close()
    check = open_ledger(postgres_url)
    assert _steps(check) == [1, 2] and len(check.fills("r")) == 2
    assert ledger.report.retried_duplicates == 1
    assert len(ledger.report.outages) == 1
    check.close()


def test_server_stopped_and_started_while_writing(server: PrivateServer) -> None:
    ledger = open_buffered_ledger(server.url, writer="t", retry_initial_s=0.02, retry_max_s=0.2)
    _begin(ledger)
    for i in range(50):
        ledger.write("r", _batch(i))
    assert ledger.flush(30)
    server.stop("fast")
    started = time.perf_counter()
    for i in range(50, 150):
        ledger.write("r", _batch(i))  # the database is down: writes return at once
    assert time.perf_counter() - started < 1.0
    time.sleep(0.5)
    assert ledger.outage is not None and ledger.pending() > 0
    server.start()
    assert ledger.flush(60)
    for i in range(150, 160):
        ledger.write("r", _batch(i))
    ledger.close()
    check = PostgresLedger(server.url)
    assert _steps(check) == list(range(160)), "every batch, once, in order"
    assert [f.fill_id for f in check.fills("r")] == [f"f{i}" for i in range(160)]
    (outage,) = check.events("r", "ledger")
    assert outage["code"] == "ledger_outage" and outage["detail"]["seconds"] > 0.4
    assert len(ledger.report.outages) == 1 and ledger.report.outages[0].max_queued > 0
    check.close()


def test_a_server_that_never_returns_leaves_a_file_to_replay(server: PrivateServer) -> None:
    ledger = open_buffered_ledger(
        server.url, writer="t", flush_timeout_s=1.0, retry_initial_s=0.02, retry_max_s=0.1
    )
    _begin(ledger)
    ledger.write("r", _batch(0))
    assert ledger.flush(30)
    server.stop("immediate")
    for i in range(1, 20):
        ledger.write("r", _batch(i))
    ledger.end_run("r", "completed", {"ok": True})
    with pytest.raises(LedgerError, match=r"saved to (\S+\.pickle); write them later") as info:
        ledger.close()
    path = ledger.report.unwritten_file
    assert path is not None and path in str(info.value)
    server.start()
    target = PostgresLedger(server.url)
    assert replay_unwritten(path, target) == 2  # the 19 held batches (one transaction) and end_run
    assert replay_unwritten(path, target) == 1, "a second replay writes no batch again (only end_run)"
    assert _steps(target) == list(range(20)) and target.run_status("r") == "completed"
    target.close()
    Path(path).unlink()


def _postmaster_pid(server: PrivateServer) -> int:
    return int((server.data / "postmaster.pid").read_text().splitlines()[0])


def test_halt_polling_never_waits_for_a_hung_database(server: PrivateServer) -> None:
    import os
    import signal

    ledger = open_buffered_ledger(server.url, writer="t")
    _begin(ledger)
    assert ledger.pending_halt("r") is None  # starts the background poller
    other = PostgresLedger(server.url)
    other.request_halt("r", "desk")
    other.close()
    deadline = time.monotonic() + 5
    reason = None
    while reason is None and time.monotonic() < deadline:
        reason = ledger.pending_halt("r")
        time.sleep(0.05)
    assert reason == "desk"
    pid = _postmaster_pid(server)
    children = [int(p) for p in os.popen(f"pgrep -P {pid}").read().split()]
    for p in [pid, *children]:
        os.kill(p, signal.SIGSTOP)  # hung, not refusing: calls would wait for their timeouts
    try:
        started = time.perf_counter()
        for _ in range(20):
            assert ledger.pending_halt("r") is None
            time.sleep(0.02)
        assert time.perf_counter() - started < 1.5, "the trading loop never waits for the poll"
    finally:
        for p in [pid, *children]:
            os.kill(p, signal.SIGCONT)
    ledger.close()


def test_a_full_buffer_waits_at_most_flush_timeout_then_saves_everything(server: PrivateServer) -> None:
    ledger = open_buffered_ledger(
        server.url, writer="t", buffer_batches=2, merge_batches=1, flush_timeout_s=0.5, retry_max_s=0.1
    )
    _begin(ledger)
    server.stop("fast")
    with pytest.raises(LedgerError, match=r"could not be written for 0.5 s .* saved to (\S+\.pickle)"):
        for i in range(10):
            ledger.write("r", _batch(i))
    path = ledger.report.unwritten_file
    assert path is not None
    with pytest.raises(LedgerError):
        ledger.write("r", _batch(99))  # the buffer stopped: the run stops too
    with pytest.raises(LedgerError):
        ledger.close()
    server.start()
    target = PostgresLedger(server.url)
    replay_unwritten(path, target)
    replay_unwritten(path, target)  # twice: still once each
    written = _steps(target)
    assert written == list(range(len(written))) and len(written) >= 3, "every batch given, once, in order"
    target.close()
    Path(path).unlink()


def test_a_read_only_server_is_an_outage_not_a_failure(server: PrivateServer) -> None:
    admin = PostgresLedger(server.url)
    ledger = open_buffered_ledger(server.url, writer="t", retry_initial_s=0.02, retry_max_s=0.1)
    _begin(ledger)
    admin.query("ALTER SYSTEM SET default_transaction_read_only = on")
    admin.query("SELECT pg_reload_conf()")
    time.sleep(0.3)
    ledger.write("r", _batch(0))  # a standby during a failover refuses writes for a while
    time.sleep(0.5)
    assert ledger.outage is not None
    admin.query("ALTER SYSTEM SET default_transaction_read_only = off")
    admin.query("SELECT pg_reload_conf()")
    assert ledger.flush(10)
    ledger.close()
    assert _steps(admin) == [0]
    admin.close()


def test_text_postgres_refuses_is_escaped_not_fatal(postgres_url: str) -> None:
    ledger = open_buffered_ledger(postgres_url, writer="t")
    _begin(ledger)
    ledger.write("r", LedgerBatch(events=[EventRecord(1, "data_issue", "x", "bad symbol 'A\x00B' \ud800")]))
    ledger.close()
    check = open_ledger(postgres_url)
    (event,) = check.events("r")
    assert event["message"] == "bad symbol 'A\\x00B' \\ud800"
    check.close()


def test_a_failed_buffer_saves_what_it_could_not_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = open_buffered_ledger(url, writer="t", merge_batches=1)
    _begin(ledger)
    ledger.write("r", _batch(1))
    ledger.write("r", _batch(1))  # a constraint violation: fatal
    ledger.write("r", _batch(2))
    with pytest.raises(LedgerError, match=r"buffer stopped .*saved to"):
        time.sleep(0.5)
        ledger.close()
    path = ledger.report.unwritten_file
    assert path is not None
    import pickle

    ops = pickle.loads(Path(path).read_bytes())["ops"]
    assert [op.batch.fills[0].fill_id for op in ops] == ["f1", "f2"], "the failed batch and the one after"
    Path(path).unlink()
