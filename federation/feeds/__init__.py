"""Market-data feeds: load bars into one :class:`MarketData` (all symbols on one time axis).

``load_feed(config.feed, base_dir=config.base_dir, seed=config.federation.seed)`` reads the ``[feed]`` of
a fleet config: ``kind = "csv"`` replays one CSV file per symbol, ``kind = "synthetic"`` generates seeded
correlated random walks (:mod:`federation.feeds.synthetic`).

Generic CSV format (``format = "generic"``, the default)
---------------------------------------------------------
One UTF-8 file per symbol (a byte-order mark is allowed), comma-separated with standard CSV quoting, a
header row first; blank lines are ignored.

- Columns, matched case-insensitively, in any order; other columns are ignored:
  a time column named ``timestamp``, ``time``, ``datetime`` or ``date`` (the first of these present is
  used), and ``open``, ``high``, ``low``, ``close``, ``volume``. A missing column is an error.
- Time values, either:

  - ISO 8601 date or date-time: ``2024-01-31``, ``20240131``, ``2024-01-31 09:30``,
    ``2024-01-31T09:30:00.5Z``, ``2024-01-31T09:30:00-05:00``. Values without an offset are in the feed's
    ``timezone`` (default UTC); a date alone means midnight. Digits beyond microseconds are dropped.
  - an integer count since 1970-01-01 UTC, its unit read from its size: below 10^11 seconds, below 10^14
    milliseconds, below 10^17 microseconds, otherwise nanoseconds (each range starts in 1973, so epoch
    values before 1973-03-03 must be in seconds). An 8-digit integer is a date (YYYYMMDD), not an epoch.

  Times must lie within 1677-09-22 .. 2262-04-11 (nanoseconds in a 64-bit integer). A time that cannot
  be read stops the load: it usually means that the whole column has another format.
- Prices and volume: decimal numbers (``97.31``, ``1e6``). Rows must be in time order.

Example::

    timestamp,open,high,low,close,volume
    2024-01-02T14:30:00Z,472.16,473.67,470.49,472.65,123456
    2024-01-02T14:31:00Z,472.65,472.90,472.11,472.30,98765

A record that breaks a rule of :mod:`federation.feeds.validation` (a non-numeric or missing value, NaN,
price <= 0, negative volume, high < low, open or close outside [low, high], a timestamp equal to or before
the previous record's) is skipped and listed in ``MarketData.issues`` (``on_invalid = "skip"``, the
default), or stops the load with the file, line and reason (``on_invalid = "error"``).

``format = "lean"`` reads QuantConnect LEAN equity daily/hour files: no header, rows
``YYYYMMDD HH:MM,open,high,low,close,volume`` with prices in deci-cents (divided by 10,000), times in
``timezone`` (default America/New_York). ``start`` / ``end`` keep the records whose date, in the feed's
timezone, is within [start, end].
"""

from __future__ import annotations

from pathlib import Path

from federation.config import CsvFeedConfig, SyntheticFeedConfig
from federation.feeds.csv_feed import load_csv
from federation.feeds.market_data import DataIssue, MarketData
from federation.feeds.synthetic import generate

__all__ = ["DataIssue", "MarketData", "load_feed"]


def load_feed(config: CsvFeedConfig | SyntheticFeedConfig, *, base_dir: Path, seed: int) -> MarketData:
    """Load the bars of a ``[feed]`` config; raises :class:`federation.errors.DataError` on bad data.

    ``base_dir`` resolves relative CSV paths (the config file's folder); ``seed`` is the federation seed,
    used by the synthetic feed unless the feed sets its own.
    """
    if isinstance(config, CsvFeedConfig):
        return load_csv(config, base_dir=base_dir)
    return generate(config, seed=seed)
