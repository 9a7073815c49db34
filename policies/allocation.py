"""Capital allocation: how the fleet's capital is split among agents, and when it is re-split.

A policy maps each agent's trailing per-bar returns (shape (W, n), NaN where an agent has no data) and the
configured ``[[agents]] weight`` of each agent to new weights (non-negative, summing to 1). A
:class:`RebalanceSchedule` says at which bars to ask; a :class:`CapitalAllocator` keeps the trailing
returns, asks the policy at due bars and turns the weights into exact Decimal capitals.

Math, for agent ``i`` with configured share ``b_i = weight_i / sum(weight)`` and, over the window, ``m_i``
valid (non-NaN) returns with mean ``mu_i`` and sample standard deviation ``sigma_i`` (ddof 1):

- ``fixed``: ``w_i = b_i``.
- ``equal``: ``w_i = 1 / n``.
- ``inverse_volatility``: ``w_i = R * (1 / sigma_i) / sum_{j in M}(1 / sigma_j)`` for measured agents ``M``.
- ``sharpe_adaptive``: with ``S_i = mu_i / sigma_i`` (per bar, excess over 0),
  ``w_i = R * b_i * max(S_i, 0) / sum_{j in M}(b_j * max(S_j, 0))``; if no measured agent has a positive
  Sharpe ratio, nothing argues for a tilt and ``w_i = R * b_i / sum_{j in M} b_j``. Scaling every ``S``
  (e.g. annualizing) leaves the weights unchanged, so the bar interval does not matter.

An agent is *measured* when ``m_i >= max(min_periods, 2)`` and ``sigma_i > 1e-12`` (a flat equity, such
as an agent holding no position, has no volatility to invert). An unmeasured agent keeps its configured
share ``b_i``; the measured ones share the rest, ``R = 1 - sum_{j not in M} b_j``. With no agent
measured (e.g. before any history) both policies return ``b``.

The two adaptive policies then bound every weight to ``[min_weight, max_weight]`` with
:func:`clip_weights`, which rescales the unpinned weights so the bounds hold exactly after normalization.

Kelly sizing for agents that want it: :func:`kelly_fraction` (continuous returns) and
:func:`kelly_binary` (a bet that wins ``b`` per unit staked or loses the stake).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from federation.config import AllocationConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Period = Literal["1d", "1w", "1M"]

MIN_VOLATILITY = 1e-12
"""Per-bar volatility at or below this counts as zero: float noise on a flat equity, not a risk."""
_DAY_NS = 86_400 * 10**9


class AllocationPolicy(Protocol):
    """Maps trailing returns (W, n) and configured weights (n,) to weights (n,): >= 0, summing to 1."""

    name: str

    def weights(self, returns: FloatArray, base: FloatArray) -> FloatArray: ...


def _shares(base: FloatArray) -> FloatArray:
    """The configured weights as shares summing to 1."""
    base = np.asarray(base, dtype=np.float64)
    if base.ndim != 1 or not np.all(np.isfinite(base)) or np.any(base < 0) or not base.sum() > 0:
        raise ValueError(
            f"base weights {base.tolist()} must be finite, >= 0 and not all 0 (one per agent: "
            "its [[agents]] weight)"
        )
    share: FloatArray = base / base.sum()
    return share


def check_weight_bounds(n_agents: int, min_weight: float, max_weight: float) -> None:
    """Raise ``ValueError`` unless ``n_agents`` weights in ``[min_weight, max_weight]`` can sum to 1.

    The fleet builder calls this once the number of agents is known (``build_allocator`` does too).
    """
    if n_agents < 1:
        raise ValueError("capital allocation needs at least one agent")
    if not 0 <= min_weight <= max_weight <= 1:
        raise ValueError(
            f"[allocation] min_weight = {min_weight} and max_weight = {max_weight} must satisfy "
            "0 <= min_weight <= max_weight <= 1"
        )
    if n_agents * min_weight > 1 + 1e-12:
        raise ValueError(
            f"[allocation] min_weight = {min_weight} with {n_agents} agents asks for "
            f"{n_agents * min_weight:.4g} times the capital ({n_agents} x {min_weight} > 1); lower "
            f"min_weight to at most {1 / n_agents:.6g} or run fewer agents"
        )
    if n_agents * max_weight < 1 - 1e-12:
        raise ValueError(
            f"[allocation] max_weight = {max_weight} with {n_agents} agents leaves "
            f"{1 - n_agents * max_weight:.4g} of the capital unallocated ({n_agents} x {max_weight} < 1); "
            f"raise max_weight to at least {1 / n_agents:.6g} or run more agents"
        )


def clip_weights(weights: FloatArray, min_weight: float, max_weight: float) -> FloatArray:
    """Weights bounded to ``[min_weight, max_weight]``, summing to 1, as close to proportional as the
    bounds allow: ``w_i = clip(c * weights_i, min_weight, max_weight)`` with the one ``c`` making the sum 1.

    Found by clip-and-redistribute: scale the unpinned weights to the mass the pinned ones leave; if the
    overshoot above ``max_weight`` exceeds the shortfall below ``min_weight``, ``c`` must shrink, so the
    agents above stay above: pin them at ``max_weight`` (else pin the ones below at ``min_weight``); repeat.
    Each round pins at least one agent, so it ends within ``n`` rounds. When every unpinned weight is 0
    (say one agent held everything and hit ``max_weight``), the rest is shared equally among them.
    Input weights that already satisfy the bounds are returned unchanged. Raises ``ValueError`` if the
    bounds are infeasible for ``len(weights)`` agents (see :func:`check_weight_bounds`).
    """
    raw = np.asarray(weights, dtype=np.float64).copy()
    n = raw.shape[0]
    check_weight_bounds(n, min_weight, max_weight)
    if np.any(raw < 0) or not np.all(np.isfinite(raw)):
        raise ValueError(f"weights {raw.tolist()} must be finite and >= 0")
    if abs(raw.sum() - 1) <= 1e-12 and np.all(raw >= min_weight) and np.all(raw <= max_weight):
        return raw
    out = np.zeros(n)
    pinned = np.zeros(n, dtype=bool)
    while not pinned.all():
        free = ~pinned
        mass = 1.0 - out[pinned].sum()
        total = raw[free].sum()
        if total <= 0:
            raw[free] = 1.0
            total = float(free.sum())
        out[free] = mass * (raw[free] / total)  # ratio first: tiny (subnormal) weights lose no mass
        above = free & (out > max_weight)
        below = free & (out < min_weight)
        excess = (out[above] - max_weight).sum()
        shortfall = (min_weight - out[below]).sum()
        if not above.any() and not below.any():
            break
        pin = above if excess > shortfall else below if shortfall > excess else above | below
        out[pin & above] = max_weight
        out[pin & below] = min_weight
        pinned |= pin
    return out


def _measured(returns: FloatArray, min_periods: int) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Per agent: mean and sample standard deviation of its valid returns, and whether it is measured."""
    returns = np.asarray(returns, dtype=np.float64)
    valid = ~np.isnan(returns)
    count = valid.sum(axis=0)
    with np.errstate(over="ignore", invalid="ignore"):  # absurd returns give inf / NaN: unmeasured
        mean = np.where(valid, returns, 0.0).sum(axis=0) / np.maximum(count, 1)
        squares = (np.where(valid, returns - mean, 0.0) ** 2).sum(axis=0)
        std = np.sqrt(squares / np.maximum(count - 1, 1))
    measured = (count >= max(min_periods, 2)) & np.isfinite(std) & (std > MIN_VOLATILITY)
    return mean, std, measured


