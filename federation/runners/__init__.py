"""Isolation tiers behind one handle (:class:`Runner`). Built: ``actor``."""

from federation.runners.actor import ActorRunner
from federation.runners.base import Runner
from federation.runners.host import AgentBlockResult, AgentHost

__all__ = ["ActorRunner", "AgentBlockResult", "AgentHost", "Runner"]
