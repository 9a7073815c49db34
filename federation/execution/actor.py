"""``ExecutionActor``: the one Ray actor every order leaves from (it hosts the :class:`ExecutionEngine`)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import ray

from agents.model import BarBatch
from federation.config import ExecutionConfig, RiskConfig
from federation.execution.engine import BlockOutcome, ExecutionEngine, TargetUpdates
from federation.ledger import open_ledger
from policies.risk import MaxOrderNotional, MaxPosition, RiskPolicy


def build_risk_policy(config: RiskConfig) -> RiskPolicy:
    """The pre-trade rules configured in ``[risk]``."""
    return RiskPolicy(
        [
            MaxPosition(config.max_position, config.max_position_by_symbol),
            MaxOrderNotional(config.max_order_notional),
        ]
    )


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
    ) -> None:
        self.ledger = open_ledger(ledger_url) if ledger_url else None
        self.engine = ExecutionEngine(
            run_id=run_id,
            agents=agents,
            capital=capital,
            symbols=symbols,
            config=execution,
            risk=build_risk_policy(risk),
            ledger=self.ledger,
        )

    def process_block(self, batch: BarBatch, targets: TargetUpdates) -> BlockOutcome:
        received = time.monotonic_ns()
        outcome = self.engine.process_block(batch, targets)
        outcome.received_ns = received
        return outcome

    def finish(self) -> dict[str, Any]:
        report = self.engine.finish()
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        return report


ExecutionActor: Any = ray.remote(_ExecutionService)
"""The Ray actor class (arguments as the service's); start it with :func:`start_execution_actor`."""


def start_execution_actor(scheduling_strategy: Any = None, **kwargs: Any) -> Any:
    """Create the execution actor (no CPU reserved, not restarted by Ray); returns its handle."""
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    return ExecutionActor.options(**options).remote(**kwargs)
