"""``ExecutionActor``: the one Ray actor every order leaves from (it hosts the :class:`ExecutionEngine`).

With ``venue`` (a venue actor handle, :func:`~federation.execution.exchange.start_venue_actor`) the engine
trades on that venue through :class:`~federation.execution.venue_client.RemoteVenue` and journals every
order before sending it (:mod:`federation.execution.journal`); otherwise on the simulated venue in its own
process. A restarted actor (``recover=True``) rebuilds its books with :meth:`_ExecutionService.recover`
(:mod:`federation.execution.reconcile`) before it takes a block; breakers and order-rate buckets restart
fresh (see that module).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import ray

from agents.model import BarBatch
from federation.config import AgentRiskConfig, ExecutionConfig, LedgerSettings, RiskConfig, RiskLimits
from federation.errors import LedgerError
from federation.events_out import EventStreamConfig, open_publisher
from federation.events_out.tee import EventTap
from federation.execution.engine import BlockOutcome, ExecutionEngine, TargetUpdates
from federation.execution.journal import OrderJournal, journal_path, load_journal
from federation.execution.reconcile import reconcile
from federation.execution.venue_client import RemoteVenue
from federation.ledger import BufferedLedger, open_buffered_ledger
from policies.breakers import BreakerSpec
from policies.risk import (
    LotSize,
    MaxGrossExposure,
    MaxLeverage,
    MaxNetExposure,
    MaxOrderNotional,
    MaxOrderQuantity,
    MaxPosition,
    MinQuantity,
    OrderRateLimit,
    PriceCollar,
    PriceTick,
    RiskPolicy,
    RiskRule,
)


def _limit_rules(config: RiskLimits) -> list[RiskRule]:
    """The limits an agent and the portfolio share; only the configured ones (a check per order each)."""
    rules: list[RiskRule] = []
    if config.max_order_quantity is not None:
        rules.append(MaxOrderQuantity(config.max_order_quantity))
    if config.max_order_notional is not None:
        rules.append(MaxOrderNotional(config.max_order_notional))
    if config.max_position is not None or config.max_position_by_symbol:
        rules.append(MaxPosition(config.max_position, config.max_position_by_symbol))
    if config.max_gross_exposure is not None:
        rules.append(MaxGrossExposure(config.max_gross_exposure))
    if config.max_net_exposure is not None:
        rules.append(MaxNetExposure(config.max_net_exposure))
    if config.max_leverage is not None:
        rules.append(MaxLeverage(config.max_leverage))
    return rules


def _rate_rule(config: RiskLimits) -> list[RiskRule]:
    # Last: it spends a token, so it runs only for orders every other rule passed.
    if config.max_orders_per_minute is None:
        return []
    return [OrderRateLimit(config.max_orders_per_minute, config.order_burst)]


def build_risk_policy(config: RiskConfig) -> RiskPolicy:
    """The pre-trade rules configured in ``[risk]``, for the portfolio's net orders."""
    instruments = config.instruments
    lots = {s: i.lot_size for s, i in instruments.items() if i.lot_size is not None}
    ticks = {s: i.price_tick for s, i in instruments.items() if i.price_tick is not None}
    minimums = {s: i.min_quantity for s, i in instruments.items() if i.min_quantity is not None}
    rules = _limit_rules(config)
    if config.price_collar_bps is not None:
        rules.append(PriceCollar(config.price_collar_bps))
    if lots:
        rules.append(LotSize(lots))
    if config.min_order_quantity is not None or minimums:
        rules.append(MinQuantity(config.min_order_quantity, minimums))
    if ticks:
        rules.append(PriceTick(ticks))
    return RiskPolicy(rules + _rate_rule(config))


def build_agent_risk_policy(config: AgentRiskConfig | None) -> RiskPolicy | None:
    """One agent's own rules (a fresh order bucket for each agent); None if it sets no limit."""
    if config is None:
        return None
    rules = _limit_rules(config) + _rate_rule(config)
    return RiskPolicy(rules) if rules else None


