"""Policies chosen in config: how signals aggregate into targets, and which orders risk allows.

- :mod:`policies.aggregation`: ``FixedWeights``, ``ConfidenceWeighted``.
- :mod:`policies.allocation`: capital per agent (``FixedAllocation``, ``EqualAllocation``,
  ``InverseVolatilityAllocation``, ``SharpeAdaptiveAllocation``), ``RebalanceSchedule``,
  ``CapitalAllocator``, and the Kelly sizing helpers.
- :mod:`policies.risk`: ``RiskPolicy`` and its rules (``MaxPosition``, ``MaxOrderNotional``,
  ``MaxOrderQuantity``, exposure, leverage, price collar, precision, order rate, trading state).
- :mod:`policies.trading_state`: ``TradingState`` (ACTIVE, REDUCING, HALTED), ``TradingStateMachine``.
- :mod:`policies.breakers`: ``CircuitBreakers`` (loss within a window, drawdown from peak), ``BreakerSpec``.
"""

from policies.aggregation import AGGREGATION_POLICIES, AggregationPolicy, ConfidenceWeighted, FixedWeights
from policies.allocation import (
    ALLOCATION_POLICIES,
    AllocationPolicy,
    CapitalAllocator,
    EqualAllocation,
    FixedAllocation,
    InverseVolatilityAllocation,
    Rebalance,
    RebalanceSchedule,
    SharpeAdaptiveAllocation,
    build_allocator,
    check_weight_bounds,
    clip_weights,
    kelly_binary,
    kelly_fraction,
    split_capital,
)
from policies.breakers import BreakerSpec, CircuitBreakers, Trip
from policies.risk import (
    Denial,
    LotSize,
    MaxGrossExposure,
    MaxLeverage,
    MaxNetExposure,
    MaxOrderNotional,
    MaxOrderQuantity,
    MaxPosition,
    MinQuantity,
    NotHalted,
    OrderIntent,
    OrderRateLimit,
    PriceCollar,
    PriceTick,
    ReduceOnly,
    RiskPolicy,
    RiskRule,
)
from policies.trading_state import StateChange, TradingState, TradingStateMachine

__all__ = [
    "AGGREGATION_POLICIES",
    "ALLOCATION_POLICIES",
    "AggregationPolicy",
    "AllocationPolicy",
    "BreakerSpec",
    "CapitalAllocator",
    "CircuitBreakers",
    "ConfidenceWeighted",
    "Denial",
    "EqualAllocation",
    "FixedAllocation",
    "FixedWeights",
    "InverseVolatilityAllocation",
    "LotSize",
    "MaxGrossExposure",
    "MaxLeverage",
    "MaxNetExposure",
    "MaxOrderNotional",
    "MaxOrderQuantity",
    "MaxPosition",
    "MinQuantity",
    "NotHalted",
    "OrderIntent",
    "OrderRateLimit",
    "PriceCollar",
    "PriceTick",
    "Rebalance",
    "RebalanceSchedule",
    "ReduceOnly",
    "RiskPolicy",
    "RiskRule",
    "SharpeAdaptiveAllocation",
    "StateChange",
    "TradingState",
    "TradingStateMachine",
    "Trip",
    "build_allocator",
    "check_weight_bounds",
    "clip_weights",
    "kelly_binary",
    "kelly_fraction",
    "split_capital",
]
