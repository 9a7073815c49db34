"""``run_chaos``: run a fleet live while a plan's faults are injected, then check the invariants.

What happens, in order:

1. The fleet config and the plan are loaded and checked together (the fleet must trade live; a plan
   that takes Redis down needs a fleet that uses Redis).
2. Servers the plan restarts are the harness's own: a private PostgreSQL server becomes the fleet's
   ledger when the plan restarts PostgreSQL, a private Redis server its ``[events]`` / feed / budget Redis
   when the plan takes Redis down. A user's shared servers are never stopped.
3. With ``baseline = true`` the same fleet runs first without any fault (its latency is the reference).
4. The chaos run: the feed's files are corrupted at ``[data] corrupt_rate`` (copies in a temporary
   folder), the venue actor gets the plan's fault rates, agents named by ``[hooks] agents_fraction`` get
   hook faults, and a scheduler thread, started when every agent is ready, kills agent processes, the
   execution actor, restarts PostgreSQL, takes Redis down and disconnects the venue at the planned times.
5. The invariants are checked from the ledger and the venue's own record
   (:mod:`federation.chaos.invariants`) and returned as a :class:`~federation.chaos.report.ChaosReport`.

Everything random comes from the plan's seed: the same plan picks the same agents and the same faults.
(Timing on a busy machine is not reproducible to the bar, so the trades may differ run to run; the
invariants must hold for every run.)
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from rich.console import Console

from federation.chaos.corrupt import CorruptedFeed, corrupt_csv_feed, with_corrupted_feed
from federation.chaos.hooks import HookFaults
from federation.chaos.invariants import AgentKill, Invariant, RunStats, check_invariants
from federation.chaos.plan import ChaosPlan, FaultEvent, load_plan, pick_agents
from federation.chaos.report import ChaosReport
from federation.chaos.servers import PostgresServer, RedisServer
from federation.config import FleetConfig, RedisFeedConfig
from federation.errors import ConfigError
from federation.runners import Runner
from federation.summary import RunSummary

log = logging.getLogger("federation.chaos")


@dataclass(slots=True)
class Injection:
    """One fault the harness injected: what, when (seconds since trading started) and on what."""

    kind: str
    at_s: float
    target: str
    ok: bool = True
    detail: str = ""


def _uses_redis(cfg: FleetConfig) -> list[str]:
    used = []
    if cfg.events.url:
        used.append("events")
    if cfg.budgets.authority == "redis":
        used.append("budgets")
    return used


def prepare_fleet(cfg: FleetConfig, plan: ChaosPlan, source: str) -> FleetConfig:
    """Check that the fleet can run under the plan (a ConfigError saying what to change if not)."""
    if cfg.federation.mode != "live":
        raise ConfigError(
            f"{source}: federation.mode is {cfg.federation.mode!r}; a chaos plan schedules faults in seconds "
            'of live (paper) trading: set [federation] mode = "live"'
        )
    if plan.redis.down_at_s and isinstance(cfg.feed, RedisFeedConfig):
        raise ConfigError(
            f"{source}: the plan takes Redis down, which the harness does on a private Redis server of its "
            "own; a redis feed there would have no bars. Use a CSV or synthetic feed for this plan, or "
            "remove [redis] down_at_s"
        )
    if plan.redis.down_at_s and not _uses_redis(cfg):
        raise ConfigError(
            f"{source}: the plan takes Redis down, but the fleet uses no Redis: set [events] url (or "
            "[budgets] authority = 'redis'), or remove [redis] down_at_s from the plan"
        )
    _check_paced(cfg, source)
    return cfg


def _check_paced(cfg: FleetConfig, source: str) -> None:
    if cfg.live.tick_interval_ms <= 0 and not isinstance(cfg.feed, RedisFeedConfig):
        raise ConfigError(
            f"{source}: live.tick_interval_ms is 0 (ticks as fast as possible): a chaos plan schedules its "
            "faults in seconds of paced trading; set e.g. tick_interval_ms = 250"
        )


def _stop_after(supervisor: Any, seconds: float) -> Callable[[list[Runner]], None]:
    """An ``on_ready`` that ends the run ``seconds`` after trading began."""

    def begin(runners: list[Runner]) -> None:
        timer = threading.Timer(seconds, supervisor.stop)
        timer.daemon = True
        timer.start()

    return begin


def _redirect_redis(cfg: FleetConfig, url: str) -> FleetConfig:
    """The fleet's Redis uses (events, budget authority) pointed at ``url``."""
    update: dict[str, Any] = {}
    if cfg.events.url:
        update["events"] = cfg.events.model_copy(update={"url": url})
    if cfg.budgets.authority == "redis":
        update["budgets"] = cfg.budgets.model_copy(update={"redis": url})
    return cfg.model_copy(update=update)


