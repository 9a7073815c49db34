"""Budgets for real: the authority (the actor, and Redis reserved against directly from every process)
under concurrent load from several processes, the budget example run from the command line as a user runs
it (and with the Redis authority: the same outcome), and the kill switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import ray
import redis

from agents.budget import BudgetBackend
from federation.budget_authority import BudgetService, RayBudgetBackend, start_budget_authority
from federation.budget_redis import RedisBudgetBackend
from federation.config import BudgetSettings, FleetConfig, load_config
from federation.ledger import open_ledger
from federation.supervisor import Supervisor
from policies.budget import E8, BudgetLimit
from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.usefixtures("ray_session")

FEDERATION = [sys.executable, "-c", "from federation.cli import main; main()"]


def cli(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDERATION, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def flat(text: str) -> str:
    """Rich wraps long messages to the terminal width."""
    return " ".join(text.split())


def redis_budgets(cfg: FleetConfig, url: str, prefix: str) -> FleetConfig:
    """``cfg`` with ``[budgets] authority = "redis"`` in the test's own keys."""
    update = {"authority": "redis", "redis": url, "key_prefix": f"{prefix}budget"}
    return cfg.model_copy(update={"budgets": cfg.budgets.model_copy(update=update)})


@ray.remote(num_cpus=0)
class _Arrivals:
    """Where the caller processes meet, so that all of them run at once (each task its own process)."""

    def __init__(self) -> None:
        self.count = 0

    def arrive(self) -> int:
        self.count += 1
        return self.count

    def arrived(self) -> int:
        return self.count


@ray.remote(num_cpus=0)
def _reserve_from_threads(
    authority: object, agents: list[str], threads: int, tries: int, arrivals: Any, processes: int
) -> dict[str, int]:
    """One process, ``threads`` threads, each reserving 1 unit ``tries`` times for every agent: through the
    authority actor, or (a Redis backend, pickled here) straight to Redis from this process. Starts when
    all ``processes`` have arrived."""
    ray.get(arrivals.arrive.remote())
    deadline = time.monotonic() + 120
    while ray.get(arrivals.arrived.remote()) < processes and time.monotonic() < deadline:
        time.sleep(0.01)
    backend: BudgetBackend = (
        authority if isinstance(authority, RedisBudgetBackend) else RayBudgetBackend(authority)
    )
    granted = dict.fromkeys(agents, 0)
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(tries):
            for agent in agents:
                answer = backend.reserve(agent, "api_calls", E8, 0)
                if isinstance(answer, int):
                    backend.settle(answer, E8)
                    with lock:
                        granted[agent] += 1

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {**granted, "pid": os.getpid()}


@pytest.mark.parametrize("authority", ["actor", "redis"])
def test_authority_grants_exactly_the_cap_to_100_concurrent_callers_in_4_processes(
    authority: str, request: pytest.FixtureRequest
) -> None:
    """With Redis every process reserves against Redis itself (as agents on other nodes do): the cap holds
    across processes with nothing in between but the Lua script."""
    caps = {"shared": 250, "a": 7, "b": 1}
    budgets = {name: [BudgetLimit("api_calls", cap * E8)] for name, cap in caps.items()}
    if authority == "actor":
        actor = start_budget_authority(budgets=budgets, settings=BudgetSettings())
        target: object = actor
    else:
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        settings = BudgetSettings(authority="redis", redis=url, key_prefix=f"{prefix}budget")
        service = BudgetService(budgets, settings)
        target = service.agent_backend()
    try:
        arrivals = _Arrivals.remote()  # type: ignore[attr-defined]
        parts = ray.get(
            [_reserve_from_threads.remote(target, list(caps), 25, 4, arrivals, 4) for _ in range(4)]
        )
        assert len({p["pid"] for p in parts}) == 4  # four processes at once
        granted = {name: sum(p[name] for p in parts) for name in caps}
        assert granted == caps  # 400 attempts per agent from 100 threads: never one more than the cap
        rows = ray.get(actor.finish.remote({})).rows if authority == "actor" else service.finish({}).rows
        by_agent = {r["agent"]: r for r in rows}
        for name, cap in caps.items():
            assert by_agent[name]["usage_e8"] == cap * E8
            assert by_agent[name]["refusals"] == 400 - cap
    finally:
        if authority == "actor":
            ray.kill(actor)


