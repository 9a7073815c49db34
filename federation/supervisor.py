"""The supervisor: owns the clock, the agent registry and lifecycle, and drives the data path.

Per block of bars (backtest replay): one ``ray.put`` of the block, every runner gets the same reference
(zero-copy reads on one node) together with the fills attributed to its agents since the last block;
their signals go to the aggregator, the resulting target updates to the execution actor, which returns
the block's fills. Agents therefore see their fills and positions updated between blocks
(``[federation] block_size``; 1 gives per-bar feedback).

Live mode (``[federation] mode = "live"``) sends one bar per tick instead, paced by ``[live]``; runners
still busy get their missed bars coalesced (:mod:`federation.live`). In both modes a call running past
``agent_timeout_s`` suspends the agent, and a runner whose process dies suspends its agents.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.base import HookError
from agents.model import BarBatch, FillRow
from federation.aggregator import Aggregator
from federation.budget_gate import BudgetGate, budget_event_record
from federation.config import FleetConfig, RedisFeedConfig
from federation.errors import AgentLoadError, ConfigError, LedgerError
from federation.events_out import open_publisher
from federation.events_out.tee import EventTap
from federation.execution import start_execution_actor, start_venue_actor
from federation.execution_link import ExecutionLink
from federation.feeds import MarketData, load_feed
from federation.fleet import AgentSpec, build_fleet
from federation.ledger import (
    AgentRecord,
    BufferedLedger,
    CheckpointRecord,
    CostRow,
    EventRecord,
    Ledger,
    LedgerBatch,
    RunRecord,
    absolute_ledger_url,
    mask_url,
    open_buffered_ledger,
)
from federation.live import LiveStats, TickClock, newest
from federation.ray_runtime import ensure_ray
from federation.recovery import AgentRecovery
from federation.runners import (
    AgentBlockResult,
    AgentErrors,
    AgentHost,
    AgentUsage,
    Runner,
    RunnerLimits,
    SparePool,
)
from federation.runners.base import trim_backlog
from federation.runners.placement import build_runners
from federation.summary import (
    AgentSummary,
    FeedSummary,
    LedgerWriterSummary,
    LiveSummary,
    PortfolioSummary,
    RecoverySummary,
    RunSummary,
    cost_summary,
)
from policies.aggregation import AGGREGATION_POLICIES
from policies.allocation import CapitalAllocator, Rebalance, build_allocator

if TYPE_CHECKING:
    from federation.chaos.hooks import HookFaults
    from federation.feeds.redis_stream import RedisBarSource

log = logging.getLogger("federation")

MAX_ERROR_EVENTS_PER_AGENT = 100
"""Agent errors written to the ledger with traceback, per agent and run (all are counted)."""
MAX_DATA_ISSUE_EVENTS = 1000
RESTART_ALLOWANCE_S = 30.0
"""Time a restarted runner may take to start its process, on top of its call deadline."""


@dataclass(slots=True)
class _AgentMeters:
    bars: int = 0
    signals: int = 0
    rejected: int = 0
    errors: int = 0
    logged_errors: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    last_error: str | None = None
    suspended: bool = False
    restarts: int = 0
    injected: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _RunState:
    meters: dict[str, _AgentMeters] = field(default_factory=dict)
    startup_s: float = 0.0
    replay_s: float = 0.0
    decision_s: float = 0.0
    usage: dict[str, AgentUsage] = field(default_factory=dict)
    live: LiveStats | None = None
    order: dict[str, int] = field(default_factory=dict)
    """Agent name -> its index in the fleet (the ledger's order for a block's results)."""
    costs: list[CostRow] = field(default_factory=list)
    halted: str | None = None
    """Why the run was halted (kill switch), if it was."""
    capital: dict[str, float] = field(default_factory=dict)
    """Each agent's capital for sizing after the allocation policy's last rebalance (none: absent)."""
    rebalances: int = 0
    budget_states: dict[str, str] = field(default_factory=dict)
    spent: dict[str, Decimal] = field(default_factory=dict)
    held_steps: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _LiveTicks:
    """What live mode carries from one tick to the next."""

    runners: list[Runner]
    stats: LiveStats = field(default_factory=LiveStats)
    inflight: dict[Any, tuple[Runner, float]] = field(default_factory=dict)
    """Calls still running -> their runner and when they were sent."""
    backlog: dict[int, list[BarBatch]] = field(default_factory=dict)
    """Bars a busy runner has not received yet (by ``id(runner)``)."""
    undelivered: dict[str, list[FillRow]] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)
    sent_ns: dict[Any, int] = field(default_factory=dict)
    """Call -> start of the tick it was sent on (``time.monotonic_ns``)."""
    answered_ns: dict[str, int] = field(default_factory=dict)
    """Agents answering on this tick -> the start of the tick their call was sent on."""


def new_run_id() -> str:
    """Sortable and unique: UTC time plus 6 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


