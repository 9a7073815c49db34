"""Events out: the publisher: a background thread that sends ledger batches and signals to Redis
streams, off the hot path, and rides out Redis outages (see :mod:`federation.events_out`)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from federation.events_out.config import STREAMS, EventStreamConfig, StreamName
from federation.events_out.wire import (
    Fields,
    FloatArray,
    IntArray,
    _pack_xadd,
    encode_allocation,
    encode_event,
    encode_fill,
    encode_order,
    encode_signals,
)
from federation.ledger import mask_url
from federation.ledger.records import AllocationRecord, EventRecord, FillRecord, LedgerBatch, OrderRecord

log = logging.getLogger(__name__)

CHUNK = 500
"""Entries per pipelined round trip."""
YIELD_S = 0.0005
"""The publisher's thread encodes for at most about this long before it lets other threads run."""
SETTLE_SCAN = 100_000
"""At most this many entries per stream are read back after a broken pipeline to find what arrived."""


@dataclass(frozen=True, slots=True)
class OutageNotice:
    """Redis went away (``redis_down``) or came back (``redis_up``), as the publisher saw it."""

    code: Literal["redis_down", "redis_up"]
    ts: int
    """Wall clock, ns since the epoch."""
    message: str
    source: str
    error: str | None
    """What failed (``redis_down``)."""
    down_s: float | None
    """How long the outage lasted (``redis_up``)."""
    pending: int
    """Entries waiting to be sent at that moment."""
    dropped: int
    """Entries dropped so far in the run because the buffer was full."""

    def to_event(self) -> EventRecord:
        """The notice as a ledger event (``kind = "events_out"``)."""
        detail: dict[str, Any] = {"source": self.source, "pending": self.pending, "dropped": self.dropped}
        if self.error is not None:
            detail["error"] = self.error
        if self.down_s is not None:
            detail["down_s"] = round(self.down_s, 3)
        return EventRecord(self.ts, "events_out", self.code, self.message, None, detail)


@dataclass(frozen=True, slots=True)
class PublisherReport:
    """What a publisher did; :meth:`to_dict` is JSON-ready (for the run summary)."""

    source: str
    url: str
    """The Redis URL with its password masked."""
    streams: tuple[str, ...]
    published: int
    """Entries Redis acknowledged."""
    pending: int
    """Entries waiting to be sent (kept while Redis is down)."""
    dropped: int
    """Entries dropped because ``buffer`` was full (oldest first)."""
    rejected: int
    """Entries Redis refused for good (e.g. WRONGTYPE: the key holds something other than a stream)."""
    unsent: int
    """Entries still waiting when the publisher was closed, or published after that: lost."""
    outages: int
    outage_s: float
    """Total time Redis was unreachable, the current outage included."""
    down: bool
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["streams"] = list(self.streams)
        out["outage_s"] = round(self.outage_s, 3)
        return out


def open_publisher(config: EventStreamConfig, run_id: str, source: str) -> RedisEventPublisher | None:
    """A started publisher, or None when ``config.url`` is unset (events out is off)."""
    return None if config.url is None else RedisEventPublisher(config, run_id, source)


@dataclass(frozen=True, slots=True)
class _Batch:
    orders: tuple[OrderRecord, ...]
    fills: tuple[FillRecord, ...]
    allocations: tuple[AllocationRecord, ...]
    events: tuple[EventRecord, ...]


@dataclass(frozen=True, slots=True)
class _Signals:
    agent: str
    symbols: tuple[str, ...]
    ts: IntArray
    weights: FloatArray
    confidences: FloatArray | None


_Item: TypeAlias = _Batch | _Signals
_Entry: TypeAlias = tuple[int, str, bytes]
"""(n, stream key, packed XADD command) of one entry waiting to be sent."""
_Rows: TypeAlias = list[tuple[bytes, dict[bytes, bytes]]]
"""XRANGE / XREVRANGE rows as the client returns them (no decoding)."""