def _spread(share: FloatArray, measured: BoolArray, score: FloatArray) -> FloatArray:
    """Unmeasured agents keep ``share``; measured ones split the rest in proportion to ``score``."""
    out = share.copy()
    if measured.any():
        rest = 1.0 - share[~measured].sum()
        total = score[measured].sum()
        out[measured] = rest * score[measured] / total if total > 0 else rest / measured.sum()
    return out


class FixedAllocation:
    """The configured ``[[agents]] weight`` of each agent, as shares of 1; returns are ignored."""

    name = "fixed"

    def weights(self, returns: FloatArray, base: FloatArray) -> FloatArray:
        return _shares(base)

    @classmethod
    def from_config(cls, config: AllocationConfig) -> FixedAllocation:
        return cls()


class EqualAllocation:
    """Every agent gets ``1 / n``, whatever its configured weight."""

    name = "equal"

    def weights(self, returns: FloatArray, base: FloatArray) -> FloatArray:
        n = np.asarray(base).shape[0]
        return np.full(n, 1.0 / n)

    @classmethod
    def from_config(cls, config: AllocationConfig) -> EqualAllocation:
        return cls()


class InverseVolatilityAllocation:
    """Risk parity (naive): ``w_i`` proportional to ``1 / sigma_i`` of the trailing per-bar returns.

    Unmeasured agents (fewer than ``min_periods`` valid returns, or zero volatility) keep their configured
    share; weights are then bounded to ``[min_weight, max_weight]``. ``sigma = [0.01, 0.02]`` gives
    ``[2/3, 1/3]``.
    """

    name = "inverse_volatility"

    def __init__(self, *, min_periods: int, min_weight: float = 0.0, max_weight: float = 1.0) -> None:
        self.min_periods = min_periods
        self.min_weight = min_weight
        self.max_weight = max_weight

    def weights(self, returns: FloatArray, base: FloatArray) -> FloatArray:
        _, std, measured = _measured(returns, self.min_periods)
        inverse = np.divide(1.0, std, out=np.zeros_like(std), where=measured)
        return clip_weights(_spread(_shares(base), measured, inverse), self.min_weight, self.max_weight)

    @classmethod
    def from_config(cls, config: AllocationConfig) -> InverseVolatilityAllocation:
        return cls(min_periods=config.min_periods, min_weight=config.min_weight, max_weight=config.max_weight)