class Supervisor:
    """Runs one fleet from a validated config. ``run()`` returns the :class:`RunSummary`."""

    _stream: RedisBarSource | None = None
    """The streaming feed of a ``kind = "redis"`` run (set by :meth:`prepare`); None for loaded data."""
    _events: EventTap | None = None
    """Publishes the supervisor's ledger batches and the signals to Redis (``[events] url``)."""
    _agent_symbols: dict[str, tuple[str, ...]] = {}  # noqa: RUF012 (replaced per run, never mutated)
    """Each agent's symbols, for the signals stream."""

    def __init__(
        self,
        config: FleetConfig,
        *,
        source: str = "config",
        console: Console | None = None,
        show_progress: bool = True,
        on_ready: Callable[[list[Runner]], None] | None = None,
        venue: Any = None,
        hook_faults: Mapping[str, HookFaults] | None = None,
    ) -> None:
        """``venue``: a venue actor to trade on (the chaos harness passes one with faults); by default a
        live run starts its own. ``hook_faults``: faults injected into named agents' hooks (chaos)."""
        self.config = config
        self.source = source
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.on_ready = on_ready
        """Called with the runners once every agent is ready, before the first bar (benchmarks)."""
        self.run_id = new_run_id()
        self._halt_reason: str | None = None
        self.venue = venue
        self._own_venue = False
        self.hook_faults = dict(hook_faults or {})
        self.execution: ExecutionLink | None = None
        """The link to the execution actor (``execution.handle``), once the run has started it."""
        self.recovery = AgentRecovery([], config.recovery)
        """Checkpoints, replay logs and restart / quarantine decisions of the agents (set per run)."""
        self.recovered_at: dict[str, list[float]] = {}
        """Agent -> ``time.monotonic()`` of each time it was back after a restart."""
        self.agent_restarts: list[dict[str, Any]] = []
        self.quarantined: dict[str, str] = {}
        """Agents suspended for the rest of the run -> why (restarts, misses, errors, hang)."""
        self.live_stats: LiveStats | None = None
        self._state = _RunState()
        self._recovering: dict[Any, tuple[Runner, float, str]] = {}
        self._new_recoveries: list[tuple[Any, Runner]] = []
        self._deaths: list[tuple[Runner, list[str], float, str]] = []
        """Runners whose process died, with the agents to restart, when it was seen, and why."""
        self._fresh: set[str] = set()
        self._lifecycle: list[EventRecord] = []
        """Lifecycle events (restarts, recoveries, quarantines) waiting for the next ledger write."""
        self._aggregator: Aggregator | None = None
        self._runner_of: dict[str, Runner] = {}
        self._spares: SparePool | None = None
        fed = config.federation
        self.limits = RunnerLimits(
            call_timeout_s=fed.agent_timeout_s,
            live=fed.mode == "live",
            decision_timeout_s=config.live.decision_timeout_ms / 1000,
            max_backlog_rows=config.live.max_backlog_bars,
        )

    def halt(self, reason: str = "kill switch (Supervisor.halt)") -> None:
        """Kill switch, callable from any thread: at its next step the run stops trading, every open
        order is cancelled, agents get ``on_stop``, and the run ends with status ``halted``. From another
        process: ``federation halt LEDGER`` (a request in the ledger that the supervisor polls)."""
        self._halt_reason = reason

    def stop(self) -> None:
        """End a live run after the tick in progress, as if the feed had ended (callable from any thread;
        the run completes normally: agents get ``on_stop``, orders still working expire)."""
        self._stop_requested = True

    _stop_requested = False

    def _halt_requested(self, state: _RunState, ledger: Ledger) -> bool:
        reason = self._halt_reason or ledger.pending_halt(self.run_id)
        if reason is not None:
            state.halted = reason
            log.error("run %s halted: %s", self.run_id, reason)
        return reason is not None

    # ------------------------------------------------------------------------------------------- setup
    def prepare(self) -> tuple[MarketData, list[AgentSpec]]:
        """Load the feed and the fleet; every input error surfaces here, before Ray starts."""
        cfg = self.config
        if isinstance(cfg.feed, RedisFeedConfig):
            market = self._stream_market(cfg.feed)
        else:
            market = load_feed(cfg.feed, base_dir=cfg.base_dir, seed=cfg.federation.seed)
        by_symbol = [
            ("risk.max_position_by_symbol", set(cfg.risk.max_position_by_symbol)),
            ("risk.instruments", set(cfg.risk.instruments)),
        ] + [
            (f"agents[{k}].risk.max_position_by_symbol", set(entry.risk.max_position_by_symbol))
            for k, entry in enumerate(cfg.agents)
            if entry.risk is not None
        ]
        for where, keys in by_symbol:
            unknown = sorted(keys - set(market.symbols))
            if unknown:
                raise ConfigError(
                    f"{self.source}: {where}: {', '.join(unknown)} not in the feed "
                    f"(feed symbols: {', '.join(market.symbols)})"
                )
        fleet = build_fleet(cfg, market.symbols, self.source)
        if self._stream is not None:
            self._stream.check()  # reach Redis and create the group once every other input is known good
        return market, fleet

    def _stream_market(self, feed: RedisFeedConfig) -> MarketData:
        """Set up the streaming source of a redis feed; its symbols come from the config, its bars
        arrive during the run (the returned data has none)."""
        from federation.feeds.redis_stream import RedisBarSource, empty_market

        cfg = self.config
        if cfg.federation.mode != "live":
            raise ConfigError(
                f"{self.source}: feed.kind = 'redis' streams bars as they arrive, which only a live run can "
                'follow; set [federation] mode = "live" (or pass --mode live)'
            )
        if cfg.live.tick_interval_ms != type(cfg.live).model_fields["tick_interval_ms"].default:
            raise ConfigError(
                f"{self.source}: live.tick_interval_ms paces a replayed feed; with feed.kind = 'redis' the "
                "arriving bars drive the ticks; remove tick_interval_ms (feed.step_idle_ms says when a "
                "time step is complete)"
            )
        self._stream = RedisBarSource(feed, max_issues=MAX_DATA_ISSUE_EVENTS)
        return empty_market(tuple(feed.symbols))

    def run(self) -> RunSummary:
        market, fleet = self.prepare()
        ledger = open_buffered_ledger(
            self.config.federation.ledger, writer="supervisor", **self.config.ledger.model_dump()
        )
        publisher = open_publisher(self.config.events, self.run_id, "supervisor")
        if publisher is not None:
            ledger.tap = self._events = EventTap(publisher)
            self._agent_symbols = {s.name: s.symbols for s in fleet}
        try:
            summary = self._run(market, fleet, ledger)
        except BaseException:
            try:
                self._close_events(ledger)
                ledger.close(self._ledger_left())
            except LedgerError as exc:  # the run's own error is the one to report
                log.error("%s", exc)
            raise
        try:  # waits for the last writes (the end of the run's deadline)
            ledger.close(self._ledger_left())
        except LedgerError as exc:  # the database never came back: the summary names the file
            mine = summary.ledger_writers[0]
            mine.error, mine.unwritten_file = str(exc), ledger.report.unwritten_file
        return summary

    _ledger_deadline: float | None = None

    def _ledger_left(self) -> float:
        """Seconds left of the run's one ledger deadline (``flush_timeout_s`` from the end of trading):
        the execution actor, then the supervisor, wait for an unavailable database within it."""
        if self._ledger_deadline is None:
            self._ledger_deadline = time.monotonic() + self.config.ledger.flush_timeout_s
        return max(0.1, self._ledger_deadline - time.monotonic())

    def _close_events(self, ledger: BufferedLedger) -> dict[str, Any] | None:
        """Stop the supervisor's event publisher (if any); its report for the summary."""
        if self._events is None:
            return None
        tap, self._events = self._events, None
        return tap.close(ledger, self.run_id).to_dict()

    def _publish_signals(self, ts: Any, results: list[AgentBlockResult]) -> None:
        """The agents' signals to the ``signals`` stream (``[events]``): rows of ``weights`` at ``ts``."""
        if self._events is None:
            return
        for r in results:
            symbols = self._agent_symbols.get(r.name)
            if symbols is not None and r.weights.shape == (len(ts), len(symbols)):
                self._events.publisher.publish_signals(r.name, symbols, ts, r.weights, r.confidences)

    def _run(self, market: MarketData, fleet: list[AgentSpec], ledger: BufferedLedger) -> RunSummary:
        cfg, started = self.config, time.perf_counter()
        ledger.begin_run(
            RunRecord(
                self.run_id,
                time.time_ns(),
                _config_json(cfg),
                cfg.federation.capital,
                cfg.federation.currency,
                cfg.federation.seed,
            ),
            [
                AgentRecord(s.name, s.class_path, s.isolation, s.symbols, s.params_json(), s.capital)
                for s in fleet
            ],
        )
        state = self._state = _RunState(
            meters={s.name: _AgentMeters() for s in fleet}, order={s.name: i for i, s in enumerate(fleet)}
        )
        self.recovery = AgentRecovery(
            [s.name for s in fleet],
            cfg.recovery,
            miss_deadline_s=self.limits.decision_timeout_s if self.limits.live else None,
        )
        runners: list[Runner] = []
        execution: ExecutionLink | None = None
        gate: BudgetGate | None = None
        status, report, error = "failed", None, "stopped before the execution actor reported"
        try:
            self._record_data_issues(market, ledger)
            ensure_ray(cfg.federation.ray_address)
            execution = self.execution = self._execution_actor(market, fleet)
            gate = BudgetGate(
                {s.name: list(s.budgets) for s in fleet},
                cfg.budgets,
                start_ns=int(market.ts[0]) if len(market) else 0,
                scheduling_strategy=self._here(),
            )
            self._start(fleet, state, started, runners, gate)
            aggregator = Aggregator(
                AGGREGATION_POLICIES[cfg.federation.aggregation](),
                market.symbols,
                [s.name for s in fleet],
                [s.symbols for s in fleet],
                [float(s.capital) for s in fleet],
                float(cfg.execution.lot_size),
            )
            self._aggregator = aggregator
            allocator = build_allocator(cfg.allocation, [s.weight for s in fleet], cfg.federation.capital)
            if self.on_ready is not None:
                self.on_ready(runners)
            loop_started = time.perf_counter()
            if len(market):
                gate.submit(int(market.ts[0]))
            if self.limits.live:
                fills = self._live_loop(
                    market, runners, aggregator, execution, state, ledger, gate, allocator
                )
            else:
                fills = self._loop(market, runners, aggregator, execution, state, ledger, gate, allocator)
            state.replay_s = time.perf_counter() - loop_started
            if state.halted is not None:
                execution.call(lambda h: h.halt.remote(state.halted))
            self._measure(runners, state)
            self._stop(runners, fills, state, ledger)
            report = execution.call(lambda h: h.finish.remote(self._ledger_left()))
            self._finish_budgets(gate, state, ledger)
            status = "completed" if state.halted is None else "halted"
        except KeyboardInterrupt:
            status = "interrupted"
            if execution is not None:
                report = execution.call(lambda h: h.finish.remote(self._ledger_left()))
            if gate is not None:
                self._finish_budgets(gate, state, ledger)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            for runner in runners:
                runner.kill()
            if self._spares is not None:
                self._spares.kill()
            if execution is not None:
                execution.close()
            if execution is not None and report is None:
                self._abandon(execution.handle)
                ray.kill(execution.handle, no_restart=True)
            if self._own_venue and self.venue is not None:
                ray.kill(self.venue, no_restart=True)
            if gate is not None:
                gate.kill()
            if report is None:
                ledger.end_run(self.run_id, status, {"error": error})
        events_out = self._close_events(ledger)
        ledger.flush(self._ledger_left())  # the supervisor's writes are in (or waiting: database away)
        summary = self._summary(market, fleet, state, report, status, started)
        summary.ledger_writers = _writer_summaries(report, ledger)
        if events_out is not None:
            summary.events_out = [
                events_out,
                *([report["events_out"]] if report and "events_out" in report else []),
            ]
        ledger.end_run(self.run_id, status, json.loads(summary.to_json()))
        return summary

    def _abandon(self, execution: Any) -> None:
        """A failed run: the execution actor writes (or saves to a file) what its buffer holds before it
        is killed, so the fills it made are not lost with it."""
        try:
            out = ray.get(execution.abandon.remote(self._ledger_left()), timeout=self._ledger_left() + 30)
        except Exception as exc:  # the actor is gone or stuck: nothing more to save
            log.error("the execution actor could not write its last batches: %s", exc)
            return
        if "ledger_error" in out:
            log.error("%s", out["ledger_error"])

    @staticmethod
    def _here() -> NodeAffinitySchedulingStrategy:
        """Placement on the driver's node (the execution actor shares its SQLite file; the budget
        authority is then one local hop from the supervisor)."""
        return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)

    def _execution_actor(self, market: MarketData, fleet: list[AgentSpec]) -> ExecutionLink:
        """The execution actor, on this node (it writes the same SQLite file as the driver), behind the
        link that restarts it. Live runs put the venue in an actor of its own, so a restarted execution
        actor reconciles with it (a backtest's venue lives inside the execution actor)."""
        cfg = self.config
        if self.venue is None and self.limits.live:
            self.venue = start_venue_actor(cfg.execution, market.symbols, scheduling_strategy=self._here())
            self._own_venue = True
        venue = self.venue
        here = self._here()

        def start(recover: bool, standby: Any) -> Any:
            return self._start_execution(market, fleet, here, venue, recover, standby)

        return ExecutionLink(
            start,
            cfg.recovery.execution_max_restarts if venue is not None else 0,
            len(fleet),
            len(market.symbols),
            make_standby=lambda: start(True, None),
        )

    def _start_execution(
        self,
        market: MarketData,
        fleet: list[AgentSpec],
        here: Any,
        venue: Any,
        recover: bool,
        standby: Any = None,
    ) -> Any:
        """A new execution actor (``recover``: one that waits for ``recover()`` before its first block),
        or ``standby``, such an actor started ahead: it has its ledger, venue and journal open already,
        so taking over is only reconciling."""
        cfg = self.config
        kwargs: dict[str, Any] = dict(
            venue=venue,
            recover=recover,
            run_id=self.run_id,
            agents=[s.name for s in fleet],
            capital=[s.capital for s in fleet],
            symbols=market.symbols,
            execution=cfg.execution,
            risk=cfg.risk,
            ledger_url=absolute_ledger_url(cfg.federation.ledger),
            agent_risk=[s.risk for s in fleet],
            ledger_settings=cfg.ledger,
            events=cfg.events,
        )
        if standby is not None:
            return standby
        return start_execution_actor(here, **kwargs)

    def _start(
        self,
        fleet: list[AgentSpec],
        state: _RunState,
        started: float,
        runners: list[Runner],
        gate: BudgetGate,
    ) -> None:
        """Create every runner at once (parallel start-up), then wait with a progress bar of agents.

        Runners are appended to ``runners`` as they are created, so the caller can always release them.
        """
        build_runners(
            fleet,
            self.limits,
            self.config.federation.shared_hosts,
            runners,
            gate.backend,
            hook_faults=self.hook_faults,
        )
        self._runner_of = {name: r for r in runners for name in r.names}
        spares = self.config.recovery.spare_processes
        if spares and any(r.isolation == "actor" for r in runners):
            self._spares = SparePool(spares)
            self._spares.fill()  # started with the agents, in parallel
        pending = {r.start(): r for r in runners}
        failures: list[str] = []
        with Progress(
            TextColumn("starting agents"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.show_progress,
        ) as progress:
            task = progress.add_task("start", total=len(fleet))
            while pending:
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.2)
                for ref in done:
                    runner = pending.pop(ref)
                    try:
                        errors: AgentErrors = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        who = _agents(runner.names)
                        failures.append(f"{who} could not be created: {_root_cause(exc)}")
                        continue
                    failures += [f"agent {name!r} failed in {e.hook}: {e.message}" for name, e in errors]
                    progress.advance(task, len(runner.names))
        if failures:
            raise AgentLoadError("\n".join(failures))
        if self._spares is not None:  # their start-up must not eat the CPU of the first bars
            self._spares.wait_ready(timeout_s=RESTART_ALLOWANCE_S + len(fleet))
        state.startup_s = time.perf_counter() - started

    # -------------------------------------------------------------------------------------------- loop
    def _deadline(self, runner: Runner) -> float:
        """Seconds a runner may take for one call: one agent's timeout per hosted agent, plus one."""
        n = len(runner.names)
        return self.limits.call_timeout_s * (n + 1 if n > 1 else 1)

    def _collect(self, ref: Any, runner: Runner) -> list[AgentBlockResult]:
        """A runner's results; a runner whose process died is restarted (its agents recovered) or, past
        ``[recovery] max_restarts``, its agents are quarantined."""
        if ref in self._recovering:
            return self._recovered(ref)
        try:
            out: list[AgentBlockResult] = ray.get(ref)
            return out
        except ray.exceptions.RayError as exc:
            return self._restart(runner, f"the runner process died: {_root_cause(exc)}")

    def _lose(self, runner: Runner, why: str) -> list[AgentBlockResult]:
        """Give up on ``runner`` (its call hung past the deadline): kill it and suspend its agents. A
        hung call would hang again when replayed, so a hang is not restarted."""
        runner.kill()
        timeout = self.limits.call_timeout_s
        out = []
        for name in runner.names:
            if not self._state.meters[name].suspended:
                self._suspend(name, "hang", why)
                out.append(AgentHost.suspension(name, "on_batch", 0, timeout, why))
        return out

    def _restart(self, runner: Runner, why: str) -> list[AgentBlockResult]:
        """``runner``'s process died: restart it and recover its agents from their checkpoints and replay
        logs (asynchronously: the recovery call is in :attr:`_recovering` until it answers); agents past
        their restart limit are quarantined (their suspension results are returned)."""
        runner.kill()
        rec, timeout, out = self.recovery, self.limits.call_timeout_s, []
        restart = []
        for name in runner.names:
            if self._state.meters[name].suspended:
                continue
            if rec.died(name) == "restart":
                restart.append(name)
                continue
            message = f"{why}; {rec.quarantined[name].message}"
            self._suspend(name, rec.quarantined[name].reason, message)
            out.append(AgentHost.suspension(name, "on_batch", 0, timeout, message))
        if restart:
            log.warning("%s: %s; restarting it", _agents(runner.names), why)
            self._deaths.append((runner, restart, time.monotonic(), why))
            now = time.time_ns()
            for name in restart:
                self._state.meters[name].restarts += 1
                self.agent_restarts.append({"agent": name, "cause": why})
                self._lifecycle.append(EventRecord(now, "agent_restarted", "process_died", why, name))
        return out

    def _restart_dead(self) -> None:
        """Start the restarts :meth:`_restart` decided: a fresh (or spare) process and the recovery call
        for each. Live mode runs this after the tick's targets went out, so a wave of deaths does not
        hold up the healthy agents' orders."""
        deaths, self._deaths = self._deaths, []
        for runner, names, since, why in deaths:
            spares = self._spares
            spare = spares.take() if spares is not None and runner.isolation == "actor" else None
            runner.restart(spare=spare)
            ref = runner.recover(*self.recovery.recovery_inputs(names))
            self._recovering[ref] = (runner, since, why)
            self._new_recoveries.append((ref, runner))

    def _recovered(self, ref: Any) -> list[AgentBlockResult]:
        """A recovery call answered: its agents are back (restored and replayed), or the ones whose
        ``on_start`` or restore failed are quarantined (a restart would fail the same way)."""
        runner, since, why = self._recovering.pop(ref)
        try:
            errors: AgentErrors = ray.get(ref)
        except ray.exceptions.RayError as exc:  # died (or was killed) again while recovering
            return self._restart(runner, f"the runner process died while recovering: {_root_cause(exc)}")
        out, failed = [], {name for name, _ in errors}
        for name, error in errors:
            message = f"could not be recovered ({error.hook}: {error.message})"
            self.recovery.quarantine(name, "errors", message)
            self._suspend(name, "errors", message)
            out.append(AgentHost.suspension(name, error.hook, 0, self.limits.call_timeout_s, message))
        now, took = time.monotonic(), time.monotonic() - since
        for name in runner.names:
            if name in failed or self._state.meters[name].suspended:
                continue
            self.recovered_at.setdefault(name, []).append(now)
            self._fresh.add(name)
            replay = self.recovery.dropped_bars(name)
            detail = {"restart_s": round(took, 3), "replay_incomplete_bars": replay, "cause": why}
            message = f"back after {took:.2f} s"
            self._lifecycle.append(
                EventRecord(time.time_ns(), "agent_recovered", "restored", message, name, detail)
            )
        return out

    def _deadline_of(self, ref: Any, runner: Runner) -> float:
        """A call's deadline; a recovery also has to start a process (slow on a loaded machine)."""
        if ref in self._recovering:
            return self._deadline(runner) + RESTART_ALLOWANCE_S
        return self._deadline(runner)

    def _gather(self, refs: dict[Any, Runner], lost: set[int]) -> list[AgentBlockResult]:
        """Every runner's results, or its agents' suspension when it overruns its deadline. A runner
        whose process dies is restarted and waited for until its agents are recovered (the replay
        re-runs the block that was in flight; that block's signals of theirs are lost)."""
        out: list[AgentBlockResult] = []
        pending = {ref: (runner, time.perf_counter()) for ref, runner in refs.items()}
        while pending:
            now = time.perf_counter()
            wait = min(t + self._deadline_of(ref, r) for ref, (r, t) in pending.items()) - now
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=max(wait, 0.0))
            for ref in done:
                runner, _ = pending.pop(ref)
                out += self._collect(ref, runner)
            self._restart_dead()
            for ref, runner in self._take_new_recoveries():
                pending[ref] = (runner, time.perf_counter())
            now = time.perf_counter()
            for ref, (runner, t) in list(pending.items()):
                if now - t >= self._deadline_of(ref, runner):
                    del pending[ref]
                    out += self._give_up(ref, runner, lost)
        return out

    def _give_up(self, ref: Any, runner: Runner, lost: set[int]) -> list[AgentBlockResult]:
        """``ref`` (a call or a recovery) passed its deadline: the runner is lost (:meth:`_lose`)."""
        why = f"no answer within {self._deadline_of(ref, runner):g} s"
        self._recovering.pop(ref, None)
        lost.add(id(runner))
        return self._lose(runner, why)

    def _take_new_recoveries(self) -> list[tuple[Any, Runner]]:
        out, self._new_recoveries = self._new_recoveries, []
        return out

    def _call(
        self,
        runner: Runner,
        ref: Any,
        batch: BarBatch,
        fills: dict[str, list[FillRow]],
        hold: dict[str, bool] | None,
    ) -> Any:
        """Send ``runner`` a block (``ref``, holding ``batch``): ask the due agents for a checkpoint and
        log the call for replay after a restart."""
        rec = self.recovery
        names = [n for n in runner.names if not self._state.meters[n].suspended]
        due = rec.checkpoints_due(names)
        call = runner.process(ref, fills, hold, checkpoint=due or None)
        for name in names:
            keep = True if hold is None or name not in hold else hold[name]
            rec.sent(name, batch, fills.get(name, []), bars=keep)
        return call

    def _loop(
        self,
        market: MarketData,
        runners: list[Runner],
        aggregator: Aggregator,
        execution: Any,
        state: _RunState,
        ledger: Ledger,
        gate: BudgetGate,
        allocator: CapitalAllocator,
    ) -> dict[str, list[FillRow]]:
        """Replay every block; return the fills of the last block (not yet delivered to agents)."""
        block_size = self.config.federation.block_size
        n_blocks = -(-len(market) // block_size)
        lost: set[int] = set()
        with self._progress("replaying", "blocks") as progress:
            task = progress.add_task("replay", total=n_blocks)
            fills: dict[str, list[FillRow]] = {}
            for k, batch in enumerate(market.blocks(block_size)):
                if self._halt_requested(state, ledger):
                    break
                self._budget_step(gate, aggregator, ledger)
                if self._spares is not None:
                    self._spares.fill()
                block_ref = ray.put(batch)
                live = [r for r in runners if id(r) not in lost and self._has_active(r, state)]
                asked = time.perf_counter()
                calls = {self._call(r, block_ref, batch, fills, gate.hold(r.names)): r for r in live}
                results = self._gather(calls, lost)
                state.decision_s += time.perf_counter() - asked
                self._publish_signals(batch.ts, results)
                self._record_results(results, state, ledger)
                targets = aggregator.targets(batch, results)
                outcome = execution.process_block(block_ref, targets, int(batch.ts[-1]))
                fills = outcome.fills
                self._allocate(allocator, batch, outcome.equity, aggregator, execution, state, ledger)
                gate.meter(results, outcome.fees_e8)
                gate.submit(int(market.ts[min((k + 1) * block_size, len(market) - 1)]))
                progress.advance(task)
        return fills

    def _allocate(
        self,
        allocator: CapitalAllocator,
        batch: BarBatch,
        equity: Any,
        aggregator: Aggregator,
        execution: Any,
        state: _RunState,
        ledger: Ledger,
    ) -> None:
        """Feed the block's per-bar equity of every agent to the allocation policy. A rebalance takes
        effect after the block it fell due in (in live mode: after its tick): the new capital sizes the
        agents' next signals and cash moves between their sub-accounts (the execution actor's
        ``rebalance``). Of several rebalances due in one block only the last takes effect and is
        recorded, with the bar it fell due on and the bar after which it applies."""
        if allocator.schedule.every_bars is None and allocator.schedule.period is None:
            return  # never rebalances
        rebalances = allocator.observe(batch.ts, equity[:, : allocator.n_agents])
        if not rebalances:
            return
        last, applied = rebalances[-1], int(batch.ts[-1])
        execution.call(lambda h: h.rebalance.remote(list(last.capital), applied))
        aggregator.set_capital([float(c) for c in last.capital])
        state.rebalances += 1
        names = list(state.order)
        state.capital = {n: float(c) for n, c in zip(names, last.capital, strict=True)}
        ledger.write(self.run_id, LedgerBatch(events=[_rebalance_event(last, names, applied)]))

    def _budget_step(self, gate: BudgetGate, aggregator: Aggregator, ledger: Ledger) -> None:
        """Read the budget authority's answer for the coming step: record its events, flatten the
        agents whose budget action says so."""
        events, flatten = gate.collect()
        for name in flatten:
            aggregator.flatten(name)
        if events:
            for event in events:
                log.warning("budget: %s", event.message)
            ledger.write(self.run_id, LedgerBatch(events=[budget_event_record(e) for e in events]))

    def _finish_budgets(self, gate: BudgetGate, state: _RunState, ledger: Ledger) -> None:
        """Close the budgets: last charges, open reservations charged in full, the cost rows recorded."""
        events, state.costs = gate.finish()
        state.budget_states = gate.final_states
        state.held_steps = gate.held_steps
        state.spent = gate.spent
        batch = LedgerBatch(events=[budget_event_record(e) for e in events])
        ledger.write(self.run_id, batch)
        ledger.write_costs(self.run_id, state.costs)

    def _live_loop(
        self,
        market: MarketData,
        runners: list[Runner],
        aggregator: Aggregator,
        execution: Any,
        state: _RunState,
        ledger: Ledger,
        gate: BudgetGate,
        allocator: CapitalAllocator,
    ) -> dict[str, list[FillRow]]:
        """One bar per tick, paced; busy runners get missed bars coalesced (:mod:`federation.live`).
        A streaming feed drives the ticks itself instead of the clock (:meth:`_stream_loop`)."""
        live = _LiveTicks(runners, backlog={id(r): [] for r in runners})
        state.live = self.live_stats = live.stats
        if self._stream is not None:
            return self._stream_loop(
                self._stream, live, aggregator, execution, state, ledger, gate, allocator
            )
        live_cfg = self.config.live
        clock = TickClock(live_cfg.tick_interval_ms / 1000)
        n_ticks = min(len(market), live_cfg.max_ticks or len(market))
        with self._progress("live", "ticks") as progress:
            task = progress.add_task("live", total=n_ticks)
            for tick, bar in enumerate(market.blocks(1)):
                if tick >= n_ticks or self._stop_requested:
                    break
                clock.wait()
                if self._halt_requested(state, ledger):
                    break
                self._budget_step(gate, aggregator, ledger)
                self._live_tick(live, bar, aggregator, execution, state, ledger, gate, allocator)
                gate.submit(int(market.ts[min(tick + 1, len(market) - 1)]))
                progress.advance(task)
        return self._live_drain(live, state, ledger, gate)

    def _live_tick(
        self,
        live: _LiveTicks,
        bar: BarBatch,
        aggregator: Aggregator,
        execution: Any,
        state: _RunState,
        ledger: Ledger,
        gate: BudgetGate,
        allocator: CapitalAllocator,
    ) -> None:
        """One tick: the bar to every idle runner (with its backlog), the answers in by the decision
        timeout to the aggregator, the targets to the execution actor; fills wait for the next call."""
        stats, inflight, lost = live.stats, live.inflight, live.lost
        t0 = time.monotonic_ns()
        if self._spares is not None:
            self._spares.fill()  # tops the pool up, one process start at a time
        bar_ref = ray.put(bar)
        busy = {id(r) for r, _ in inflight.values()}
        asked = []
        for runner in live.runners:
            key = id(runner)
            if key in lost or not self._has_active(runner, state):
                continue
            queue = live.backlog[key]
            queue.append(bar)
            if key in busy:
                stats.dropped_bars += trim_backlog(queue, self.config.live.max_backlog_bars)
                continue
            ref, batch = bar_ref, bar
            if len(queue) > 1:
                stats.coalesced_bars += len(queue) - 1
                batch = BarBatch.concat(queue)
                ref = ray.put(batch)
            live.backlog[key] = []
            fills = {n: live.undelivered.pop(n) for n in runner.names if n in live.undelivered}
            call = self._call(runner, ref, batch, fills, gate.hold(runner.names))
            inflight[call] = (runner, time.perf_counter())
            live.sent_ns[call] = t0
            asked.append(call)
        results = self._live_answers(asked, live, t0)
        stats.dropped_bars += sum(r.dropped_bars for r in results)
        self._record_results(results, state, ledger)
        latest = [newest(r) for r in results]
        self._publish_signals(bar.ts, latest)  # the signals as the tick aggregates them
        targets = aggregator.targets(bar, latest)
        outcome = execution.process_block(bar_ref, targets, int(bar.ts[-1]))
        stats.latencies_ns.append(outcome.received_ns - t0)
        stats.ticks += 1
        for r in results:  # each answer: from its tick to the orders it counted in
            if r.held or r.suspended:
                continue
            if r.name in self._fresh:  # the first answer after a restart carries the backlog: not counted
                self._fresh.discard(r.name)
            elif r.name in live.answered_ns:
                took_ns = outcome.received_ns - live.answered_ns[r.name]
                stats.agent_latency_ns.setdefault(r.name, []).append(took_ns)
        live.answered_ns.clear()
        fees = outcome.fees_e8
        recovered = execution.take_recovered()
        for part in (recovered, outcome):
            if part is None:
                continue
            for name, agent_fills in part.fills.items():
                live.undelivered.setdefault(name, []).extend(agent_fills)
        if recovered is not None:  # fills the dead execution actor made: charged like any others
            fees = {n: fees.get(n, 0) + recovered.fees_e8.get(n, 0) for n in {*fees, *recovered.fees_e8}}
        self._allocate(allocator, bar, outcome.equity, aggregator, execution, state, ledger)
        gate.meter(results, fees)
        self._restart_dead()  # after the orders went out (the runner stays busy until recovered)
        for call, runner in self._take_new_recoveries():
            live.inflight[call] = (runner, time.perf_counter())

    def _live_drain(
        self, live: _LiveTicks, state: _RunState, ledger: Ledger, gate: BudgetGate
    ) -> dict[str, list[FillRow]]:
        """Wait for calls still running, so every agent has answered before on_stop; return the fills
        not delivered to agents yet."""
        results = []
        for call, (runner, _) in list(live.inflight.items()):
            results += self._gather({call: runner}, live.lost)
        self._record_results(results, state, ledger)
        gate.meter(results, {})
        return live.undelivered

    def _stream_loop(
        self,
        source: RedisBarSource,
        live: _LiveTicks,
        aggregator: Aggregator,
        execution: Any,
        state: _RunState,
        ledger: Ledger,
        gate: BudgetGate,
        allocator: CapitalAllocator,
    ) -> dict[str, list[FillRow]]:
        """Live ticks driven by a streaming feed: one tick per time step as its bars arrive (no clock).
        While none arrives (an idle stream, Redis down) the run still checks for a halt every
        ``block_ms``. A step's entries are acknowledged once the execution actor has processed it."""
        max_ticks = self.config.live.max_ticks
        try:
            with self._progress("live (stream)", "ticks") as progress:
                task = progress.add_task("live", total=max_ticks)
                for step in source.steps():
                    self._record_feed(source, ledger)
                    if self._halt_requested(state, ledger):
                        source.end("halted")
                        break
                    if self._stop_requested:
                        source.end("stopped")
                        break
                    if step is None:
                        continue
                    gate.submit(step.ts)  # the budget clock: this step's time (the next is not known)
                    self._budget_step(gate, aggregator, ledger)
                    self._live_tick(live, step.batch, aggregator, execution, state, ledger, gate, allocator)
                    source.ack(step)
                    progress.advance(task)
                    if max_ticks is not None and live.stats.ticks >= max_ticks:
                        source.end("max_ticks")
                        break
        except KeyboardInterrupt:
            source.end("interrupted")
            raise
        finally:
            source.close()
            self._record_feed(source, ledger)
        return self._live_drain(live, state, ledger, gate)

    def _record_feed(self, source: RedisBarSource, ledger: Ledger) -> None:
        """The stream's news since the last call, to the ledger: outages and group changes (kind
        ``feed``) and skipped entries (``data_issue``, as for loaded data)."""
        now = time.time_ns()
        events = [EventRecord(now, "feed", e.code, e.message, None, e.detail) for e in source.take_events()]
        for issue in source.take_issues():
            detail = {"entry": issue.file, "symbol": issue.symbol}
            events.append(EventRecord(now, "data_issue", "skipped_record", str(issue), None, detail))
        if events:
            ledger.write(self.run_id, LedgerBatch(events=events))

    def _live_answers(self, asked: list[Any], live: _LiveTicks, tick_ns: int) -> list[AgentBlockResult]:
        """Wait for this tick's calls until ``decision_timeout`` after the tick began; take every
        answer that is in (also late ones from earlier ticks, and recoveries that finished)."""
        inflight, stats = live.inflight, live.stats
        left = self.limits.decision_timeout_s - (time.monotonic_ns() - tick_ns) / 1e9
        if asked and left > 0:
            ray.wait(asked, num_returns=len(asked), timeout=left)
        done, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
        asked_now = set(asked)
        results: list[AgentBlockResult] = []
        for call in done:
            runner, _ = inflight.pop(call)
            sent = live.sent_ns.pop(call, None)
            stats.late_answers += call not in asked_now and call not in self._recovering
            answers = self._collect(call, runner)
            if sent is not None:
                for r in answers:
                    live.answered_ns[r.name] = sent
            results += answers
        now = time.perf_counter()
        for call, (runner, since) in list(inflight.items()):
            if now - since >= self._deadline_of(call, runner):
                del inflight[call]
                live.sent_ns.pop(call, None)
                results += self._give_up(call, runner, live.lost)
        return results

    def _has_active(self, runner: Runner, state: _RunState) -> bool:
        return any(not state.meters[n].suspended for n in runner.names)

    def _progress(self, label: str, unit: str) -> Progress:
        return Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.show_progress,
        )

    def _measure(self, runners: list[Runner], state: _RunState) -> None:
        """Memory, CPU and node of every agent still running (for the summary)."""
        live = [r for r in runners if self._has_active(r, state)]
        refs = [r.usage() for r in live]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=30)
        for ref in done:
            try:
                for usage in ray.get(ref):
                    state.usage[usage.name] = usage
            except ray.exceptions.RayError:
                continue

    def _stop(
        self, runners: list[Runner], fills: dict[str, list[FillRow]], state: _RunState, ledger: Ledger
    ) -> None:
        """Deliver the last fills and call ``on_stop`` for every agent not suspended."""
        live = [r for r in runners if self._has_active(r, state)]
        refs = {r.stop(fills): r for r in live}
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.limits.call_timeout_s)
        batch = LedgerBatch()
        for ref in done:
            try:
                errors: AgentErrors = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # died after its last call: nothing to restart for
                why = f"its process died after its last call ({_root_cause(exc)}); on_stop was not called"
                for name in refs[ref].names:
                    log.warning("agent %r: %s", name, why)
                    batch.events.append(EventRecord(time.time_ns(), "agent_lost", "on_stop", why, name))
                continue
            except ray.exceptions.RayError as exc:
                errors = [(n, HookError("on_stop", 0, _root_cause(exc), "")) for n in refs[ref].names]
            for name, error in errors:
                self._count_error(name, error, state, batch)
        for ref in set(refs) - set(done):
            for name in refs[ref].names:
                message = f"did not return within {self.limits.call_timeout_s:g} s"
                self._count_error(name, HookError("on_stop", 0, message, ""), state, batch)
        ledger.write(self.run_id, batch)

    def _record_results(self, results: list[AgentBlockResult], state: _RunState, ledger: Ledger) -> None:
        batch = LedgerBatch()
        order = state.order
        results.sort(key=lambda r: order[r.name])  # runners answer in any order; the ledger does not
        rec = self.recovery
        for res in results:
            if not res.suspended and rec.answered(res.name, res) == "quarantine":
                why = rec.quarantined[res.name]
                self._suspend(res.name, why.reason, why.message)
                res.suspended = True
                res.error_details.insert(0, HookError("on_batch", 0, f"quarantined: {why.message}", ""))
        for res in results:
            m = state.meters[res.name]
            for kind, n in res.injected.items():
                m.injected[kind] = m.injected.get(kind, 0) + n
            m.bars += res.bars
            m.signals += res.signals
            m.rejected += res.rejected
            m.cpu_s += res.cpu_s
            m.wall_s += res.wall_s
            m.errors += res.errors - len(res.error_details)
            for error in res.error_details:
                self._count_error(res.name, error, state, batch)
            if res.suspended and not m.suspended:  # suspended by its host (a shared tier's overrun)
                detail = res.error_details[0].message if res.error_details else "suspended"
                self._suspend(res.name, "hang", detail)
            if not res.rejected:
                continue
            if m.rejected == res.rejected:  # the first time only; every block is recorded in the ledger
                log.warning(
                    "agent %r: invalid signals dropped (counted in the summary from now on), e.g. %s",
                    res.name,
                    res.rejections[0] if res.rejections else "",
                )
            batch.events.append(
                EventRecord(
                    time.time_ns(),
                    "signal_rejected",
                    "invalid_signal",
                    f"{res.rejected} invalid signals dropped",
                    res.name,
                    {"count": res.rejected, "reasons": res.rejections},
                )
            )
        for cp in rec.take_checkpoints():
            if cp.data is not None:
                batch.checkpoints.append(CheckpointRecord(cp.agent, cp.ts, cp.bars, cp.data))
        batch.events += self._lifecycle
        self._lifecycle = []
        ledger.write(self.run_id, batch)

    def _suspend(self, name: str, reason: str, message: str) -> None:
        """Quarantine ``name`` for the rest of the run: no more calls, an ``agent_suspended`` event
        (detail ``reason``: restarts, misses, errors or hang), its targets held or flattened."""
        m = self._state.meters[name]
        if m.suspended:
            return
        m.suspended = True
        self.quarantined[name] = f"{reason}: {message}"
        runner = self._runner_of.get(name)
        if runner is not None:
            runner.suspend({name})  # a shared host stops calling it; an agent's own actor is released
        log.error("agent %r suspended (%s): %s", name, reason, message)
        action = self.config.recovery.on_quarantine
        if action == "flatten" and self._aggregator is not None:
            self._aggregator.flatten(name)
        detail = {"reason": reason, "targets": action}
        self._lifecycle.append(EventRecord(time.time_ns(), "agent_suspended", reason, message, name, detail))

    def agent_alive(self, name: str) -> bool:
        """Whether ``name`` is trading now: not suspended and not being recovered (for the harness)."""
        if self._state.meters.get(name, _AgentMeters(suspended=True)).suspended:
            return False
        if any(name in names for _, names, _, _ in self._deaths):
            return False
        return not any(name in r.names for r, _, _ in self._recovering.values())

    def _count_error(self, agent: str, error: HookError, state: _RunState, batch: LedgerBatch) -> None:
        m = state.meters[agent]
        m.errors += 1
        m.last_error = f"{error.hook}: {error.message}"
        if m.logged_errors < MAX_ERROR_EVENTS_PER_AGENT:
            m.logged_errors += 1
            log.error("agent %r raised in %s: %s", agent, error.hook, error.message)
            batch.events.append(
                EventRecord(
                    error.ts, "agent_error", error.hook, error.message, agent, {"traceback": error.traceback}
                )
            )

    def _record_data_issues(self, market: MarketData, ledger: Ledger) -> None:
        if not market.issues:
            return
        log.warning("feed: %d records skipped, e.g. %s", len(market.issues), market.issues[0])
        events = [
            EventRecord(
                time.time_ns(),
                "data_issue",
                "skipped_record",
                str(issue),
                None,
                {"file": issue.file, "line": issue.line, "symbol": issue.symbol},
            )
            for issue in market.issues[:MAX_DATA_ISSUE_EVENTS]
        ]
        ledger.write(self.run_id, LedgerBatch(events=events))

    # ----------------------------------------------------------------------------------------- summary
    def _summary(
        self,
        market: MarketData,
        fleet: list[AgentSpec],
        state: _RunState,
        report: dict[str, Any] | None,
        status: str,
        started: float,
    ) -> RunSummary:
        cfg = self.config
        trades = {a["name"]: a for a in report["agents"]} if report else {}
        actions: dict[str, dict[str, int]] = {}
        for row in state.costs:
            for code, count in row.actions.items():
                mine = actions.setdefault(row.agent, {})
                mine[code] = mine.get(code, 0) + count
        agents = []
        for spec in fleet:
            m, t = state.meters[spec.name], trades.get(spec.name, {})
            u = state.usage.get(spec.name)
            agents.append(
                AgentSummary(
                    name=spec.name,
                    class_=spec.class_path,
                    isolation=spec.isolation,
                    bars=m.bars,
                    signals=m.signals,
                    signals_rejected=m.rejected,
                    orders=t.get("orders", 0),
                    orders_denied=t.get("orders_denied", 0),
                    fills=t.get("fills", 0),
                    realized_pnl=_f(t.get("realized_pnl")),
                    unrealized_pnl=_f(t.get("unrealized_pnl")),
                    fees=_f(t.get("fees")),
                    equity=_f(t.get("equity", spec.capital)),
                    capital=float(spec.capital),
                    cpu_s=round(m.cpu_s, 4),
                    wall_s=round(m.wall_s, 4),
                    status="suspended" if m.suspended else "active",
                    node_id=u.node_id if u else None,
                    rss_mb=u.rss_mb if u else None,
                    uss_mb=u.uss_mb if u else None,
                    sharing=u.sharing if u else None,
                    errors=m.errors,
                    last_error=m.last_error,
                    budget_state=state.budget_states.get(spec.name, "active"),
                    budget_actions=actions.get(spec.name, {}),
                    held_steps=state.held_steps.get(spec.name, 0),
                    cost=_f(state.spent.get(spec.name)),
                    allocated_capital=_f(state.capital.get(spec.name, spec.capital)),
                    trading_state=t.get("trading_state", "active"),
                    breaker_trips=t.get("breaker_trips", 0),
                    risk_denials=t.get("risk_denials", 0),
                    restarts=m.restarts,
                    injected=dict(m.injected),
                )
            )
        p = report["portfolio"] if report else {}
        capital = float(cfg.federation.capital)
        portfolio = PortfolioSummary(
            initial_capital=capital,
            equity=_f(p.get("equity", capital)),
            cash=_f(p.get("cash", capital)),
            pnl=_f(p.get("pnl")),
            gross_exposure=_f(p.get("gross_exposure")),
            net_exposure=_f(p.get("net_exposure")),
            orders=p.get("orders", 0),
            orders_denied=p.get("orders_denied", 0),
            fills=p.get("fills", 0),
            internal_crosses=p.get("internal_crosses", 0),
            fees=_f(p.get("fees")),
            positions={s: float(q) for s, q in p.get("positions", {}).items()},
            trading_state=p.get("trading_state", "active"),
            breaker_trips=p.get("breaker_trips", 0),
            risk_denials=p.get("risk_denials", 0),
        )
        bars, issues, samples = self._data_counts(market)
        return RunSummary(
            run_id=self.run_id,
            status=status,
            ledger=mask_url(cfg.federation.ledger),
            currency=cfg.federation.currency,
            bars=bars,
            symbols=list(market.symbols),
            elapsed_s=round(time.perf_counter() - started, 3),
            startup_s=round(state.startup_s, 3),
            replay_s=round(state.replay_s, 3),
            decision_s=round(state.decision_s, 3),
            mode=cfg.federation.mode,
            live=_live_summary(state.live),
            data_issues=issues,
            data_issue_samples=samples,
            agents=agents,
            portfolio=portfolio,
            costs=[cost_summary(row) for row in state.costs],
            halt_reason=state.halted,
            rebalances=state.rebalances,
            feed=_feed_summary(self._stream),
            recovery=self._recovery_summary(),
        )

    def _recovery_summary(self) -> RecoverySummary:
        stats = self.recovery.recovery_stats()
        return RecoverySummary(
            agent_restarts=len(self.agent_restarts),
            recovered=stats.count,
            recovery_p50_s=round(stats.p50_s, 3),
            recovery_p99_s=round(stats.p99_s, 3),
            recovery_max_s=round(stats.max_s, 3),
            suspended=dict(self.quarantined),
            execution_restarts=0 if self.execution is None else len(self.execution.restarts),
            checkpoints=self.recovery.checkpoints_taken,
        )

    def _data_counts(self, market: MarketData) -> tuple[int, int, list[str]]:
        """Time steps, skipped records and a few of them: the loaded data's or the stream's."""
        if self._stream is None:
            return len(market), len(market.issues), [str(i) for i in market.issues[:5]]
        return self._stream.stats.steps, self._stream.stats.skipped, list(self._stream.samples)


