"""A live feed from a Redis stream (``[feed] kind = "redis"``), and ``federation publish`` to fill one.

External producers add bars to a Redis stream; the federation reads them with a consumer group
(XREADGROUP), hands each time step to the agents and the execution actor, and acknowledges (XACK) the
entries afterwards. A run on this feed is a live run: ticks are driven by arriving bars. User guide:
``docs/redis-feed.md``.

Message format
--------------
One stream entry per bar, with these fields (names in lower case; values are strings, as always in
Redis; other fields are ignored, so producers may add their own):

========== =================================================================================
``symbol`` the instrument, one of ``feed.symbols`` (other symbols are skipped and reported)
``ts``     the bar's time: ISO 8601 (``2024-01-02T14:30:00Z``, ``2024-01-02 09:30:00-05:00``,
           ``2024-01-02``) or an integer epoch in s / ms / µs / ns, with exactly the rules of the CSV
           feed (:mod:`federation.feeds`); times without an offset are in ``feed.timezone`` (UTC)
``open``   decimal numbers (``472.16``, ``1e6``), prices in the account currency
``high``
``low``
``close``
``volume`` units traded; 0 means "unknown" to the simulated venue
``type``   optional: ``bar`` (the default) or ``end``
========== =================================================================================

For example (``redis-cli``)::

    XADD bars * symbol SPY ts 2024-01-02T14:30:00Z open 472.16 high 473.67 low 470.49 close 472.65 volume 9900
    XADD bars * type end

An entry with ``type = end`` ends the run once the bars before it are processed (``federation publish``
adds one after the data unless ``--no-end``). It is acknowledged like the bars, so a later run of the same
group continues after it.

Time steps
----------
Bars with the same ``ts`` form one time step (one tick: a one-row batch over ``feed.symbols``, the
symbols without a bar at that time marked invalid). A step goes to the agents when a bar with a later
``ts`` arrives, or when the stream has been idle for ``step_idle_ms``. Producers must therefore add bars
in time order across symbols, the bars of one time together.

Validation
----------
Each entry is checked with the rules of :mod:`federation.feeds.validation` (NaN or infinite values,
prices <= 0, negative volume, high < low, open or close outside [low, high], a time equal to or before
the symbol's previous bar), plus: every field present and readable, ``symbol`` in ``feed.symbols``, a
time not earlier than the step the feed has reached, and not the time of a step already handed out.
A bad entry is skipped, acknowledged and reported as a data issue (``on_invalid = "skip"``, the default:
ledger event ``data_issue``, summary ``data_issues``), or stops the run with the entry's id and the reason
(``on_invalid = "error"``; the entry then stays pending).

Consumer group and delivery
---------------------------
The run reads as ``consumer`` (default ``federation-<hostname>``) of ``group`` (default ``federation``),
creating the group if needed at ``start`` (``new``: entries added from then on; ``earliest``: the whole
stream); an existing group continues after the last entry it delivered. At start the run first reads
the entries this consumer left unacknowledged (its pending list), then new ones; ``claim_idle_s`` also
takes over entries other consumers left pending that long (a consumer that died). Entries are
acknowledged after their step went through the execution actor, so delivery is at least once: a run that
dies between the two sees that step again when it restarts.

Redis down
----------
A lost connection is reported (ledger event ``feed``/``redis_down``; a warning), no bars arrive while it
lasts, the run goes on (agents' late answers, halts, the kill switch) and reconnects with exponential
backoff (``reconnect_min_s`` doubling up to ``reconnect_max_s``). When Redis is back
(``feed``/``redis_up``, with the outage's length) the run first re-reads its pending entries (a reply
lost with the connection), then continues. A server that restarted without persistence has lost the
group: it is created again from the start of the stream (``feed``/``group_recreated``). The summary's
``feed`` counts outages and their seconds.

End of a run
------------
The end marker, ``max_bars`` accepted bars, ``[live] max_ticks`` steps, ``idle_timeout_s`` without any
entry (Redis being down does not count), the kill switch (``federation halt``) or Ctrl-C.
"""

from __future__ import annotations

import numpy as np

from federation.feeds.market_data import MarketData
from federation.feeds.redis_stream.messages import END_MARKER, encode_bar, parse_entry
from federation.feeds.redis_stream.publish import Published, publish_market
from federation.feeds.redis_stream.source import (
    FeedEvent,
    FeedStats,
    FeedUnavailableError,
    RedisBarSource,
    Step,
    default_consumer,
)

__all__ = [
    "END_MARKER",
    "FeedEvent",
    "FeedStats",
    "FeedUnavailableError",
    "Published",
    "RedisBarSource",
    "Step",
    "default_consumer",
    "empty_market",
    "encode_bar",
    "parse_entry",
    "publish_market",
]


def empty_market(symbols: tuple[str, ...]) -> MarketData:
    """No bars yet, over ``symbols``: what a streaming run knows before its first step."""
    shape = (0, len(symbols))
    return MarketData(
        symbols=symbols,
        ts=np.empty(0, dtype=np.int64),
        open=np.empty(shape),
        high=np.empty(shape),
        low=np.empty(shape),
        close=np.empty(shape),
        volume=np.empty(shape),
        valid=np.zeros(shape, dtype=np.bool_),
    )