class SharpeAdaptiveAllocation:
    """Tilts the configured shares towards trailing performance: ``w_i`` proportional to
    ``b_i * max(S_i, 0)`` with ``S_i`` the per-bar Sharpe ratio (mean / sample std) over the window.

    Agents with a non-positive Sharpe ratio get 0 before the bounds (``min_weight`` keeps a floor under
    them); if no measured agent has a positive one, the measured agents keep their configured proportions.
    Unmeasured agents keep their configured share. Weights are then bounded to ``[min_weight, max_weight]``.
    """

    name = "sharpe_adaptive"

    def __init__(self, *, min_periods: int, min_weight: float = 0.0, max_weight: float = 1.0) -> None:
        self.min_periods = min_periods
        self.min_weight = min_weight
        self.max_weight = max_weight

    def weights(self, returns: FloatArray, base: FloatArray) -> FloatArray:
        share = _shares(base)
        mean, std, measured = _measured(returns, self.min_periods)
        sharpe = np.divide(mean, std, out=np.zeros_like(std), where=measured)
        score = share * np.maximum(sharpe, 0.0)
        if not score[measured].sum() > 0:
            score = share
        return clip_weights(_spread(share, measured, score), self.min_weight, self.max_weight)

    @classmethod
    def from_config(cls, config: AllocationConfig) -> SharpeAdaptiveAllocation:
        return cls(min_periods=config.min_periods, min_weight=config.min_weight, max_weight=config.max_weight)


ALLOCATION_POLICIES: dict[
    str,
    type[FixedAllocation]
    | type[EqualAllocation]
    | type[InverseVolatilityAllocation]
    | type[SharpeAdaptiveAllocation],
] = {
    FixedAllocation.name: FixedAllocation,
    EqualAllocation.name: EqualAllocation,
    InverseVolatilityAllocation.name: InverseVolatilityAllocation,
    SharpeAdaptiveAllocation.name: SharpeAdaptiveAllocation,
}


def _period_keys(ts: IntArray, period: Period) -> IntArray:
    """Index of the UTC day, ISO week (Monday to Sunday) or calendar month of each epoch-ns time."""
    if period == "1M":
        months: IntArray = ts.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64)
        return months
    days = ts // _DAY_NS
    # 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
    return days if period == "1d" else (days + 3) // 7