class RedisEventPublisher:
    """Publishes ledger batches and signals to Redis streams from a background thread.

    ``source`` names the publishing process in every entry (``supervisor``, ``execution``). Construction
    never fails because of Redis: with Redis down, the publisher starts in an outage, logs a warning and
    keeps entries until Redis answers. ``publish_*`` may be called from several threads. Not picklable:
    build it inside the process that publishes (e.g. in the execution actor's ``__init__``).
    """

    def __init__(self, config: EventStreamConfig, run_id: str, source: str) -> None:
        if config.url is None:
            raise ValueError("EventStreamConfig.url is None: events out is off; use open_publisher()")
        if not run_id or not source:
            raise ValueError("run_id and source must be non-empty strings")
        self.config = config
        self.run_id = run_id
        self.source = source
        self.publisher_id = uuid.uuid4().hex[:12]
        self._url = mask_url(config.url)
        self._on = frozenset(config.streams)
        self._keys = {name: config.stream(name) for name in STREAMS}
        self._maxlen = str(config.maxlen).encode()
        self._client = redis.Redis.from_url(
            config.url,
            socket_connect_timeout=config.connect_timeout_s,
            socket_timeout=config.socket_timeout_s,
            # No blind re-sends: after a broken pipeline the publisher checks what arrived (_settle).
            retry=Retry(NoBackoff(), 0),
            client_name=f"federation-events-{source}",
        )
        self._backoff = ExponentialBackoff(cap=config.reconnect_max_s, base=config.reconnect_min_s)
        # Shared with the callers (under _lock): the intake queue, counters, the closing state.
        self._lock = threading.Lock()
        self._intake: deque[_Item] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._deadline = float("inf")
        self._dropped = self._unsent = 0
        # The thread's own state (read by report() without the lock: ints and floats only).
        self._pending: deque[_Entry] = deque()
        self._n = 0
        self._published = self._rejected = 0
        self._down = False
        self._down_since = 0.0
        self._outages = 0
        self._outage_s = 0.0
        self._failures = 0
        self._next_attempt = 0.0
        self._stopped_at: float | None = None
        self._uncertain: set[str] = set()
        """Streams of a pipeline that broke in flight: some of its entries may have arrived."""
        self._last_ids: dict[str, bytes] = {}
        self._last_error: str | None = None
        self._notices: list[OutageNotice] = []
        self._thread = threading.Thread(target=self._main, name=f"event-stream-{source}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ callers
    def publish_batch(self, batch: LedgerBatch) -> None:
        """Queue a ledger batch's orders, fills (with their allocations) and events; returns at once.

        Positions and cash are not published. The batch's lists are copied (the records are frozen), so
        the caller may reuse the batch.
        """
        on = self._on
        item = _Batch(
            tuple(batch.orders) if "orders" in on else (),
            tuple(batch.fills) if "fills" in on else (),
            tuple(batch.allocations) if "fills" in on else (),
            tuple(batch.events) if "events" in on else (),
        )
        if item.orders or item.fills or item.allocations or item.events:
            self._enqueue(item)

    def publish_signals(
        self,
        agent: str,
        symbols: Sequence[str],
        ts: IntArray,
        weights: FloatArray,
        confidences: FloatArray | None = None,
    ) -> None:
        """Queue one agent's signals of one block: ``weights`` (T, S) for ``symbols`` (S) at the bar times
        ``ts`` (T), NaN where the agent gave no signal; ``confidences`` likewise (optional).

        Becomes one entry per bar with at least one signal. The arrays are copied (about a microsecond for a
        256 x 6 block); a shape mismatch raises ValueError at once (a caller's bug).
        """
        if "signals" not in self._on:
            return
        if weights.shape != (len(ts), len(symbols)) or (
            confidences is not None and confidences.shape != weights.shape
        ):
            raise ValueError(
                f"agent {agent!r}: weights {weights.shape}"
                + ("" if confidences is None else f" and confidences {confidences.shape}")
                + f" do not match ts ({len(ts)}) x symbols ({len(symbols)})"
            )
        self._enqueue(
            _Signals(
                agent,
                tuple(symbols),
                np.array(ts, dtype=np.int64),
                np.array(weights, dtype=np.float64),
                None if confidences is None else np.array(confidences, dtype=np.float64),
            )
        )

    def take_notices(self) -> list[OutageNotice]:
        """The outage notices since the last call, oldest first (call it on the owner's own thread, e.g.
        once per step, and write ``notice.to_event()`` to the ledger)."""
        with self._lock:
            notices, self._notices = self._notices, []
        return notices

    def report(self) -> PublisherReport:
        """Counters so far (cheap; safe to call at any time)."""
        with self._lock:
            waiting = sum(_entry_count(item) for item in self._intake)
            down, since, outage_s = self._down, self._down_since, self._outage_s
            dropped, unsent = self._dropped, self._unsent
        return PublisherReport(
            source=self.source,
            url=self._url,
            streams=tuple(self._keys[name] for name in STREAMS if name in self._on),
            published=self._published,
            pending=len(self._pending) + waiting,
            dropped=dropped,
            rejected=self._rejected,
            unsent=unsent,
            outages=self._outages,
            outage_s=outage_s + ((self._stopped_at or time.monotonic()) - since if down else 0.0),
            down=down,
            last_error=self._last_error,
        )

    def close(self, timeout_s: float = 5.0) -> PublisherReport:
        """Send what is waiting (for at most ``timeout_s``; if Redis is down, one last attempt), stop the
        thread and report; entries left over count as ``unsent``. Calling it again only reports."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + timeout_s
        self._wake.set()
        self._thread.join(timeout_s + max(self.config.socket_timeout_s, self.config.connect_timeout_s))
        if self._thread.is_alive():
            log.warning(
                "events out (%s): the publisher thread did not stop within %.1f s; it is abandoned",
                self.source,
                timeout_s,
            )
            # Stuck in a connection attempt (redis-py retries connects on its own): what it holds is not
            # going to be sent; count it as unsent now, and leave the thread nothing to send later.
            with self._lock:
                self._unsent += len(self._pending) + sum(_entry_count(item) for item in self._intake)
                self._pending.clear()
                self._intake.clear()
        return self.report()

    def _enqueue(self, item: _Item) -> None:
        with self._lock:
            if self._closing:
                self._unsent += _entry_count(item)
                return
            self._intake.append(item)
            if len(self._intake) > self.config.buffer:
                # The thread is stuck in a connection attempt: every queued item holds at least one entry,
                # so the oldest item's entries would be beyond the buffer anyway.
                self._dropped += _entry_count(self._intake.popleft())
            first = len(self._intake) == 1
        if first:
            self._wake.set()

    # ------------------------------------------------------------------------------------ thread
    def _main(self) -> None:
        try:
            self._attempt()
            while self._step():
                pass
        except Exception as exc:  # a bug here must not go unnoticed, but never reaches the caller
            log.exception(
                "events out (%s): the publisher thread failed; nothing more is published", self.source
            )
            self._last_error = f"publisher thread failed: {type(exc).__name__}: {exc}"
        finally:
            self._absorb()
            with self._lock:
                self._closing = True  # from now on publish_* count their entries as unsent
                self._unsent += len(self._pending) + sum(_entry_count(item) for item in self._intake)
                self._intake.clear()
            self._pending.clear()
            self._stopped_at = time.monotonic()
            self._client.close()

    def _step(self) -> bool:
        """One round: take the intake, send or retry; False when the thread should stop."""
        self._wake.wait(self._wait_s())
        self._wake.clear()
        self._absorb()
        with self._lock:
            closing, deadline = self._closing, self._deadline
        if closing:
            if self._down:
                self._attempt()  # one last try, whatever the backoff says
            if not self._down:
                self._flush(deadline)
            return False
        if self._down and time.monotonic() >= self._next_attempt:
            self._attempt()
        if not self._down:
            self._flush(float("inf"))
        return True

    def _wait_s(self) -> float | None:
        if self._down:
            return max(0.0, self._next_attempt - time.monotonic())
        return 0.0 if self._pending else None

    def _absorb(self) -> None:
        """Encode the intake into entries; drop the oldest beyond ``buffer``."""
        with self._lock:
            items, self._intake = self._intake, deque()
        pause_at = time.perf_counter() + YIELD_S
        for item in items:
            try:
                entries = list(_encode(item))
            except Exception as exc:  # a record that cannot be encoded is refused, the rest goes on
                log.exception("events out (%s): cannot encode %s", self.source, type(item).__name__)
                self._rejected += _entry_count(item)
                self._last_error = f"encoding failed: {type(exc).__name__}: {exc}"
                continue
            for name, fields in entries:
                if isinstance(fields, Exception):
                    log.error("events out (%s): cannot encode a %s entry: %s", self.source, name, fields)
                    self._rejected += 1
                    self._last_error = f"encoding failed: {type(fields).__name__}: {fields}"
                    continue
                self._n += 1
                fields["run_id"] = self.run_id
                fields["source"] = self.source
                fields["publisher"] = self.publisher_id
                fields["n"] = str(self._n)
                key = self._keys[name]
                self._pending.append((self._n, key, _pack_xadd(key, self._maxlen, fields)))
            if time.perf_counter() > pause_at:  # hand the GIL to the trading thread now and then, not
                time.sleep(0)  # after Python's 5 ms switch interval
                pause_at = time.perf_counter() + YIELD_S
        over = len(self._pending) - self.config.buffer
        if over > 0:
            for _ in range(over):
                self._pending.popleft()
            with self._lock:
                self._dropped += over

    def _flush(self, deadline: float) -> None:
        """Send the pending entries in chunks, oldest first, until none is left, Redis fails or
        ``deadline`` (monotonic) passes."""
        while self._pending and time.monotonic() < deadline:
            if not self._send_chunk():
                return
            self._absorb()

    def _send_chunk(self) -> bool:
        """Send up to CHUNK entries in one pipelined round trip; False (and in an outage) if Redis failed.

        The XADDs are packed by :func:`_pack_xadd` (redis-py's packing costs ~15 µs per entry, twice all
        the rest, on a thread that shares the GIL with the trading loop); the replies are read with the
        connection's own parser."""
        waiting = len(self._pending)
        chunk = [self._pending.popleft() for _ in range(min(CHUNK, waiting))]
        pool = self._client.connection_pool
        payload = b"".join(packed for _, _, packed in chunk)
        results: list[Any] = []
        try:
            conn = pool.get_connection()  # connects (and authenticates) if need be
            try:
                conn.send_packed_command([payload])  # type: ignore[no-untyped-call]
                for _ in chunk:
                    try:
                        results.append(conn.read_response())
                    except ResponseError as exc:
                        results.append(exc)
            except BaseException:
                conn.disconnect()  # type: ignore[no-untyped-call]
                raise
            finally:
                pool.release(conn)
        except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
            self._pending.extendleft(reversed(chunk))
            self._uncertain.update(key for _, key, _ in chunk)
            self._fail(exc)
            return False
        retry: list[_Entry] = []
        failure: Exception | None = None
        for entry, result in zip(chunk, results, strict=True):
            if not isinstance(result, Exception):
                self._published += 1
                self._last_ids[entry[1]] = result
            elif not _retryable(result):
                self._rejected += 1
                if self._last_error != f"{entry[1]}: {result}":
                    log.error(
                        "events out (%s): Redis refused an entry of %s: %s", self.source, entry[1], result
                    )
                self._last_error = f"{entry[1]}: {result}"
            else:  # OOM, READONLY, MISCONF, NOPERM, ...: Redis cannot take writes now; keep and retry
                retry.append(entry)
                failure = result
        if failure is not None:
            self._pending.extendleft(reversed(retry))
            self._fail(failure)
            return False
        self._up(waiting)
        return True

    def _attempt(self) -> None:
        """Try Redis again: settle a broken pipeline, then send one chunk (or ping when nothing waits)."""
        try:
            if self._uncertain:
                self._settle()
            if not self._pending:
                self._client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
            self._fail(exc)
            return
        if self._pending:
            self._send_chunk()  # marks up or down itself
        else:
            self._up(0)

    def _settle(self) -> None:
        """After a pipeline broke in flight: find the newest of our entries Redis holds in each stream it
        touched and drop from the queue every entry up to it (the pipeline ran in order)."""
        newest = 0
        for key in sorted(self._uncertain):
            after = self._last_ids.get(key)
            low = b"(" + after if after else b"-"
            high, scanned = b"+", 0
            while scanned < SETTLE_SCAN:
                rows = cast(_Rows, self._client.xrevrange(key, max=high, min=low, count=1000))
                if not rows:
                    break
                mine = [
                    (entry_id, int(fields[b"n"]))
                    for entry_id, fields in rows
                    if fields.get(b"publisher") == self.publisher_id.encode()
                ]
                if mine:
                    self._last_ids[key] = mine[0][0]
                    newest = max(newest, mine[0][1])
                    break
                high, scanned = b"(" + rows[-1][0], scanned + len(rows)
        while self._pending and self._pending[0][0] <= newest:
            self._pending.popleft()
            self._published += 1
        self._uncertain.clear()

    def _fail(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self._last_error = error
        now = time.monotonic()
        self._next_attempt = now + self._backoff.compute(self._failures)
        self._failures = min(self._failures + 1, 30)  # 2**30 x base is past any cap; no float overflow
        if self._down:
            return
        pending = len(self._pending)
        message = (
            f"events out: Redis at {self._url} is unreachable or refuses writes ({error}); trading goes "
            f"on, up to {self.config.buffer} events are kept and sent when it is back"
        )
        log.warning("%s (%s)", message, self.source)
        with self._lock:
            self._down, self._down_since = True, now
            self._outages += 1
            notice = OutageNotice(
                "redis_down", time.time_ns(), message, self.source, error, None, pending, self._dropped
            )
            self._notices.append(notice)

    def _up(self, kept: int) -> None:
        """Redis answered; ``kept``: the entries waiting when it did."""
        self._failures = 0
        if not self._down:
            return
        now = time.monotonic()
        with self._lock:
            down_s = now - self._down_since
            self._down = False
            self._outage_s += down_s
            dropped = self._dropped
            message = (
                f"events out: Redis at {self._url} is back after {down_s:.1f} s; sending "
                f"{kept} kept events ({dropped} dropped so far)"
            )
            notice = OutageNotice(
                "redis_up", time.time_ns(), message, self.source, None, down_s, kept, dropped
            )
            self._notices.append(notice)
        log.warning("%s (%s)", message, self.source)


_RETRYABLE = frozenset(
    {
        "OOM",
        "READONLY",
        "MISCONF",
        "NOPERM",
        "NOAUTH",
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "MASTERDOWN",
        "CLUSTERDOWN",
    }
)
"""Error codes of a server that cannot take writes now (memory, replica, disk, ACL, loading): the
entries are kept and retried. Any other error (WRONGTYPE: the key is not a stream) refuses them for good."""


def _retryable(error: Exception) -> bool:
    code = getattr(error, "status_code", None) or str(error).split(" ", 1)[0]
    return isinstance(error, ResponseError) and code in _RETRYABLE


def _encode(item: _Item) -> Iterator[tuple[StreamName, Fields | Exception]]:
    """The entries of ``item``, record by record: a record that cannot be encoded yields its error (it is
    refused alone; the rest of the batch goes on)."""
    if isinstance(item, _Signals):
        for fields in encode_signals(item.agent, item.symbols, item.ts, item.weights, item.confidences):
            yield "signals", fields
        return
    for order in item.orders:
        yield "orders", _guarded(encode_order, order)
    shares: dict[str, list[AllocationRecord]] = {}
    for allocation in item.allocations:
        shares.setdefault(allocation.fill_id, []).append(allocation)
    for fill in item.fills:
        yield "fills", _guarded(encode_fill, fill, shares.pop(fill.fill_id, ()))
    if shares:
        ts = max((f.ts for f in item.fills), default=0) or max((o.ts for o in item.orders), default=0)
        for allocations in shares.values():
            for allocation in allocations:
                yield "fills", _guarded(encode_allocation, allocation, ts)
    for event in item.events:
        yield "events", _guarded(encode_event, event)


def _guarded(encode: Any, *args: Any) -> Fields | Exception:
    try:
        fields: Fields = encode(*args)
        return fields
    except Exception as exc:
        return exc


def _entry_count(item: _Item) -> int:
    """How many entries ``item`` becomes (orphan allocations counted, as they are published)."""
    if isinstance(item, _Signals):
        return int(np.count_nonzero((~np.isnan(item.weights)).any(axis=1)))
    fills = {f.fill_id for f in item.fills}
    orphans = sum(1 for a in item.allocations if a.fill_id not in fills)
    return len(item.orders) + len(item.fills) + orphans + len(item.events)
