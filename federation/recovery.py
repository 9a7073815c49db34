"""``AgentRecovery``: the supervisor's bookkeeping for bringing agents back, one instance per run.

Pure Python, no Ray: it decides, the supervisor acts. Per agent it keeps

- the latest **checkpoint** (a snapshot from ``AgentBlockResult.checkpoint``, the bar time and the bar
  count it covers) and when the next one is due (``checkpoint_every_bars`` or ``checkpoint_every_s``);
- the **replay log**: every call the agent got since that checkpoint (its block and fills), at most
  ``replay_bars`` bars; when older calls must go, their bars are dropped but their fills are kept (so the
  restored positions stay exact) and the replay is marked incomplete;
- **windows** of restarts, deadline misses and hook errors, which decide restart or quarantine;
- **recovery times**: from the death being detected to the agent's first answer after its restart.

The supervisor's side, per step::

    due = recovery.checkpoints_due(names_called)                 # who returns a snapshot this call
    ref = runner.process(block_ref, fills, hold, checkpoint=due & set(runner.names))
    for name in runner.names: recovery.sent(name, block, fills.get(name, []), bars=...)
    ...
    decision = recovery.answered(result.name, result, elapsed_s)  # "continue" or "quarantine"
    for cp in recovery.take_checkpoints(): ...write cp to the ledger...

    # the runner's process died (or was killed after a hang):
    decisions = {n: recovery.died(n) for n in runner.names}       # "restart" or "quarantine"
    runner.restart()
    snapshots, replay = recovery.recovery_inputs(runner.names)    # quarantined agents left out
    errors = ray.get(runner.recover(snapshots, replay))           # an agent with an error: died() again
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from agents.model import BarBatch, FillRow

if TYPE_CHECKING:
    from federation.config import RecoverySettings
    from federation.runners.host import AgentBlockResult

ReplayCall = tuple[BarBatch, list[FillRow]]
"""One call an agent got: its block and its fills (as :data:`federation.runners.base.ReplayCall`)."""
Decision = Literal["continue", "restart", "quarantine"]
QuarantineReason = Literal["restarts", "misses", "errors"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """An agent's latest snapshot and what it covers."""

    agent: str
    data: bytes | None
    """The pickled snapshot (``AgentHost.snapshot``); None before the first one: the agent is then
    recovered from ``on_start`` and every call since the run began."""
    ts: int
    """Bar time (epoch ns) of the newest bar the snapshot covers; 0 if none."""
    bars: int
    """Bars (time steps) the agent had been sent when the snapshot was taken."""
    taken_s: float
    """When it arrived (the recovery clock)."""


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Why an agent was quarantined (it gets no more bars this run)."""

    agent: str
    reason: QuarantineReason
    message: str
    at_s: float


@dataclass(frozen=True, slots=True)
class RecoveryStats:
    """Time from a death being detected to the agent's first answer after its restart, in seconds."""

    count: int
    p50_s: float
    p99_s: float
    max_s: float


@dataclass(slots=True)
class _AgentBook:
    checkpoint: Checkpoint
    log: deque[ReplayCall] = field(default_factory=deque)
    log_rows: int = 0
    dropped_rows: int = 0
    """Bars dropped from the replay log since the checkpoint (the replay is incomplete if > 0)."""
    sent_rows: int = 0
    last_ts: int = 0
    since_rows: int = 0
    since_s: float = 0.0
    asked: bool = False
    dead_since: float | None = None
    restarts: deque[float] = field(default_factory=deque)
    misses: deque[float] = field(default_factory=deque)
    errors: deque[float] = field(default_factory=deque)


