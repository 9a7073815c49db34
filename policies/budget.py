"""Per-agent cost budgets: meters, prices, periods, reserve -> settle, and the actions at the limits.

:class:`BudgetBook` is the whole accounting, as plain single-threaded Python: the federation runs exactly
one book inside one authority (a Ray actor that handles one call at a time), which is what makes
reservations atomic. With ``[budgets] authority = "redis"`` the same rules run as Lua scripts in Redis
(:mod:`federation.budget_redis`: a subclass of this book keeps the actions and events here, the tallies
and reservations live in Redis), so that agents on any node reserve against Redis directly. Amounts are
integers of 1e-8 units of their meter (``api_calls``, ``llm_tokens``, ``compute_s``, ...) or of money, so
nothing is lost to binary floats.

Rules, per agent and budget (:class:`BudgetLimit`):

- A budget caps one meter (``kind``) or, with ``kind = "money"``, the priced sum of every priced meter
  (trading fees, money already, are capped by a ``fees`` budget of their own).
- ``reserve`` is granted only if ``used + reserved + amount <= limit`` for every budget the meter counts
  toward; otherwise it is refused and nothing is held. Granted amounts count as reserved until settled.
- ``settle(actual)`` charges ``actual`` and releases the reservation; ``cancel`` releases it; a
  reservation past its expiry is charged in full. ``charge`` records usage metered after the fact
  (compute seconds of a callback, trading fees).
- Periods: ``run`` (one total), ``day`` (UTC calendar day of the clock), ``rolling`` (the last
  ``window_ns``). The clock is the time passed in by the caller (bar time in backtests).
- Thresholds: at ``soft`` x limit a ``soft_limit`` event; at the limit (usage reaches it, or a request
  that would fit an empty period no longer fits beside what was used) the budget's action:
  ``throttle``, ``suspend`` or ``stop``. Throttle and suspend last until the period frees the budget
  again (a new day, the window moving on); stop lasts for the rest of the run. An agent's state is
  the strongest action among its budgets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import IntEnum
from typing import Any, Literal

from agents.budget import Refusal

E8 = 100_000_000
NS_PER_DAY = 86_400 * 10**9
MONEY = "money"
Period = Literal["run", "day", "rolling"]
Action = Literal["throttle", "suspend", "stop"]


class BudgetState(IntEnum):
    """An agent's budget state; a larger value is stronger and wins."""

    ACTIVE = 0
    THROTTLED = 1
    SUSPENDED = 2
    STOPPED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


_STATE_OF: dict[str, BudgetState] = {
    "throttle": BudgetState.THROTTLED,
    "suspend": BudgetState.SUSPENDED,
    "stop": BudgetState.STOPPED,
}

_ACTION_OF = {state: action for action, state in _STATE_OF.items()}


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """One budget of one agent."""

    kind: str
    """A meter name, or ``money`` for the priced sum of every meter."""
    limit_e8: int
    period: Period = "run"
    window_ns: int = 0
    """Length of a ``rolling`` period."""
    soft: float = 0.8
    """Fraction of the limit at which a ``soft_limit`` event is recorded (1.0 = none before the limit)."""
    action: Action = "suspend"
    throttle_factor: int = 4
    """While throttled the agent is called on one step in this many (missed bars are delivered with it)."""
    on_suspend: Literal["hold", "flatten"] = "hold"
    """While suspended or stopped: keep the agent's target positions, or flatten them."""


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """Something the ledger must record: a threshold, an action, a refusal, an expiry, an overrun."""

    ts: int
    agent: str
    code: str
    """One of ``soft_limit``, ``throttle``, ``suspend``, ``stop``, ``resume``, ``refused``, ``expired``,
    ``overrun``."""
    kind: str
    amount_e8: int
    """The usage (or the refused request) in the budget's unit."""
    limit_e8: int
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