class RebalanceSchedule:
    """When to re-split the capital: every ``every_bars`` bars, at the first bar of a new UTC ``period``
    ("1d" day, "1w" ISO week, "1M" month), or never (neither given).

    Call :meth:`due` once per bar in time order (or :meth:`due_mask` per block). The first bar never
    rebalances: it starts the count. ``RebalanceSchedule(every_bars=5)`` is due at bars 5, 10, ...
    (counting the first as bar 0); ``RebalanceSchedule(period="1w")`` at the first bar of each new week.
    """

    def __init__(self, *, every_bars: int | None = None, period: Period | None = None) -> None:
        if every_bars is not None and period is not None:
            raise ValueError("give every_bars or period, not both")
        if every_bars is not None and every_bars < 1:
            raise ValueError(f"every_bars = {every_bars} must be >= 1")
        if period is not None and period not in ("1d", "1w", "1M"):
            raise ValueError(f"period {period!r} is not one of '1d', '1w', '1M'")
        self.every_bars = every_bars
        self.period = period
        self._bars = 0
        self._last_key: int | None = None

    def __repr__(self) -> str:
        if self.every_bars is not None:
            return f"RebalanceSchedule(every_bars={self.every_bars})"
        return f"RebalanceSchedule(period={self.period!r})" if self.period else "RebalanceSchedule()"

    def due(self, ts_ns: int) -> bool:
        """Whether to rebalance at the bar of time ``ts_ns`` (epoch nanoseconds, UTC)."""
        return bool(self.due_mask(np.array([ts_ns], dtype=np.int64))[0])

    def due_mask(self, ts: IntArray) -> BoolArray:
        """:meth:`due` for each of a block of bar times, in order (same answers, same state after)."""
        ts = np.asarray(ts, dtype=np.int64)
        count = ts.shape[0]
        if count == 0 or (self.every_bars is None and self.period is None):
            self._bars += count
            return np.zeros(count, dtype=bool)
        if self.every_bars is not None:
            index = np.arange(self._bars, self._bars + count)
            self._bars += count
            mask: BoolArray = (index > 0) & (index % self.every_bars == 0)
            return mask
        assert self.period is not None
        keys = _period_keys(ts, self.period)
        before = keys[:1] if self._last_key is None else np.array([self._last_key], dtype=np.int64)
        seen = np.maximum.accumulate(np.concatenate((before, keys)))
        self._last_key = int(seen[-1])
        self._bars += count
        # Due when a bar opens a period later than every earlier bar's: deterministic even if times repeat.
        mask = keys > seen[:-1]
        return mask


@dataclass(frozen=True, slots=True)
class Rebalance:
    """A re-split of the capital at bar time ``ts``: each agent's weight and capital, in agent order."""

    ts: int
    weights: tuple[float, ...]
    capital: tuple[Decimal, ...]
    """Exact to 1e-8, summing exactly to the total capital."""
    policy: str
    """The allocation policy that chose the weights (the reason of the rebalance)."""


def split_capital(total: Decimal, weights: Sequence[float] | FloatArray) -> tuple[Decimal, ...]:
    """``total`` split in proportion to ``weights`` (>= 0, any positive sum), each share rounded to 1e-8.

    ``share_i = round(total * weight_i / sum(weights), 1e-8)`` in Decimal arithmetic; the rounding
    remainder (a few 1e-8 at most) goes to the largest share (the last of equal ones), so the shares sum
    exactly to ``total``.
    """
    # Imported here: federation.config imports agents, and agents import this module for the Kelly helpers.
    from federation.money import quantize

    values = [float(w) for w in weights]
    if not values or not all(math.isfinite(w) and w >= 0 for w in values) or not sum(values) > 0:
        raise ValueError(f"weights {values} must be finite, >= 0 and not all 0")
    if not total > 0 or quantize(total) != total:
        raise ValueError(f"total capital {total} must be > 0 and a multiple of 1e-8 (the ledger precision)")
    denominator = Decimal(repr(sum(values)))
    shares = [quantize(total * Decimal(repr(w)) / denominator) for w in values]
    largest = max(range(len(shares)), key=lambda i: (shares[i], i))
    shares[largest] += total - sum(shares, Decimal(0))
    return tuple(shares)


