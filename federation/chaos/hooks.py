"""Hook faults for the chaos harness: agents' ``on_batch`` raises, hangs or runs slow, reproducibly.

:class:`HookFaults` is the plan's setting; :class:`~federation.runners.host.AgentHost` applies it around each
``on_batch`` call (never while replaying bars after a restart) through a :class:`FaultInjector`, whose
random stream is seeded from ``(seed, agent name, incarnation)``: the same plan injects the same faults
into the same calls of the same agent, and a restarted agent draws a fresh stream instead of repeating the
faults of its previous process in lockstep.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

FAULT_KINDS = ("raise", "hang", "slow")
"""Keys of :attr:`FaultInjector.counts` (and of ``AgentBlockResult.injected``)."""


class InjectedFault(Exception):
    """Raised in place of an agent's ``on_batch`` by the chaos harness (``raise_rate``): recorded like any
    exception of a hook."""


class HookFaults(BaseModel):
    """Faults injected around an agent's ``on_batch``; one draw per call decides which, if any.

    ``raise_rate + hang_rate + slow_rate`` is at most 1 (the three are exclusive for one call).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0)
    raise_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of calls that raise :class:`InjectedFault` instead of calling ``on_batch``."""
    hang_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of calls that sleep ``hang_s`` first: a hung process the supervisor must kill."""
    hang_s: float = Field(60.0, gt=0.0)
    slow_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of calls that sleep ``slow_ms`` before ``on_batch``."""
    slow_ms: float = Field(100.0, ge=0.0)

    @model_validator(mode="after")
    def _rates_fit(self) -> HookFaults:
        total = self.raise_rate + self.hang_rate + self.slow_rate
        if total > 1.0:
            raise ValueError(
                f"raise_rate + hang_rate + slow_rate = {total:g} is above 1: they are shares of the same "
                "calls and exclusive; lower them so that they sum to at most 1"
            )
        return self

    def injector(self, agent: str, incarnation: int = 0) -> FaultInjector:
        """The injector of one agent's process (``incarnation``: how often that agent was restarted)."""
        return FaultInjector(self, agent, incarnation)


def _name_key(name: str) -> int:
    """A stable integer for ``name`` (Python's ``hash`` of a str changes from process to process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def _sleep(seconds: float) -> None:
    """Sleep in short steps: a shared host's ``CallAbandoned`` can stop it between two of them."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


class FaultInjector:
    """Draws and applies the faults of one agent's calls; counts what it injected."""

    def __init__(self, faults: HookFaults, agent: str, incarnation: int = 0) -> None:
        self.faults = faults
        self._rng = np.random.default_rng([faults.seed, _name_key(agent), incarnation])
        self.counts: dict[str, int] = {}
        """Faults injected since the last :meth:`take` (only kinds that occurred)."""

    def before_call(self) -> None:
        """Called just before ``on_batch``: maybe sleep, maybe raise :class:`InjectedFault`."""
        f = self.faults
        u = float(self._rng.random())
        if u < f.raise_rate:
            self._count("raise")
            raise InjectedFault(f"injected by the chaos harness (raise_rate = {f.raise_rate:g})")
        if u < f.raise_rate + f.hang_rate:
            self._count("hang")
            _sleep(f.hang_s)
        elif u < f.raise_rate + f.hang_rate + f.slow_rate:
            self._count("slow")
            _sleep(f.slow_ms / 1000)

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def take(self) -> dict[str, int]:
        """The counts since the last call, reset."""
        out, self.counts = self.counts, {}
        return out
