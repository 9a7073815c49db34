"""Strategies ("agents") and the base class they subclass.

Public API: ``from agents import Agent, Signal`` (plus the value types ``Bar``, ``BarBatch``, ``Fill``).
Built-in agents: :class:`agents.momentum.MomentumAgent`, :class:`agents.mean_reversion.MeanReversionAgent`.
"""

from agents.base import Agent, HookError, ParameterError
from agents.model import Bar, BarBatch, Fill, Signal

__all__ = ["Agent", "Bar", "BarBatch", "Fill", "HookError", "ParameterError", "Signal"]
