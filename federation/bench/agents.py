"""Agents for the fleet benchmark: the built-in strategies forced through their per-bar path.

Most user strategies are written bar by bar (``on_bar``), which costs Python time per bar; the built-ins
also have a vectorized ``on_batch`` that is ~100 times cheaper. ``--agent per-bar`` (the default) measures
the realistic case; ``--agent vectorized`` the cheap one.
"""

from __future__ import annotations

from agents.base import Agent
from agents.mean_reversion import MeanReversionAgent
from agents.momentum import MomentumAgent


class PerBarMomentum(MomentumAgent):
    """:class:`MomentumAgent` evaluated one bar at a time (same signals)."""

    on_batch = Agent.on_batch


class PerBarMeanReversion(MeanReversionAgent):
    """:class:`MeanReversionAgent` evaluated one bar at a time (same signals)."""

    on_batch = Agent.on_batch


AGENT_KINDS: dict[str, tuple[str, str]] = {
    "per-bar": ("federation.bench.agents:PerBarMomentum", "federation.bench.agents:PerBarMeanReversion"),
    "vectorized": ("agents.momentum:MomentumAgent", "agents.mean_reversion:MeanReversionAgent"),
}