class _Tally:
    """Usage of one budget in its current period, plus what is reserved against it."""

    __slots__ = (
        "actions",
        "closed",
        "day",
        "hit",
        "last_now",
        "limit",
        "peak_e8",
        "refusals",
        "refused_logged",
        "reservations",
        "reserved_e8",
        "used_e8",
        "warned",
        "window",
    )

    def __init__(self, limit: BudgetLimit) -> None:
        self.limit = limit
        self.reserved_e8 = 0
        self.used_e8 = 0
        """Charged in the current period (rolling: within the window)."""
        self.peak_e8 = 0
        """Highest usage of any one period so far (the figure that must stay within the limit)."""
        self.day: int | None = None
        self.window: deque[tuple[int, int]] = deque()
        self.last_now = 0
        self.warned = False
        self.hit = False
        """The hard limit was reached in the current period (its action applies)."""
        self.refused_logged = False
        self.reservations = 0
        self.refusals = 0
        self.actions: dict[str, int] = {}
        """Counters of the current period for ``day`` budgets (then kept in ``closed``), else the run's."""
        self.closed: list[tuple[int, int, int, int, dict[str, int]]] = []
        """``day`` budgets: (day, used, reservations, refusals, actions) of every day that ended."""

    def roll(self, now: int) -> bool:
        """Move the period to ``now`` (never backwards); True if usage was freed."""
        now = max(now, self.last_now)
        self.last_now = now
        limit = self.limit
        if limit.period == "day":
            day = now // NS_PER_DAY
            if self.day is None:
                self.day = day
            elif day != self.day:
                self.closed.append((self.day, self.used_e8, self.reservations, self.refusals, self.actions))
                self.day = day
                freed = self.used_e8 > 0 or self.hit
                self.used_e8 = self.reservations = self.refusals = 0
                self.actions = {}
                self.warned = self.hit = self.refused_logged = False
                return freed
        elif limit.period == "rolling":
            start = now - limit.window_ns
            freed = False
            while self.window and self.window[0][0] <= start:
                self.used_e8 -= self.window.popleft()[1]
                freed = True
            if freed and self.used_e8 + self.reserved_e8 < limit.limit_e8:
                self.hit = self.refused_logged = False
                self.warned = self.used_e8 >= limit.soft * limit.limit_e8
                return True
        return False

    def add(self, ts: int, amount: int) -> None:
        self.used_e8 += amount
        if self.limit.period == "rolling" and amount:
            self.window.append((ts, amount))
        self.peak_e8 = max(self.peak_e8, self.used_e8)

    def remaining(self) -> int:
        return self.limit.limit_e8 - self.used_e8 - self.reserved_e8


@dataclass(slots=True)
class _Reservation:
    agent: str
    kind: str
    amount_e8: int
    ts: int
    expires_ns: int
    shares: list[tuple[_Tally, int]]
    """Each budget the reservation counts toward, with the amount in that budget's unit."""


@dataclass(slots=True)
class _Usage:
    """One agent's totals for one meter over the whole run."""

    usage_e8: int = 0
    cost_e8: int = 0
    reservations: int = 0
    refusals: int = 0


@dataclass(frozen=True, slots=True)
class TallyFigures:
    """One budget's figures in its current period (:meth:`BudgetBook.tally_figures`)."""

    limit: BudgetLimit
    used_e8: int
    reserved_e8: int
    peak_e8: int


def meter_cost_e8(prices: dict[str, Decimal], kind: str, amount_e8: int) -> int:
    """Money for ``amount_e8`` units of ``kind``, in 1e-8 units, rounded up (unpriced meters cost 0).

    ``amount_e8 x price`` is already money in 1e-8 units: the only rounding is this one ceiling. Fees are
    money already."""
    if kind == "fees":
        return amount_e8
    price = prices.get(kind)
    return 0 if price is None else int((amount_e8 * price).to_integral_value(ROUND_CEILING))


