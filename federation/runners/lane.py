"""``CallLane``: runs many agents' calls one after another on a worker thread, with a deadline per call.

This is how the ``shared`` tier contains a slow agent without a process per agent. The host hands a list
of calls to its lane and waits; when one call runs past its deadline, the host stops waiting for it: the
lane thread is left to finish that call on its own (its result goes to ``on_late``), and the calls not yet
started move to a fresh lane. The other agents therefore lose at most one deadline, once.

Python cannot kill a thread. :meth:`CallLane.interrupt` raises :class:`CallAbandoned` inside the left
thread, which stops pure-Python code at its next bytecode; a call blocked inside C code (a sleep, a socket
read, a long numpy operation) finishes first. An agent that must be stoppable by force belongs in the
``actor`` tier (its own process).
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class CallAbandoned(BaseException):
    # BaseException: agent code's `except Exception` must not swallow it.
    """Raised inside a call the host gave up on (see :meth:`CallLane.interrupt`)."""


Call = tuple[str, Callable[[], Any]]
"""``(agent name, zero-argument function)``; the function must not raise (the host contains errors)."""


@dataclass(slots=True)
class _Job:
    calls: list[Call]
    on_late: Callable[[str, Any], None]
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    results: dict[str, Any] = field(default_factory=dict)
    next: int = 0
    started: float | None = None
    abandoned: bool = False


class CallLane:
    """One daemon thread executing jobs (lists of calls) in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="agent-lane", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if not self._run(job):
                    return  # abandoned during a call: a fresh lane took over
        except CallAbandoned:
            return

    def _run(self, job: _Job) -> bool:
        while True:
            with job.lock:
                if job.next >= len(job.calls):
                    job.done.set()
                    return True
                name, fn = job.calls[job.next]
                job.started = time.monotonic()
            result = fn()
            with job.lock:
                if job.abandoned:
                    late = True
                else:
                    late = False
                    job.results[name] = result
                    job.next += 1
                    job.started = None
            if late:
                job.on_late(name, result)
                return False

    def interrupt(self) -> None:
        """Raise :class:`CallAbandoned` in the lane's thread (stops pure-Python code)."""
        if self._thread.ident is not None and self._thread.is_alive():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread.ident), ctypes.py_object(CallAbandoned)
            )

    def close(self) -> None:
        self._jobs.put(None)

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)


class LaneRunner:
    """Runs lists of calls with a per-call deadline, replacing its lane whenever a call overruns."""

    def __init__(self, on_late: Callable[[str, Any], None]) -> None:
        self._lane = CallLane()
        self._on_late = on_late
        self.abandoned: dict[str, CallLane] = {}
        """Agents whose call overran, and the lane still running it."""

    def run(self, calls: Sequence[Call], deadline_s: float) -> tuple[dict[str, Any], list[str]]:
        """Results of the calls that finished in time, and the names of those that overran."""
        results: dict[str, Any] = {}
        overran: list[str] = []
        poll = min(max(deadline_s / 10, 0.001), 0.05)
        while calls:
            job = _Job(list(calls), self._on_late)
            self._lane.submit(job)
            rest: list[Call] = []
            while not job.done.wait(poll):
                with job.lock:
                    if job.started is not None and time.monotonic() - job.started > deadline_s:
                        job.abandoned = True
                        name = job.calls[job.next][0]
                        rest = job.calls[job.next + 1 :]
                        break
            else:
                results.update(job.results)
                break
            results.update(job.results)
            overran.append(name)
            self.abandoned[name] = self._lane
            self._lane = CallLane()
            calls = rest
        return results, overran

    def close(self) -> None:
        self._lane.close()
