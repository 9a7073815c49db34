"""The write-behind buffer: ledger writes leave the trading loop at once and reach the database in order.

:class:`BufferedLedger` has the :class:`~federation.ledger.base.Ledger` interface. Its writes
(``write``, ``write_costs``, ``end_run``) go into a bounded queue; one writer thread takes them in order,
merges consecutive batches into one transaction (up to ``merge_batches``), and writes them through a
ledger of its own. Reads go to a second ledger in the caller's thread.

- **Back-pressure.** When ``capacity`` batches are queued, ``write`` waits for room (the run slows down
  rather than holding unbounded memory); the time spent waiting is reported.
- **Outages.** A database that cannot be reached (:class:`LedgerUnavailable`: down, restarting,
  unreachable) stops the writer, not the run: the batch in hand is kept, retried with capped exponential
  backoff (``retry_initial_s`` doubling to ``retry_max_s``), and the queue behind it waits in order. When
  the database answers again the writer catches up and records a ``ledger`` event ``ledger_outage``
  (start, end, seconds, retries, the most batches that were waiting). Each write carries a token
  (writer, sequence number) recorded in the same transaction, so a batch whose commit was cut off is
  never applied twice (PostgreSQL; an SQLite commit is local and cannot be lost that way).
- **Failures.** Any other error (a constraint violated, a disk full) fails the buffer: the next write or
  flush raises :class:`LedgerError`, and nothing behind the failed batch is written out of order.
- **Closing.** :meth:`close` waits up to ``flush_timeout_s`` for the queue to drain. What is still
  unwritten then (the database never came back) is saved to a file, the error names it, and
  :func:`replay_unwritten` (``federation ledger-replay FILE``) writes it later: nothing is lost.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from federation.errors import LedgerError
from federation.ledger.base import Ledger
from federation.ledger.postgres import LedgerUnavailable
from federation.ledger.records import (
    PORTFOLIO,
    AgentRecord,
    CheckpointRecord,
    CostRow,
    EventRecord,
    FillRecord,
    LedgerBatch,
    OrderRecord,
    RunRecord,
    latest_per_agent,
)

log = logging.getLogger(__name__)
_HALT_POLL_S = 0.25

OpKind = Literal["write", "costs", "end"]


@dataclass(slots=True)
class _Op:
    kind: OpKind
    run_id: str
    seq: int
    batch: LedgerBatch | None = None
    costs: list[CostRow] | None = None
    status: str = ""
    summary: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Outage:
    """A time the database could not be written."""

    started_ns: int
    ended_ns: int | None
    """None while it lasts."""
    retries: int
    max_queued: int
    """The most batches waiting behind it."""
    error: str

    @property
    def seconds(self) -> float:
        end = self.ended_ns if self.ended_ns is not None else time.time_ns()
        return (end - self.started_ns) / 1e9


@dataclass(slots=True)
class WriterReport:
    """What the buffer did over its life (part of the run summary)."""

    writer: str
    ledger: str
    batches: int = 0
    """Batches handed to the buffer."""
    transactions: int = 0
    """Transactions committed (consecutive batches are merged)."""
    retried_duplicates: int = 0
    """Retried writes the database already had (applied once, skipped the second time)."""
    max_queued: int = 0
    backpressure_waits: int = 0
    backpressure_s: float = 0.0
    outages: list[Outage] = field(default_factory=list)
    unwritten_file: str | None = None

    @property
    def outage_s(self) -> float:
        return sum(o.seconds for o in self.outages)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outage_s"] = round(self.outage_s, 3)
        out["backpressure_s"] = round(self.backpressure_s, 3)
        return out


def _merge(batches: Sequence[LedgerBatch]) -> LedgerBatch:
    """Consecutive batches as one; of each agent's checkpoints only the newest is kept (the ledger keeps
    one per agent, so the others would only be overwritten in the same transaction)."""
    if len(batches) == 1:
        return batches[0]
    out = LedgerBatch()
    for b in batches:
        out.orders += b.orders
        out.fills += b.fills
        out.allocations += b.allocations
        out.positions += b.positions
        out.cash += b.cash
        out.events += b.events
        out.checkpoints += b.checkpoints
    out.checkpoints = latest_per_agent(out.checkpoints)
    return out


class BufferedLedger:
    """A ledger whose writes are queued and written in order by a background thread (see the module).

    ``opener(url)`` opens a backend ledger: in the writer thread (writes), the halt poller, and here for
    reads unless ``reader`` is given. ``writer`` names this buffer's tokens: use one name per process
    and run (e.g. ``execution`` and ``supervisor``)."""

    def __init__(
        self,
        url: str,
        opener: Callable[[str], Ledger],
        *,
        writer: str,
        reader: Ledger | None = None,
        capacity: int = 1000,
        merge_batches: int = 64,
        flush_timeout_s: float = 600.0,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        on_outage: Callable[[Outage], None] | None = None,
    ) -> None:
        if capacity < 1 or merge_batches < 1:
            raise ValueError("capacity and merge_batches must be >= 1")
        self._reader = reader if reader is not None else opener(url)
        self.url = self._reader.url
        self._opener, self._raw_url = opener, url
        self._writer_name = f"{writer}-{time.time_ns():x}"
        self._capacity, self._merge = capacity, merge_batches
        self._flush_timeout = flush_timeout_s
        self._retry = (retry_initial_s, retry_max_s)
        self._on_outage = on_outage
        self._queue: deque[_Op] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._seq = 0
        self._failed: BaseException | None = None
        self._closing = False
        self._outage: Outage | None = None
        self._held: list[_Op] = []
        self._poller: threading.Thread | None = None
        self._poller_stop = threading.Event()
        self._halt_reason: str | None = None
        """The ops the writer is trying to write (kept until committed)."""
        self.report = WriterReport(writer=writer, ledger=self.url)
        self.tap: Callable[[LedgerBatch], None] | None = None
        """Called with every batch before it is queued (e.g. to publish it; it may add events)."""
        self._thread = threading.Thread(target=self._work, name=f"ledger-writer-{writer}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------- writes
    def begin_run(self, run: RunRecord, agents: list[AgentRecord]) -> None:
        """Written at once (a run that cannot be recorded should not start)."""
        self._reader.begin_run(run, agents)

    def write(self, run_id: str, batch: LedgerBatch) -> None:
        if self.tap is not None:
            self.tap(batch)
        if batch:
            self._put(_Op("write", run_id, 0, batch=batch))

    def write_costs(self, run_id: str, rows: Sequence[CostRow]) -> None:
        self._put(_Op("costs", run_id, 0, costs=list(rows)))

    def end_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        self._put(_Op("end", run_id, 0, status=status, summary=summary))

    def _put(self, op: _Op) -> None:
        with self._cond:
            self._raise_failed()
            if self._closing:
                raise LedgerError(f"ledger {self.url}: written after close")
            if len(self._queue) >= self._capacity:
                started = time.perf_counter()
                deadline = time.monotonic() + self._flush_timeout
                self.report.backpressure_waits += 1
                while (
                    len(self._queue) >= self._capacity
                    and self._failed is None
                    and not self._closing
                    and time.monotonic() < deadline
                ):
                    self._cond.wait(0.5)
                self.report.backpressure_s += time.perf_counter() - started
                self._raise_failed()
                if self._closing:
                    raise LedgerError(f"ledger {self.url}: written after close")
                if len(self._queue) >= self._capacity:  # the database stayed away: stop, lose nothing
                    self._seq += 1
                    op.seq = self._seq
                    self._closing = True
                    self._cond.notify_all()
                    path = self._spill(self._unwritten([op]))
                    error = LedgerError(
                        f"ledger {self.url}: the database could not be written for {self._flush_timeout:g} s "
                        f"and {self._capacity} batches are waiting; they were saved to {path} (write them "
                        f"with `federation ledger-replay {path} --ledger URL`) and the run stops"
                    )
                    self._failed = error
                    raise error
            self._seq += 1
            op.seq = self._seq
            self._queue.append(op)
            if op.kind == "write":
                self.report.batches += 1
            self.report.max_queued = max(self.report.max_queued, len(self._queue))
            self._cond.notify_all()

    def _unwritten(self, extra: list[_Op]) -> list[_Op]:
        """Everything not written yet, in order (called with the lock held; empties the queue): the ops
        the writer holds (one transaction under their last token, as it was tried), the queue, ``extra``."""
        held = self._held
        if held and held[0].kind == "write":
            batch = _merge([op.batch for op in held if op.batch is not None])
            held = [_Op("write", held[0].run_id, held[-1].seq, batch=batch)]
        left = [*held, *self._queue, *extra]
        self._queue.clear()
        self._held = []
        return left

    def _raise_failed(self) -> None:
        if self._failed is not None:
            raise LedgerError(
                f"ledger {self.url}: the write-behind buffer stopped: {self._failed}"
            ) from self._failed

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued so far is written (True), or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + (self._flush_timeout if timeout_s is None else timeout_s)
        with self._cond:
            while (self._queue or self._busy) and self._failed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            self._raise_failed()
        return True

    def report_dict(self) -> dict[str, Any]:
        """:attr:`report` as a dict, an outage still under way counted in ``outages`` and ``outage_s``."""
        with self._cond:
            out = self.report.as_dict()
            if self._outage is not None:
                out["outages"] = [*out["outages"], asdict(self._outage)]
                out["outage_s"] = round(self.report.outage_s + self._outage.seconds, 3)
            out["pending"] = len(self._queue) + len(self._held)
            return out

    def pending(self) -> int:
        """Operations queued or being written."""
        with self._cond:
            return len(self._queue) + int(self._busy)

    @property
    def outage(self) -> Outage | None:
        """The outage under way, if any."""
        return self._outage

    def close(self, timeout_s: float | None = None) -> None:
        """Drain the queue (up to ``timeout_s``, default ``flush_timeout_s``), stop the writer, close both
        connections. What could not be written (the database did not come back in time, or the buffer
        failed) is saved to a file first (see :func:`replay_unwritten`) and :class:`LedgerError` names it."""
        try:
            drained = self.flush(timeout_s)
        except LedgerError:
            drained = False  # failed: what it holds and what waits behind it are saved below
        if drained:
            self._stop()
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=max(self._retry[1] * 2, 5.0))
        with self._cond:
            left = self._unwritten([])
            failed = self._failed
        if not left:  # it came back while the writer was stopping: everything is in
            _close_quietly(self._reader)
            self._stop_poller()
            if failed is not None:
                saved = self.report.unwritten_file
                raise LedgerError(
                    f"ledger {self.url}: the write-behind buffer stopped: {failed}"
                    + ("" if saved is None or saved in str(failed) else f"; unwritten batches are in {saved}")
                )
            return
        path = self._spill(left)
        _close_quietly(self._reader)
        self._stop_poller()
        why = (
            f"the write-behind buffer stopped ({failed})"
            if failed is not None
            else f"the database did not come back within {timeout_s or self._flush_timeout:g} s"
        )
        raise LedgerError(
            f"ledger {self.url}: {why}; {len(left)} unwritten operations were saved to {path}; write them "
            f"later with `federation ledger-replay {path} --ledger URL`"
        )

    def _stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=30.0)
        _close_quietly(self._reader)
        self._stop_poller()

    def _spill(self, ops: list[_Op]) -> str:
        folder = Path(tempfile.gettempdir())
        path = folder / f"federation-unwritten-{self._writer_name}.pickle"
        with open(path, "wb") as f:
            pickle.dump({"writer": self._writer_name, "ops": ops}, f)
        self.report.unwritten_file = str(path)
        return str(path)

    # ------------------------------------------------------------------------------------------- writer
    def _work(self) -> None:
        ledger: Ledger | None = None
        delay = self._retry[0]
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    break
                ops = self._take()
                self._busy = True
                self._held = ops
            try:
                while True:
                    try:
                        if ledger is None:
                            ledger = self._opener(self._raw_url)
                        self._apply(ledger, ops)
                        self._recovered()
                        delay = self._retry[0]
                        break
                    except LedgerUnavailable as exc:
                        self._down(exc)
                        if ledger is not None:
                            _close_quietly(ledger)
                            ledger = None
                        with self._cond:
                            if self._closing:
                                return  # close() gave up waiting: it saves what is held
                            self._cond.wait(delay)
                        delay = min(delay * 2, self._retry[1])
            except BaseException as exc:  # a real failure: stop, keep the order, tell the producer
                log.error("ledger %s: write failed, buffer stopped: %s", self.url, exc)
                with self._cond:
                    self._failed = exc
                    self._busy = False
                    self._cond.notify_all()
                break
            with self._cond:
                self._busy = False
                self._held = []
                self._cond.notify_all()
        if ledger is not None:
            _close_quietly(ledger)

    def _take(self) -> list[_Op]:
        """The next op, or a run of consecutive batch writes of one run (merged into one transaction)."""
        first = self._queue.popleft()
        ops = [first]
        if first.kind == "write":
            while (
                self._queue
                and len(ops) < self._merge
                and self._queue[0].kind == "write"
                and self._queue[0].run_id == first.run_id
            ):
                ops.append(self._queue.popleft())
        return ops

    def _apply(self, ledger: Ledger, ops: list[_Op]) -> None:
        first = ops[0]
        if first.kind == "write":
            batch = _merge([op.batch for op in ops if op.batch is not None])
            written = _write_once(ledger, first.run_id, batch, (self._writer_name, ops[-1].seq))
            if not written:
                self.report.retried_duplicates += 1
        elif first.kind == "costs":
            ledger.write_costs(first.run_id, first.costs or [])
        else:
            ledger.end_run(first.run_id, first.status, first.summary or {})
        self.report.transactions += 1

    def _down(self, exc: LedgerUnavailable) -> None:
        with self._cond:
            queued = len(self._queue) + 1
            if self._outage is None:
                log.warning("ledger %s unavailable; writes are kept and retried: %s", self.url, exc)
                self._outage = Outage(time.time_ns(), None, 0, queued, str(exc))
            else:
                o = self._outage
                self._outage = Outage(o.started_ns, None, o.retries + 1, max(o.max_queued, queued), o.error)
        if self._on_outage is not None and self._outage.retries == 0:
            self._on_outage(self._outage)

    def _recovered(self) -> None:
        if self._outage is None:
            return
        o = self._outage
        done = Outage(o.started_ns, time.time_ns(), o.retries, o.max_queued, o.error)
        self._outage = None
        self.report.outages.append(done)
        log.warning("ledger %s is back after %.1f s; the queue is being written", self.url, done.seconds)
        if self._on_outage is not None:
            self._on_outage(done)
        event = EventRecord(
            done.ended_ns or 0,
            "ledger",
            "ledger_outage",
            f"the ledger database could not be written for {done.seconds:.1f} s ({o.error}); "
            f"{done.retries} retries, up to {done.max_queued} operations waited and were written in order",
            detail={
                "writer": self.report.writer,
                "started_ns": done.started_ns,
                "ended_ns": done.ended_ns,
                "seconds": round(done.seconds, 3),
                "retries": done.retries,
                "max_queued": done.max_queued,
                "error": done.error,
            },
        )
        with self._cond:
            self._seq += 1
            op = _Op("write", self._last_run_id(), self._seq, batch=LedgerBatch(events=[event]))
            self._queue.appendleft(op)

    def _last_run_id(self) -> str:
        held = [op.run_id for op in self._held]
        return held[-1] if held else ""

    # ------------------------------------------------------------------------------------------- reads
    def request_halt(self, run_id: str, reason: str) -> None:
        self._reader.request_halt(run_id, reason)

    def pending_halt(self, run_id: str) -> str | None:
        """A halt request for ``run_id``, without waiting for the database: a background thread polls it
        (every ``_HALT_POLL_S``, with its own connection), so a slow or unreachable database never stalls
        the trading loop. A request is seen at the first call after the poll that found it."""
        with self._cond:
            if self._poller is None:
                self._poller = threading.Thread(
                    target=self._poll_halts, args=(run_id,), name="ledger-halt-poll", daemon=True
                )
                self._poller.start()
            reason, self._halt_reason = self._halt_reason, None
            return reason

    def _poll_halts(self, run_id: str) -> None:
        ledger: Ledger | None = None
        while not self._poller_stop.wait(_HALT_POLL_S):
            try:
                if ledger is None:
                    ledger = self._opener(self._raw_url)
                reason = ledger.pending_halt(run_id)
            except LedgerError as exc:  # unavailable: try again at the next poll
                log.debug("halt poll failed: %s", exc)
                if ledger is not None:
                    _close_quietly(ledger)
                    ledger = None
                continue
            if reason is not None:
                with self._cond:
                    self._halt_reason = reason
        if ledger is not None:
            _close_quietly(ledger)

    def _stop_poller(self) -> None:
        self._poller_stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5.0)

    def runs(self) -> list[dict[str, Any]]:
        return self._reader.runs()

    def run_status(self, run_id: str) -> str | None:
        return self._reader.run_status(run_id)

    def summary(self, run_id: str) -> dict[str, Any] | None:
        return self._reader.summary(run_id)

    def costs(self, run_id: str) -> list[CostRow]:
        return self._reader.costs(run_id)

    def positions(self, run_id: str, account: str = PORTFOLIO) -> dict[str, Decimal]:
        return self._reader.positions(run_id, account)

    def cash(self, run_id: str, account: str = PORTFOLIO) -> Decimal | None:
        return self._reader.cash(run_id, account)

    def fills(self, run_id: str) -> list[FillRecord]:
        return self._reader.fills(run_id)

    def orders(self, run_id: str) -> list[OrderRecord]:
        return self._reader.orders(run_id)

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return self._reader.events(run_id, kind)

    def latest_checkpoints(self, run_id: str) -> dict[str, CheckpointRecord]:
        """What the database holds: checkpoints still queued are not seen (:meth:`flush` first)."""
        return self._reader.latest_checkpoints(run_id)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self._reader.query(sql, *args)


def _write_once(ledger: Ledger, run_id: str, batch: LedgerBatch, token: tuple[str, int]) -> bool:
    write = getattr(ledger, "write_once", None)
    if write is not None:
        return bool(write(run_id, batch, token))
    ledger.write(run_id, batch)
    return True


def _close_quietly(ledger: Ledger) -> None:
    try:
        ledger.close()
    except Exception:  # the connection is gone already
        log.debug("closing a broken ledger connection failed", exc_info=True)


def replay_unwritten(path: str | Path, ledger: Ledger) -> int:
    """Write the operations a buffer saved when its database did not come back (in order, each once:
    the tokens keep a batch that did reach the database from being written again). Returns how many
    operations were applied."""
    with open(path, "rb") as f:
        saved = pickle.load(f)
    writer, ops = saved["writer"], saved["ops"]
    applied = 0
    for op in ops:
        if op.batch is not None and not hasattr(op.batch, "checkpoints"):
            op.batch.checkpoints = []  # saved by a version whose batches had no checkpoints
        if op.kind == "write" and op.batch is not None:
            applied += _write_once(ledger, op.run_id, op.batch, (writer, op.seq))
        elif op.kind == "costs":
            ledger.write_costs(op.run_id, op.costs or [])
            applied += 1
        elif op.kind == "end":
            ledger.end_run(op.run_id, op.status, op.summary or {})
            applied += 1
    return applied
