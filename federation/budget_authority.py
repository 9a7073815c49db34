"""``BudgetAuthority``: the one place every agent's reservations go (a Ray actor around a budget book).

The actor handles one call at a time, so check-and-reserve is atomic: 100 agents reserving at once are
served in some order and the sum of what is granted never passes a cap (the race of LiteLLM #34732 cannot
happen). Agents reach it through :class:`RayBudgetBackend`, which their runner installs in them; the
supervisor calls :meth:`BudgetService.step` once per step (a block of bars, or a live tick) to charge
what the runners measured (compute seconds) and what the fills cost (fees), to move periods forward,
to reserve the next step's compute, and to collect the agents' budget states and the events for the ledger.

Compute is metered after the fact: before a step the authority reserves an estimate of each capped
agent's compute (twice its typical step, at least 10 ms, times the steps a throttled agent catches up
on; cut to what is left). An agent with less than 10 ms left is not called in that step, and its
budget's action applies once what it used (not what is reserved) leaves no room. The actual CPU
seconds are settled after the step and fees are charged when the fills are booked: both are the truth
and are recorded even when they pass the cap (a settled amount above the estimate is also an
``overrun`` event).

With ``[budgets] authority = "redis"`` there is no actor: the :class:`BudgetService` runs in the
supervisor's process with a :class:`~federation.budget_redis.RedisBudgetBook` (the tallies and the
check-and-reserve in Redis), and agents reserve in Redis directly through a
:class:`~federation.budget_redis.RedisBudgetBackend`. While Redis does not answer, the service fails
closed: no compute is granted (compute-capped agents are not called), charges wait, and an
``unavailable`` event (no agent) records the outage, an ``available`` one its end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray

from agents.budget import BudgetBackend, Refusal
from federation.budget_redis import (
    AuthorityUnavailable,
    RedisBudgetBackend,
    RedisBudgetBook,
    RedisTallies,
    unavailable_refusal,
)
from federation.config import BudgetSettings
from policies.budget import E8, BudgetBook, BudgetEvent, BudgetLimit, BudgetState

log = logging.getLogger(__name__)

_MIN_COMPUTE_E8 = E8 // 100
"""Smallest compute estimate per step: 10 ms."""
_COMPUTE_HISTORY = 4
_FINISH_TRIES = 3
"""At the end of a run, how often to ask an unreachable Redis for the cost report (1 s apart)."""


@dataclass(frozen=True, slots=True)
class AgentBudgetStatus:
    """What the supervisor needs to know about one agent before a step."""

    state: BudgetState
    throttle_factor: int
    flatten: bool
    """Suspended or stopped with ``on_suspend = "flatten"``."""
    compute_granted: bool
    """False when the agent's compute estimate for the step did not fit its budget: do not call it."""


@dataclass(frozen=True, slots=True)
class StepReport:
    statuses: dict[str, AgentBudgetStatus]
    """Agents that are not plainly active (absent = active, call normally)."""
    events: list[BudgetEvent]


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """The end of a run's budgets: the last events, the cost report rows, each agent's money spent."""

    events: list[BudgetEvent]
    rows: list[dict[str, Any]]
    spent_e8: dict[str, int]


