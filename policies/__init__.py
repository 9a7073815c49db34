"""Policies chosen in config: how signals aggregate into targets, and which orders risk allows.

- :mod:`policies.aggregation`: ``FixedWeights``, ``ConfidenceWeighted``.
- :mod:`policies.risk`: ``RiskPolicy`` with the rules ``MaxPosition`` and ``MaxOrderNotional``.
"""

from policies.aggregation import AGGREGATION_POLICIES, AggregationPolicy, ConfidenceWeighted, FixedWeights
from policies.risk import Denial, MaxOrderNotional, MaxPosition, OrderIntent, RiskPolicy, RiskRule

__all__ = [
    "AGGREGATION_POLICIES",
    "AggregationPolicy",
    "ConfidenceWeighted",
    "Denial",
    "FixedWeights",
    "MaxOrderNotional",
    "MaxPosition",
    "OrderIntent",
    "RiskPolicy",
    "RiskRule",
]