class CapitalAllocator:
    """Keeps each agent's trailing per-bar returns and re-splits ``total_capital`` at due bars.

    ``observe(ts, equity)`` takes each block's bar times (T,) and every agent's equity at each bar's close
    (T, n), in agent order; it returns the rebalances that fell due in the block (usually none). The
    weights at a due bar use the returns up to and including that bar.

    A bar's return is ``equity[t] / equity[t-1] - 1``. It is NaN (no data, ignored by the policies) when
    either equity is NaN or the previous one is <= 0 (a return on nothing is undefined); a fall to 0 is -1.
    The returns of the last ``window`` bars are kept; the first bar ever has none. A rebalance is taken to
    move cash between the agents' accounts before the next observed bar (the supervisor asks the execution
    engine to), so the first return after it is measured from the equity plus that transfer.

    Capitals start at the policy's weights with no history (the configured shares for every built-in
    policy but ``equal``). Weights equal to the configured shares are split from the configured weights
    themselves, ``split_capital(total_capital, base_weights)``, not from their float shares: ``fixed``
    never moves money by float noise.
    """

    def __init__(
        self,
        policy: AllocationPolicy,
        schedule: RebalanceSchedule,
        base_weights: Sequence[float] | FloatArray,
        total_capital: Decimal,
        window: int,
    ) -> None:
        base = np.asarray(base_weights, dtype=np.float64)
        if base.ndim != 1 or base.size == 0 or not np.all(np.isfinite(base)) or np.any(base <= 0):
            raise ValueError(f"base weights {base.tolist()} must be one finite number > 0 per agent")
        if window < 2:
            raise ValueError(f"window = {window} must be >= 2 bars of returns")
        self.policy = policy
        self.schedule = schedule
        self.total_capital = total_capital
        self.window = window
        self._base = base
        self._base_share = _shares(base)
        self._returns = np.empty((0, base.size))
        self._last_equity: FloatArray | None = None
        self._weights = self._checked(policy.weights(self._returns, base), ts=None)
        self._capital = self._split(self._weights)

    @property
    def n_agents(self) -> int:
        return int(self._base.size)

    @property
    def returns(self) -> FloatArray:
        """The trailing per-bar returns kept, (at most ``window``, n), oldest first (a copy)."""
        return self._returns.copy()

    @property
    def weights(self) -> tuple[float, ...]:
        """Current weight of each agent."""
        return tuple(float(w) for w in self._weights)

    def capital(self) -> tuple[Decimal, ...]:
        """Current capital of each agent, in agent order; sums exactly to ``total_capital``."""
        return self._capital

    def observe(self, ts: IntArray, equity: FloatArray) -> list[Rebalance]:
        """Record a block's per-bar equity of every agent; rebalance at each due bar, in time order."""
        ts = np.asarray(ts, dtype=np.int64)
        equity = np.asarray(equity, dtype=np.float64)
        if ts.ndim != 1 or equity.shape != (ts.size, self.n_agents):
            raise ValueError(
                f"equity has shape {equity.shape} for bar times of shape {ts.shape}; expected "
                f"(bars, agents) = ({ts.size}, {self.n_agents})"
            )
        if ts.shape[0] == 0:
            return []
        start = 1 if self._last_equity is None else 0
        last = equity[:1] if self._last_equity is None else self._last_equity[None, :]
        previous = np.vstack([last, equity[:-1]])
        defined = np.isfinite(previous) & (previous > 0) & np.isfinite(equity)
        safe = np.where(defined, previous, 1.0)
        block = np.where(defined, equity / safe - 1.0, np.nan)[start:]
        self._last_equity = equity[-1].copy()
        history = np.vstack([self._returns, block])
        kept = self._returns.shape[0]
        before = self._capital
        done: list[Rebalance] = []
        for row in np.flatnonzero(self.schedule.due_mask(ts)):
            window = history[: kept + row + 1 - start][-self.window :]
            bar_ts = int(ts[row])
            self._weights = self._checked(self.policy.weights(window, self._base), ts=bar_ts)
            self._capital = self._split(self._weights)
            done.append(Rebalance(bar_ts, self.weights, self._capital, self.policy.name))
        self._returns = history[-self.window :].copy()
        if done:
            # The capital moves between the agents' accounts before the next bar (the execution engine's
            # rebalance): the next return is measured from the equity after that transfer, not before.
            transfer = np.array([float(new - old) for new, old in zip(self._capital, before, strict=True)])
            self._last_equity = self._last_equity + transfer
        return done

    def _split(self, weights: FloatArray) -> tuple[Decimal, ...]:
        return split_capital(
            self.total_capital, self._base if np.array_equal(weights, self._base_share) else weights
        )

    def _checked(self, weights: FloatArray, ts: int | None) -> FloatArray:
        weights = np.asarray(weights, dtype=np.float64)
        at = "with no history" if ts is None else f"at bar time {ts}"
        if (
            weights.shape != self._base.shape
            or not np.all(np.isfinite(weights))
            or np.any(weights < 0)
            or abs(weights.sum() - 1) > 1e-9
        ):
            raise ValueError(
                f"allocation policy {self.policy.name!r} returned weights {weights.tolist()} {at}; "
                f"expected {self.n_agents} finite numbers >= 0 summing to 1"
            )
        return weights