class BudgetService:
    """Plain class behind the actor, so tests can run it in-process; with ``authority = "redis"`` the
    supervisor runs it in its own process (``namespace``: share the Redis keys of another service, as
    two supervisors of one budget would; default: a namespace of its own)."""

    def __init__(
        self,
        budgets: dict[str, list[BudgetLimit]],
        settings: BudgetSettings,
        *,
        start_ns: int = 0,
        namespace: str | None = None,
    ) -> None:
        ttl = int(settings.reservation_ttl_s * 1e9)
        self.book: BudgetBook
        if settings.authority == "redis":
            store = RedisTallies.from_settings(budgets, settings, namespace=namespace)
            self.book = RedisBudgetBook(store, start_ns=start_ns)
        else:
            self.book = BudgetBook(budgets, dict(settings.prices), reservation_ttl_ns=ttl)
        self.wall_clock = settings.clock == "wall"
        self._now = start_ns
        self._compute_meter = {agent: "compute_s" in self.book.meters_with_limit(agent) for agent in budgets}
        self._compute_rid: dict[str, tuple[int, int]] = {}
        """Agent -> (its compute reservation for the step under way, the steps that call covers)."""
        self._compute_refused: set[str] = set()
        self._history: dict[str, deque[int]] = {
            a: deque(maxlen=_COMPUTE_HISTORY) for a, capped in self._compute_meter.items() if capped
        }
        self._unreachable: str | None = None
        """While Redis does not answer: the error."""
        self._outage_events: list[BudgetEvent] = []

    def agent_backend(self) -> BudgetBackend:
        """What agents reserve through when this service's tallies are in Redis (a copy of it travels
        to every runner); with the in-memory book, agents go through the actor instead."""
        if not isinstance(self.book, RedisBudgetBook):
            raise RuntimeError("agents reach an in-memory budget book through its actor (RayBudgetBackend)")
        return RedisBudgetBackend(self.book.store, wall_clock=self.wall_clock)

    def close(self, *, delete: bool = False) -> None:
        """Let go of Redis (``delete``: remove the run's keys too; best effort)."""
        if isinstance(self.book, RedisBudgetBook):
            store = self.book.store
            try:
                if delete:
                    store.delete()
            except Exception as exc:  # the run is over; what is left in Redis is only untidy
                log.warning("budget keys %s:* were not deleted: %s", store.base, exc)
            store.close()

    def _clock(self, ts: int) -> int:
        return time.time_ns() if self.wall_clock else ts

    # ------------------------------------------------------------------------------------- agents' calls
    def reserve(self, agent: str, kind: str, amount_e8: int, ts: int) -> int | Refusal:
        """``ts``: the agent's bar time (0 before its first bar, e.g. in ``on_start``: the run's now)."""
        try:
            return self.book.reserve(agent, kind, amount_e8, self._clock(ts or self._now), time.time_ns())
        except AuthorityUnavailable as exc:
            self._down(exc)
            return unavailable_refusal(agent, kind, amount_e8, exc)

    # Redis unreachable: a settle or cancel waits in the book's queue; one whose reservation had to be
    # looked up is dropped, and the reservation is charged in full when it expires (never too little).
    def settle(self, reservation_id: int, actual_e8: int) -> None:
        try:
            self.book.settle(reservation_id, actual_e8)
        except AuthorityUnavailable as exc:
            self._down(exc)

    def cancel(self, reservation_id: int) -> None:
        self.book.cancel(reservation_id)

    def remaining(self, agent: str, kind: str) -> int | None:
        try:
            return self.book.remaining(agent, kind)
        except AuthorityUnavailable as exc:
            self._down(exc)
            return 0 if kind in self.book.meters_with_limit(agent) else None

    def ping(self) -> None:
        """Nothing: a caller that waits for it knows every call it sent before was handled."""

    # --------------------------------------------------------------------------------- the supervisor
    def step(self, charges: dict[str, dict[str, int]], now: int) -> StepReport:
        """Charge the step just done (``charges``: agent -> meter -> amount in 1e-8 units, e.g.
        ``compute_s`` and ``fees``), move to ``now`` (the next step's first bar), reserve the next
        step's compute, and report the agents that are not plainly active, with the events to record.

        Redis unreachable (``authority = "redis"``): the charges wait in the book, no compute is granted
        (compute-capped agents are not called), and the outage is an event; nothing raises."""
        try:
            self._charge(charges, now)
            self._reserve_compute()
        except AuthorityUnavailable as exc:
            self._down(exc)
            self._compute_refused = set(self._history)
        else:
            self._up()
        return StepReport(self._statuses(), self._drain())

    def _drain(self) -> list[BudgetEvent]:
        events = self.book.drain_events() + self._outage_events
        self._outage_events = []
        return events

    def _down(self, exc: AuthorityUnavailable) -> None:
        if self._unreachable is None:
            self._outage_events.append(
                BudgetEvent(
                    self._clock(self._now),
                    "",
                    "unavailable",
                    "all",
                    0,
                    0,
                    f"{exc}; until it answers every reservation is refused, compute-capped agents are not "
                    "called, and charges wait",
                    {"error": str(exc)},
                )
            )
            log.warning("budget authority unavailable: %s", exc)
        self._unreachable = str(exc)

    def _up(self) -> None:
        if self._unreachable is not None:
            self._outage_events.append(
                BudgetEvent(
                    self._clock(self._now),
                    "",
                    "available",
                    "all",
                    0,
                    0,
                    "the budget authority answers again; the charges that waited are recorded",
                )
            )
            self._unreachable = None

    def _charge(self, charges: dict[str, dict[str, int]], now: int) -> None:
        book = self.book
        done_at = self._clock(self._now)
        for agent, meters in charges.items():
            for kind, amount in meters.items():
                if kind == "compute_s" and agent in self._compute_rid:
                    rid, steps = self._compute_rid.pop(agent)
                    self._history[agent].append(amount // steps)  # per step: a throttled call covers several
                    book.settle(rid, amount)
                elif amount > 0:
                    book.charge(agent, kind, amount, done_at)
        for rid, _ in self._compute_rid.values():  # reserved, but the agent was not called
            book.settle(rid, 0)
        self._compute_rid.clear()
        self._now = max(self._now, now)
        book.advance(self._clock(self._now))
        book.expire(time.time_ns())

    def _reserve_compute(self) -> None:
        """Reserve each compute-capped agent's next step: twice its typical step (the lower median of
        its last steps, so one heavy first call does not set the pace; at least 10 ms), times the steps
        a throttled agent catches up on, cut to what is left. Less than 10 ms left is refused: the
        budget's action applies if what was used is what leaves no room (not open reservations)."""
        book = self.book
        clock = self._clock(self._now)
        self._compute_refused.clear()
        wanted: list[tuple[str, int, int]] = []
        for agent, history in self._history.items():
            state = book.state(agent)
            if state >= BudgetState.SUSPENDED:
                continue
            steps = book.mode(agent)[0] if state is BudgetState.THROTTLED else 1
            typical = sorted(history)[(len(history) - 1) // 2] if history else 0
            wanted.append((agent, steps, 2 * max(_MIN_COMPUTE_E8, typical * steps)))
        # Agents' budgets are independent: all are read, then all reserved (one round trip each in Redis).
        lefts = book.remaining_many([(agent, "compute_s") for agent, _, _ in wanted])
        asks = []
        for (agent, _, estimate), left in zip(wanted, lefts, strict=True):
            if left is not None:
                estimate = min(estimate, left) if left >= _MIN_COMPUTE_E8 else _MIN_COMPUTE_E8
            asks.append((agent, "compute_s", estimate))
        answers = book.reserve_many(asks, clock, time.time_ns())
        for (agent, steps, _), granted in zip(wanted, answers, strict=True):
            if isinstance(granted, Refusal):
                self._compute_refused.add(agent)
            else:
                self._compute_rid[agent] = (granted, steps)

    def _statuses(self) -> dict[str, AgentBudgetStatus]:
        out = {}
        for agent, state in self.book.states().items():
            refused = agent in self._compute_refused
            if state is BudgetState.ACTIVE and not refused:
                continue
            factor, flatten = self.book.mode(agent)
            out[agent] = AgentBudgetStatus(
                state, factor, flatten and state >= BudgetState.SUSPENDED, not refused
            )
        return out

    def finish(self, charges: dict[str, dict[str, int]]) -> BudgetReport:
        """Charge the last step, charge every open reservation in full, and report usage per agent.

        Redis unreachable: asked again for a few seconds; then the run ends without a cost report (an
        ``unavailable`` event says so)."""
        try:
            self._charge(charges, self._now)  # no next step: nothing more to reserve
        except AuthorityUnavailable as exc:
            self._down(exc)  # the charges wait in the book's queue
        for attempt in range(_FINISH_TRIES):
            try:
                self.book.expire_all("the run ended")
                spent = {agent: self.book.spent_e8(agent) for agent in self.book.states()}
                rows = self.book.report()
            except AuthorityUnavailable as exc:
                self._down(exc)
                if attempt + 1 < _FINISH_TRIES:
                    time.sleep(1.0)
                continue
            self._up()
            return BudgetReport(self._drain(), rows, spent)
        self._outage_events.append(
            BudgetEvent(
                self._clock(self._now),
                "",
                "unavailable",
                "all",
                0,
                0,
                f"the run ends without a cost report: {self._unreachable}",
                {"error": self._unreachable},
            )
        )
        return BudgetReport(self._drain(), [], {})


BudgetAuthority: Any = ray.remote(BudgetService)
"""The Ray actor class; start it with :func:`start_budget_authority`."""


def start_budget_authority(scheduling_strategy: Any = None, **kwargs: Any) -> Any:
    """Create the authority: one call at a time (that is the atomicity), no CPU reserved, not restarted."""
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_concurrency": 1}
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    return BudgetAuthority.options(**options).remote(**kwargs)


class RayBudgetBackend:
    """An agent's way to the authority actor (installed in the agent by its runner): a reservation is one
    round trip; settling and cancelling are sent without waiting."""

    def __init__(self, authority: Any) -> None:
        self._authority = authority
        self._lock = threading.Lock()
        self._sent = self._acked = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"authority": self._authority}  # a lock does not pickle; counts start afresh

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["authority"])  # type: ignore[misc]

    def reserve(self, agent: str, kind: str, amount_e8: int, ts: int) -> int | Refusal:
        answer: int | Refusal = ray.get(self._authority.reserve.remote(agent, kind, amount_e8, ts))
        return answer

    # Settling needs no answer: the actor runs one caller's calls in the order they were sent, and the
    # amounts were checked on this side already. flush() waits until they were handled.
    def settle(self, reservation_id: int, actual_e8: int) -> None:
        self._authority.settle.remote(reservation_id, actual_e8)
        self._sent_one()

    def cancel(self, reservation_id: int) -> None:
        self._authority.cancel.remote(reservation_id)
        self._sent_one()

    def _sent_one(self) -> None:
        with self._lock:  # counted after it was submitted: a flush that sees it pings after it
            self._sent += 1

    def remaining(self, agent: str, kind: str) -> int | None:
        left: int | None = ray.get(self._authority.remaining.remote(agent, kind))
        return left

    def flush(self) -> None:
        """Wait until the authority handled every settle and cancel sent through this backend (runners
        call it at the end of each step, so a step's charges are in before the supervisor's next
        step). Safe from several threads (a shared host's lanes)."""
        with self._lock:
            target = self._sent
            if self._acked >= target:
                return
        ray.get(self._authority.ping.remote())
        with self._lock:
            self._acked = max(self._acked, target)


class LocalBudgetBackend:
    """The same calls on an in-process :class:`BudgetService`, serialized by a lock (tests, benchmarks)."""

    def __init__(self, service: BudgetService) -> None:
        self.service = service
        self._lock = threading.Lock()

    def reserve(self, agent: str, kind: str, amount_e8: int, ts: int) -> int | Refusal:
        with self._lock:
            return self.service.reserve(agent, kind, amount_e8, ts)

    def settle(self, reservation_id: int, actual_e8: int) -> None:
        with self._lock:
            self.service.settle(reservation_id, actual_e8)

    def cancel(self, reservation_id: int) -> None:
        with self._lock:
            self.service.cancel(reservation_id)

    def remaining(self, agent: str, kind: str) -> int | None:
        with self._lock:
            return self.service.remaining(agent, kind)

    def flush(self) -> None:
        """Nothing to wait for in-process."""
