"""The budget authority in Redis (``[budgets] authority = "redis"``): the same answers, events and reports as
the in-memory book, step by step; no cap passed by two services sharing one key prefix; exact amounts
beyond what a double holds; the run's keys; and Redis unreachable (a private ``redis-server`` of the test's
own is stopped, never the shared one): nothing granted, nothing lost, nothing crashes."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents import Agent, BudgetExceeded, Signal
from agents.budget import Refusal
from federation.budget_authority import BudgetService
from federation.budget_gate import BudgetGate, budget_event_record
from federation.budget_redis import MAX_E8, RedisBudgetBackend, RedisBudgetBook, RedisTallies
from federation.config import BudgetSettings
from federation.errors import ConfigError
from policies.budget import E8, BudgetBook, BudgetLimit, BudgetState

HOUR = 3600 * 10**9
DAY = 24 * HOUR


def units(x: float) -> int:
    return round(x * E8)


def redis_config(url: str, prefix: str, **kw: object) -> BudgetSettings:
    return BudgetSettings.model_validate(
        {"authority": "redis", "redis": url, "key_prefix": f"{prefix}budget", **kw}
    )


# --------------------------------------------------------------------------- the same book, step by step
BUDGETS = {
    "a": [
        BudgetLimit("api_calls", units(8), "day", soft=0.5, action="throttle", throttle_factor=3),
        BudgetLimit("money", units(3), "run", action="suspend", on_suspend="flatten"),
    ],
    "b": [BudgetLimit("fees", units(1), action="stop"), BudgetLimit("api_calls", units(5), soft=1.0)],
    "c": [],
    "d": [
        BudgetLimit("llm_tokens", units(12), "rolling", HOUR, action="throttle", throttle_factor=5),
        BudgetLimit("api_calls", units(6), "day"),
    ],
}
PRICES = {"api_calls": Decimal("0.05"), "llm_tokens": Decimal("0.000000125"), "compute_s": Decimal("0.3")}
METERS = ["api_calls", "llm_tokens", "compute_s", "my_meter"]
AGENTS = ["a", "b", "c", "d"]

_AMOUNT = st.builds(
    lambda halves, odd: halves * E8 // 2 + odd,  # odd 1e-8 units: the script's two-limb sums carry
    st.integers(0, 12),
    st.sampled_from([0, 0, 0, 1, E8 - 1]),
)
_RESERVE = st.tuples(
    st.just("reserve"),
    st.sampled_from(AGENTS),
    st.sampled_from(METERS),
    _AMOUNT,
    st.integers(0, 2 * HOUR),  # reserved this long before the clock (periods never go back)
)
_SETTLE = st.tuples(st.just("settle"), st.integers(0, 20), st.integers(0, 150))  # an open one, % of estimate
_STEPS = st.lists(
    st.one_of(
        _RESERVE,
        _RESERVE,
        _SETTLE,
        _SETTLE,
        st.tuples(st.just("cancel"), st.integers(0, 20)),
        st.tuples(
            st.just("charge"),
            st.sampled_from(AGENTS),
            st.sampled_from(["fees", "api_calls"]),
            _AMOUNT,
        ),
        st.tuples(st.just("time"), st.integers(0, 14 * HOUR)),
        st.tuples(st.just("expire"), st.integers(0, 400)),  # seconds of wall time passing
        st.tuples(st.just("advance")),
    ),
    min_size=20,
    max_size=100,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_STEPS)
def test_redis_book_answers_and_reports_exactly_as_the_memory_book(
    redis_url: str, redis_prefix: str, steps: list[tuple[object, ...]]
) -> None:
    """Random calls on both books: the same reservation ids and refusals (same words), the same events in
    the same order, states, throttle factors, what is left, and at the end the same cost report."""
    ttl = 300 * 10**9
    memory = BudgetBook(BUDGETS, PRICES, reservation_ttl_ns=ttl)
    store = RedisTallies(
        BUDGETS, PRICES, url=redis_url, key_prefix=f"{redis_prefix}b", namespace=uuid.uuid4().hex, ttl_ns=ttl
    )
    remote = RedisBudgetBook(store, start_ns=19_000 * DAY)
    now, wall = 19_000 * DAY + 23 * HOUR, 0
    open_: list[tuple[int, int]] = []
    for step in steps:
        wall += 10**9
        match step:
            case ("reserve", agent, kind, amount, back):
                answers = [b.reserve(agent, kind, amount, max(now - back, 0), wall) for b in (memory, remote)]  # type: ignore[operator]
                assert answers[0] == answers[1]
                if isinstance(answers[0], int):
                    open_.append((answers[0], amount))  # type: ignore[arg-type]
            case ("settle", pick, percent) if open_:
                rid, estimate = open_.pop(pick % len(open_))  # type: ignore[operator]
                for b in (memory, remote):
                    b.settle(rid, estimate * percent // 100)  # type: ignore[operator]
            case ("cancel", pick) if open_:
                rid, _ = open_.pop(pick % len(open_))  # type: ignore[operator]
                for b in (memory, remote):
                    b.cancel(rid)
            case ("charge", agent, kind, amount):
                for b in (memory, remote):
                    b.charge(agent, kind, amount, now)  # type: ignore[arg-type]
            case ("time", forward):
                now += forward  # type: ignore[operator]
            case ("expire", seconds):
                wall += seconds * 10**9  # type: ignore[operator]
                assert memory.expire(wall) == remote.expire(wall)
            case ("advance",):
                for b in (memory, remote):
                    b.advance(now)
        assert remote.drain_events() == memory.drain_events()
        assert remote.states() == memory.states()
        for agent in AGENTS:
            assert remote.mode(agent) == memory.mode(agent)
            assert remote.tally_figures(agent) == memory.tally_figures(agent)
        assert remote.remaining_many([(a, k) for a in AGENTS for k in METERS]) == memory.remaining_many(
            [(a, k) for a in AGENTS for k in METERS]
        )
    assert remote.expire_all("the run ended") == memory.expire_all("the run ended")
    assert remote.drain_events() == memory.drain_events()
    assert remote.report() == memory.report()
    assert {a: remote.spent_e8(a) for a in AGENTS} == {a: memory.spent_e8(a) for a in AGENTS}


# ------------------------------------------------------------------------------- across processes/nodes
def test_two_services_sharing_one_prefix_never_pass_a_cap_together(redis_url: str, redis_prefix: str) -> None:
    """Two supervisors' services (as on two nodes) and their agents' backends, one Redis namespace: 40
    threads on each side race for one agent's 150 calls; exactly 150 are granted, and both services see
    every refusal and the suspension."""
    budgets = {"shared": [BudgetLimit("api_calls", units(150), action="suspend")], "other": []}
    config = redis_config(redis_url, redis_prefix)
    namespace = uuid.uuid4().hex
    services = [BudgetService(budgets, config, namespace=namespace) for _ in range(2)]
    granted = [0] * 80
    barrier = threading.Barrier(80)

    def work(k: int) -> None:
        backend = services[k % 2].agent_backend()
        barrier.wait()
        for _ in range(5):
            answer = backend.reserve("shared", "api_calls", E8, 0)
            if isinstance(answer, int):
                granted[k] += 1
                backend.settle(answer, E8)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(80)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 150  # 400 attempts
    for service in services:
        report = service.step({}, 0)
        assert report.statuses["shared"].state is BudgetState.SUSPENDED
        assert sorted(e.code for e in report.events) == ["refused", "soft_limit", "suspend"]  # any order
        (row,) = [r for r in service.book.report() if r["agent"] == "shared"]
        assert row["usage_e8"] == units(150) and row["reservations"] == 150 and row["refusals"] == 250


def test_backend_pickled_to_another_process_reserves_in_the_same_tallies(
    redis_url: str, redis_prefix: str
) -> None:
    budgets = {"a": [BudgetLimit("api_calls", units(3))]}
    service = BudgetService(budgets, redis_config(redis_url, redis_prefix))
    copy = pickle.loads(pickle.dumps(service.agent_backend()))
    assert isinstance(copy, RedisBudgetBackend)
    answers = [copy.reserve("a", "api_calls", E8, 0) for _ in range(4)]
    assert [isinstance(a, int) for a in answers] == [True, True, True, False]
    assert service.remaining("a", "api_calls") == 0
    assert copy.remaining("a", "api_calls") == 0


# ------------------------------------------------------------------------------------------ exactness
def test_amounts_beyond_a_double_are_counted_exactly(redis_url: str, redis_prefix: str) -> None:
    """A budget of 10^12 tokens is 10^20 units of 1e-8, past 2^64 and far past 2^53 (where doubles stop
    telling n from n + 1): it is still granted to the last unit and not one more."""
    cap = 10**12 * E8
    budgets = {"a": [BudgetLimit("llm_tokens", cap)]}
    book = RedisBudgetBook(RedisTallies.from_settings(budgets, redis_config(redis_url, redis_prefix)))
    first = book.reserve("a", "llm_tokens", cap - 1, 0, 0)
    assert isinstance(first, int)
    assert book.remaining("a", "llm_tokens") == 1
    assert isinstance(book.reserve("a", "llm_tokens", 2, 0, 0), Refusal)
    last = book.reserve("a", "llm_tokens", 1, 0, 0)
    assert isinstance(last, int)
    book.settle(first, cap - 1)
    book.settle(last, 1)
    (row,) = book.report()
    assert row["usage_e8"] == cap and row["remaining_e8"] == 0 and row["peak_period_usage_e8"] == cap


def test_a_limit_beyond_the_exact_range_is_refused_with_what_to_do(redis_url: str, redis_prefix: str) -> None:
    budgets = {"a": [BudgetLimit("llm_tokens", MAX_E8 + 1)]}
    with pytest.raises(ConfigError, match=r"above 9007199254740991, the most the Redis budget authority"):
        RedisTallies.from_settings(budgets, redis_config(redis_url, redis_prefix))
    book = RedisBudgetBook(
        RedisTallies.from_settings(
            {"a": [BudgetLimit("llm_tokens", MAX_E8)]}, redis_config(redis_url, redis_prefix)
        )
    )
    with pytest.raises(ValueError, match=r"outside 0 \.\. 9007199254740991 whole units"):
        book.reserve("a", "llm_tokens", MAX_E8 + 1, 0, 0)


# ------------------------------------------------------------------------------------- config and keys
def test_a_prefix_holding_other_budgets_is_refused(redis_url: str, redis_prefix: str) -> None:
    config = redis_config(redis_url, redis_prefix)
    BudgetService({"a": [BudgetLimit("api_calls", units(5))]}, config, namespace="run1")
    with pytest.raises(ConfigError, match="already holds the budgets of another configuration"):
        BudgetService({"a": [BudgetLimit("api_calls", units(6))]}, config, namespace="run1")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"authority": "zookeeper"}, "'actor' or 'redis'"),
        ({"redis": "http://127.0.0.1:6379"}, "is not a Redis URL"),
        ({"key_prefix": "budgets {x}"}, "without spaces or braces"),
        ({"key_prefix": ""}, "non-empty prefix"),
        ({"redis_timeout_s": 0}, "greater than 0"),
    ],
)
def test_redis_settings_errors_say_what_to_fix(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        BudgetSettings.model_validate(fields)


def test_unreachable_redis_at_the_start_is_a_clear_config_error(redis_prefix: str) -> None:
    config = redis_config(f"redis://127.0.0.1:{_free_port()}/0", redis_prefix, redis_timeout_s=0.5)
    with pytest.raises(ConfigError, match=r"did not answer.*set \[budgets\] authority = 'actor'"):
        BudgetService({"a": [BudgetLimit("api_calls", units(1))]}, config)


def test_gate_keeps_every_key_under_the_prefix_and_deletes_them_at_the_end(
    redis_url: str, redis_prefix: str
) -> None:
    budgets = {"a": [BudgetLimit("api_calls", units(2), "rolling", HOUR)], "b": []}
    gate = BudgetGate(budgets, redis_config(redis_url, redis_prefix), start_ns=0)
    assert gate.redis and gate._actor is None
    backend = gate.backend
    assert isinstance(backend, RedisBudgetBackend)
    rid = backend.reserve("a", "api_calls", E8, 5)
    assert isinstance(rid, int)
    backend.settle(rid, E8)
    gate.submit(10)
    gate.collect()
    _, rows = gate.finish()
    assert [(r.agent, r.kind, r.usage) for r in rows] == [("a", "api_calls", Decimal(1))]
    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.scan_iter(match="*budget:{*")]
    mine = [k for k in keys if k.startswith(redis_prefix)]
    assert mine and all(k.startswith(f"{redis_prefix}budget:{{") for k in mine)
    gate.kill()
    assert not list(client.scan_iter(match=f"{redis_prefix}*"))


# ------------------------------------------------------------------------------------ Redis unreachable
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateRedis:
    """A ``redis-server`` of this test's own (no persistence), to stop, pause and resume."""

    url: str
    process: subprocess.Popen[bytes]

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)  # up, but answers nothing: every call times out

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    port = _free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PrivateRedis(f"redis://127.0.0.1:{port}/0", process)
    client = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    yield server
    if process.poll() is None:
        server.resume()
        server.stop()