def _with_ledger(cfg: FleetConfig, url: str) -> FleetConfig:
    return cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"ledger": url})})


@contextlib.contextmanager
def _servers(plan: ChaosPlan) -> Iterator[tuple[PostgresServer | None, RedisServer | None]]:
    """The private servers the plan restarts (None where it restarts nothing), closed afterwards."""
    with contextlib.ExitStack() as stack:
        pg = redis = None
        if plan.postgres.restart_at_s:
            pg = stack.enter_context(PostgresServer())
        if plan.redis.down_at_s:
            redis = stack.enter_context(RedisServer())
        yield pg, redis


class FaultScheduler(threading.Thread):
    """Injects the plan's scheduled faults relative to :meth:`begin` (the first tick)."""

    def __init__(
        self,
        plan: ChaosPlan,
        supervisor: Any,
        pg: PostgresServer | None,
        redis: RedisServer | None,
        venue: Any,
        console: Console,
    ) -> None:
        super().__init__(name="chaos-scheduler", daemon=True)
        self.plan = plan
        self.supervisor = supervisor
        self.pg, self.redis, self.venue = pg, redis, venue
        self.console = console
        self.runners: dict[str, Runner] = {}
        self.injections: list[Injection] = []
        self.started = 0.0
        self._halt_event = threading.Event()
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def begin(self, runners: list[Runner]) -> None:
        """Called once every agent is ready: the plan's clock starts now."""
        self.runners = {name: r for r in runners for name in r.names}
        self.started = time.monotonic()
        self.start()

    def stop(self) -> None:
        """Stop injecting; a server still down is brought back up."""
        self._halt_event.set()
        if self.is_alive():
            self.join(timeout=60)
        for kind in list(self._down):
            self._bring_up(kind)

    def run(self) -> None:
        for event in self.plan.schedule():
            if self._halt_event.wait(max(0.0, self.started + event.at_s - time.monotonic())):
                return
            at = time.monotonic() - self.started
            try:
                self._inject(event, at)
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                log.error("chaos: %s failed: %s", event.kind, exc)
                self._record(Injection(event.kind, at, "", False, str(exc)))
        if not self._halt_event.wait(max(0.0, self.started + self.plan.duration_s - time.monotonic())):
            self.supervisor.stop()  # the plan's duration is over

    def _inject(self, event: FaultEvent, at: float) -> None:
        kind, params = event.kind, event.params
        if kind == "kill_agents":
            self._kill_agents(at, int(params["wave"]), float(params["fraction"]))
        elif kind == "kill_execution":
            link = self.supervisor.execution
            if link is None:
                raise RuntimeError("the execution actor is not running")
            ray.kill(link.handle, no_restart=True)
            self._record(Injection(kind, at, "execution"))
        elif kind == "venue_disconnect":
            ray.get(self.venue.disconnect.remote(float(params["for_s"])))
            self._record(Injection(kind, at, "venue", detail=f"{params['for_s']:g} s"))
        elif kind in ("postgres_down", "redis_down"):
            server = self.pg if kind == "postgres_down" else self.redis
            assert server is not None
            self._down.add(kind)
            server.stop()
            self._record(Injection(kind, at, server.url, detail=f"down {params['down_s']:g} s"))
        elif kind in ("postgres_up", "redis_up"):
            self._bring_up(kind.replace("_up", "_down"))
            self._record(Injection(kind, at, kind.split("_")[0]))

    def _bring_up(self, down_kind: str) -> None:
        server = self.pg if down_kind == "postgres_down" else self.redis
        if down_kind in self._down and server is not None:
            server.start()
            self._down.discard(down_kind)

    def _record(self, injection: Injection) -> None:
        with self._lock:
            self.injections.append(injection)

    def _kill_agents(self, at: float, wave: int, fraction: float) -> None:
        alive = [n for n in self.runners if self.supervisor.agent_alive(n)]
        for name in pick_agents(alive, fraction, wave, self.plan.seed):
            self.runners[name].kill()
            self._record(Injection("kill_agent", at, name))


