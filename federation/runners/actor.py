"""The ``actor`` isolation tier: one dedicated Ray actor (own process) per agent.

A crash, a leak or a hang stays in that process. The supervisor enforces the call deadline from outside:
an actor that does not answer in time is killed; :meth:`ActorRunner.restart` and
:meth:`ActorRunner.recover` bring its agent back in a fresh process (Ray itself restarts nothing:
``max_restarts=0``, since a Ray restart would re-run ``__init__`` and lose the agent's state).
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

import ray

from agents.base import Agent, HookError
from agents.model import BarBatch, FillRow
from federation.runners.base import AgentErrors, ReplayCall
from federation.runners.host import AgentBlockResult, AgentHost, flush_budgets
from federation.runners.usage import AgentUsage, process_usage


class _AgentService:
    def __init__(self, agent_class: type[Agent] | None, kwargs: dict[str, Any] | None) -> None:
        """Without an agent (both None): a spare process waiting for :meth:`load`."""
        if agent_class is not None and kwargs is not None:
            self.host = AgentHost(agent_class, **kwargs)

    def pid(self) -> tuple[str, int]:
        """(node id, process id) of this actor's process."""
        return ray.get_runtime_context().get_node_id(), os.getpid()

    def load(self, spec: tuple[type[Agent], dict[str, Any]], incarnation: int) -> None:
        """A spare process takes its agent (the restart of one whose process died): ``spec`` is the
        agent's class and :class:`AgentHost` arguments (passed as one object put in the store once)."""
        agent_class, kwargs = spec
        self.host = AgentHost(agent_class, **{**kwargs, "incarnation": incarnation})

    def start(self) -> AgentErrors:
        error = self.host.start()
        return [(self.host.name, error)] if error else []

    def process(
        self, block: BarBatch, fills: list[FillRow], hold: bool | None, checkpoint: bool = False
    ) -> list[AgentBlockResult]:
        if hold is not None:
            return [self.host.hold(block, fills, keep_bars=hold)]
        result = self.host.process(block, fills, checkpoint)
        flush_budgets([self.host])
        return [result]

    def recover(self, snapshot: bytes | None, calls: list[ReplayCall]) -> AgentErrors:
        errors = [(self.host.name, e) for e in recover_host(self.host, snapshot, calls)]
        flush_budgets([self.host])
        return errors

    def stop(self, fills: list[FillRow]) -> AgentErrors:
        errors = [(self.host.name, e) for e in self.host.stop(fills)]
        flush_budgets([self.host])
        return errors

    def usage(self) -> list[AgentUsage]:
        return process_usage([self.host.name])


def recover_host(host: AgentHost, snapshot: bytes | None, calls: list[ReplayCall]) -> list[HookError]:
    """``on_start``, restore ``snapshot`` (if any), replay ``calls``; the errors (none: recovered). A
    failed ``on_start`` or restore replays nothing: the agent's state would not be the one it had."""
    error = host.start()
    if error is None and snapshot is not None:
        error = host.restore_snapshot(snapshot)
    if error is not None:
        return [error]
    host.replay(calls)
    return []


_AgentActor: Any = ray.remote(_AgentService)
_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_concurrency": 1}


class ActorRunner:
    """Creates the agent's actor at construction (asynchronously; ``start()`` waits for it)."""

    isolation = "actor"

    def __init__(
        self, agent_class: type[Agent], kwargs: dict[str, Any], options: dict[str, Any] | None = None
    ) -> None:
        """``kwargs``: the :class:`AgentHost` arguments (``name``, ``symbols``, ``params``, ...)."""
        self.names: tuple[str, ...] = (kwargs["name"],)
        self._class, self._kwargs, self._options = agent_class, kwargs, options or {}
        self.restarts = 0
        """How often :meth:`restart` replaced the actor."""
        self._spec: Any = None
        self._actor = self._create()

    def _create(self) -> Any:
        return _AgentActor.options(**_ACTOR_OPTIONS, **self._options).remote(self._class, self._incarnation())

    def _incarnation(self) -> dict[str, Any]:
        return {**self._kwargs, "incarnation": self.restarts}

    def start(self) -> Any:
        return self._actor.start.remote()

    def process(
        self,
        block: Any,
        fills: dict[str, list[FillRow]],
        hold: dict[str, bool] | None = None,
        checkpoint: set[str] | None = None,
    ) -> Any:
        name = self.names[0]
        wanted = checkpoint is not None and name in checkpoint
        return self._actor.process.remote(block, fills.get(name, []), (hold or {}).get(name), wanted)

    def stop(self, fills: dict[str, list[FillRow]]) -> Any:
        return self._actor.stop.remote(fills.get(self.names[0], []))

    def usage(self) -> Any:
        return self._actor.usage.remote()

    def kill(self) -> None:
        ray.kill(self._actor, no_restart=True)

    def restart(self, spare: Any = None) -> None:
        """A fresh process for the agent: ``spare`` (an idle process of a :class:`SparePool`, which
        takes the agent at once) or a new one (Ray starts a worker: about a second, more under load)."""
        self.kill()
        self.restarts += 1
        if spare is None:
            self._actor = self._create()
        else:
            if self._spec is None:  # the class travels by value: serialized once, not per restart
                self._spec = ray.put((self._class, self._kwargs))
            self._actor = spare
            spare.load.remote(self._spec, self.restarts)  # before recover: one caller, in order

    def recover(self, snapshots: dict[str, bytes | None], replay: dict[str, list[ReplayCall]]) -> Any:
        name = self.names[0]
        if name not in snapshots:  # quarantined: nothing to bring back
            return ray.put([])
        calls = select_calls(replay.get(name, []), self._kwargs["symbols"])
        return self._actor.recover.remote(snapshots[name], calls)

    def suspend(self, names: set[str]) -> None:
        if self.names[0] in names:
            self.kill()