class Caller(Agent):
    def on_bar(self, bar):  # type: ignore[no-untyped-def]
        return Signal(bar.symbol, 0.0)


def test_redis_paused_refuses_everything_keeps_charges_and_recovers(private_redis: PrivateRedis) -> None:
    budgets = {
        "a": [BudgetLimit("api_calls", units(10)), BudgetLimit("compute_s", units(10))],
        "b": [BudgetLimit("api_calls", units(10))],
    }
    config = redis_config(private_redis.url, "test:", redis_timeout_s=0.3)
    service = BudgetService(budgets, config)
    agent = Caller(name="b", symbols=("AAA",))
    agent._budget = service.agent_backend()
    with agent.spend("api_calls", estimate=2) as first:
        first.settle(1)
    held = agent.spend("api_calls", estimate=3)  # open when Redis stops answering
    assert service.step({}, 1).statuses == {}

    private_redis.pause()
    with pytest.raises(
        BudgetExceeded, match=r"refused, nothing spent: the budget authority \(Redis at .*did not answer"
    ):
        agent.spend("api_calls", estimate=1)
    assert agent.budget_remaining("api_calls") == 0  # fail closed
    held.settle(2)  # Redis did not take it: kept, sent later
    report = service.step({"a": {"compute_s": units(0.5), "fees": units(0.25)}}, 2)  # does not raise
    assert report.statuses["a"].compute_granted is False  # not called while its compute cannot be reserved
    (down,) = report.events
    assert down.code == "unavailable" and down.agent == "" and "did not answer" in down.message
    assert budget_event_record(down).agent is None
    assert service.step({}, 3).events == []  # one event per outage

    private_redis.resume()
    time.sleep(0.4)  # after a failure, calls fail at once for redis_timeout_s rather than each waiting
    agent._budget.flush()  # what the runner does at the end of each step
    report = service.step({}, 4)
    assert report.statuses == {}  # compute granted again
    codes = [(e.code, e.agent) for e in report.events]
    assert ("available", "") in codes and ("unavailable", "b") in codes  # the agent's refusal, reported
    refused = next(e for e in report.events if e.agent == "b")
    assert refused.detail["refused"] == 1 and refused.kind == "api_calls"
    final = service.finish({})
    rows = {(r["agent"], r["kind"]): r for r in final.rows}
    assert rows[("a", "compute_s")]["usage_e8"] == units(0.5)  # the charges that waited, applied once
    assert rows[("a", "fees")]["usage_e8"] == units(0.25)
    # 1 + the settle that waited: nothing lost. The reservation refused for the timeout may still have
    # reached the paused server (it runs what was sent once resumed); its answer lost, it is held until
    # it expires and then charged in full: more is counted than was spent, never less.
    calls = rows[("b", "api_calls")]
    orphans = [e for e in final.events if e.code == "expired" and e.agent == "b"]
    assert calls["usage_e8"] == units(3) + units(1) * len(orphans) and len(orphans) <= 1
    assert calls["reservations"] == 2 + len(orphans)