def breaker_specs(risk: RiskConfig, agent_risk: list[AgentRiskConfig | None]) -> list[BreakerSpec | None]:
    """One breaker spec (or None) per agent, then the portfolio's."""
    configs = [None if c is None else c.breakers for c in agent_risk] + [risk.breakers]
    return [None if c is None else c.to_spec() for c in configs]


class _ExecutionService:
    """Plain class behind the actor, so the same code runs in-process in tests."""

    def __init__(
        self,
        *,
        run_id: str,
        agents: list[str],
        capital: list[Decimal],
        symbols: tuple[str, ...],
        execution: ExecutionConfig,
        risk: RiskConfig,
        ledger_url: str | None,
        agent_risk: list[AgentRiskConfig | None] | None = None,
        ledger_settings: LedgerSettings | None = None,
        events: EventStreamConfig | None = None,
        venue: Any = None,
        recover: bool = False,
    ) -> None:
        if recover and (venue is None or not ledger_url):
            raise ValueError(
                "recover=True needs the venue actor (venue=handle) and a ledger (ledger_url): the books are "
                "rebuilt from them"
            )
        self.ledger: BufferedLedger | None = None
        self.tap: EventTap | None = None
        if ledger_url:
            self.ledger = open_buffered_ledger(
                ledger_url, writer="execution", **(ledger_settings or LedgerSettings()).model_dump()
            )
            publisher = open_publisher(events, run_id, "execution") if events is not None else None
            if publisher is not None:
                self.ledger.tap = self.tap = EventTap(publisher)
        agent_risk = agent_risk or [None] * len(agents)
        self.remote: RemoteVenue | None = None
        self.journal_path = journal_path(execution.journal_dir, run_id)
        journal = None
        if venue is not None:
            self.remote = RemoteVenue(
                venue, timeout_s=execution.venue_timeout_s, retry_s=execution.venue_retry_s
            )
            ray.get(venue.attach.remote(tuple(symbols)))
            journal = OrderJournal(self.journal_path, fresh=not recover)
        self._recovering = recover
        self.engine = ExecutionEngine(
            run_id=run_id,
            agents=agents,
            capital=capital,
            symbols=symbols,
            config=execution,
            risk=build_risk_policy(risk),
            ledger=self.ledger,
            agent_risk=[build_agent_risk_policy(c) for c in agent_risk],
            breakers=breaker_specs(risk, agent_risk),
            price_ticks={s: i.price_tick for s, i in risk.instruments.items() if i.price_tick is not None},
            venue=self.remote,
            journal=journal,
        )

    def process_block(self, batch: BarBatch, targets: TargetUpdates) -> BlockOutcome:
        received = time.monotonic_ns()
        if self._recovering:
            raise RuntimeError(
                "this execution actor was started with recover=True: call recover(delivered_ts) before "
                "sending it blocks"
            )
        outcome = self.engine.process_block(batch, targets)
        outcome.received_ns = received
        return outcome

    def recover(self, delivered_ts: int) -> BlockOutcome:
        """Rebuild the books from the ledger, the order journal and the venue (its events from cursor
        0), record what reconciliation booked and closed (and an ``execution_recovered`` event), and
        return the fills agents have not received: those reported (or, for crosses, executed) after bar
        time ``delivered_ts``, the last bar whose block outcome the caller received (-1: none). See
        :mod:`federation.execution.reconcile`."""
        if not self._recovering:
            raise RuntimeError("recover() is for an execution actor started with recover=True")
        assert self.ledger is not None and self.remote is not None
        outcome = reconcile(
            self.engine, self.ledger, load_journal(self.journal_path), self.remote, int(delivered_ts)
        )
        self._recovering = False
        return outcome

    def restore_desired(self, lots: npt.NDArray[np.int64]) -> None:
        """Set every agent's desired position (lots, agents x symbols): the caller's mirror of the
        targets it sent, after a restart."""
        desired = np.asarray(lots, dtype=np.int64)
        if desired.shape != self.engine.desired.shape:
            raise ValueError(
                f"restore_desired got shape {desired.shape}; expected {self.engine.desired.shape} "
                "(agents x symbols)"
            )
        self.engine.desired[:] = desired

    def arm_crash(self, point: str, after: int = 1) -> None:
        """Test hook: end this process abruptly (no cleanup, no ledger flush) the ``after``-th time the
        engine reaches ``point``: ``after_submit`` (the venue took the bar's orders, nothing of the bar
        is recorded) or ``after_advance`` (the venue matched the bar, nothing booked)."""
        left = [after]

        def hook(reached: str) -> None:
            if reached == point:
                left[0] -= 1
                if left[0] <= 0:
                    os._exit(1)

        self.engine.crash_hook = hook

    def rebalance(self, capital: Sequence[Decimal], ts: int) -> None:
        """Move cash between the agents' sub-accounts so agent ``i`` holds the allocated capital
        ``capital[i]`` (summing to the portfolio's total capital); recorded at once. See
        :meth:`ExecutionEngine.rebalance`."""
        self.engine.rebalance(capital, ts)

    def halt(self, reason: str) -> int:
        """Kill switch: the federation goes HALTED for the rest of the run, every working order is
        cancelled, and both are recorded at once. Returns the number of orders cancelled.

        The actor runs one call at a time, so a halt sent during a block takes effect when that block
        is done (one bar in live mode)."""
        return self.engine.halt(reason)

    def ledger_state(self) -> dict[str, Any] | None:
        """The write-behind buffer's counters so far (outages included), or None without a ledger."""
        if self.ledger is None:
            return None
        return {**self.ledger.report_dict(), "pending": self.ledger.pending()}

    def finish(self, ledger_timeout_s: float | None = None) -> dict[str, Any]:
        """Expire what is working, write everything to the ledger (waiting for an unavailable database
        up to ``ledger_timeout_s``, default ``flush_timeout_s``) and report. A ledger that could not be
        written is reported under ``ledger_error`` (with the file its unwritten batches were saved to),
        not raised: the report is still the truth of what was traded."""
        report = self.engine.finish()
        report.update(self._close_ledger(ledger_timeout_s))
        return report

    def abandon(self, ledger_timeout_s: float) -> dict[str, Any]:
        """The run failed: write (or save to a file) what the buffer holds, without finishing the books;
        returns the ledger's report (``ledger``, ``ledger_error``)."""
        return self._close_ledger(ledger_timeout_s)

    def _close_ledger(self, timeout_s: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tap is not None and self.ledger is not None:
            out["events_out"] = self.tap.close(self.ledger, self.engine.run_id).to_dict()
            self.tap = None
        if self.ledger is not None:
            ledger, self.ledger = self.ledger, None
            try:
                ledger.close(timeout_s)
            except LedgerError as exc:
                out["ledger_error"] = str(exc)
            out["ledger"] = ledger.report_dict()
        return out


ExecutionActor: Any = ray.remote(_ExecutionService)
"""The Ray actor class (arguments as the service's); start it with :func:`start_execution_actor`."""


def start_execution_actor(scheduling_strategy: Any = None, **kwargs: Any) -> Any:
    """Create the execution actor (no CPU reserved, not restarted by Ray); returns its handle.

    ``kwargs`` are the service's: ``run_id``, ``agents``, ``capital``, ``symbols``, ``execution``,
    ``risk``, ``ledger_url``, ``agent_risk`` (one ``AgentRiskConfig`` or None per agent) and
    ``ledger_settings`` (the write-behind buffer's) and ``events`` (``[events]``: publish the ledger's
    batches to Redis streams), ``venue`` (a venue actor handle; None: the simulated venue in the
    actor's process) and ``recover`` (a restart: call ``recover(delivered_ts)`` and
    ``restore_desired(lots)`` before the next block).

    Restarting after the actor died (the same arguments as the first start)::

        execution = start_execution_actor(..., venue=venue, recover=True)
        outcome = ray.get(execution.recover.remote(delivered_ts))  # fills agents have not received
        ray.get(execution.restore_desired.remote(desired_lots))
        # then send the interrupted block again
    """
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    return ExecutionActor.options(**options).remote(**kwargs)