def tightest_remaining(
    kind: str, prices: dict[str, Decimal], left: list[tuple[BudgetLimit, int]]
) -> int | None:
    """What may still be reserved of ``kind``, given each budget of the agent with its ``limit - used -
    reserved``: the tightest budget of the meter, money budgets converted at the meter's price (rounded
    down); None if no budget caps the meter."""
    found = [room for limit, room in left if limit.kind == kind]
    price = prices.get(kind)
    if price:
        found += [
            int((max(room, 0) / price).to_integral_value(ROUND_FLOOR))
            for limit, room in left
            if limit.kind == MONEY
        ]
    return min(found) if found else None


def refusal(
    agent: str, kind: str, amount_e8: int, limit: BudgetLimit, used_e8: int, reserved_e8: int
) -> Refusal:
    """Why a reservation of ``amount_e8`` of ``kind`` was refused by ``limit``, which had ``used_e8``
    used and ``reserved_e8`` reserved in its period (the same words whichever authority refused)."""
    left = max(limit.limit_e8 - used_e8 - reserved_e8, 0)
    unit = f" ({kind} priced)" if limit.kind == MONEY else ""
    message = (
        f"agent {agent!r}: reserving {amount_e8 / E8:g} {kind} would take its {limit.kind} budget"
        f"{unit} past {limit.limit_e8 / E8:g} ({_period(limit)}: used {used_e8 / E8:g}, "
        f"reserved {reserved_e8 / E8:g}, left {left / E8:g}); refused, nothing spent"
    )
    return Refusal(message, limit.kind, limit.limit_e8, left)


def refused_event(
    now: int,
    agent: str,
    kind: str,
    share_e8: int,
    limit: BudgetLimit,
    found: Refusal,
    used_e8: int,
    reserved_e8: int,
) -> BudgetEvent:
    """The ``refused`` event of a refusal (``share_e8``: the request in the budget's unit)."""
    return BudgetEvent(
        now,
        agent,
        "refused",
        limit.kind,
        share_e8,
        limit.limit_e8,
        found.message,
        {"meter": kind, "used": _exact(used_e8), "reserved": _exact(reserved_e8)},
    )


def soft_limit_event(ts: int, agent: str, limit: BudgetLimit, used_e8: int) -> BudgetEvent:
    return BudgetEvent(
        ts,
        agent,
        "soft_limit",
        limit.kind,
        used_e8,
        limit.limit_e8,
        f"agent {agent!r} used {used_e8 / E8:g} of its {limit.kind} budget "
        f"{limit.limit_e8 / E8:g} ({_period(limit)}), past the soft limit {limit.soft:.0%}",
    )


def overrun_event(ts: int, agent: str, kind: str, actual_e8: int, reserved_e8: int) -> BudgetEvent:
    return BudgetEvent(
        ts,
        agent,
        "overrun",
        kind,
        actual_e8,
        reserved_e8,
        f"agent {agent!r} settled {actual_e8 / E8:g} {kind}, more than the "
        f"{reserved_e8 / E8:g} it reserved; reserve the most a call can cost",
    )


def expired_event(ts: int, agent: str, kind: str, amount_e8: int, why: str) -> BudgetEvent:
    return BudgetEvent(
        ts,
        agent,
        "expired",
        kind,
        amount_e8,
        amount_e8,
        f"agent {agent!r}: a reservation of {amount_e8 / E8:g} {kind} was never "
        f"settled ({why}); charged in full",
    )