def test_redis_gone_for_good_the_run_goes_on_closed_and_ends_without_a_cost_report(
    private_redis: PrivateRedis,
) -> None:
    budgets = {"a": [BudgetLimit("api_calls", units(10)), BudgetLimit("compute_s", units(10))]}
    service = BudgetService(budgets, redis_config(private_redis.url, "test:", redis_timeout_s=0.3))
    backend = service.agent_backend()
    private_redis.stop()
    answer = backend.reserve("a", "api_calls", E8, 0)
    assert isinstance(answer, Refusal) and "did not answer" in answer.message and answer.remaining_e8 == 0
    assert isinstance(backend.reserve("a", "my_meter", E8, 0), Refusal)  # no check possible: refused too
    backend.flush()  # never raises
    report = service.step({"a": {"compute_s": units(0.1)}}, 1)
    assert not report.statuses["a"].compute_granted
    final = service.finish({})
    assert final.rows == [] and final.spent_e8 == {}
    assert [e.code for e in final.events] == ["unavailable"]
    assert "the run ends without a cost report" in final.events[0].message


def test_redis_restarted_empty_fails_closed(private_redis: PrivateRedis) -> None:
    """Without persistence a restarted Redis has lost the run's tallies: nothing can be checked, so
    nothing is granted (instead of starting the budgets again from zero)."""
    budgets = {"a": [BudgetLimit("api_calls", units(10))]}
    service = BudgetService(budgets, redis_config(private_redis.url, "test:"))
    backend = service.agent_backend()
    assert isinstance(backend.reserve("a", "api_calls", E8, 0), int)
    redis.Redis.from_url(private_redis.url).flushall()
    answer = backend.reserve("a", "api_calls", E8, 0)
    assert isinstance(answer, Refusal) and "cannot decide: LOST budget 0 of agent a" in answer.message
    assert service.step({}, 1).events[0].code == "unavailable"


