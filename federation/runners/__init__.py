"""Isolation tiers behind one handle (:class:`Runner`). Built: ``actor`` and ``shared``."""

from federation.runners.actor import ActorRunner, SparePool
from federation.runners.base import AgentErrors, ReplayCall, Runner, RunnerLimits
from federation.runners.host import AgentBlockResult, AgentHost
from federation.runners.shared import SharedRunner, pack
from federation.runners.usage import AgentUsage

__all__ = [
    "ActorRunner",
    "AgentBlockResult",
    "AgentErrors",
    "AgentHost",
    "AgentUsage",
    "ReplayCall",
    "Runner",
    "RunnerLimits",
    "SharedRunner",
    "SparePool",
    "pack",
]
