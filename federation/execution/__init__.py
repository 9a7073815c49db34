"""Execution: netting, order ids, risk checks, the simulated venue (in-process or as an actor with fault
modes), the order journal, and recovery of a restarted execution actor."""

from federation.execution.actor import (
    ExecutionActor,
    breaker_specs,
    build_agent_risk_policy,
    build_risk_policy,
    start_execution_actor,
)
from federation.execution.engine import BlockOutcome, ExecutionEngine, TargetUpdates, pro_rata
from federation.execution.exchange import Exchange, VenueActor, start_venue_actor
from federation.execution.venue import SimulatedVenue, VenueFill, VenueOrder, VenueReport
from federation.execution.venue_client import LocalVenue, RemoteVenue, VenueClient
from federation.execution.venue_faults import VenueFaults

__all__ = [
    "BlockOutcome",
    "Exchange",
    "ExecutionActor",
    "ExecutionEngine",
    "LocalVenue",
    "RemoteVenue",
    "SimulatedVenue",
    "TargetUpdates",
    "VenueActor",
    "VenueClient",
    "VenueFaults",
    "VenueFill",
    "VenueOrder",
    "VenueReport",
    "breaker_specs",
    "build_agent_risk_policy",
    "build_risk_policy",
    "pro_rata",
    "start_execution_actor",
    "start_venue_actor",
]