def test_a_script_cache_flushed_is_loaded_again(private_redis: PrivateRedis) -> None:
    """Redis forgets scripts when it restarts (or on SCRIPT FLUSH): both ways of calling load it again."""
    budgets = {"a": [BudgetLimit("api_calls", units(2))]}
    service = BudgetService(budgets, redis_config(private_redis.url, "test:"))
    backend = service.agent_backend()
    client = redis.Redis.from_url(private_redis.url)
    client.script_flush()
    assert isinstance(backend.reserve("a", "api_calls", E8, 0), int)  # one EVALSHA
    client.script_flush()
    assert isinstance(service.reserve("a", "api_calls", E8, 0), int)  # a pipeline of them
    assert isinstance(service.reserve("a", "api_calls", E8, 0), Refusal)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.MasterDownError("Link with MASTER is down"),
        redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
    ],
)
def test_a_redis_that_cannot_serve_now_refuses_rather_than_crashing(error: Exception) -> None:
    """redis-py raises some replies as classes without their code: a failover or maxmemory must still
    fail closed (AuthorityUnavailable: refused, an event) and not end the run."""
    from federation.budget_redis import AuthorityUnavailable

    store = RedisTallies({}, {}, url="redis://127.0.0.1:1/0", key_prefix="k", namespace="n", ttl_ns=10**9)
    assert isinstance(store._failure(error), AuthorityUnavailable)  # type: ignore[arg-type]
    other = store._failure(redis.exceptions.ResponseError("ERR unknown command"))
    assert not isinstance(other, AuthorityUnavailable), "a real script error is still an error"
