"""Market-data feeds: load bars into one :class:`MarketData` (all symbols on one time axis).

``load_feed(config.feed, base_dir=config.base_dir, seed=config.federation.seed)`` reads the ``[feed]`` of
a fleet config: ``kind = "csv"`` replays CSV files (one or several per symbol), ``kind = "synthetic"``
generates seeded correlated random walks (:mod:`federation.feeds.synthetic`). ``kind = "redis"`` is not
loaded up front: it is a stream of bars read while a live run goes on (:mod:`federation.feeds.redis_stream`).

Generic CSV format (``format = "generic"``, the default)
---------------------------------------------------------
One UTF-8 file per symbol, or several (see below); a byte-order mark is allowed. Comma-separated with
standard CSV quoting, a header row first (in every file); blank lines are ignored.

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

``start`` / ``end`` keep the records whose date, in the feed's timezone, is within [start, end].

Several files per symbol
------------------------
A ``paths`` value is one file, a list of files, or a glob pattern (a path containing ``*`` or ``?``; the
matches are sorted, and a pattern matching no file is an error). Relative paths and patterns are
resolved against the config file's folder. A symbol's files are joined in time order (ordered by their
first record, whatever order they are listed in) and validated as one series: a record at or before one
of an earlier file is reported as a duplicate or out of order. Every issue names its own file and line.
A glob (in ``examples/fleet.toml``'s folder, six days of SPY minute bars)::

    [feed]
    kind = "csv"
    format = "lean"
    paths = { SPY = "data/lean/minute/spy/*_trade.csv" }

and the same as a list of files (here the first two days)::

    [feed]
    kind = "csv"
    format = "lean"
    [feed.paths]
    SPY = [
        "data/lean/minute/spy/20131004_spy_minute_trade.csv",
        "data/lean/minute/spy/20131007_spy_minute_trade.csv",
    ]

LEAN format (``format = "lean"``)
---------------------------------
QuantConnect LEAN equity **trade** bars: no header, six columns ``time,open,high,low,close,volume``,
prices in deci-cents (divided by 10,000), volume in shares, times in ``timezone`` (default
America/New_York). Each file's first row tells which kind it is:

- daily / hour (``spy.csv``): the time is ``YYYYMMDD HH:MM``, e.g.
  ``19980102 00:00,973100,975300,965300,973600,2150000`` (a daily bar is stamped 00:00 of its day).
- minute (``20131004_spy_minute_trade.csv``, one file per day): the time is an integer, milliseconds since
  local midnight (0 .. 86399999), and the date comes from the file name, which must start with
  ``YYYYMMDD_``; e.g. ``14760000,1676500,1676500,1676500,1676500,20000`` in that file is the bar of
  2013-10-04 04:06 New York (08:06 UTC) at $167.65. LEAN stamps a minute bar with its start; the files
  include pre- and post-market bars (04:00 to 20:00).

LEAN quote bars (``*_quote.csv``, 11 bid/ask columns) and tick files (``*_tick.csv``) are not bars of this
kind and are refused: use the ``*_trade.csv`` files.
"""

from __future__ import annotations

from pathlib import Path

from federation.config import CsvFeedConfig, RedisFeedConfig, SyntheticFeedConfig
from federation.errors import ConfigError
from federation.feeds.csv_feed import load_csv
from federation.feeds.market_data import DataIssue, MarketData
from federation.feeds.synthetic import generate

__all__ = ["DataIssue", "MarketData", "load_feed"]


def load_feed(
    config: CsvFeedConfig | SyntheticFeedConfig | RedisFeedConfig, *, base_dir: Path, seed: int
) -> MarketData:
    """Load the bars of a ``[feed]`` config; raises :class:`federation.errors.DataError` on bad data.

    ``base_dir`` resolves relative CSV paths (the config file's folder); ``seed`` is the federation seed,
    used by the synthetic feed unless the feed sets its own. A redis feed has nothing to load (it is read
    by the supervisor while the run goes on): :class:`ConfigError`.
    """
    if isinstance(config, RedisFeedConfig):
        raise ConfigError(
            f"feed.kind = 'redis' (stream {config.stream!r}) is read while a live run goes on, not loaded "
            'in advance; run it with [federation] mode = "live"'
        )
    if isinstance(config, CsvFeedConfig):
        return load_csv(config, base_dir=base_dir)
    return generate(config, seed=seed)