def hook_fault_targets(plan: ChaosPlan, names: list[str]) -> dict[str, HookFaults]:
    """The agents that get hook faults (``[hooks] agents_fraction`` of them, chosen by the seed)."""
    if plan.hooks.agents_fraction <= 0:
        return {}
    faults = plan.hooks.faults(plan.seed)
    return dict.fromkeys(plan.hook_agents(names), faults)


def _latencies_ms(supervisor: Any, agents: set[str]) -> list[float]:
    """Tick-to-orders of every answer of ``agents`` (the first answer after a restart excluded)."""
    stats = supervisor.live_stats
    if stats is None:
        return []
    return [ns / 1e6 for name in sorted(agents) for ns in stats.agent_latency_ns.get(name, [])]


def _kills(injections: list[Injection], supervisor: Any, started: float) -> list[AgentKill]:
    """Each agent kill and how long until that agent was back (restored), matched in time order."""
    back = {name: sorted(times) for name, times in supervisor.recovered_at.items()}
    kills = []
    for inj in sorted((i for i in injections if i.kind == "kill_agent"), key=lambda i: i.at_s):
        killed = started + inj.at_s
        later = [t for t in back.get(inj.target, []) if t >= killed]
        kills.append(
            AgentKill(inj.target, round(inj.at_s, 3), round(later[0] - killed, 3) if later else None)
        )
    return kills