class SparePool:
    """Idle agent processes started ahead of need, so that restarting a dead agent does not wait for a
    new process: starting a Ray worker costs about half a second of CPU here (docs/reliability.md), and a
    wave of restarts on a small machine queues behind the raylet's start-up concurrency.

    A spare on this node is paused (SIGSTOP) while it waits, so it costs memory (about 50 MB) but no CPU
    (an idle Ray worker otherwise wakes ~110 times a second); :meth:`take` resumes it (SIGCONT) and hands
    it out. Spares on other nodes are not paused. The pool is filled to ``size`` at the start, all at
    once (the supervisor waits for them before the first bar); once a quarter or less is left it is
    topped up again one process at a time (:meth:`fill`), so refilling costs at most one process start
    at any moment and bursts of restarts do not each start processes. ``[recovery] spare_processes``.
    """

    def __init__(self, size: int, options: dict[str, Any] | None = None) -> None:
        self.size = size
        self._options = options or {}
        self._ready: list[tuple[Any, int | None]] = []
        """(actor, pid if paused)."""
        self._starting: dict[Any, Any] = {}
        self._node = ray.get_runtime_context().get_node_id()
        self._refilling = False
        self.taken = 0

    def fill(self) -> None:
        """Start spares up to ``size``: all at once the first time; later, once a quarter or less is
        left, one at a time until full (no wait)."""
        self._collect()
        have = len(self._ready) + len(self._starting)
        if self.taken and not self._refilling:
            self._refilling = have <= self.size // 4
        if have >= self.size:
            self._refilling = False
        while have < self.size and (not self.taken or (self._refilling and not self._starting)):
            actor = _AgentActor.options(**_ACTOR_OPTIONS, **self._options).remote(None, None)
            self._starting[actor.pid.remote()] = actor
            have += 1

    def _collect(self) -> None:
        if not self._starting:
            return
        done, _ = ray.wait(list(self._starting), num_returns=len(self._starting), timeout=0)
        for ref in done:
            actor = self._starting.pop(ref)
            try:
                node, pid = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # a spare that could not start is dropped (fill starts another)
            paused = None
            if node == self._node:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    paused = pid
            self._ready.append((actor, paused))

    def take(self) -> Any:
        """A spare whose process is up (resumed), or None (none ready yet)."""
        self._collect()
        if not self._ready:
            return None
        actor, paused = self._ready.pop()
        if paused is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(paused, signal.SIGCONT)
        self.taken += 1
        return actor

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until every spare being started is up (and paused), at most ``timeout_s``."""
        if self._starting:
            ray.wait(list(self._starting), num_returns=len(self._starting), timeout=timeout_s)
        self._collect()

    def ready(self) -> int:
        """Spares up and waiting."""
        self._collect()
        return len(self._ready)

    def kill(self) -> None:
        for actor, paused in self._ready:
            if paused is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(paused, signal.SIGCONT)
            ray.kill(actor, no_restart=True)
        for actor in self._starting.values():
            ray.kill(actor, no_restart=True)
        self._ready, self._starting = [], {}


def select_calls(calls: list[ReplayCall], symbols: tuple[str, ...]) -> list[ReplayCall]:
    """The calls with only ``symbols``' columns: a replay ships what the agent reads, not the universe."""
    return [(batch.select(symbols), fills) for batch, fills in calls]
