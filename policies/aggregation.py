"""Aggregation policies: an agent's signal -> the notional it contributes to the portfolio target.

The portfolio target of a symbol is the *sum* of every agent's contribution, so each agent's share of
every position (its virtual sub-account) is known exactly. Nothing is dropped: unlike a "last signal per
symbol wins" rule, two agents with opposite views both keep their share, and the execution actor nets them.

Math, for agent ``i``, symbol ``s``, with ``capital_i`` the capital allocated to the agent:

- ``FixedWeights``:       ``notional_is = weight_is * capital_i``
- ``ConfidenceWeighted``: ``notional_is = weight_is * confidence_is * capital_i``
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


class AggregationPolicy(Protocol):
    """Maps arrays of weights, confidences and capitals (broadcastable, same shape) to notionals."""

    name: str

    def notional(self, weight: Array, confidence: Array, capital: Array) -> Array: ...


class FixedWeights:
    """Each agent trades its signal weight times its fixed capital allocation; confidence is ignored."""

    name = "fixed_weights"

    def notional(self, weight: Array, confidence: Array, capital: Array) -> Array:
        return weight * capital


class ConfidenceWeighted:
    """Like ``FixedWeights``, scaled by the signal's confidence: half as sure, half the exposure."""

    name = "confidence_weighted"

    def notional(self, weight: Array, confidence: Array, capital: Array) -> Array:
        return weight * confidence * capital


AGGREGATION_POLICIES: dict[str, type[FixedWeights] | type[ConfidenceWeighted]] = {
    FixedWeights.name: FixedWeights,
    ConfidenceWeighted.name: ConfidenceWeighted,
}
