"""``ExecutionLink``: the supervisor's connection to the execution actor, which it restarts when it dies.

Ray runs an actor's calls at most once: a call in flight when the actor's process dies raises
``RayActorError`` and nothing is restored. The link catches that, starts a new execution actor in
recovery mode (it rebuilds its books from the ledger, its order journal and the venue, which runs as an
actor of its own and so survived), gives it the desired positions the supervisor mirrors, collects the
fills reconciliation booked that no agent has seen yet, and sends the interrupted call again. Re-sending
is safe: the targets are absolute positions and the venue matches an order once, however often a bar is
sent (:mod:`federation.execution.exchange`).

Without a venue actor (backtests: the venue lives inside the execution actor) a dead execution actor
cannot be reconciled, and the run fails as before.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from federation.execution.engine import BlockOutcome, TargetUpdates

log = logging.getLogger("federation")


class ExecutionLost(Exception):
    """The execution actor died more often than ``[recovery] execution_max_restarts`` allows, or it
    could not be restarted; the run fails (its ledger holds everything recorded until then)."""


@dataclass(slots=True)
class ExecutionRestart:
    """One restart of the execution actor: when the death was seen, how long recovery took, and what
    reconciliation found."""

    at: float
    """``time.monotonic()`` when the supervisor saw the actor dead."""
    recovery_s: float
    fills_recovered: int


@dataclass(slots=True)
class ExecutionLink:
    """Holds the current execution actor handle; every call goes through :meth:`call`."""

    start: Callable[[bool, Any], Any]
    """Starts an execution actor: ``start(recover, standby)`` -> handle (``recover``: rebuild from the
    ledger; ``standby``: a standby to take over instead of starting one, or None)."""
    max_restarts: int
    agents: int
    symbols: int
    handle: Any = None
    make_standby: Callable[[], Any] | None = None
    """Starts a standby: an execution actor in recovery mode, started ahead (its process up, its ledger,
    venue and journal open) so that taking over is only reconciling; None: start one on death."""
    standby: Any = None
    restart_timeout_s: float = 120.0
    """How long a restart may keep failing (e.g. the ledger database is down too) before the run fails."""
    restarts: list[ExecutionRestart] = field(default_factory=list)
    recovered: BlockOutcome | None = None
    """Fills booked by the last reconciliation that agents have not received (taken by the caller)."""
    _desired: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    _delivered_ts: int = -1

    def __post_init__(self) -> None:
        self._desired = np.zeros((self.agents, self.symbols), dtype=np.int64)
        if self.handle is None:
            self.handle = self.start(False, None)
        self._new_standby()

    def _new_standby(self) -> None:
        if self.make_standby is not None and self.restartable and self.standby is None:
            self.standby = self.make_standby()

    def close(self) -> None:
        """Release the standby process (the caller kills the execution actor itself)."""
        if self.standby is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.standby, no_restart=True)
            self.standby = None

    @property
    def restartable(self) -> bool:
        return self.max_restarts > len(self.restarts)

    def process_block(self, block_ref: Any, targets: TargetUpdates, last_ts: int) -> BlockOutcome:
        """The block's outcome; the execution actor is restarted (and the block sent again) if it dies.
        ``last_ts`` is the block's last bar time: its fills count as delivered once this returns."""
        outcome: BlockOutcome = self.call(lambda h: h.process_block.remote(block_ref, targets))
        if len(targets.rows):
            self._desired[targets.agents, targets.cols] = targets.lots
        self._delivered_ts = max(self._delivered_ts, last_ts)
        return outcome

    def call(self, send: Callable[[Any], Any]) -> Any:
        """``ray.get(send(handle))``, restarting the actor on death and sending again."""
        while True:
            try:
                return ray.get(send(self.handle))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                self._restart(exc)

    def take_recovered(self) -> BlockOutcome | None:
        """Fills (and their fees) booked by reconciliation that agents have not been given yet."""
        recovered, self.recovered = self.recovered, None
        return recovered

    def _restart(self, exc: BaseException) -> None:
        seen = time.monotonic()
        if not self.restartable:
            raise ExecutionLost(
                f"the execution actor died ({_first_line(exc)}) and has been restarted "
                f"{len(self.restarts)} time(s) already ([recovery] execution_max_restarts = "
                f"{self.max_restarts}); the run stops. Its ledger holds every fill recorded so far."
            ) from exc
        log.error("execution actor died (%s); restarting it from the ledger and the venue", _first_line(exc))
        with contextlib.suppress(Exception):  # already gone
            ray.kill(self.handle, no_restart=True)
        delay, handle = 0.25, None
        while True:
            try:
                standby, self.standby = self.standby, None
                handle = self.start(True, standby)
                outcome: BlockOutcome = ray.get(handle.recover.remote(self._delivered_ts))
                ray.get(handle.restore_desired.remote(self._desired.copy()))
                break
            except ray.exceptions.RayError as exc2:
                # The same arguments started it before: what fails now is the ledger database or the venue
                # being unreachable for a while (a restart during an outage). Tried again until the deadline.
                if time.monotonic() - seen > self.restart_timeout_s:
                    raise ExecutionLost(
                        f"the execution actor could not be restarted within {self.restart_timeout_s:g} s: "
                        f"{_root_message(exc2)}"
                    ) from exc2
                log.warning("execution actor restart failed (%s); trying again", _root_message(exc2))
                if handle is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(handle, no_restart=True)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.handle = handle
        self._new_standby()
        if self.recovered is None:
            self.recovered = outcome
        else:  # died again before the caller took the last reconciliation's fills
            for name, rows in outcome.fills.items():
                self.recovered.fills.setdefault(name, []).extend(rows)
            for name, fee in outcome.fees_e8.items():
                self.recovered.fees_e8[name] = self.recovered.fees_e8.get(name, 0) + fee
        count = sum(len(rows) for rows in outcome.fills.values())
        took = time.monotonic() - seen
        self.restarts.append(ExecutionRestart(seen, took, count))
        log.warning("execution actor restarted in %.2f s (%d fills reconciled)", took, count)


def _root_message(exc: BaseException) -> str:
    """The last line of a Ray error's text: the exception the actor raised."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