@pytest.fixture(scope="module")
def budget_example(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], Path]:
    tmp = tmp_path_factory.mktemp("budgets")
    ledger = tmp / "budgets.db"
    run = cli("run", str(EXAMPLES / "budgets" / "fleet.toml"), "--json", "--ledger", f"sqlite:///{ledger}")
    assert run.returncode == 0, run.stderr[-3000:]
    costs = cli("costs", str(ledger), "--json")
    assert costs.returncode == 0, costs.stderr[-3000:]
    return json.loads(run.stdout), json.loads(costs.stdout), ledger


def test_budget_example_costs_stay_within_every_budget(budget_example: tuple[dict, list[dict], Path]) -> None:
    summary, rows, _ = budget_example
    assert summary["status"] == "completed"
    budgeted = [r for r in rows if r["budget"] is not None]
    assert {r["agent"] for r in budgeted} == {"vendor-quotes", "llm-analyst"}
    for row in rows:
        assert {"agent", "kind", "usage", "cost", "budget", "remaining", "actions"} <= set(row)
    for row in budgeted:
        assert row["usage"] <= row["budget"], row
        assert row["remaining"] == pytest.approx(row["budget"] - row["usage"]) or row["period"] != "run"
    assert summary["costs"] == rows  # the run summary carries the same report


def test_vendor_agent_is_suspended_at_its_40th_call_and_flattened(
    budget_example: tuple[dict, list[dict], Path],
) -> None:
    summary, rows, ledger_path = budget_example
    (calls,) = [r for r in rows if r["agent"] == "vendor-quotes" and r["kind"] == "api_calls"]
    assert calls["usage"] == 40 and calls["actions"] == {"suspend": 1} and calls["state"] == "suspended"
    agent = next(a for a in summary["agents"] if a["name"] == "vendor-quotes")
    assert agent["budget_state"] == "suspended" and agent["held_steps"] > 0
    ledger = open_ledger(f"sqlite:///{ledger_path}")
    events = [e for e in ledger.events(summary["run_id"], "budget") if e["agent"] == "vendor-quotes"]
    suspend = next(e for e in events if e["code"] == "suspend")
    assert suspend["detail"]["amount"] == suspend["detail"]["limit"] == "40.00000000"
    assert [e["code"] for e in events] == ["soft_limit", "suspend"]
    # flattened: nothing held at the end, and no order for it was placed after the suspension's block
    assert ledger.positions(summary["run_id"], "vendor-quotes") == {}


def test_llm_agent_is_throttled_each_day_resumed_next_day_then_suspended(
    budget_example: tuple[dict, list[dict], Path],
) -> None:
    summary, rows, ledger_path = budget_example
    days = [r for r in rows if r["agent"] == "llm-analyst" and r["kind"] == "llm_tokens"]
    assert len(days) >= 3 and all(r["period"].startswith("day ") for r in days)
    throttled = [r for r in days if r["actions"].get("throttle")]
    assert len(throttled) >= 2
    for row in throttled:
        assert row["usage"] > row["budget"] * 0.9  # throttled only once the day's tokens ran short
    ledger = open_ledger(f"sqlite:///{ledger_path}")
    events = [e for e in ledger.events(summary["run_id"], "budget") if e["agent"] == "llm-analyst"]
    for refused in (e for e in events if e["code"] == "refused"):
        d = refused["detail"]
        # the right time: the refused request did not fit, everything before it did
        assert Decimal(d["used"]) + Decimal(d["reserved"]) <= Decimal(d["limit"])
        assert Decimal(d["used"]) + Decimal(d["reserved"]) + Decimal(d["amount"]) > Decimal(d["limit"])
    codes = [e["code"] for e in events]
    assert codes.count("throttle") == codes.count("resume") >= 2
    assert codes.index("throttle") < codes.index("resume") < codes.index("suspend")
    money = next(r for r in rows if r["agent"] == "llm-analyst" and r["kind"] == "money")
    assert money["actions"] == {"suspend": 1} and money["usage"] <= 0.2
    agent = next(a for a in summary["agents"] if a["name"] == "llm-analyst")
    assert agent["held_steps"] > 0 and agent["budget_state"] == "suspended"


