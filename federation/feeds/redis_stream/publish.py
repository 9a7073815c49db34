"""Replay loaded bars into a stream (``federation publish``): for demos, tests and benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from redis.exceptions import ResponseError

from federation.errors import DataError
from federation.feeds.market_data import MarketData
from federation.feeds.redis_stream.messages import END_MARKER, encode_bar
from federation.feeds.redis_stream.source import (
    CONNECTION_ERRORS,
    connect,
    error_code,
    unreachable,
)
from federation.ledger import mask_url

CHUNK = 1000
"""Entries per pipelined round trip when not paced."""


@dataclass(frozen=True, slots=True)
class Published:
    """What :func:`publish_market` wrote."""

    bars: int
    end_marker: bool
    seconds: float
    first_id: str | None
    last_id: str | None


def publish_market(
    market: MarketData, *, url: str, stream: str, rate: float | None = None, end: bool = True
) -> Published:
    """Add every bar of ``market`` to ``stream`` in time order (symbols of one time in column order),
    then the end marker unless ``end`` is False.

    ``rate`` paces the writes to that many bars per second (default: as fast as pipelined XADDs go).
    Raises :class:`FeedUnavailableError` when the server cannot be reached and :class:`DataError` when
    the key is not a stream.
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate {rate} must be > 0 bars per second")
    client = connect(url)
    rows, cols = np.nonzero(market.valid)
    columns = [market.open, market.high, market.low, market.close, market.volume]
    values = [array[rows, cols].tolist() for array in columns]
    stamps = market.ts[rows].tolist()
    symbols = [market.symbols[j] for j in cols.tolist()]
    chunk = CHUNK if rate is None else max(1, min(CHUNK, int(rate / 20)))
    first_id: str | None = None
    last_id: str | None = None
    started = time.perf_counter()
    try:
        client.ping()
        for first in range(0, len(stamps), chunk):
            pipe = client.pipeline(transaction=False)
            for i in range(first, min(first + chunk, len(stamps))):
                fields = encode_bar(symbols[i], stamps[i], *(column[i] for column in values))
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            written: list[str] = pipe.execute()
            first_id = first_id or written[0]
            last_id = written[-1]
            if rate is not None:
                ahead = (first + chunk) / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
        if end:
            client.xadd(stream, dict(END_MARKER))  # type: ignore[arg-type]
    except CONNECTION_ERRORS as exc:
        raise unreachable(url, exc, "start the server (e.g. redis-server) or pass --redis URL") from None
    except ResponseError as exc:
        if error_code(exc, "WRONGTYPE"):
            raise DataError(
                f"--stream: the key {stream!r} at {mask_url(url)} is not a stream; choose another name"
            ) from None
        raise
    finally:
        client.close()
    return Published(
        bars=len(stamps),
        end_marker=end,
        seconds=time.perf_counter() - started,
        first_id=first_id,
        last_id=last_id,
    )
