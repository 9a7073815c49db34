"""Strategies ("agents") and the base class they subclass.

Public API: ``from agents import Agent, Signal`` (plus the value types ``Bar``, ``BarBatch``, ``Fill``).
Budgets: ``Agent.spend`` returns a :class:`Reservation`; a refusal raises :class:`BudgetExceeded`.
Position sizing: ``kelly_fraction(mean, variance)`` and ``kelly_binary(p, b)`` (half Kelly by default).
Built-in agents: :class:`agents.momentum.MomentumAgent`, :class:`agents.mean_reversion.MeanReversionAgent`.
"""

from agents.base import Agent, HookError, ParameterError
from agents.budget import BudgetExceeded, Reservation
from agents.model import Bar, BarBatch, Fill, Signal
from policies.allocation import kelly_binary, kelly_fraction

__all__ = [
    "Agent",
    "Bar",
    "BarBatch",
    "BudgetExceeded",
    "Fill",
    "HookError",
    "ParameterError",
    "Reservation",
    "Signal",
    "kelly_binary",
    "kelly_fraction",
]