def _fault_counts(
    injections: list[Injection], truth: dict[str, Any], corrupted: CorruptedFeed | None, summary: RunSummary
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inj in injections:
        if inj.ok:
            counts[inj.kind] = counts.get(inj.kind, 0) + 1
    for kind, n in truth.get("faults", {}).items():
        counts[f"venue_{kind}"] = int(n)
    if corrupted is not None:
        for kind, n in corrupted.counts.items():
            counts[f"data_{kind}"] = n
    for agent in summary.agents:
        for kind, n in (agent.injected or {}).items():
            counts[f"hook_{kind}"] = counts.get(f"hook_{kind}", 0) + n
    return counts


def _run_invariants(summary: RunSummary, corrupted: CorruptedFeed | None) -> list[Invariant]:
    """Checks of the run itself: it completed with its ledger whole, and every corrupted record was
    skipped by the feed's validation (none reached an agent)."""
    unwritten = [w.writer for w in summary.ledger_writers if w.error or w.unwritten_file]
    checks = [
        Invariant(
            "run_completed",
            summary.status == "completed" and not unwritten,
            {"status": summary.status, "unwritten_ledger_writers": unwritten},
            "status completed, every ledger write made",
            "the run must end normally, with nothing left in a spill file",
        )
    ]
    if corrupted is not None:
        checks.append(
            Invariant(
                "bad_records_skipped",
                summary.data_issues >= corrupted.total,
                {"injected": corrupted.total, "skipped": summary.data_issues},
                "skipped >= injected",
                "every corrupted record is caught by the feed's validation and recorded as a data_issue",
            )
        )
    return checks


def run_chaos(
    config: str | Path | FleetConfig,
    plan: str | Path | ChaosPlan,
    *,
    console: Console | None = None,
    show_progress: bool = True,
) -> ChaosReport:
    """Run a fleet (a config file or a loaded :class:`FleetConfig`) under the faults of a plan (a file or
    a :class:`ChaosPlan`) and check the invariants.

    Raises :class:`~federation.errors.ConfigError` for a bad config or plan (nothing is started then).
    """
    from federation.config import load_config
    from federation.execution import start_venue_actor
    from federation.ledger import open_ledger
    from federation.ray_runtime import ensure_ray
    from federation.supervisor import Supervisor

    console = console or Console(stderr=True)
    plan_path = "(in memory)" if isinstance(plan, ChaosPlan) else str(plan)
    plan = plan if isinstance(plan, ChaosPlan) else load_plan(plan)
    source = "config" if isinstance(config, FleetConfig) else str(config)
    loaded = config if isinstance(config, FleetConfig) else load_config(config)
    cfg = prepare_fleet(loaded, plan, source)
    with _servers(plan) as (pg, redis), tempfile.TemporaryDirectory(prefix="federation-chaos-") as tmp:
        if pg is not None:
            cfg = _with_ledger(cfg, pg.url)
        if redis is not None:
            cfg = _redirect_redis(cfg, redis.url)
        corrupted = None
        chaos_cfg = cfg
        if plan.data.corrupt_rate > 0:
            corrupted = corrupt_csv_feed(
                cfg, Path(tmp) / "feed", rate=plan.data.corrupt_rate, seed=plan.seed, kinds=plan.data.kinds
            )
            chaos_cfg = with_corrupted_feed(cfg, corrupted)
        baseline: Any = None
        if plan.baseline:
            console.print(f"chaos: fault-free baseline, {plan.baseline_duration_s:g} s")
            baseline = Supervisor(cfg, source=source, console=console, show_progress=show_progress)
            baseline.on_ready = _stop_after(baseline, plan.baseline_duration_s)
            baseline.run()
        supervisor = Supervisor(chaos_cfg, source=source, console=console, show_progress=show_progress)
        market, fleet = supervisor.prepare()
        names = [s.name for s in fleet]
        supervisor.hook_faults = hook_fault_targets(plan, names)
        ensure_ray(cfg.federation.ray_address)
        venue = supervisor.venue = start_venue_actor(
            cfg.execution, market.symbols, faults=plan.venue.faults(plan.seed)
        )
        try:
            scheduler = FaultScheduler(plan, supervisor, pg, redis, venue, console)
            supervisor.on_ready = scheduler.begin
            console.print(
                f"chaos: {len(names)} agents, {plan.duration_s:g} s under faults (seed {plan.seed})"
            )
            try:
                summary = supervisor.run()
            finally:
                scheduler.stop()
            truth: dict[str, Any] = ray.get(venue.truth.remote())
        finally:
            ray.kill(venue, no_restart=True)
        healthy = set(names) - set(supervisor.hook_faults) - set(supervisor.quarantined)
        link = supervisor.execution
        stats = RunStats(
            initial_capital=cfg.federation.capital,
            kills=_kills(scheduler.injections, supervisor, scheduler.started),
            restarts=list(supervisor.agent_restarts),
            quarantined=dict(supervisor.quarantined),
            execution_restarts=0 if link is None else len(link.restarts),
            healthy_latency_ms=_latencies_ms(supervisor, healthy),
            baseline_latency_ms=None if baseline is None else _latencies_ms(baseline, healthy),
            risk=cfg.risk,
        )
        ledger = open_ledger(cfg.federation.ledger, migrate=False)
        try:
            invariants = _run_invariants(summary, corrupted)
            invariants += check_invariants(ledger, summary.run_id, truth, stats, plan)
        finally:
            ledger.close()
        notes = [f"{i.kind} at {i.at_s:.1f} s failed: {i.detail}" for i in scheduler.injections if not i.ok]
        if pg is not None:
            notes.append("ledger: a private PostgreSQL server the harness restarted (removed afterwards)")
        return ChaosReport(
            plan=plan_path,
            run_id=summary.run_id,
            seed=plan.seed,
            duration_s=plan.duration_s,
            faults=_fault_counts(scheduler.injections, truth, corrupted, summary),
            invariants=invariants,
            baseline_run_id=None if baseline is None else baseline.run_id,
            notes=notes,
        )