def build_allocator(
    config: AllocationConfig, base_weights: Sequence[float] | FloatArray, total_capital: Decimal
) -> CapitalAllocator:
    """The allocator the ``[allocation]`` config asks for, for agents with the given configured weights.

    Raises ``ValueError`` if ``min_weight`` / ``max_weight`` cannot hold for this many agents.
    """
    check_weight_bounds(len(base_weights), config.min_weight, config.max_weight)
    schedule = RebalanceSchedule(every_bars=config.rebalance_bars, period=config.rebalance)
    policy = ALLOCATION_POLICIES[config.policy].from_config(config)
    return CapitalAllocator(policy, schedule, base_weights, total_capital, config.window)


def _check_fraction(fraction: float) -> None:
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise ValueError(
            f"fraction = {fraction} must be in (0, 1]: the share of the full Kelly bet to take (0.5 = half "
            "Kelly); betting more than full Kelly only adds risk"
        )


def kelly_fraction(mean_return: float, variance: float, *, fraction: float = 0.5, cap: float = 1.0) -> float:
    """Kelly position size for continuous returns: ``clip(fraction * mean_return / variance, -cap, cap)``.

    ``mean_return`` and ``variance`` are of the same per-period simple returns (e.g. daily), ``variance``
    the square of their volatility. The result is a weight for a :class:`~agents.Signal` (negative: short).
    Full Kelly (``fraction = 1``) maximizes long-run growth but swings hard and punishes estimation error;
    half Kelly keeps about three quarters of the growth at half the volatility. Example:
    ``kelly_fraction(0.0005, 0.0001)`` is ``0.5 * 5.0 = 2.5``, capped to ``1.0``.
    """
    if not math.isfinite(mean_return):
        raise ValueError(f"mean_return = {mean_return} must be a finite number (the mean per-period return)")
    if not (math.isfinite(variance) and variance > 0):
        raise ValueError(
            f"variance = {variance} must be a finite number > 0 (the variance of the per-period returns, "
            "i.e. volatility squared); with no variance estimate yet, do not size by Kelly"
        )
    _check_fraction(fraction)
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"cap = {cap} must be a finite number > 0 (the largest |weight| to return)")
    return min(max(fraction * mean_return / variance, -cap), cap)


def kelly_binary(win_probability: float, win_loss_ratio: float, *, fraction: float = 0.5) -> float:
    """Kelly stake for a bet won with probability ``p`` paying ``b`` per unit staked, else losing the stake:
    ``fraction * max(p - (1 - p) / b, 0)``.

    Floored at 0: a bet without an edge is not taken (this sizes long-only entries; to go short, size the
    opposite bet with its own ``p`` and ``b``). Example: ``kelly_binary(0.6, 1.0, fraction=1.0)`` is 0.2.
    """
    if not (math.isfinite(win_probability) and 0 <= win_probability <= 1):
        raise ValueError(f"win_probability = {win_probability} must be a probability in [0, 1]")
    if not (math.isfinite(win_loss_ratio) and win_loss_ratio > 0):
        raise ValueError(
            f"win_loss_ratio = {win_loss_ratio} must be a finite number > 0: the average win divided by "
            "the average loss (both as positive amounts)"
        )
    _check_fraction(fraction)
    edge = win_probability - (1 - win_probability) / win_loss_ratio
    return fraction * max(edge, 0.0)
