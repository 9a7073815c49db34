"""The supervisor: owns the clock, the agent registry and lifecycle, and drives the data path.

Per block of bars (backtest replay): one ``ray.put`` of the block, every runner gets the same reference
(zero-copy reads on one node) together with the fills attributed to its agents since the last block;
their signals go to the aggregator, the resulting target updates to the execution actor, which returns
the block's fills. Agents therefore see their fills and positions updated between blocks
(``[federation] block_size``; 1 gives per-bar feedback).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.base import HookError
from agents.model import Fill
from federation.aggregator import Aggregator
from federation.config import FleetConfig
from federation.errors import AgentLoadError, ConfigError
from federation.execution import start_execution_actor
from federation.feeds import MarketData, load_feed
from federation.fleet import AgentSpec, build_fleet
from federation.ledger import (
    AgentRecord,
    EventRecord,
    LedgerBatch,
    RunRecord,
    SQLiteLedger,
    absolute_ledger_url,
    open_ledger,
)
from federation.ray_runtime import ensure_ray
from federation.runners import ActorRunner, AgentBlockResult, Runner
from federation.summary import AgentSummary, PortfolioSummary, RunSummary
from policies.aggregation import AGGREGATION_POLICIES

log = logging.getLogger("federation")

MAX_ERROR_EVENTS_PER_AGENT = 100
"""Agent errors written to the ledger with traceback, per agent and run (all are counted)."""
MAX_DATA_ISSUE_EVENTS = 1000


@dataclass(slots=True)
class _AgentMeters:
    bars: int = 0
    signals: int = 0
    rejected: int = 0
    errors: int = 0
    logged_errors: int = 0
    cpu_s: float = 0.0
    last_error: str | None = None


@dataclass(slots=True)
class _RunState:
    meters: dict[str, _AgentMeters] = field(default_factory=dict)
    startup_s: float = 0.0


def new_run_id() -> str:
    """Sortable and unique: UTC time plus 6 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