def _outcome(rows: list[dict], events: list[dict]) -> dict[str, object]:
    """What the budgets did: every budget row but those of CPU time, which differs from run to run (so
    money rows lose their amounts: compute seconds are priced in), and each agent's budget events."""
    noisy = {"cost", "usage", "remaining", "peak_period_usage"}
    kept = [
        {k: v for k, v in r.items() if k != "cost" and (r["kind"] != "money" or k not in noisy)}
        for r in rows
        if r["kind"] != "compute_s" and r["budget"] is not None
    ]
    codes: dict[str, list[tuple[str, str]]] = {}
    for e in events:
        codes.setdefault(e["agent"], []).append((e["code"], e["detail"]["budget"]))
    return {"rows": kept, "events": codes}


def test_budget_example_with_the_redis_authority_has_the_same_outcome(
    budget_example: tuple[dict, list[dict], Path], tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """The example fleet with ``[budgets] authority = "redis"``: the same usage, suspensions, throttled
    days, resumptions and refusals as with the actor; and the run's keys are gone afterwards."""
    summary, rows, ledger_path = budget_example
    ledger = open_ledger(f"sqlite:///{ledger_path}")
    actor = _outcome(rows, ledger.events(summary["run_id"], "budget"))
    cfg = load_config(
        EXAMPLES / "budgets" / "fleet.toml", overrides={"ledger": f"sqlite:///{tmp_path / 'r.db'}"}
    )
    result = Supervisor(redis_budgets(cfg, redis_url, redis_prefix), show_progress=False).run()
    assert result.status == "completed"
    redis_rows = json.loads(result.to_json())["costs"]
    redis_ledger = open_ledger(f"sqlite:///{tmp_path / 'r.db'}")
    assert _outcome(redis_rows, redis_ledger.events(result.run_id, "budget")) == actor
    assert {a.name: a.budget_state for a in result.agents} == {
        a["name"]: a["budget_state"] for a in summary["agents"]
    }
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match=f"{redis_prefix}*"))