def _rebalance_event(rebalance: Rebalance, names: list[str], applied_ts: int) -> EventRecord:
    return EventRecord(
        rebalance.ts,
        "allocation",
        rebalance.policy,
        f"capital re-split by {rebalance.policy} among {len(names)} agents",
        None,
        {
            "weights": dict(zip(names, rebalance.weights, strict=True)),
            "capital": {n: str(c) for n, c in zip(names, rebalance.capital, strict=True)},
            "applied_after_ts": applied_ts,
        },
    )


def _live_summary(stats: LiveStats | None) -> LiveSummary | None:
    if stats is None:
        return None
    return LiveSummary(
        ticks=stats.ticks,
        tick_to_orders_p50_ms=stats.percentile_ms(50),
        tick_to_orders_p99_ms=stats.percentile_ms(99),
        tick_to_orders_max_ms=stats.percentile_ms(100),
        coalesced_bars=stats.coalesced_bars,
        dropped_bars=stats.dropped_bars,
        late_answers=stats.late_answers,
    )


def _feed_summary(source: RedisBarSource | None) -> FeedSummary | None:
    if source is None:
        return None
    stats = source.stats
    return FeedSummary(
        kind="redis",
        stream=source.config.stream,
        group=source.config.group,
        consumer=source.consumer,
        entries=stats.entries,
        bars=stats.bars,
        acked=stats.acked,
        redelivered=stats.redelivered,
        outages=stats.outages,
        outage_s=round(stats.outage_s, 3),
        end=stats.end,
    )