class AgentRecovery:
    """Checkpoints, replay logs and restart / quarantine decisions of a run's agents.

    ``miss_deadline_s``: a call slower than this is a miss (the run's fallback when
    ``settings.miss_deadline_ms`` is None: live mode's decision timeout; None counts no misses).
    ``clock``: seconds, monotonic (injectable for tests).
    """

    def __init__(
        self,
        names: Iterable[str],
        settings: RecoverySettings,
        *,
        miss_deadline_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        ms = settings.miss_deadline_ms
        self.miss_deadline_s = ms / 1000 if ms is not None else miss_deadline_s
        self.clock = clock
        now = clock()
        self._books = {n: _AgentBook(Checkpoint(n, None, 0, 0, now), since_s=now) for n in names}
        self.quarantined: dict[str, Quarantine] = {}
        """Quarantined agents, in the order it happened."""
        self.recovery_times: list[float] = []
        """Seconds from each death detected to the first answer after the restart."""
        self.restarts = 0
        """Restarts decided (``died`` answered "restart")."""
        self.misses = 0
        self.checkpoints_taken = 0
        self._new_checkpoints: list[Checkpoint] = []

    # ------------------------------------------------------------------------------------ checkpoints
    def checkpoints_due(self, names: Iterable[str]) -> set[str]:
        """Of ``names`` (the agents about to be called), those to ask for a checkpoint in this call:
        ``checkpoint_every_bars`` bars or ``checkpoint_every_s`` seconds since their last one."""
        now, s = self.clock(), self.settings
        due = set()
        for name in names:
            book = self._books[name]
            if name in self.quarantined or book.dead_since is not None:
                continue
            if book.since_rows >= s.checkpoint_every_bars or now - book.since_s >= s.checkpoint_every_s:
                book.asked = True
                due.add(name)
        return due

    def sent(self, name: str, batch: BarBatch, fills: list[FillRow], *, bars: bool = True) -> None:
        """Record a call sent to ``name`` (held calls too): ``batch`` and ``fills`` as the agent gets them.
        ``bars`` False: a held call whose bars the agent never gets (only its fills are kept)."""
        book = self._books[name]
        if not bars:
            batch = _no_rows(batch)
        rows = len(batch)
        if rows:
            book.last_ts = int(batch.ts[-1])
        book.sent_rows += rows
        book.since_rows += rows
        book.log.append((batch, list(fills)))
        book.log_rows += rows
        while book.log_rows > self.settings.replay_bars:
            old, old_fills = book.log.popleft()
            book.log_rows -= len(old)
            book.dropped_rows += len(old)
            if book.log:  # its fills go with the next call: positions stay exact
                nxt, nxt_fills = book.log[0]
                book.log[0] = (nxt, old_fills + nxt_fills)
            else:
                book.log.append((_no_rows(old), old_fills))

    def take_checkpoints(self) -> list[Checkpoint]:
        """Checkpoints received since the last call (to write to the ledger)."""
        out, self._new_checkpoints = self._new_checkpoints, []
        return out

    def checkpoint(self, name: str) -> Checkpoint:
        """``name``'s latest checkpoint (``data`` None: none yet)."""
        return self._books[name].checkpoint

    def replay(self, name: str) -> list[ReplayCall]:
        """The calls ``name`` got since its checkpoint (oldest first)."""
        return list(self._books[name].log)

    def dropped_bars(self, name: str) -> int:
        """Bars since the checkpoint that the bounded log dropped: a replay now would miss them."""
        return self._books[name].dropped_rows

    def replay_incomplete(self, name: str) -> bool:
        return self._books[name].dropped_rows > 0

    # ---------------------------------------------------------------------------------------- answers
    def answered(self, name: str, result: AgentBlockResult, elapsed_s: float | None = None) -> Decision:
        """Take one result of ``name``: its checkpoint, its recovery time (first answer after a restart),
        a miss if it was slower than the deadline, its errors. "quarantine" when misses or errors
        reached their limit within their window (the first time only; ``quarantined`` says why).

        ``elapsed_s``: time from sending the call to its answer, for a runner hosting only this agent;
        None for a shared host (its call time is everyone's): the agent's own ``wall_s`` counts then.
        """
        book = self._books[name]
        if name in self.quarantined:
            return "quarantine"
        now = self.clock()
        if book.dead_since is not None:
            self.recovery_times.append(now - book.dead_since)
            book.dead_since = None
        if result.held:
            return "continue"
        if result.checkpoint is not None:
            book.checkpoint = Checkpoint(name, result.checkpoint, book.last_ts, book.sent_rows, now)
            self._new_checkpoints.append(book.checkpoint)
            self.checkpoints_taken += 1
            book.log.clear()
            book.log_rows = book.dropped_rows = 0
        if book.asked or result.checkpoint is not None:  # taken, or failed: not asked again at once
            book.asked = False
            book.since_rows, book.since_s = 0, now
        s = self.settings
        took = max(result.wall_s, elapsed_s or 0.0)
        if self.miss_deadline_s is not None and took > self.miss_deadline_s:
            self.misses += 1
            if _hit(book.misses, now, s.miss_window_s, s.max_misses, 1):
                why = (
                    f"{s.max_misses} calls slower than the {self.miss_deadline_s * 1000:g} ms deadline "
                    f"within {s.miss_window_s:g} s (recovery.max_misses)"
                )
                return self.quarantine(name, "misses", why)
        limit, window = s.max_errors, s.error_window_s
        if result.errors and limit is not None and _hit(book.errors, now, window, limit, result.errors):
            why = f"{limit} hook errors within {window:g} s (recovery.max_errors)"
            return self.quarantine(name, "errors", why)
        return "continue"

    # -------------------------------------------------------------------------------- deaths, restarts
    def died(self, name: str) -> Decision:
        """``name``'s process died (or was killed after a hang): "restart", or "quarantine" once it was
        restarted ``max_restarts`` times within ``restart_window_s``. Call it for every agent of a
        runner whose process went (a shared host takes all its agents), and again for an agent whose
        ``recover`` failed."""
        if name in self.quarantined:
            return "quarantine"
        book, now, s = self._books[name], self.clock(), self.settings
        if book.dead_since is None:
            book.dead_since = now
        _prune(book.restarts, now, s.restart_window_s)
        if len(book.restarts) >= s.max_restarts:
            why = (
                f"its process died again after {s.max_restarts} restarts within {s.restart_window_s:g} s "
                "(recovery.max_restarts)"
            )
            return self.quarantine(name, "restarts", why)
        book.restarts.append(now)
        self.restarts += 1
        return "restart"

    def recovery_inputs(
        self, names: Iterable[str]
    ) -> tuple[dict[str, bytes | None], dict[str, list[ReplayCall]]]:
        """``(snapshots, replay)`` for ``Runner.recover``: the agents of ``names`` not quarantined."""
        snapshots: dict[str, bytes | None] = {}
        replay: dict[str, list[ReplayCall]] = {}
        for name in names:
            if name not in self.quarantined:
                book = self._books[name]
                snapshots[name], replay[name] = book.checkpoint.data, list(book.log)
        return snapshots, replay

    def quarantine(self, name: str, reason: QuarantineReason, message: str) -> Decision:
        """Quarantine ``name`` (also for the supervisor's own reasons); its replay log is released."""
        if name not in self.quarantined:
            book = self._books[name]
            self.quarantined[name] = Quarantine(name, reason, message, self.clock())
            book.log.clear()
            book.log_rows, book.dead_since = 0, None
        return "quarantine"

    def recovery_stats(self) -> RecoveryStats:
        """p50, p99 and max of :attr:`recovery_times` (zeros when nothing recovered)."""
        times = self.recovery_times
        if not times:
            return RecoveryStats(0, 0.0, 0.0, 0.0)
        p50, p99 = np.percentile(np.asarray(times), [50, 99]).tolist()
        return RecoveryStats(len(times), p50, p99, max(times))


def _prune(events: deque[float], now: float, window_s: float) -> None:
    while events and now - events[0] > window_s:
        events.popleft()


def _hit(events: deque[float], now: float, window_s: float, limit: int, count: int) -> bool:
    """Record ``count`` events at ``now``; True when ``limit`` of them fall within ``window_s``."""
    events.extend([now] * min(count, limit))
    while len(events) > limit:
        events.popleft()
    _prune(events, now, window_s)
    return len(events) >= limit


def _no_rows(batch: BarBatch) -> BarBatch:
    """``batch`` with no rows (same symbols): a call that carried only fills."""
    return BarBatch(
        batch.symbols,
        batch.ts[:0],
        batch.open[:0],
        batch.high[:0],
        batch.low[:0],
        batch.close[:0],
        batch.volume[:0],
        batch.valid[:0],
    )