class BudgetBook:
    """Every agent's budgets, reservations and usage. Not thread-safe: one owner calls it."""

    def __init__(
        self,
        budgets: dict[str, list[BudgetLimit]],
        prices: dict[str, Decimal],
        *,
        reservation_ttl_ns: int = 300 * 10**9,
    ) -> None:
        """``budgets``: agent -> its budgets (every agent of the run, with an empty list if none);
        ``prices``: meter -> money per unit (exact; a price of 0.000000125 per token stays that). A
        ``money`` budget counts the priced meters; trading fees are money already and have their own
        budget kind."""
        self.prices = {k: Decimal(v) for k, v in prices.items() if v}
        self.ttl_ns = reservation_ttl_ns
        self._tallies = {agent: [_Tally(b) for b in limits] for agent, limits in budgets.items()}
        self._state = dict.fromkeys(budgets, BudgetState.ACTIVE)
        self._usage: dict[str, dict[str, _Usage]] = {agent: {} for agent in budgets}
        self._open: dict[int, _Reservation] = {}
        self._next_id = 0
        self._events: list[BudgetEvent] = []
        self._stop_flatten: set[str] = set()
        """Stopped agents whose stopping budget flattens (stop outlives the budget's period)."""

    # ------------------------------------------------------------------------------------- conversions
    def cost_e8(self, kind: str, amount_e8: int) -> int:
        """Money for ``amount_e8`` units of ``kind``, in 1e-8 units, rounded up (unpriced meters cost 0)."""
        return meter_cost_e8(self.prices, kind, amount_e8)

    def _shares(self, agent: str, kind: str, amount_e8: int) -> list[tuple[_Tally, int]]:
        shares = []
        for tally in self._tallies[agent]:
            if tally.limit.kind == kind:
                shares.append((tally, amount_e8))
            elif tally.limit.kind == MONEY and kind in self.prices:
                shares.append((tally, self.cost_e8(kind, amount_e8)))
        return shares

    def _check_agent(self, agent: str) -> None:
        if agent not in self._tallies:
            known = ", ".join(sorted(self._tallies)[:5])
            raise KeyError(f"unknown agent {agent!r} (agents of this run include {known})")

    # ------------------------------------------------------------------------------------- spending
    def reserve(self, agent: str, kind: str, amount_e8: int, now: int, wall_ns: int) -> int | Refusal:
        """Hold ``amount_e8`` of ``kind`` for ``agent``; a reservation id, or why it was refused.

        A refusal applies the budget's action when the budget is spent for such a request: the request
        would fit an empty period, but what was already used (not merely reserved) leaves no room for
        it. A request larger than the whole budget, or one that only collides with reservations still
        open, is just refused.
        """
        self._check_agent(agent)
        if amount_e8 < 0:
            raise ValueError(f"agent {agent!r}: reservation of {kind!r} must be >= 0, got {amount_e8 / E8}")
        usage = self._meter(agent, kind)
        shares = self._shares(agent, kind, amount_e8)
        for tally, _ in shares:
            self._roll(agent, tally, now)
        for tally, amount in shares:
            if amount > tally.remaining():
                usage.refusals += 1
                return self._refuse(agent, kind, amount_e8, tally, amount, now)
        for tally, amount in shares:
            tally.reserved_e8 += amount
            tally.reservations += 1
        usage.reservations += 1
        self._next_id += 1
        self._open[self._next_id] = _Reservation(agent, kind, amount_e8, now, wall_ns + self.ttl_ns, shares)
        return self._next_id

    def settle(self, reservation_id: int, actual_e8: int) -> None:
        """Charge ``actual_e8`` for a reservation and release it (unknown ids: already expired)."""
        if actual_e8 < 0:
            raise ValueError(f"settled amount must be >= 0, got {actual_e8 / E8}")
        res = self._open.pop(reservation_id, None)
        if res is None:
            return  # expired and charged in full already; settling late changes nothing
        self._release(res)
        if actual_e8 > res.amount_e8:
            self._events.append(overrun_event(res.ts, res.agent, res.kind, actual_e8, res.amount_e8))
        self._charge(res.agent, res.kind, actual_e8, res.ts)

    def cancel(self, reservation_id: int) -> None:
        """Release a reservation without charging it."""
        res = self._open.pop(reservation_id, None)
        if res is not None:
            self._release(res)

    def charge(self, agent: str, kind: str, amount_e8: int, now: int) -> None:
        """Record usage metered after the fact (no reservation): compute seconds, fees."""
        self._check_agent(agent)
        if amount_e8 > 0:
            self._charge(agent, kind, amount_e8, now)

    def expire(self, wall_ns: int) -> int:
        """Charge in full every reservation past its expiry; how many expired."""
        late = [rid for rid, res in self._open.items() if res.expires_ns <= wall_ns]
        for rid in late:
            self._expire(rid, "its time to live ran out")
        return len(late)

    def expire_all(self, why: str) -> int:
        """Charge in full every open reservation (end of the run); how many there were."""
        late = list(self._open)
        for rid in late:
            self._expire(rid, why)
        return len(late)

    def _expire(self, rid: int, why: str) -> None:
        res = self._open.pop(rid)
        self._release(res)
        self._events.append(expired_event(res.ts, res.agent, res.kind, res.amount_e8, why))
        self._charge(res.agent, res.kind, res.amount_e8, res.ts)

    def advance(self, now: int) -> None:
        """Move every budget's period to ``now`` (resuming agents whose budgets were freed)."""
        for agent, tallies in self._tallies.items():
            for tally in tallies:
                self._roll(agent, tally, now)

    # --------------------------------------------------------------------------------------- queries
    def state(self, agent: str) -> BudgetState:
        return self._state[agent]

    def mode(self, agent: str) -> tuple[int, bool]:
        """(throttle factor, flatten) of the budgets that put ``agent`` in its state: the largest factor
        among the throttling budgets that were hit (1 if none); flatten if a suspending or stopping budget
        that was hit says ``on_suspend = "flatten"`` (for a stopped agent: if the one that stopped it did)."""
        hit = [t.limit for t in self._tallies[agent] if t.hit]
        factor = max((b.throttle_factor for b in hit if b.action == "throttle"), default=1)
        flatten = agent in self._stop_flatten or any(
            b.on_suspend == "flatten" for b in hit if b.action != "throttle"
        )
        return factor, flatten

    def spent_e8(self, agent: str) -> int:
        """Money ``agent`` spent over the run: every priced meter and fees, each counted once."""
        return sum(u.cost_e8 for u in self._usage[agent].values())

    def states(self) -> dict[str, BudgetState]:
        return dict(self._state)

    def meters_with_limit(self, agent: str) -> set[str]:
        """Meters that count toward some budget of ``agent`` (``money`` budgets: every priced meter)."""
        kinds = {t.limit.kind for t in self._tallies[agent]}
        if MONEY in kinds:
            kinds |= set(self.prices)
        return kinds - {MONEY}

    def remaining(self, agent: str, kind: str) -> int | None:
        """What ``agent`` may still reserve of ``kind`` now (the tightest budget), None if unlimited."""
        return tightest_remaining(kind, self.prices, [(t.limit, t.remaining()) for t in self._tallies[agent]])

    def remaining_many(self, asks: list[tuple[str, str]]) -> list[int | None]:
        """:meth:`remaining` of each (agent, kind), in order (one round trip for a remote book)."""
        return [self.remaining(agent, kind) for agent, kind in asks]

    def reserve_many(self, asks: list[tuple[str, str, int]], now: int, wall_ns: int) -> list[int | Refusal]:
        """:meth:`reserve` of each (agent, kind, amount_e8), in order (one round trip for a remote book)."""
        return [self.reserve(agent, kind, amount, now, wall_ns) for agent, kind, amount in asks]

    def tally_figures(self, agent: str) -> list[TallyFigures]:
        """Each budget of ``agent`` in its current period, in the order the budgets were given."""
        return [TallyFigures(t.limit, t.used_e8, t.reserved_e8, t.peak_e8) for t in self._tallies[agent]]

    def drain_events(self) -> list[BudgetEvent]:
        events, self._events = self._events, []
        return events

    def report(self) -> list[dict[str, Any]]:
        """The cost report: per agent, one row per budget (a ``day`` budget: one row per day) and one
        per meter used without a budget. Amounts in 1e-8 units of the row's ``kind`` (money for
        ``money`` budgets); ``cost`` in money. Within a row, ``usage`` is what counted against
        ``budget`` in that period (run, day), so it never exceeds it unless metered usage overran;
        a ``rolling`` row's ``usage`` is the whole run's and ``peak_period_usage`` the most any window
        held."""
        rows: list[dict[str, Any]] = []
        for agent, tallies in self._tallies.items():
            state = self._state[agent].label
            meters = self._usage[agent]
            budgeted = {t.limit.kind for t in tallies}
            for kind in sorted(set(meters) - budgeted):
                u = meters[kind]
                rows.append(
                    _row(
                        agent,
                        kind,
                        state,
                        usage=u.usage_e8,
                        cost=u.cost_e8,
                        reservations=u.reservations,
                        refusals=u.refusals,
                    )
                )
            for tally in tallies:
                limit = tally.limit
                if limit.period == "day":
                    days = [*tally.closed]
                    if tally.day is not None:
                        days.append(
                            (tally.day, tally.used_e8, tally.reservations, tally.refusals, tally.actions)
                        )
                    for day, used, reservations, refusals, actions in days:
                        left = limit.limit_e8 - used - (tally.reserved_e8 if day == tally.day else 0)
                        rows.append(
                            _row(
                                agent,
                                limit.kind,
                                state,
                                usage=used,
                                cost=self._cost_of(limit, used),
                                budget=limit.limit_e8,
                                period="day " + _date(day),
                                remaining=max(left, 0),
                                peak=used,
                                reservations=reservations,
                                refusals=refusals,
                                actions=actions,
                            )
                        )
                    continue
                if limit.period == "rolling":  # windows overlap: report the run's total and the peak
                    used, label = self._run_usage(agent, limit.kind), f"rolling {limit.window_ns / 1e9:g} s"
                else:
                    used, label = tally.used_e8, "run"
                rows.append(
                    _row(
                        agent,
                        limit.kind,
                        state,
                        usage=used,
                        cost=self._cost_of(limit, used),
                        budget=limit.limit_e8,
                        period=label,
                        remaining=max(tally.remaining(), 0),
                        peak=tally.peak_e8,
                        reservations=tally.reservations,
                        refusals=tally.refusals,
                        actions=tally.actions,
                    )
                )
        return rows

    def _run_usage(self, agent: str, kind: str) -> int:
        """The run's usage of a meter, or for ``money`` the run's cost of the priced meters."""
        meters = self._usage[agent]
        if kind == MONEY:
            return sum(u.cost_e8 for k, u in meters.items() if k in self.prices)
        return meters[kind].usage_e8 if kind in meters else 0

    # -------------------------------------------------------------------------------------- internals
    def _cost_of(self, limit: BudgetLimit, used_e8: int) -> int:
        return used_e8 if limit.kind == MONEY else self.cost_e8(limit.kind, used_e8)

    def _meter(self, agent: str, kind: str) -> _Usage:
        meters = self._usage[agent]
        usage = meters.get(kind)
        if usage is None:
            usage = meters[kind] = _Usage()
        return usage

    def _release(self, res: _Reservation) -> None:
        for tally, amount in res.shares:
            tally.reserved_e8 -= amount

    def _charge(self, agent: str, kind: str, amount_e8: int, ts: int) -> None:
        usage = self._meter(agent, kind)
        usage.usage_e8 += amount_e8
        usage.cost_e8 += self.cost_e8(kind, amount_e8)
        for tally, amount in self._shares(agent, kind, amount_e8):
            self._roll(agent, tally, ts)
            tally.add(ts, amount)
            self._thresholds(agent, tally, ts)

    def _roll(self, agent: str, tally: _Tally, now: int) -> None:
        if tally.roll(now):
            self._update_state(agent, now, tally)

    def _thresholds(self, agent: str, tally: _Tally, ts: int) -> None:
        limit = tally.limit
        if not tally.warned and limit.soft < 1.0 and tally.used_e8 >= limit.soft * limit.limit_e8:
            tally.warned = True
            self._events.append(soft_limit_event(ts, agent, limit, tally.used_e8))
        if not tally.hit and tally.used_e8 >= limit.limit_e8:
            self._hit(agent, tally, ts, usage_hit_reason(tally.used_e8))

    def _refuse(self, agent: str, kind: str, amount_e8: int, tally: _Tally, amount: int, now: int) -> Refusal:
        limit = tally.limit
        tally.refusals += 1
        found = refusal(agent, kind, amount_e8, limit, tally.used_e8, tally.reserved_e8)
        if not tally.refused_logged:
            tally.refused_logged = True
            self._events.append(
                refused_event(now, agent, kind, amount, limit, found, tally.used_e8, tally.reserved_e8)
            )
        # Spent for such a request: it would fit an empty period, but not beside what was already used
        # (reservations still open do not count: they may yet be released).
        spent = amount <= limit.limit_e8 < tally.used_e8 + amount
        if not tally.hit and spent:
            self._hit(agent, tally, now, refusal_hit_reason(kind, amount_e8))
        return found

    def _hit(self, agent: str, tally: _Tally, ts: int, why: str) -> None:
        tally.hit = True
        limit = tally.limit
        tally.actions[limit.action] = tally.actions.get(limit.action, 0) + 1
        self._update_state(agent, ts, tally, why)

    def _update_state(self, agent: str, ts: int, cause: _Tally, why: str = "") -> None:
        old = self._state[agent]
        new = BudgetState.STOPPED if old is BudgetState.STOPPED else BudgetState.ACTIVE
        for tally in self._tallies[agent]:
            if tally.hit:
                new = max(new, _STATE_OF[tally.limit.action])
        if new == old:
            return
        self._state[agent] = new
        if new is BudgetState.STOPPED and cause.limit.on_suspend == "flatten":
            self._stop_flatten.add(agent)
        limit = cause.limit
        code = "resume" if new < old else _ACTION_OF[new]
        if new < old:
            cause.actions["resume"] = cause.actions.get("resume", 0) + 1
            message = (
                f"agent {agent!r}: its {limit.kind} budget is free again ({_period(limit)}); "
                f"{'resumed' if new is BudgetState.ACTIVE else 'now ' + new.label}"
            )
        else:
            message = (
                f"agent {agent!r} reached its {limit.kind} budget {limit.limit_e8 / E8:g} "
                f"({_period(limit)}): {why}; {new.label}"
            )
        self._events.append(
            BudgetEvent(
                ts,
                agent,
                code,
                limit.kind,
                cause.used_e8,
                limit.limit_e8,
                message,
                {"from": old.label, "to": new.label},
            )
        )


def refusal_hit_reason(kind: str, amount_e8: int) -> str:
    return f"a reservation of {amount_e8 / E8:g} {kind} did not fit"


def usage_hit_reason(used_e8: int) -> str:
    return f"used {used_e8 / E8:g}, the whole budget"


def _row(
    agent: str,
    kind: str,
    state: str,
    *,
    usage: int,
    cost: int,
    budget: int | None = None,
    period: str | None = None,
    remaining: int | None = None,
    peak: int | None = None,
    reservations: int,
    refusals: int,
    actions: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "agent": agent,
        "kind": kind,
        "usage_e8": usage,
        "cost_e8": cost,
        "budget_e8": budget,
        "period": period,
        "remaining_e8": remaining,
        "peak_period_usage_e8": peak,
        "reservations": reservations,
        "refusals": refusals,
        "actions": dict(actions or {}),
        "state": state,
    }


def _exact(units_e8: int) -> str:
    return str(Decimal(units_e8).scaleb(-8))


def _date(day: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)).date().isoformat()


def _period(limit: BudgetLimit) -> str:
    if limit.period == "rolling":
        return f"rolling {limit.window_ns / 1e9:g} s"
    return "per day" if limit.period == "day" else "whole run"