def _agents(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return f"agent {names[0]!r}"
    shown = ", ".join(repr(n) for n in names[:5])
    return f"the host of agents {shown}{' and more' if len(names) > 5 else ''}"


def _config_json(cfg: FleetConfig) -> str:
    """The config as the ledger records it: every URL's password masked."""
    data = json.loads(cfg.model_dump_json())
    for section, key in (("federation", "ledger"), ("feed", "url"), ("events", "url"), ("budgets", "redis")):
        value = data.get(section, {}).get(key)
        if isinstance(value, str):
            data[section][key] = mask_url(value)
    return json.dumps(data)


def _writer_summaries(report: dict[str, Any] | None, ledger: BufferedLedger) -> list[LedgerWriterSummary]:
    """The supervisor's and the execution actor's write-behind buffers: batches, outages, waits."""
    states: list[tuple[dict[str, Any], str | None]] = [(ledger.report_dict(), None)]
    if report is not None and "ledger" in report:
        states.append((report["ledger"], report.get("ledger_error")))
    return [LedgerWriterSummary.from_report(state, error) for state, error in states]


def _f(value: Decimal | float | None) -> float:
    return 0.0 if value is None else round(float(value), 2)


def _root_cause(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None and getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[attr-defined]
    text = str(cause or exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def run_fleet(
    config: FleetConfig,
    *,
    source: str = "config",
    show_progress: bool = False,
    console: Console | None = None,
) -> RunSummary:
    """Run a fleet to completion and return its summary (the library entry point)."""
    return Supervisor(config, source=source, console=console, show_progress=show_progress).run()