def test_costs_command_errors_and_csv(budget_example: tuple[dict, list[dict], Path], tmp_path: Path) -> None:
    summary, rows, ledger = budget_example
    csv = cli("costs", summary["run_id"], "--ledger", str(ledger), "--csv")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("agent,kind,usage,cost,budget")
    assert len(csv.stdout.splitlines()) == len(rows) + 1
    missing = cli("costs", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no such file" in flat(missing.stderr)
    unknown = cli("costs", "20990101T000000-abcdef", "--ledger", str(ledger))
    assert unknown.returncode == 2 and "is not in ledger" in flat(unknown.stderr)


LIVE_FLEET = """
[federation]
capital = 100000
mode = "live"
isolation = "shared"
ledger = "sqlite:///{ledger}"

[live]
tick_interval_ms = 20
max_ticks = 1500

[feed]
kind = "synthetic"
symbols = ["AAA", "BBB"]
bars = 2000
interval = "1m"
volatility = 0.8

[[agents]]
class = "agents.momentum:MomentumAgent"
grid = {{ fast = [2, 3], slow = [5, 8] }}
"""


def _start_live(tmp_path: Path) -> tuple[Supervisor, threading.Thread, list[object], Path]:
    ledger = tmp_path / "live.db"
    path = tmp_path / "live.toml"
    path.write_text(LIVE_FLEET.format(ledger=ledger))
    sup = Supervisor(load_config(path), show_progress=False)
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(sup.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it trades
        if (
            ledger.exists()
            and open_ledger(f"sqlite:///{ledger}").query(
                "SELECT count(*) FROM orders WHERE run_id = ?", sup.run_id
            )[0][0]
            > 5
        ):
            break
        time.sleep(0.2)
    return sup, thread, out, ledger


@pytest.mark.parametrize("how", ["cli", "api"])
def test_kill_switch_halts_trading_and_cancels_open_orders(tmp_path: Path, how: str) -> None:
    sup, thread, out, ledger_path = _start_live(tmp_path)
    if how == "cli":
        halted = cli("halt", str(ledger_path), "--reason", "risk desk says stop")
        assert halted.returncode == 0, halted.stderr
    else:
        sup.halt("risk desk says stop")
    thread.join(timeout=120)
    assert out, "the run did not end after the halt"
    summary = out[0]
    assert summary.status == "halted" and summary.halt_reason == "risk desk says stop"  # type: ignore[attr-defined]
    ledger = open_ledger(f"sqlite:///{ledger_path}")
    assert ledger.run_status(sup.run_id) == "halted"
    states = ledger.events(sup.run_id, "trading_state")
    assert any(e["code"] == "halted" and e["agent"] is None for e in states)
    working = ledger.query(
        "SELECT count(*) FROM orders WHERE run_id = ? AND status = 'submitted'", sup.run_id
    )[0][0]
    assert working == 0  # every order still working at the halt was cancelled
    assert summary.bars > 0 and summary.live.ticks < 1500  # type: ignore[attr-defined]
    again = cli("halt", str(ledger_path), "--run", sup.run_id)
    assert again.returncode == 2 and "is not running" in flat(again.stderr)


SPENDER = '''
from agents import Agent, BudgetExceeded, Signal


class Spender(Agent):
    """Buys one API call per bar and an LLM answer every 5th bar, whatever its budgets say."""

    def on_start(self):
        self.n = 0

    def on_bar(self, bar):
        self.n += 1
        try:
            with self.spend("api_calls", estimate=1):
                pass
            if self.n % 5 == 0:
                with self.spend("llm_tokens", estimate=300) as s:
                    s.settle(120 + self.n % 7)
        except BudgetExceeded:
            pass
        return Signal(bar.symbol, weight=0.1 if self.n % 2 else -0.1)
'''

FLEET = """
[federation]
capital = 1000000
block_size = 16
isolation = "shared"
ledger = "sqlite:///{ledger}"

[feed]
kind = "synthetic"
symbols = ["AAA"]
bars = {bars}
interval = "1h"

[budgets]
prices = {{ api_calls = 0.01, llm_tokens = 0.00002 }}
{authority}

[[agents]]
class = "spender.py:Spender"
count = {agents}

  [[agents.budgets]]
  kind = "api_calls"
  limit = 25
  action = "stop"

  [[agents.budgets]]
  kind = "llm_tokens"
  limit = 1000
  period = "day"
  action = "throttle"

  [[agents.budgets]]
  kind = "money"
  limit = 0.5
  action = "suspend"
"""


def _spending_fleet(tmp_path: Path, agents: int, bars: int, authority: str = "") -> None:
    (tmp_path / "spender.py").write_text(SPENDER)
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET.format(ledger=tmp_path / "l.db", agents=agents, bars=bars, authority=authority))
    summary = Supervisor(load_config(path), show_progress=False).run()
    assert summary.status == "completed"
    rows = summary.costs
    for row in rows:
        if row.budget is not None:
            assert row.usage <= row.budget, row  # no budget passed, not even by one unit
            assert row.peak_period_usage is not None and row.peak_period_usage <= row.budget, row
    calls = [r for r in rows if r.kind == "api_calls"]
    assert len(calls) == agents and all(r.usage == 25 and r.actions == {"stop": 1} for r in calls)
    assert all(a.budget_state == "stopped" and a.held_steps > 0 for a in summary.agents)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    stops = [e for e in ledger.events(summary.run_id, "budget") if e["code"] == "stop"]
    assert sorted(e["agent"] for e in stops) == sorted(a.name for a in summary.agents)


def _authority_keys(authority: str, request: pytest.FixtureRequest) -> str:
    """``[budgets]`` lines of the authority (the actor: none, the default)."""
    if authority == "actor":
        return ""
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return f'authority = "redis"\nredis = "{url}"\nkey_prefix = "{prefix}budget"'


@pytest.mark.parametrize("authority", ["actor", "redis"])
def test_a_fleet_of_spending_agents_never_passes_a_budget(
    tmp_path: Path, authority: str, request: pytest.FixtureRequest
) -> None:
    _spending_fleet(tmp_path, agents=10, bars=120, authority=_authority_keys(authority, request))


@pytest.mark.slow
@pytest.mark.parametrize("authority", ["actor", "redis"])
def test_100_spending_agents_at_once_never_pass_a_budget(
    tmp_path: Path, authority: str, request: pytest.FixtureRequest
) -> None:
    _spending_fleet(tmp_path, agents=100, bars=200, authority=_authority_keys(authority, request))
