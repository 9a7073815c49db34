"""``RedisBarSource``: time steps of bars read from a Redis stream with a consumer group.

The supervisor's live loop drives it::

    source = RedisBarSource(config)
    source.check()                      # reach Redis, create the group; errors name the URL
    for step in source.steps():         # blocks while no bar arrives
        if step is None:                # nothing yet (idle or Redis down): check for a halt, go on
            continue
        ...                             # hand step.batch to the agents and the execution actor
        source.ack(step)                # acknowledged with the next read
    source.close()

Entries are acknowledged (XACK) only after their step was processed; everything read but not
acknowledged stays in the group's pending list and is read again, first, by the next run of the same
consumer (or by another consumer with ``claim_idle_s``). Delivery is therefore at least once: a run that
dies between processing a step and acknowledging it sees that step again after its restart.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from agents.model import BarBatch
from federation.config import RedisFeedConfig
from federation.errors import ConfigError, DataError
from federation.feeds.market_data import OHLCV, DataIssue
from federation.feeds.redis_stream.messages import EndOfStream, ParsedBar, Unreadable, iso, parse_entry
from federation.feeds.validation import describe, value_problems
from federation.ledger import mask_url

log = logging.getLogger("federation.feeds.redis")

CONNECTION_ERRORS: Final = (RedisConnectionError, RedisTimeoutError)
"""What counts as "Redis is unreachable" (redis-py wraps socket errors; a server still loading its data
raises a subclass of ConnectionError)."""

SAMPLES: Final = 5
"""Data issues logged and kept as text for the summary; the rest are counted."""

ERROR_HINT: Final = (
    'fix the producer, or set on_invalid = "skip" in [feed] to skip such entries; the entry stays '
    "unacknowledged, so the next run reads it again first (XACK or XDEL it to drop it)"
)

Entry = tuple[str, dict[str, str]]


class FeedUnavailableError(DataError):
    """The Redis server of a feed (or of ``federation publish``) cannot be reached."""


def default_consumer() -> str:
    """``federation-<hostname>``: the same name after a restart, so the run re-reads its own pending
    entries. Several runs on one host sharing a group need a ``consumer`` each."""
    return f"federation-{socket.gethostname()}"


def _id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``<ms>-<seq>`` as numbers, for ordering."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def connect(url: str, *, socket_timeout_s: float = 10.0) -> redis.Redis:
    """A client that fails fast: no retries inside redis-py, so that an outage is seen (and reported)
    at once by the caller, which then reconnects with its own backoff."""
    try:
        client: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            encoding_errors="replace",  # a producer's binary field must not block the stream: it is skipped
            socket_connect_timeout=2.0,
            socket_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            client_name="strategy-federation",
        )
    except ValueError as exc:
        raise ConfigError(
            f"{mask_url(url)!r} is not a usable Redis URL ({exc}); write redis://host:6379/0, "
            "rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock"
        ) from None
    return client


def error_code(exc: ResponseError, code: str) -> bool:
    """Whether a Redis error reply carries ``code`` (redis-py prefixes errors inside a pipeline with
    "Command # n (...) of pipeline caused error: ")."""
    return str(exc).startswith(code) or f"caused error: {code}" in str(exc)


def unreachable(url: str, exc: BaseException, what_to_do: str) -> FeedUnavailableError:
    return FeedUnavailableError(f"cannot reach Redis at {mask_url(url)} ({exc}); {what_to_do}")


@dataclass(frozen=True, slots=True)
class Step:
    """One time step: a one-row :class:`BarBatch` over the feed's symbols (``valid`` False where a symbol
    has no bar at that time) and the stream entries it consumed, to acknowledge once it is processed
    (its bars and entries skipped while it was assembled)."""

    batch: BarBatch
    ids: tuple[str, ...]

    @property
    def ts(self) -> int:
        return int(self.batch.ts[0])


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """Something the run should record (ledger event ``kind = "feed"``): ``code`` is one of
    ``group_created``, ``group_recreated``, ``claimed``, ``redis_down``, ``redis_up``."""

    code: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FeedStats:
    """Counters over the life of a source."""

    entries: int = 0
    """Entries read and handled: bars, skipped entries and the end marker, re-deliveries included."""
    bars: int = 0
    """Bars accepted into steps."""
    steps: int = 0
    acked: int = 0
    """Entries acknowledged (XACK sent and answered; one already acknowledged before a broken connection
    counts once)."""
    redelivered: int = 0
    """Entries read again from the group's pending list (left unacknowledged by an earlier run, claimed
    from another consumer, or lost in an outage)."""
    skipped: int = 0
    outages: int = 0
    outage_s: float = 0.0
    end: str | None = None
    """Why the feed ended: end_marker, max_bars, idle_timeout, or what the caller said (close)."""


class _OpenStep:
    """The step being assembled: bars of one time, one column per symbol."""

    __slots__ = ("ids", "ts", "valid", "values")

    def __init__(self, ts: int, n_symbols: int) -> None:
        self.ts = ts
        self.values = np.full((len(OHLCV), n_symbols), np.nan)
        self.valid = np.zeros(n_symbols, dtype=np.bool_)
        self.ids: list[str] = []


class RedisBarSource:
    """Steps of bars from ``config.stream`` read as ``config.consumer`` of ``config.group``.

    See the module documentation for the protocol, :mod:`federation.feeds.redis_stream` for the format.
    Not thread-safe: one consumer per source.
    """

    def __init__(self, config: RedisFeedConfig, *, max_issues: int = 1000) -> None:
        """``max_issues``: data issues handed out by :meth:`take_issues` over the source's life (to
        record in the ledger); every skipped entry is counted in ``stats.skipped`` all the same."""
        self.config = config
        self.max_issues = max_issues
        self.symbols = tuple(config.symbols)
        self.consumer = config.consumer or default_consumer()
        self.stats = FeedStats()
        self.samples: list[str] = []
        """The first few data issues, as text (the run summary shows them)."""
        self._columns = {symbol: j for j, symbol in enumerate(self.symbols)}
        self._zone = ZoneInfo(config.timezone)
        longest_wait_s = max(config.block_ms, config.step_idle_ms) / 1000
        self._client = connect(config.url, socket_timeout_s=longest_wait_s + 10)
        self._backoff = ExponentialBackoff(cap=config.reconnect_max_s, base=config.reconnect_min_s)
        self._events: list[FeedEvent] = []
        self._issues: list[DataIssue] = []
        self._issues_queued = 0
        self._to_ack: list[str] = []
        self._open: _OpenStep | None = None
        self._last: dict[str, tuple[int, str]] = {}
        """Symbol -> time and entry id of its last accepted bar (the order rule)."""
        self._emitted_ts: int | None = None
        self._pending_from: str | None = "0"
        """Where to read this consumer's pending entries from next; None: read new entries."""
        self._claim = config.claim_idle_s is not None
        self._down_since: float | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_entry = time.monotonic()
        self._high_id: str | None = None
        """The newest entry id read (a re-created group starts after it)."""

    # ------------------------------------------------------------------------------------------ public
    def check(self) -> None:
        """Reach the server and make sure the group exists (created at ``start`` if it does not).

        Raises :class:`FeedUnavailableError` (server unreachable) or :class:`DataError` (the key holds
        something other than a stream).
        """
        cfg = self.config
        start_id = "$" if cfg.start == "new" else "0"
        try:
            created = self._ensure_group(start_id)
        except CONNECTION_ERRORS as exc:
            raise unreachable(cfg.url, exc, "start the server (e.g. redis-server) or fix feed.url") from None
        if created:
            where = "the start of the stream" if start_id == "0" else "new entries"
            self._events.append(
                FeedEvent(
                    "group_created",
                    f"created consumer group {cfg.group!r} on stream {cfg.stream!r}, reading from {where}",
                    {"stream": cfg.stream, "group": cfg.group, "from": start_id},
                )
            )

    def steps(self) -> Iterator[Step | None]:
        """Time steps as their bars arrive, or ``None`` after each wait with nothing to hand out (at
        most ``block_ms`` apart while idle or while Redis is down), until an end condition."""
        while self.stats.end is None:
            entries = self._read()
            if entries:
                yield from self._consume(entries)
            else:
                yield self._idle()
        if self._open is not None:
            yield self._emit()
        self._flush_acks()

    def ack(self, step: Step) -> None:
        """Mark ``step`` processed: its entries are acknowledged with the next read (or by ``close``)."""
        self._to_ack.extend(step.ids)

    def end(self, reason: str) -> None:
        """Record why the caller stopped reading (max_ticks, halted, ...) unless the feed ended itself."""
        if self.stats.end is None:
            self.stats.end = reason

    def close(self) -> None:
        """Acknowledge what was processed (best effort: if Redis is down, those entries stay pending
        and the next run reads them again) and release the connection."""
        self._flush_acks()
        if self._down_since is not None:
            self.stats.outage_s += time.monotonic() - self._down_since
            self._down_since = None
        self._client.close()

    def take_events(self) -> list[FeedEvent]:
        """Events since the last call (to record in the ledger)."""
        events, self._events = self._events, []
        return events

    def take_issues(self) -> list[DataIssue]:
        """Entries skipped since the last call (to record in the ledger)."""
        issues, self._issues = self._issues, []
        return issues

    # ----------------------------------------------------------------------------------------- reading
    def _ensure_group(self, start_id: str) -> bool:
        """Create the group (and the stream if absent) at ``start_id``; False if it already exists."""
        cfg = self.config
        try:
            self._client.xgroup_create(cfg.stream, cfg.group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if error_code(exc, "BUSYGROUP"):
                return False
            if error_code(exc, "WRONGTYPE"):
                kind = str(self._client.type(cfg.stream))
                raise DataError(
                    f"feed.stream: the key {cfg.stream!r} at {mask_url(cfg.url)} holds a {kind}, not a "
                    "stream; choose another stream name or delete the key"
                ) from None
            raise
        return True

    def _read(self) -> list[Entry] | None:
        """The next entries: this consumer's pending ones first, then new ones (waiting up to
        ``block_ms``). ``[]`` after a wait with nothing new; ``None`` while Redis is unreachable."""
        now = time.monotonic()
        if self._down_since is not None and now < self._retry_at:
            time.sleep(min(self._retry_at - now, self.config.block_ms / 1000))
            return None
        try:
            if self._claim:
                self._claim_idle()
            while self._pending_from is not None:
                raw = self._xreadgroup(self._pending_from, None)
                if not raw:
                    self._pending_from = None
                    break
                self._pending_from = raw[-1][0]
                held = set(self._open.ids) if self._open is not None else set()
                fresh = [entry for entry in raw if entry[0] not in held]
                if fresh:
                    self.stats.redelivered += len(fresh)
                    return fresh
            return self._xreadgroup(">", self._block_ms())
        except CONNECTION_ERRORS as exc:
            self._went_down(exc)
            return None
        except ResponseError as exc:
            if isinstance(exc, ReadOnlyError) or error_code(exc, "MASTERDOWN") or error_code(exc, "TRYAGAIN"):
                self._went_down(exc)  # a failover under way: an outage, reconnect with backoff
                return None
            if not (error_code(exc, "NOGROUP") or error_code(exc, "UNBLOCKED")):
                raise
            self._group_lost()  # the group, or the whole stream (UNBLOCKED: deleted during a read), is gone
            return None

    def _xreadgroup(self, from_id: str, block_ms: int | None) -> list[Entry]:
        """One round trip: acknowledge what was processed, then read (own pending entries after
        ``from_id``, or ``">"`` for new ones)."""
        cfg = self.config
        pipe = self._client.pipeline(transaction=False)
        acks = list(self._to_ack)
        if acks:
            pipe.xack(cfg.stream, cfg.group, *acks)
        pipe.xreadgroup(cfg.group, self.consumer, {cfg.stream: from_id}, count=cfg.read_count, block=block_ms)
        replies: list[Any] = pipe.execute()
        self._came_back()
        if acks:
            # Counted as sent, not by XACK's reply: an XACK that reached the server before the connection
            # broke is sent again after the reconnect and then answers 0 for entries already acknowledged.
            self.stats.acked += len(acks)
            del self._to_ack[: len(acks)]
        reply = replies[-1]
        if not reply:
            return []
        entries: list[Entry] = reply[0][1]
        return entries

    def _block_ms(self) -> int:
        """How long the next read may wait: until the open step is due, at most ``block_ms``."""
        wait = float(self.config.block_ms)
        if self._open is not None:
            quiet_ms = (time.monotonic() - self._last_entry) * 1000
            wait = min(wait, self.config.step_idle_ms - quiet_ms)
        return max(1, int(wait))

    def _claim_idle(self) -> None:
        """Take over the entries other consumers left pending for ``claim_idle_s`` (once, at start)."""
        cfg = self.config
        assert cfg.claim_idle_s is not None
        start, claimed = "0-0", 0
        while True:
            reply: list[Any] = self._client.xautoclaim(
                cfg.stream,
                cfg.group,
                self.consumer,
                min_idle_time=int(cfg.claim_idle_s * 1000),
                start_id=start,
                count=cfg.read_count,
            )
            claimed += len(reply[1])
            start = reply[0]
            if start == "0-0":
                break
        self._claim = False
        if claimed:
            self._events.append(
                FeedEvent(
                    "claimed",
                    f"took over {claimed} entries other consumers of group {cfg.group!r} left "
                    f"unacknowledged for {cfg.claim_idle_s:g} s or more; they are read first",
                    {"entries": claimed, "min_idle_s": cfg.claim_idle_s},
                )
            )

    # ---------------------------------------------------------------------------------------- outages
    def _went_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self.stats.outages += 1
            url = mask_url(self.config.url)
            message = (
                f"lost Redis at {url} ({exc}); no bars until it is back, reconnecting with backoff "
                f"({self.config.reconnect_min_s:g} s doubling to {self.config.reconnect_max_s:g} s)"
            )
            log.warning("feed: %s", message)
            self._events.append(FeedEvent("redis_down", message, {"url": url, "error": str(exc)}))
        self._failures += 1
        self._retry_at = now + self._backoff.compute(self._failures)
        # A reply lost with the connection may have moved entries to our pending list unseen.
        self._pending_from = "0"

    def _came_back(self) -> None:
        if self._down_since is None:
            return
        down_s = time.monotonic() - self._down_since
        self.stats.outage_s += down_s
        message = (
            f"Redis at {mask_url(self.config.url)} is back after {down_s:.1f} s ({self._failures} failed "
            "tries); reading on, entries left unacknowledged first"
        )
        log.warning("feed: %s", message)
        self._events.append(
            FeedEvent("redis_up", message, {"down_s": round(down_s, 3), "attempts": self._failures})
        )
        self._down_since, self._failures = None, 0
        self._last_entry = time.monotonic()  # an outage is not the stream being idle

    def _group_lost(self) -> None:
        """The group vanished (a server restarted without persistence, or XGROUP DESTROY): create it
        again after the newest entry this run handled (the start of the stream if none), so that bars
        added since are not missed and those handled are not read again."""
        cfg = self.config
        try:
            self._ensure_group(self._high_id or "0")
        except CONNECTION_ERRORS as exc:
            self._went_down(exc)
            return
        self._events.append(
            FeedEvent(
                "group_recreated",
                f"consumer group {cfg.group!r} of stream {cfg.stream!r} was gone (a Redis restart without "
                "persistence, or XGROUP DESTROY); created it again after the last entry this run handled "
                f"({self._high_id or 'the start of the stream'})",
                {"stream": cfg.stream, "group": cfg.group},
            )
        )
        self._pending_from = None
        self._to_ack.clear()  # the old pending list went with the group

    # ----------------------------------------------------------------------------------------- steps
    def _consume(self, entries: list[Entry]) -> Iterator[Step]:
        """Validate entries in order, assemble steps, and yield each step once a later bar arrives."""
        self._last_entry = time.monotonic()
        parsed = [parse_entry(fields, self._zone) for _, fields in entries]
        bars = [item for item in parsed if isinstance(item, ParsedBar)]
        codes = value_problems(
            *(np.array([getattr(b, name) for b in bars], dtype=np.float64) for name in OHLCV)
        )
        k = 0
        newest = max((e[0] for e in entries), key=_id_key)
        if self._high_id is None or _id_key(newest) > _id_key(self._high_id):
            self._high_id = newest
        for (entry_id, _), item in zip(entries, parsed, strict=True):
            self.stats.entries += 1
            if isinstance(item, EndOfStream):
                self._hold(entry_id)
                self.stats.end = "end_marker"
                return
            if isinstance(item, Unreadable):
                self._skip(entry_id, item.symbol, item.reason)
                continue
            code, k = int(codes[k]), k + 1
            reason = self._problem(item, entry_id, code)
            if reason is not None:
                self._skip(entry_id, item.symbol, reason)
                continue
            if self._open is not None and item.ts > self._open.ts:
                yield self._emit()
            self._accept(entry_id, item)
            if self.config.max_bars is not None and self.stats.bars >= self.config.max_bars:
                self.stats.end = "max_bars"
                return

    def _problem(self, bar: ParsedBar, entry_id: str, code: int) -> str | None:
        """Why ``bar`` cannot be accepted (the value rules of the CSV feed, then symbol and order)."""
        if bar.symbol not in self._columns:
            return (
                f"symbol {bar.symbol!r} is not in feed.symbols ({', '.join(self.symbols)}); add it there to "
                "trade it"
            )
        if code:
            return describe(code, bar.open, bar.high, bar.low, bar.close, bar.volume)
        last = self._last.get(bar.symbol)
        if last is not None and bar.ts <= last[0]:
            if bar.ts == last[0]:
                return f"duplicate timestamp {iso(bar.ts)} (same as entry {last[1]})"
            return f"timestamp {iso(bar.ts)} is out of order (earlier than {iso(last[0])} at entry {last[1]})"
        now = self._open.ts if self._open is not None else self._emitted_ts
        if now is not None and bar.ts < now:
            return (
                f"timestamp {iso(bar.ts)} is out of order (earlier than {iso(now)}, the time step the feed "
                "has reached); add bars to the stream in time order across symbols"
            )
        if self._open is None and bar.ts == now:
            return (
                f"timestamp {iso(bar.ts)} arrived after its time step went to the agents (the stream was "
                f"idle for step_idle_ms = {self.config.step_idle_ms:g}); add the bars of one time together "
                "or raise step_idle_ms"
            )
        return None

    def _accept(self, entry_id: str, bar: ParsedBar) -> None:
        if self._open is None:
            self._open = _OpenStep(bar.ts, len(self.symbols))
        j = self._columns[bar.symbol]
        self._open.values[:, j] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        self._open.valid[j] = True
        self._open.ids.append(entry_id)
        self._last[bar.symbol] = (bar.ts, entry_id)
        self.stats.bars += 1

    def _hold(self, entry_id: str) -> None:
        """Acknowledge ``entry_id`` with the open step, or with the next read if none is open."""
        if self._open is not None:
            self._open.ids.append(entry_id)
        else:
            self._to_ack.append(entry_id)

    def _skip(self, entry_id: str, symbol: str, reason: str) -> None:
        issue = DataIssue(f"stream {self.config.stream!r} entry {entry_id}", 0, symbol, reason)
        if self.config.on_invalid == "error":
            raise DataError(f"{issue}; {ERROR_HINT}")
        self._hold(entry_id)
        self.stats.skipped += 1
        if len(self.samples) < SAMPLES:
            self.samples.append(str(issue))
            more = (
                "; further skipped entries are counted in the summary" if len(self.samples) == SAMPLES else ""
            )
            log.warning("feed: skipped %s%s", issue, more)
        if self._issues_queued < self.max_issues:
            self._issues_queued += 1
            self._issues.append(issue)

    def _emit(self) -> Step:
        step, self._open = self._open, None
        assert step is not None
        self._emitted_ts = step.ts
        self.stats.steps += 1
        rows = step.values[:, None, :]
        batch = BarBatch(
            symbols=self.symbols,
            ts=np.array([step.ts], dtype=np.int64),
            open=rows[0],
            high=rows[1],
            low=rows[2],
            close=rows[3],
            volume=rows[4],
            valid=step.valid[None, :],
        )
        return Step(batch, tuple(step.ids))

    def _idle(self) -> Step | None:
        """After a wait with nothing new (or Redis down): the open step if it is due; else, unless Redis
        is down, check the idle timeout."""
        quiet_s = time.monotonic() - self._last_entry
        if self._open is not None and quiet_s * 1000 >= self.config.step_idle_ms:
            return self._emit()
        timeout = self.config.idle_timeout_s
        if timeout is not None and quiet_s >= timeout and self._down_since is None:
            self.stats.end = "idle_timeout"
        return None

    def _flush_acks(self) -> None:
        if not self._to_ack:
            return
        cfg = self.config
        try:
            self._client.xack(cfg.stream, cfg.group, *self._to_ack)
            self.stats.acked += len(self._to_ack)
        except (*CONNECTION_ERRORS, ResponseError):
            return  # they stay pending: the next run of this consumer reads them again
        self._to_ack.clear()