class Supervisor:
    """Runs one fleet from a validated config. ``run()`` returns the :class:`RunSummary`."""

    def __init__(
        self,
        config: FleetConfig,
        *,
        source: str = "config",
        console: Console | None = None,
        show_progress: bool = True,
    ) -> None:
        self.config = config
        self.source = source
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.run_id = new_run_id()

    # ------------------------------------------------------------------------------------------- setup
    def prepare(self) -> tuple[MarketData, list[AgentSpec]]:
        """Load the feed and the fleet; every input error surfaces here, before Ray starts."""
        cfg = self.config
        market = load_feed(cfg.feed, base_dir=cfg.base_dir, seed=cfg.federation.seed)
        unknown = sorted(set(cfg.risk.max_position_by_symbol) - set(market.symbols))
        if unknown:
            raise ConfigError(
                f"{self.source}: risk.max_position_by_symbol: {', '.join(unknown)} not in the feed "
                f"(feed symbols: {', '.join(market.symbols)})"
            )
        fleet = build_fleet(cfg, market.symbols, self.source)
        return market, fleet

    def run(self) -> RunSummary:
        market, fleet = self.prepare()
        ledger = open_ledger(self.config.federation.ledger)
        try:
            return self._run(market, fleet, ledger)
        finally:
            ledger.close()

    def _run(self, market: MarketData, fleet: list[AgentSpec], ledger: SQLiteLedger) -> RunSummary:
        cfg, started = self.config, time.perf_counter()
        ledger.begin_run(
            RunRecord(
                self.run_id,
                time.time_ns(),
                cfg.model_dump_json(),
                cfg.federation.capital,
                cfg.federation.currency,
                cfg.federation.seed,
            ),
            [
                AgentRecord(s.name, s.class_path, s.isolation, s.symbols, s.params_json(), s.capital)
                for s in fleet
            ],
        )
        state = _RunState(meters={s.name: _AgentMeters() for s in fleet})
        runners: list[Runner] = []
        execution: Any = None
        status, report, error = "failed", None, "stopped before the execution actor reported"
        try:
            self._record_data_issues(market, ledger)
            ensure_ray(cfg.federation.ray_address)
            execution = self._execution_actor(market, fleet)
            self._start(fleet, state, started, runners)
            aggregator = Aggregator(
                AGGREGATION_POLICIES[cfg.federation.aggregation](),
                market.symbols,
                [s.symbols for s in fleet],
                [float(s.capital) for s in fleet],
                float(cfg.execution.lot_size),
            )
            fills = self._loop(market, runners, aggregator, execution, state, ledger)
            self._stop(runners, fills, state, ledger)
            report = ray.get(execution.finish.remote())
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            if execution is not None:
                report = ray.get(execution.finish.remote())
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            for runner in runners:
                runner.kill()
            if execution is not None and report is None:
                ray.kill(execution, no_restart=True)
            if report is None:
                ledger.end_run(self.run_id, status, {"error": error})
        summary = self._summary(market, fleet, state, report, status, started)
        ledger.end_run(self.run_id, status, json.loads(summary.to_json()))
        return summary

    def _execution_actor(self, market: MarketData, fleet: list[AgentSpec]) -> Any:
        """The execution actor, on this node: it writes the same SQLite file as the driver."""
        cfg = self.config
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        return start_execution_actor(
            here,
            run_id=self.run_id,
            agents=[s.name for s in fleet],
            capital=[s.capital for s in fleet],
            symbols=market.symbols,
            execution=cfg.execution,
            risk=cfg.risk,
            ledger_url=absolute_ledger_url(cfg.federation.ledger),
        )

    def _start(self, fleet: list[AgentSpec], state: _RunState, started: float, runners: list[Runner]) -> None:
        """Create every runner at once (parallel start-up), then wait with a progress bar.

        Runners are appended to ``runners`` as they are created, so the caller can always release them.
        """
        for s in fleet:
            runners.append(
                ActorRunner(
                    s.agent_class, name=s.name, symbols=s.symbols, params=s.params, capital=float(s.capital)
                )
            )
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
            task = progress.add_task("start", total=len(runners))
            while pending:
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.2)
                for ref in done:
                    runner = pending.pop(ref)
                    try:
                        errors: list[HookError] = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        failures.append(f"agent {runner.names[0]!r} could not be created: {_root_cause(exc)}")
                        continue
                    failures += [f"agent {runner.names[0]!r} failed in {e.hook}: {e.message}" for e in errors]
                    progress.advance(task)
        if failures:
            raise AgentLoadError("\n".join(failures))
        state.startup_s = time.perf_counter() - started

    # -------------------------------------------------------------------------------------------- loop
    def _loop(
        self,
        market: MarketData,
        runners: list[Runner],
        aggregator: Aggregator,
        execution: Any,
        state: _RunState,
        ledger: SQLiteLedger,
    ) -> dict[str, list[Fill]]:
        """Replay every block; return the fills of the last block (not yet delivered to agents)."""
        order = {name: i for i, name in enumerate(state.meters)}
        block_size = self.config.federation.block_size
        n_blocks = -(-len(market) // block_size)
        with Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.show_progress,
        ) as progress:
            task = progress.add_task("replay", total=n_blocks)
            fills: dict[str, list[Fill]] = {}
            for batch in market.blocks(block_size):
                block_ref = ray.put(batch)
                outputs: list[list[AgentBlockResult]] = ray.get(
                    [r.process(block_ref, fills) for r in runners]
                )
                results = sorted((res for out in outputs for res in out), key=lambda r: order[r.name])
                self._record_results(results, state, ledger)
                targets = aggregator.targets(batch, results)
                outcome = ray.get(execution.process_block.remote(block_ref, targets))
                fills = outcome.fills
                progress.advance(task)
        return fills

    def _stop(
        self, runners: list[Runner], fills: dict[str, list[Fill]], state: _RunState, ledger: SQLiteLedger
    ) -> None:
        """Deliver the last block's fills and call ``on_stop`` everywhere."""
        outputs: list[list[HookError]] = ray.get([r.stop(fills) for r in runners])
        batch = LedgerBatch()
        for runner, errors in zip(runners, outputs, strict=True):
            for error in errors:
                self._count_error(runner.names[0], error, state, batch)
        ledger.write(self.run_id, batch)

    def _record_results(
        self, results: list[AgentBlockResult], state: _RunState, ledger: SQLiteLedger
    ) -> None:
        batch = LedgerBatch()
        for res in results:
            m = state.meters[res.name]
            m.bars += res.bars
            m.signals += res.signals
            m.rejected += res.rejected
            m.cpu_s += res.cpu_s
            m.errors += res.errors - len(res.error_details)
            for error in res.error_details:
                self._count_error(res.name, error, state, batch)
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
        ledger.write(self.run_id, batch)

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

    def _record_data_issues(self, market: MarketData, ledger: SQLiteLedger) -> None:
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
        agents = []
        for spec in fleet:
            m, t = state.meters[spec.name], trades.get(spec.name, {})
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
                    errors=m.errors,
                    last_error=m.last_error,
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
        )
        return RunSummary(
            run_id=self.run_id,
            status=status,
            ledger=cfg.federation.ledger,
            currency=cfg.federation.currency,
            bars=len(market),
            symbols=list(market.symbols),
            elapsed_s=round(time.perf_counter() - started, 3),
            startup_s=round(state.startup_s, 3),
            data_issues=len(market.issues),
            data_issue_samples=[str(i) for i in market.issues[:5]],
            agents=agents,
            portfolio=portfolio,
        )


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
