"""Execution: netting, order ids, risk checks, the simulated venue and the ledger writes of trades."""

from federation.execution.actor import (
    ExecutionActor,
    breaker_specs,
    build_agent_risk_policy,
    build_risk_policy,
    start_execution_actor,
)
from federation.execution.engine import BlockOutcome, ExecutionEngine, TargetUpdates, pro_rata
from federation.execution.venue import SimulatedVenue, VenueFill, VenueOrder

__all__ = [
    "BlockOutcome",
    "ExecutionActor",
    "ExecutionEngine",
    "SimulatedVenue",
    "TargetUpdates",
    "VenueFill",
    "VenueOrder",
    "breaker_specs",
    "build_agent_risk_policy",
    "build_risk_policy",
    "pro_rata",
    "start_execution_actor",
]
