"""The budget authority in Redis (``[budgets] authority = "redis"``): reservations are decided by a Lua
script in Redis, so agents on any node reserve there directly and no cap is passed across nodes.

Three parts:

- :class:`RedisTallies`: a run's tallies and open reservations in Redis, and the one Lua script
  (``budget_redis.lua``) that changes them: ``reserve`` (move every budget the request touches to the
  current period, check them all, then refuse or hold), ``settle``, ``cancel``, ``charge``, ``advance``
  and ``expire``. Each call is one EVALSHA, and Redis runs one script at a time: that is the atomicity
  the Ray actor gives the default authority. Prices stay in Python (exact Decimals): the caller sends each
  budget's share of a request in that budget's unit.
- :class:`RedisBudgetBook`: the supervisor's :class:`~policies.budget.BudgetBook` with its tallies in
  Redis. Agent states, actions, events and the cost report stay in Python: the script appends what
  happened (a refusal, a threshold crossed, a period that freed a budget, ...) to a list in Redis, and
  the book replays that list in order, so reservations made from any process end up as the same events
  as with the actor.
- :class:`RedisBudgetBackend`: what agents call (their runner installs it; it is pickled to any node and
  connects from there): a reservation, a settle and a cancel are one round trip to Redis each.

Redis unreachable: nothing is granted without a check. A reservation is refused with the reason (fail
closed); settles and charges wait and are sent when Redis answers again (a charge is applied once even
if it was sent twice); compute-capped agents are not called; events say when the authority stopped and
started answering. A reservation whose answer was lost is held until it expires and is then charged in
full, like any reservation never settled (never less than what was spent).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from agents.budget import Refusal
from federation.errors import ConfigError
from policies.budget import (
    E8,
    MONEY,
    BudgetBook,
    BudgetEvent,
    BudgetLimit,
    BudgetState,
    TallyFigures,
    expired_event,
    meter_cost_e8,
    overrun_event,
    refusal,
    refusal_hit_reason,
    refused_event,
    soft_limit_event,
    tightest_remaining,
    usage_hit_reason,
)

if TYPE_CHECKING:
    from federation.config import BudgetSettings

log = logging.getLogger(__name__)

MAX_E8 = 2**53 * E8 - 1
"""The largest amount, limit or time the script counts exactly (1e-8 units, or ns): Lua numbers are
doubles, so the script keeps figures as whole units (up to 2^53, 9.007e15) and 1e-8 parts."""

_LUA = resources.files("federation").joinpath("budget_redis.lua").read_text(encoding="utf-8")
_ZSET_SLACK_NS = 4096
"""Expiry times are also sorted-set scores (doubles: a few hundred ns off at today's clock); the script
checks the exact expiry of every candidate."""
_FAIL_CLOSED = (
    "OOM",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "BUSY",
    "NOREPLICAS",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "LOST",
)
"""Error replies of a Redis that cannot serve now (or lost the run's keys): treated like one that does
not answer, so nothing is granted."""
_FAIL_CLOSED_CLASSES = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
)
"""The same replies as redis-py raises them (it strips their code from the message)."""
_FIGURES = ("r", "u", "pk", "d", "n", "f")
_KNOWN_IDS = 65_536
"""Reservation ids a process remembers (agent and meter of each) before it forgets the oldest; a
forgotten one is looked up in Redis when settled."""


class AuthorityUnavailable(RuntimeError):
    """Redis did not answer (or cannot serve now): nothing was decided, nothing granted."""


def _redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _units(value: int, what: str) -> str:
    if not 0 <= value <= MAX_E8:
        raise ValueError(
            f"{what} of {value / E8:g} is outside 0 .. {MAX_E8 // E8} whole units, what the Redis budget "
            "authority counts exactly"
        )
    return str(value)


def _time(ns: int) -> str:
    if not 0 <= ns <= MAX_E8:
        raise ValueError(
            f"time {ns} ns is outside what the Redis budget authority counts (nanoseconds from 1970 on)"
        )
    return str(ns)


def unavailable_refusal(agent: str, kind: str, amount_e8: int, exc: Exception) -> Refusal:
    """The refusal of a reservation Redis could not decide (fail closed)."""
    return Refusal(
        f"agent {agent!r}: reserving {amount_e8 / E8:g} {kind} refused, nothing spent: {exc} (the budget "
        "authority grants nothing it could not check)",
        kind,
        0,
        0,
    )


@dataclass(frozen=True, slots=True)
class _AgentFigures:
    """One agent's figures read from Redis: per budget (reserved, used, peak, day, reservations,
    refusals) of its current period, and per meter {"u": usage, "c": cost, "n": reservations,
    "f": refusals} over the run."""

    budgets: list[tuple[int, int, int, int | None, int, int]]
    meters: dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class _Executed:
    replies: list[Any]
    facts: list[dict[str, str]]
    figures: dict[str, _AgentFigures]


class RedisTallies:
    """The tallies and open reservations of one run in Redis, and the calls on them. Picklable: a copy
    sent to another process connects again from there.

    Keys start with ``<key_prefix>:{<namespace>}`` (the braces keep them in one Redis Cluster slot); the
    namespace is one run's own (a new one per run unless given)."""

    def __init__(
        self,
        budgets: dict[str, list[BudgetLimit]],
        prices: dict[str, Decimal],
        *,
        url: str,
        key_prefix: str,
        namespace: str,
        ttl_ns: int,
        timeout_s: float = 2.0,
    ) -> None:
        self.budgets = {agent: list(limits) for agent, limits in budgets.items()}
        self.prices = {kind: Decimal(price) for kind, price in prices.items() if price}
        self.url = url
        self.base = f"{key_prefix}:{{{namespace}}}"
        self.ttl_ns = ttl_ns
        self.timeout_s = timeout_s
        self.where = f"Redis at {_redacted(url)}, keys {self.base}:*"
        for agent, limits in self.budgets.items():
            for limit in limits:
                if limit.limit_e8 > MAX_E8:
                    raise ConfigError(
                        f"agent {agent!r}: its {limit.kind} budget of {limit.limit_e8 / E8:g} is above "
                        f"{MAX_E8 // E8}, the most the Redis budget authority counts exactly; lower it or "
                        "use [budgets] authority = 'actor'"
                    )
        self._rolled = [
            (agent, str(i))
            for agent, limits in self.budgets.items()
            for i, limit in enumerate(limits)
            if limit.period != "run"
        ]
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._script: Script | None = None
        self._plans: dict[tuple[str, str], tuple[tuple[int, bool], ...]] = {}
        self._quiet_until = 0.0
        """After Redis failed to answer, calls fail at once until then (monotonic clock), rather than
        each waiting out the timeout while it is down."""
        self._last_failure = ""

    @classmethod
    def from_settings(
        cls, budgets: dict[str, list[BudgetLimit]], settings: BudgetSettings, *, namespace: str | None = None
    ) -> RedisTallies:
        """The store of ``[budgets]``; ``namespace``: share one with other books (default: a new one)."""
        return cls(
            budgets,
            dict(settings.prices),
            url=settings.redis,
            key_prefix=settings.key_prefix,
            namespace=namespace or uuid.uuid4().hex[:16],
            ttl_ns=int(settings.reservation_ttl_s * 1e9),
            timeout_s=settings.redis_timeout_s,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_lock", "_client", "_script", "_plans", "_quiet_until", "_last_failure"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    # ------------------------------------------------------------------------------------ connection
    def _connect(self) -> tuple[redis.Redis, Script]:
        if self._quiet_until and time.monotonic() < self._quiet_until:
            raise AuthorityUnavailable(self._last_failure)
        with self._lock:
            if self._client is None or self._script is None:
                # No retry inside redis-py: a script may have run before its connection broke, and a
                # reserve sent twice would hold twice. The caller fails closed; the next call reconnects.
                self._client = redis.Redis.from_url(
                    self.url,
                    decode_responses=True,
                    socket_timeout=self.timeout_s,
                    socket_connect_timeout=self.timeout_s,
                    retry=Retry(NoBackoff(), 0),
                )
                self._script = self._client.register_script(_LUA)
            return self._client, self._script

    def close(self) -> None:
        with self._lock:
            client, self._client, self._script = self._client, None, None
        if client is not None:
            client.close()

    def _failure(self, exc: RedisError) -> Exception:
        text = str(exc).split(" script: ", 1)[0]  # without Redis's "script: <sha>, on @user_script"
        if isinstance(exc, ResponseError):
            # redis-py maps some replies to classes and drops their code from the message
            cannot_serve = isinstance(exc, _FAIL_CLOSED_CLASSES) or text.startswith(_FAIL_CLOSED)
            if not cannot_serve:
                return RuntimeError(f"the budget script failed ({self.where}): {text}")
            message = f"the budget authority ({self.where}) cannot decide: {text}"
        else:
            message = f"the budget authority ({self.where}) did not answer: {type(exc).__name__}: {text}"
        self._last_failure = message
        self._quiet_until = time.monotonic() + self.timeout_s
        return AuthorityUnavailable(message)

    def call(self, args: Sequence[str]) -> Any:
        """One operation of the script (one EVALSHA)."""
        _, script = self._connect()
        try:
            return script(keys=[self.base], args=list(args))
        except RedisError as exc:
            raise self._failure(exc) from exc

    def execute(
        self, calls: Sequence[Sequence[str]], *, cursor: int | None = None, pull: Sequence[str] = ()
    ) -> _Executed:
        """Several operations in one round trip (each still atomic, in this order), then the facts from
        ``cursor`` on and the figures of the agents in ``pull``."""
        client, script = self._connect()
        try:
            replies, facts, raw = self._pipeline(client, script, calls, cursor, pull)
            missing = [k for k, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:  # Redis restarted and lost the script: none of these ran; load it, send them again
                script.sha = client.script_load(script.script)
                again, facts, raw = self._pipeline(client, script, [calls[k] for k in missing], cursor, pull)
                for k, reply in zip(missing, again, strict=True):
                    replies[k] = reply
            for reply in [*replies, facts, *raw]:
                if isinstance(reply, RedisError):
                    raise reply
        except RedisError as exc:
            raise self._failure(exc) from exc
        figures: dict[str, _AgentFigures] = {}
        at = 0
        for agent in pull:
            count = len(self.budgets[agent])
            budgets = [
                (int(r), int(u), int(pk), int(d) if d else None, int(n), int(f))
                for r, u, pk, d, n, f in raw[at : at + count]
            ]
            meters: dict[str, dict[str, int]] = {}
            for name, value in raw[at + count].items():
                field, kind = name.split(":", 1)
                meters.setdefault(kind, {})[field] = int(value)
            figures[agent] = _AgentFigures(budgets, meters)
            at += count + 1
        return _Executed(replies, [json.loads(f) for f in facts or []], figures)

    def _pipeline(
        self,
        client: redis.Redis,
        script: Script,
        calls: Sequence[Sequence[str]],
        cursor: int | None,
        pull: Sequence[str],
    ) -> tuple[list[Any], Any, list[Any]]:
        pipe = client.pipeline(transaction=False)
        for args in calls:
            pipe.evalsha(script.sha, 1, self.base, *args)
        if cursor is not None:
            pipe.lrange(f"{self.base}:ev", cursor, -1)
        for agent in pull:
            for i in range(len(self.budgets[agent])):
                pipe.hmget(f"{self.base}:t:{agent}:{i}", list(_FIGURES))
            pipe.hgetall(f"{self.base}:m:{agent}")
        results = pipe.execute(raise_on_error=False)
        n = len(calls)
        facts = results[n] if cursor is not None else None
        return results[:n], facts, results[n + (cursor is not None) :]

    # ------------------------------------------------------------------------------------------ plans
    def plan(self, agent: str, kind: str) -> tuple[tuple[int, bool], ...]:
        """The budgets of ``agent`` that ``kind`` counts toward: (index, priced into money)."""
        found = self._plans.get((agent, kind))
        if found is None:
            limits = self.budgets.get(agent)
            if limits is None:
                known = ", ".join(sorted(self.budgets)[:5])
                raise KeyError(f"unknown agent {agent!r} (agents of this run include {known})")
            found = tuple(
                (i, limit.kind == MONEY)
                for i, limit in enumerate(limits)
                if limit.kind == kind or (limit.kind == MONEY and kind in self.prices)
            )
            self._plans[(agent, kind)] = found
        return found

    def _shares(self, agent: str, kind: str, amount: int, cost: int) -> list[str]:
        plan = self.plan(agent, kind)
        out = [str(len(plan))]
        for i, priced in plan:
            out += [str(i), str(cost if priced else amount)]
        return out

    # ---------------------------------------------------------------------------------- the operations
    def reserve_args(self, agent: str, kind: str, amount_e8: int, ts: int | None, wall_ns: int) -> list[str]:
        """``ts`` None: the supervisor's clock (an agent before its first bar)."""
        amount = _units(amount_e8, f"agent {agent!r}: reservation of {kind!r}")
        cost = meter_cost_e8(self.prices, kind, amount_e8)
        return [
            "reserve",
            agent,
            kind,
            amount,
            _units(cost, f"agent {agent!r}: cost of {kind!r}"),
            "" if ts is None else _time(ts),
            _time(wall_ns + self.ttl_ns),
            *self._shares(agent, kind, amount_e8, cost),
        ]

    def answer(self, agent: str, kind: str, amount_e8: int, reply: Any) -> int | Refusal:
        """The reservation id, or the refusal, from the script's reply to ``reserve``."""
        if int(reply[0]) == 1:
            return int(reply[1])
        limit = self.budgets[agent][int(reply[1])]
        return refusal(agent, kind, amount_e8, limit, int(reply[2]), int(reply[3]))

    def reserve(self, agent: str, kind: str, amount_e8: int, ts: int | None, wall_ns: int) -> int | Refusal:
        return self.answer(
            agent, kind, amount_e8, self.call(self.reserve_args(agent, kind, amount_e8, ts, wall_ns))
        )

    def settle_args(self, reservation_id: int, agent: str, kind: str, actual_e8: int) -> list[str]:
        actual = _units(actual_e8, f"agent {agent!r}: settled amount of {kind!r}")
        cost = meter_cost_e8(self.prices, kind, actual_e8)
        return [
            "settle",
            str(reservation_id),
            agent,
            kind,
            actual,
            _units(cost, f"agent {agent!r}: cost of {kind!r}"),
            *self._shares(agent, kind, actual_e8, cost),
        ]

    @staticmethod
    def cancel_args(reservation_id: int) -> list[str]:
        return ["cancel", str(reservation_id)]

    def charge_args(self, writer: str, seq: int, agent: str, kind: str, amount_e8: int, ts: int) -> list[str]:
        amount = _units(amount_e8, f"agent {agent!r}: charge of {kind!r}")
        cost = meter_cost_e8(self.prices, kind, amount_e8)
        return [
            "charge",
            writer,
            str(seq),
            agent,
            kind,
            amount,
            _units(cost, f"agent {agent!r}: cost of {kind!r}"),
            _time(ts),
            *self._shares(agent, kind, amount_e8, cost),
        ]

    def advance_args(self, ts: int) -> list[str]:
        return ["advance", _time(ts), *(x for pair in self._rolled for x in pair)]

    @staticmethod
    def expire_args(wall_ns: int | None, why: str) -> list[str]:
        """Reservations expired at ``wall_ns``, or every open one (None)."""
        if wall_ns is None:
            return ["expire", "all", "0", "0", why]
        return ["expire", "ttl", _time(wall_ns), str(wall_ns + _ZSET_SLACK_NS), why]

    def locate(self, reservation_id: int) -> tuple[str, str] | None:
        """(agent, meter) of an open reservation; None if it is not open."""
        client, _ = self._connect()
        try:
            raw = client.hget(f"{self.base}:res", str(reservation_id))
        except RedisError as exc:
            raise self._failure(exc) from exc
        if raw is None:
            return None
        found = json.loads(str(raw))
        return str(found["a"]), str(found["k"])

    def remaining(self, agent: str, kind: str) -> int | None:
        """What ``agent`` may still reserve of ``kind`` (as :meth:`BudgetBook.remaining`)."""
        self.plan(agent, kind)  # unknown agents are refused here
        figures = self.execute([], pull=[agent]).figures[agent]
        limits = self.budgets[agent]
        left = [
            (limit, limit.limit_e8 - u - r) for limit, (r, u, *_) in zip(limits, figures.budgets, strict=True)
        ]
        return tightest_remaining(kind, self.prices, left)

    def push_fact(self, fact: dict[str, str]) -> None:
        client, _ = self._connect()
        try:
            client.rpush(f"{self.base}:ev", json.dumps(fact))
        except RedisError as exc:
            raise self._failure(exc) from exc

    def init(self, start_ns: int) -> None:
        """Write the budgets (once per namespace) and the clock; a namespace already holding other budgets
        is refused."""
        config = {
            "budgets": {agent: [asdict(limit) for limit in limits] for agent, limits in self.budgets.items()},
            "prices": {kind: str(price) for kind, price in sorted(self.prices.items())},
        }
        fingerprint = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
        specs: list[str] = []
        for agent, limits in self.budgets.items():
            for i, limit in enumerate(limits):
                specs += [
                    agent,
                    str(i),
                    str(limit.limit_e8),
                    limit.period,
                    str(limit.window_ns),
                    str(math.ceil(limit.soft * limit.limit_e8)),
                    "1" if limit.soft < 1.0 else "0",
                ]
        try:
            reply = self.call(["init", fingerprint, _time(start_ns), *specs])
        except AuthorityUnavailable as exc:
            raise ConfigError(
                f"[budgets] redis: {exc}; start Redis there, or set [budgets] authority = 'actor'"
            ) from None
        if int(reply[0]) == 0:
            raise ConfigError(
                f"[budgets] key_prefix: {self.base} already holds the budgets of another configuration; "
                "use another key_prefix (or namespace), or delete those keys"
            )

    def delete(self) -> int:
        """Delete every key of this namespace; how many there were."""
        client, _ = self._connect()
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.base) + ":*"
        keys = list(client.scan_iter(match=pattern, count=1000))
        for at in range(0, len(keys), 1000):
            client.delete(*keys[at : at + 1000])
        return len(keys)


class RedisBudgetBook(BudgetBook):
    """A :class:`BudgetBook` whose tallies and reservations are in Redis (see the module documentation).

    Calls that return nothing (settle, cancel, charge, advance) are queued and sent, in order, with the
    next call that needs an answer: one round trip per supervisor step instead of one per agent. A
    queue Redis did not take stays queued and is sent again (charges carry a sequence number, so each
    is applied once; the rest are idempotent)."""

    def __init__(self, store: RedisTallies, *, start_ns: int = 0) -> None:
        super().__init__(store.budgets, store.prices, reservation_ttl_ns=store.ttl_ns)
        self.store = store
        store.init(start_ns)
        self._cursor = 0
        self._writer = uuid.uuid4().hex
        self._seq = 0
        self._queue: list[list[str]] = []
        self._known: dict[int, tuple[str, str]] = {}
        """Reservation id -> (agent, meter) of the reservations made through this book."""

    # ------------------------------------------------------------------------------------- plumbing
    def _run(self, calls: Sequence[Sequence[str]], pull: Sequence[str] = ()) -> list[Any]:
        done = self.store.execute([*self._queue, *calls], cursor=self._cursor, pull=pull)
        sent = len(self._queue)
        self._queue = []
        for fact in done.facts:
            self._apply(fact)
        self._cursor += len(done.facts)
        for agent, figures in done.figures.items():
            self._refresh(agent, figures)
        return done.replies[sent:]

    def _flush(self) -> None:
        """Send what is queued, if Redis answers (queries then show what is known)."""
        if self._queue:
            with contextlib.suppress(AuthorityUnavailable):
                self._run([])

    def _refresh(self, agent: str, figures: _AgentFigures) -> None:
        for tally, (reserved, used, peak, day, reservations, refusals) in zip(
            self._tallies[agent], figures.budgets, strict=True
        ):
            tally.reserved_e8, tally.used_e8, tally.peak_e8 = reserved, used, peak
            tally.day, tally.reservations, tally.refusals = day, reservations, refusals
        for kind, fields in figures.meters.items():
            usage = self._meter(agent, kind)
            usage.usage_e8, usage.cost_e8 = fields.get("u", 0), fields.get("c", 0)
            usage.reservations, usage.refusals = fields.get("n", 0), fields.get("f", 0)

    def _remember(self, reservation_id: int, agent: str, kind: str) -> None:
        self._known[reservation_id] = (agent, kind)
        if len(self._known) > _KNOWN_IDS:
            del self._known[next(iter(self._known))]

    def _apply(self, fact: dict[str, str]) -> None:
        """Replay one fact of the script as the in-memory book would have acted on it."""
        code, agent, ts = fact["e"], fact["a"], int(fact["t"])
        if code == "overrun":
            self._events.append(overrun_event(ts, agent, fact["k"], int(fact["m"]), int(fact["r"])))
            return
        if code == "expired":
            self._known.pop(int(fact["id"]), None)
            self._events.append(expired_event(ts, agent, fact["k"], int(fact["m"]), fact["why"]))
            return
        if code == "unavailable":
            self._events.append(
                BudgetEvent(
                    ts,
                    agent,
                    "unavailable",
                    fact["k"],
                    0,
                    0,
                    f"agent {agent!r}: {fact['n']} reservation(s) of {fact['k']} refused while the budget "
                    f"authority did not answer ({fact['err']}); nothing was spent",
                    {"refused": int(fact["n"]), "error": fact["err"]},
                )
            )
            return
        tally = self._tallies[agent][int(fact["i"])]
        used = int(fact["u"])
        if code == "day":
            tally.closed.append((int(fact["day"]), used, int(fact["n"]), int(fact["f"]), tally.actions))
            tally.actions = {}
            tally.hit = False
            tally.used_e8 = tally.reservations = tally.refusals = 0
            tally.day = int(fact["nd"])
            if fact["fr"] == "1":
                self._update_state(agent, ts, tally)
        elif code == "free":
            tally.hit = False
            tally.used_e8 = used
            self._update_state(agent, ts, tally)
        elif code == "soft":
            self._events.append(soft_limit_event(ts, agent, tally.limit, used))
        elif code == "hit":
            tally.used_e8 = used
            self._hit(agent, tally, ts, usage_hit_reason(used))
        elif code == "refused":
            kind, amount, reserved = fact["k"], int(fact["m"]), int(fact["r"])
            if fact["lg"] == "1":
                found = refusal(agent, kind, amount, tally.limit, used, reserved)
                self._events.append(
                    refused_event(ts, agent, kind, int(fact["s"]), tally.limit, found, used, reserved)
                )
            if fact["hit"] == "1":
                tally.used_e8 = used
                self._hit(agent, tally, ts, refusal_hit_reason(kind, amount))
        else:
            raise RuntimeError(f"unknown budget fact {fact!r} from {self.store.where}")

    def _check(self, agent: str, amount_e8: int, kind: str) -> None:
        self._check_agent(agent)
        if amount_e8 < 0:
            raise ValueError(f"agent {agent!r}: reservation of {kind!r} must be >= 0, got {amount_e8 / E8}")

    # ------------------------------------------------------------------------------------- spending
    def reserve(self, agent: str, kind: str, amount_e8: int, now: int, wall_ns: int) -> int | Refusal:
        return self.reserve_many([(agent, kind, amount_e8)], now, wall_ns)[0]

    def reserve_many(self, asks: list[tuple[str, str, int]], now: int, wall_ns: int) -> list[int | Refusal]:
        if not asks:
            return []
        for agent, kind, amount in asks:
            self._check(agent, amount, kind)
        calls = [self.store.reserve_args(agent, kind, amount, now, wall_ns) for agent, kind, amount in asks]
        out: list[int | Refusal] = []
        for (agent, kind, amount), reply in zip(asks, self._run(calls), strict=True):
            answer = self.store.answer(agent, kind, amount, reply)
            if not isinstance(answer, Refusal):
                self._remember(answer, agent, kind)
            out.append(answer)
        return out

    def settle(self, reservation_id: int, actual_e8: int) -> None:
        if actual_e8 < 0:
            raise ValueError(f"settled amount must be >= 0, got {actual_e8 / E8}")
        found = self._known.pop(reservation_id, None)
        if found is None:  # made elsewhere (or forgotten): ask Redis whose it is
            self._run([])
            found = self.store.locate(reservation_id)
            if found is None:
                return  # expired and charged in full already; settling late changes nothing
        self._queue.append(self.store.settle_args(reservation_id, *found, actual_e8))

    def cancel(self, reservation_id: int) -> None:
        self._known.pop(reservation_id, None)
        self._queue.append(self.store.cancel_args(reservation_id))

    def charge(self, agent: str, kind: str, amount_e8: int, now: int) -> None:
        self._check_agent(agent)
        if amount_e8 > 0:
            self._seq += 1
            self._queue.append(self.store.charge_args(self._writer, self._seq, agent, kind, amount_e8, now))

    def expire(self, wall_ns: int) -> int:
        count: int = self._run([self.store.expire_args(wall_ns, "its time to live ran out")])[0][0]
        return count

    def expire_all(self, why: str) -> int:
        count: int = self._run([self.store.expire_args(None, why)])[0][0]
        return count

    def advance(self, now: int) -> None:
        self._queue.append(self.store.advance_args(now))

    # --------------------------------------------------------------------------------------- queries
    def state(self, agent: str) -> BudgetState:
        self._flush()
        return super().state(agent)

    def states(self) -> dict[str, BudgetState]:
        self._flush()
        return super().states()

    def mode(self, agent: str) -> tuple[int, bool]:
        self._flush()
        return super().mode(agent)

    def remaining(self, agent: str, kind: str) -> int | None:
        return self.remaining_many([(agent, kind)])[0]

    def remaining_many(self, asks: list[tuple[str, str]]) -> list[int | None]:
        if not asks:
            return []
        for agent, _ in asks:
            self._check_agent(agent)
        self._run([], pull=list(dict.fromkeys(agent for agent, _ in asks)))
        return [BudgetBook.remaining(self, agent, kind) for agent, kind in asks]

    def tally_figures(self, agent: str) -> list[TallyFigures]:
        self._run([], pull=[agent])
        return super().tally_figures(agent)

    def spent_e8(self, agent: str) -> int:
        self._run([], pull=[agent])
        return super().spent_e8(agent)

    def drain_events(self) -> list[BudgetEvent]:
        """The events so far: this book's and those of every agent's reservations (when Redis answers;
        otherwise those known, the rest with a later call)."""
        with contextlib.suppress(AuthorityUnavailable):
            self._run([])
        return super().drain_events()

    def report(self) -> list[dict[str, Any]]:
        self._run([], pull=list(self._tallies))
        return super().report()


class RedisBudgetBackend:
    """What agents reserve through with ``[budgets] authority = "redis"``: straight to Redis from the
    agent's own process, one round trip per call, no actor in between. Picklable (runners get a copy).

    Fail closed: a reservation Redis does not answer is refused (``BudgetExceeded`` with the reason);
    settles and cancels it did not take are sent again with the next call; refusals of that kind are
    reported to the supervisor (an ``unavailable`` event) once Redis answers again."""

    def __init__(self, store: RedisTallies, *, wall_clock: bool = False) -> None:
        self.store = store
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._known: dict[int, tuple[str, str]] = {}
        self._unsent: list[tuple[int, int | None]] = []
        """Settles (reservation id, actual) and cancels (id, None) Redis did not take yet."""
        self._refused: dict[tuple[str, str], tuple[int, int, str]] = {}
        """(agent, meter) -> (refusals, time of the first, error) while Redis did not answer."""

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "wall_clock": self.wall_clock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], wall_clock=state["wall_clock"])  # type: ignore[misc]

    def reserve(self, agent: str, kind: str, amount_e8: int, ts: int) -> int | Refusal:
        now = time.time_ns() if self.wall_clock else (ts or None)
        try:
            self._send_unsent()
            answer = self.store.reserve(agent, kind, amount_e8, now, time.time_ns())
        except AuthorityUnavailable as exc:
            with self._lock:
                count, first, _ = self._refused.get((agent, kind), (0, now or 0, ""))
                self._refused[(agent, kind)] = (count + 1, first, str(exc))
            return unavailable_refusal(agent, kind, amount_e8, exc)
        if not isinstance(answer, Refusal):
            with self._lock:
                self._known[answer] = (agent, kind)
                if len(self._known) > _KNOWN_IDS:
                    del self._known[next(iter(self._known))]
        if self._refused:
            self._report_refused()
        return answer

    def settle(self, reservation_id: int, actual_e8: int) -> None:
        _units(actual_e8, f"settled amount of reservation {reservation_id}")  # checked before it may wait
        self._close(reservation_id, actual_e8)

    def cancel(self, reservation_id: int) -> None:
        self._close(reservation_id, None)

    def _close(self, reservation_id: int, actual_e8: int | None) -> None:
        with self._lock:
            if self._unsent:  # keep the order: after what is waiting
                self._unsent.append((reservation_id, actual_e8))
                return
        try:
            self._send(reservation_id, actual_e8)
        except AuthorityUnavailable:
            with self._lock:
                self._unsent.append((reservation_id, actual_e8))

    def _send(self, reservation_id: int, actual_e8: int | None) -> None:
        if actual_e8 is None:
            with self._lock:
                self._known.pop(reservation_id, None)
            self.store.call(self.store.cancel_args(reservation_id))
            return
        with self._lock:
            found = self._known.get(reservation_id)
        if found is None:
            found = self.store.locate(reservation_id)
            if found is None:
                return  # expired and charged in full already
        self.store.call(self.store.settle_args(reservation_id, *found, actual_e8))
        with self._lock:
            self._known.pop(reservation_id, None)

    def _send_unsent(self) -> None:
        while True:
            with self._lock:
                if not self._unsent:
                    return
                reservation_id, actual = self._unsent[0]
            self._send(reservation_id, actual)
            with self._lock:
                if self._unsent and self._unsent[0] == (reservation_id, actual):
                    self._unsent.pop(0)

    def _report_refused(self) -> None:
        with self._lock:
            refused, self._refused = self._refused, {}
        for (agent, kind), (count, first, error) in refused.items():
            fact = {"e": "unavailable", "a": agent, "k": kind, "t": str(first), "n": str(count), "err": error}
            try:
                self.store.push_fact(fact)
            except AuthorityUnavailable:
                with self._lock:  # not sent: counted again with any refusal since
                    now = self._refused.get((agent, kind), (0, first, error))
                    self._refused[(agent, kind)] = (now[0] + count, first, now[2])

    def remaining(self, agent: str, kind: str) -> int | None:
        try:
            return self.store.remaining(agent, kind)
        except AuthorityUnavailable:
            return 0 if self.store.plan(agent, kind) else None  # fail closed: nothing may be reserved

    def flush(self) -> None:
        """Send settles and cancels Redis did not take yet (if it answers now); never raises for an
        unreachable Redis (the next call tries again)."""
        try:
            self._send_unsent()
            if self._refused:
                self._report_refused()
        except AuthorityUnavailable:
            pass
