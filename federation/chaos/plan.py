"""The chaos plan: which faults ``federation chaos`` injects, when, and what the run must still satisfy.

A plan is a TOML file validated by :class:`ChaosPlan`. Times are seconds from the start of live trading.
Everything random is seeded by the plan's ``seed``: the scheduled events (:meth:`ChaosPlan.schedule`) are
fixed by the plan, and which agents a kill wave hits or which agents get hook faults is drawn from
``numpy.random.default_rng([seed, wave])`` (:meth:`ChaosPlan.pick_agents`, :meth:`ChaosPlan.hook_agents`),
so the same plan on the same fleet injects the same faults.

Example (the issue's full plan)::

    seed = 7
    duration_s = 60

    [agents]
    kill_fraction = 0.1
    kill_every_s = 5

    [execution]
    kill_at_s = [15, 40]

    [venue]
    timeout_rate = 0.01
    reject_rate = 0.01
    partial_fill_rate = 0.2

    [data]
    corrupt_rate = 0.005

    [postgres]
    restart_at_s = [25]

    [redis]
    down_at_s = [30]
    down_s = 10
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from federation.chaos.corrupt import KINDS as CORRUPTION_KINDS
from federation.chaos.corrupt import MAX_RATE, CorruptionKind
from federation.chaos.hooks import HookFaults
from federation.config import format_validation_error
from federation.errors import ConfigError
from federation.execution.venue_faults import VenueFaults

FaultKind = Literal[
    "kill_agents",
    "kill_execution",
    "venue_disconnect",
    "postgres_down",
    "postgres_up",
    "redis_down",
    "redis_up",
]
# Events at the same second run in this order: a server comes back before the next fault hits.
_KIND_ORDER: tuple[FaultKind, ...] = (
    "postgres_up",
    "redis_up",
    "postgres_down",
    "redis_down",
    "venue_disconnect",
    "kill_execution",
    "kill_agents",
)
HOOK_DRAW = 0x686F6F6B
"""The ``wave`` of :func:`pick_agents` that draws the hook-faulted agents (kill waves are 0, 1, ...; seed
words must be non-negative)."""

Seconds = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentKills(_Model):
    """``[agents]``: kill a share of the agent processes at random, in waves."""

    kill_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of the live agents killed in each wave (at least one if > 0)."
    )
    kill_every_s: float | None = Field(None, gt=0, description="Seconds between waves.")
    kill_start_s: float | None = Field(
        None, ge=0, description="Time of the first wave; default: kill_every_s after the start."
    )

    @model_validator(mode="after")
    def _needs_period(self) -> AgentKills:
        if self.kill_fraction > 0 and self.kill_every_s is None:
            raise ValueError(
                f"kill_fraction = {self.kill_fraction:g} is set without kill_every_s; set how many seconds "
                "apart the waves are, e.g. kill_every_s = 5"
            )
        if self.kill_fraction == 0 and self.kill_every_s is not None:
            raise ValueError(
                f"kill_every_s = {self.kill_every_s:g} is set but kill_fraction is 0, so no agent is killed; "
                "set kill_fraction (e.g. 0.1) or remove kill_every_s"
            )
        return self

    @property
    def first_wave_s(self) -> float | None:
        if self.kill_every_s is None:
            return None
        return self.kill_every_s if self.kill_start_s is None else self.kill_start_s


class HookFaultPlan(HookFaults):
    """``[hooks]``: agents whose hooks raise, hang or run slow (per call, at random).

    The fields of :class:`~federation.chaos.hooks.HookFaults` (its seed is the plan's ``seed``), plus
    ``agents_fraction``: the share of agents that get these faults; the others are the healthy agents
    whose latency the report compares with the baseline.
    """

    agents_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of agents whose hooks get these faults (the rest are healthy)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> HookFaultPlan:
        if "seed" in self.model_fields_set:
            raise ValueError(
                "seed: the hook faults are seeded by the plan's top-level seed; remove seed from [hooks]"
            )
        rates = self.raise_rate + self.hang_rate + self.slow_rate
        if rates > 0 and self.agents_fraction == 0:
            raise ValueError(
                "hook fault rates are set but agents_fraction is 0, so no agent gets them; set "
                "agents_fraction (e.g. 0.2) or remove the rates"
            )
        if rates == 0 and self.agents_fraction > 0:
            raise ValueError(
                f"agents_fraction = {self.agents_fraction:g} but no hook fault rate is set; set raise_rate, "
                "hang_rate or slow_rate, or remove agents_fraction"
            )
        return self

    def faults(self, seed: int) -> HookFaults:
        """The faults of a faulted agent's hooks (``seed``: the plan's)."""
        return HookFaults(**self.model_dump(exclude={"agents_fraction", "seed"}), seed=seed)


class ExecutionKills(_Model):
    """``[execution]``: kill the execution actor at these times (it is restarted and reconciles)."""

    kill_at_s: list[Seconds] = Field(default_factory=list, description="Seconds from the start.")

    @field_validator("kill_at_s")
    @classmethod
    def _distinct(cls, value: list[float]) -> list[float]:
        _no_repeats(value, "kill_at_s")
        return value


class Disconnect(_Model):
    """One venue disconnect window: every venue call fails as disconnected from ``at_s`` for ``for_s``."""

    at_s: Seconds
    for_s: float = Field(gt=0, le=86_400)


class VenueFaultPlan(VenueFaults):
    """``[venue]``: the simulated exchange's fault modes (the fields of
    :class:`~federation.execution.venue_faults.VenueFaults`, seeded by the plan's ``seed``) and its
    disconnect windows."""

    disconnects: list[Disconnect] = Field(default_factory=list, description="Disconnect windows.")

    @field_validator("disconnects")
    @classmethod
    def _no_overlap(cls, value: list[Disconnect]) -> list[Disconnect]:
        _no_overlaps([(d.at_s, d.for_s) for d in value], "disconnects", "at_s", "for_s")
        return value

    @model_validator(mode="after")
    def _plan_seed(self) -> VenueFaultPlan:
        if "seed" in self.model_fields_set:
            raise ValueError(
                "seed: the venue faults are seeded by the plan's top-level seed; remove seed from [venue]"
            )
        return self

    def faults(self, seed: int) -> VenueFaults:
        """The venue's fault settings (``seed``: the plan's); disconnects are scheduled events."""
        return VenueFaults(**self.model_dump(exclude={"disconnects", "seed"}), seed=seed)

    @property
    def active(self) -> bool:
        """Whether the venue gets any fault (a rate above 0 or a disconnect window)."""
        rates = (
            self.timeout_rate, self.reject_rate, self.rate_limit_rate, self.partial_fill_rate,
            self.delayed_fill_rate, self.duplicate_fill_rate,
        )  # fmt: skip
        return any(rates) or bool(self.disconnects)


class DataFaultPlan(_Model):
    """``[data]``: corrupt a share of the bars before the feed's validation layer reads them
    (:mod:`federation.chaos.corrupt`)."""

    corrupt_rate: float = Field(0.0, ge=0, le=MAX_RATE, description="Share of bars corrupted.")
    kinds: list[CorruptionKind] = Field(
        default_factory=lambda: list(CORRUPTION_KINDS),
        min_length=1,
        description="Corruptions drawn from: " + ", ".join(CORRUPTION_KINDS) + ".",
    )

    @field_validator("kinds")
    @classmethod
    def _distinct(cls, value: list[CorruptionKind]) -> list[CorruptionKind]:
        _no_repeats(value, "kinds")
        return value


class PostgresFaultPlan(_Model):
    """``[postgres]``: stop the ledger's PostgreSQL server at these times and start it ``down_s`` later."""

    restart_at_s: list[Seconds] = Field(default_factory=list, description="Seconds from the start.")
    down_s: float = Field(2.0, gt=0, le=3600, description="How long the server stays down each time.")
    private: bool = Field(
        True,
        description="The harness starts a PostgreSQL server of its own for the run (the fleet's ledger URL "
        "is replaced by it), so restarting it disturbs nothing else.",
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> PostgresFaultPlan:
        _no_overlaps([(t, self.down_s) for t in self.restart_at_s], "restart_at_s", "", "down_s")
        return self


class RedisFaultPlan(_Model):
    """``[redis]``: take the Redis server down at these times for ``down_s`` each."""

    down_at_s: list[Seconds] = Field(default_factory=list, description="Seconds from the start.")
    down_s: float = Field(10.0, gt=0, le=3600, description="How long Redis stays down each time.")

    @model_validator(mode="after")
    def _no_overlap(self) -> RedisFaultPlan:
        _no_overlaps([(t, self.down_s) for t in self.down_at_s], "down_at_s", "", "down_s")
        return self


class InvariantThresholds(_Model):
    """``[invariants]``: the thresholds of the checks that are not exact."""

    recovery_p99_s: float = Field(
        5.0, gt=0, description="p99 of the time from an agent's kill to its first answer after restore."
    )
    latency_ratio_max: float = Field(
        2.0,
        gt=0,
        description="Healthy agents' tick-to-orders p99 during faults over the fault-free baseline's.",
    )
    max_quarantined: int | None = Field(
        None, ge=0, description="Most agents allowed in quarantine at the end; none: any number."
    )


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One scheduled fault: what the harness does at ``at_s`` seconds after the start of trading."""

    at_s: float
    kind: FaultKind
    params: dict[str, Any] = field(default_factory=dict)
    """``kill_agents``: wave, fraction; ``venue_disconnect``: for_s; ``postgres_down`` and ``redis_down``:
    down_s (their ``*_up`` event follows); others: none."""

    def to_dict(self) -> dict[str, Any]:
        return {"at_s": self.at_s, "kind": self.kind, "params": dict(self.params)}


class ChaosPlan(_Model):
    """A fault-injection plan (``federation chaos CONFIG --plan PLAN.toml``): see the module docstring."""

    seed: int = Field(ge=0, description="Seed of every random choice of the plan.")
    duration_s: float = Field(gt=0, le=86_400, description="Seconds of live trading under faults.")
    baseline: bool = Field(
        True, description="First run the same fleet without faults, for the latency comparison."
    )
    baseline_s: float | None = Field(
        None, gt=0, le=86_400, description="Seconds of the baseline run; default: duration_s."
    )
    agents: AgentKills = Field(default_factory=AgentKills)
    hooks: HookFaultPlan = Field(default_factory=HookFaultPlan)
    execution: ExecutionKills = Field(default_factory=ExecutionKills)
    venue: VenueFaultPlan = Field(default_factory=VenueFaultPlan)
    data: DataFaultPlan = Field(default_factory=DataFaultPlan)
    postgres: PostgresFaultPlan = Field(default_factory=PostgresFaultPlan)
    redis: RedisFaultPlan = Field(default_factory=RedisFaultPlan)
    invariants: InvariantThresholds = Field(default_factory=InvariantThresholds)

    @model_validator(mode="after")
    def _within_run(self) -> ChaosPlan:
        end = self.duration_s
        after = f"is after the end of the run (duration_s = {end:g})"

        first = self.agents.first_wave_s
        if first is not None and first >= end:
            which = "kill_start_s" if self.agents.kill_start_s is not None else "kill_every_s"
            raise ValueError(
                f"agents.{which} = {first:g}: the first kill wave {after}, so no agent is killed; start it "
                "earlier or lengthen duration_s"
            )
        for i, at in enumerate(self.execution.kill_at_s):
            if at >= end:
                raise ValueError(f"execution.kill_at_s[{i}] = {at:g} {after}; kill it earlier or remove it")
        windows = (
            [(f"venue.disconnects[{i}]", d.at_s, f"for_s = {d.for_s:g}", d.for_s)
             for i, d in enumerate(self.venue.disconnects)]
            + [(f"postgres.restart_at_s[{i}]", t, f"postgres.down_s = {self.postgres.down_s:g}",
                self.postgres.down_s) for i, t in enumerate(self.postgres.restart_at_s)]
            + [(f"redis.down_at_s[{i}]", t, f"redis.down_s = {self.redis.down_s:g}", self.redis.down_s)
               for i, t in enumerate(self.redis.down_at_s)]
        )  # fmt: skip
        for where, at, length, span in windows:
            if at >= end:
                raise ValueError(f"{where} = {at:g} {after}; start it earlier or remove it")
            if at + span > end:
                raise ValueError(
                    f"{where} starts at {at:g} and, with {length}, ends at {at + span:g}, after the end of "
                    f"the run (duration_s = {end:g}); the service must be back before the run ends for "
                    "the invariants to be checked: start it earlier or shorten it"
                )
        return self

    @property
    def baseline_duration_s(self) -> float:
        """Seconds of the fault-free baseline run (``baseline_s``, default ``duration_s``)."""
        return self.duration_s if self.baseline_s is None else self.baseline_s

    def schedule(self) -> list[FaultEvent]:
        """The timed faults in the order the harness injects them (by time; ties: servers come back
        first). Probabilistic faults (hooks, venue rates, data) are settings, not events."""
        events: list[FaultEvent] = []
        first, every = self.agents.first_wave_s, self.agents.kill_every_s
        if first is not None and every is not None:
            wave = 0
            while (at := first + wave * every) < self.duration_s:
                events.append(
                    FaultEvent(at, "kill_agents", {"wave": wave, "fraction": self.agents.kill_fraction})
                )
                wave += 1
        events += [FaultEvent(at, "kill_execution") for at in self.execution.kill_at_s]
        events += [FaultEvent(d.at_s, "venue_disconnect", {"for_s": d.for_s}) for d in self.venue.disconnects]
        for at in self.postgres.restart_at_s:
            events.append(FaultEvent(at, "postgres_down", {"down_s": self.postgres.down_s}))
            events.append(FaultEvent(at + self.postgres.down_s, "postgres_up"))
        for at in self.redis.down_at_s:
            events.append(FaultEvent(at, "redis_down", {"down_s": self.redis.down_s}))
            events.append(FaultEvent(at + self.redis.down_s, "redis_up"))
        return sorted(events, key=lambda e: (e.at_s, _KIND_ORDER.index(e.kind)))

    def pick_agents(self, names: Iterable[str], fraction: float, wave: int) -> list[str]:
        """:func:`pick_agents` with the plan's seed."""
        return pick_agents(names, fraction, wave, self.seed)

    def hook_agents(self, names: Iterable[str]) -> list[str]:
        """The agents whose hooks get the ``[hooks]`` faults (``agents_fraction`` of ``names``); sorted."""
        return pick_agents(names, self.hooks.agents_fraction, HOOK_DRAW, self.seed)


def pick_agents(names: Iterable[str], fraction: float, wave: int, seed: int) -> list[str]:
    """The agents kill wave ``wave`` (0, 1, ...) hits among ``names`` (the live ones): ``fraction`` of
    them rounded, at least one if ``fraction`` > 0, drawn with ``default_rng([seed, wave])`` from the
    sorted names (so their order does not matter). Sorted."""
    pool = sorted(set(names))
    if fraction <= 0 or not pool:
        return []
    count = min(len(pool), max(1, round(fraction * len(pool))))
    chosen = np.random.default_rng([seed, wave]).choice(len(pool), size=count, replace=False)
    return sorted(pool[int(i)] for i in chosen)


def _no_repeats(values: Iterable[Any], name: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} appears twice in {name}; list each once")
        seen.add(value)


def _no_overlaps(spans: list[tuple[float, float]], name: str, key: str, length: str) -> None:
    """``spans`` are (start, length) windows of ``name``; one starting before another ends is an error."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    suffix = f".{key}" if key else ""
    for prev, cur in pairwise(order):
        start, span = spans[prev]
        if spans[cur][0] < start + span:
            raise ValueError(
                f"{name}[{cur}]{suffix} = {spans[cur][0]:g} starts before {name}[{prev}] ends "
                f"({start:g} + {length} {span:g}); space them apart or merge them into one window"
            )


def load_plan(path: str | Path) -> ChaosPlan:
    """Read and validate a chaos plan file; raises :class:`ConfigError` naming the file and the field."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: chaos plan not found; check the path given to --plan") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the chaos plan: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    try:
        return ChaosPlan.model_validate(raw)
    except ValidationError as exc:
        # cross-field problems name their own field; "(top level)" would only be noise before them
        text = format_validation_error(str(file), exc).replace(f"{file}: (top level): ", f"{file}: ")
        raise ConfigError(text) from None
