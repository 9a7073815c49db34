"""Seeded synthetic bars: correlated geometric Brownian motion, for load tests and examples.

Model, per symbol and bar (``dt`` = the bar interval in years, see :func:`year_fraction`):

- log close steps by ``drift * dt + volatility * sqrt(dt) * z``; the ``z`` of different symbols have the
  pairwise correlation ``correlation`` (standard normals mixed with the Cholesky factor of the matrix);
- open = the previous close (the first open is ``start_price``);
- high / low = max / min of open and close, stretched by ``|N(0, 1)| * volatility * sqrt(dt) / 2`` in log
  space, so high >= max(open, close) >= min(open, close) >= low > 0;
- volume is lognormal: median :data:`DAILY_VOLUME` shares per trading day scaled by ``dt``, log-sd 0.5.

Bars are evenly spaced from ``start`` (naive means UTC) by ``interval``, with no weekends or sessions.
The same seed gives the same bars, whatever the machine.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from agents.model import FloatArray
from federation.config import SyntheticFeedConfig
from federation.errors import ConfigError, DataError
from federation.feeds.market_data import MarketData
from federation.feeds.validation import describe, value_problems

TRADING_DAYS_PER_YEAR = 252
TRADING_HOURS_PER_DAY = 6.5
DAILY_VOLUME = 1_000_000.0
VOLUME_LOG_SD = 0.5

_STEPS = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
# Rows generated per round: bounds temporary memory; fixed, so the output never depends on it.
_CHUNK = 32_768


def year_fraction(interval: str) -> float:
    """Length of one bar in years: 1d = 1/252; intraday bars count trading time, 252 days x 6.5 hours."""
    if interval == "1d":
        return 1 / TRADING_DAYS_PER_YEAR
    trading_seconds = TRADING_DAYS_PER_YEAR * TRADING_HOURS_PER_DAY * 3600
    return _STEPS[interval].total_seconds() / trading_seconds


def generate(config: SyntheticFeedConfig, *, seed: int) -> MarketData:
    """Bars for ``config.symbols``; ``config.seed`` wins over ``seed`` (the federation's) when set."""
    symbols = tuple(config.symbols)
    repeated = sorted({s for s in symbols if symbols.count(s) > 1})
    if repeated:
        raise ConfigError(f"feed.symbols: {', '.join(repeated)} listed more than once; list each symbol once")
    rng = np.random.default_rng(config.seed if config.seed is not None else seed)
    n_bars, n_symbols = config.bars, len(symbols)
    dt = year_fraction(config.interval)
    step_sd = config.volatility * math.sqrt(dt)
    correlation = np.full((n_symbols, n_symbols), config.correlation)
    np.fill_diagonal(correlation, 1.0)
    mix = np.linalg.cholesky(correlation).T
    volume_median = math.log(DAILY_VOLUME * dt * TRADING_DAYS_PER_YEAR)

    shape = (n_bars, n_symbols)
    open_, high, low, close, volume = (np.empty(shape) for _ in range(5))
    level = np.full(n_symbols, math.log(config.start_price))
    for first in range(0, n_bars, _CHUNK):
        rows = slice(first, min(first + _CHUNK, n_bars))
        n = rows.stop - first
        log_close = rng.standard_normal((n, n_symbols)) @ mix
        log_close *= step_sd
        log_close += config.drift * dt
        np.cumsum(log_close, axis=0, out=log_close)
        log_close += level
        log_open = np.vstack([level, log_close[:-1]])
        level = log_close[-1].copy()
        stretch = np.abs(rng.standard_normal((2, n, n_symbols))) * (step_sd / 2)
        with np.errstate(over="ignore", under="ignore"):  # _check reports inf / 0 with advice
            np.exp(np.maximum(log_open, log_close) + stretch[0], out=high[rows])
            np.exp(np.minimum(log_open, log_close) - stretch[1], out=low[rows])
            np.exp(log_open, out=open_[rows])
            np.exp(log_close, out=close[rows])
        volume[rows] = rng.lognormal(volume_median, VOLUME_LOG_SD, (n, n_symbols))

    _check(symbols, open_, high, low, close, volume)
    start = config.start if config.start.tzinfo is not None else config.start.replace(tzinfo=UTC)
    start_ns = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    step_ns = _STEPS[config.interval] // timedelta(microseconds=1) * 1000
    return MarketData(
        symbols=symbols,
        ts=start_ns + np.arange(n_bars, dtype=np.int64) * step_ns,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        valid=np.ones(shape, dtype=np.bool_),
    )


def _check(
    symbols: tuple[str, ...],
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    volume: FloatArray,
) -> None:
    """Extreme drift or volatility over many bars overflows prices to inf or 0: say so instead."""
    codes = value_problems(open_, high, low, close, volume)
    bad = np.argwhere(codes != 0)
    if bad.shape[0] == 0:
        return
    row, col = (int(i) for i in bad[0])
    reason = describe(
        int(codes[row, col]),
        open_[row, col],
        high[row, col],
        low[row, col],
        close[row, col],
        volume[row, col],
    )
    raise DataError(
        f"synthetic feed: {symbols[col]} bar {row}: {reason}; prices left the float range, lower "
        "feed.drift, feed.volatility or feed.bars"
    )
