"""``[events]``: the config of events out (publishing to Redis streams) and the stream names.

No import of :mod:`federation.config` here: that module imports this one.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from federation.ledger import mask_url

StreamName = Literal["signals", "orders", "fills", "events"]
STREAMS: tuple[StreamName, ...] = ("signals", "orders", "fills", "events")
"""The streams a publisher can write, each ``{prefix}:{name}``."""


class EventStreamConfig(BaseModel):
    """``[events]``: publish signals, orders, fills and audit events to Redis streams (off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        None,
        description="Redis to publish to: redis://[user:password@]host:port/db, rediss://... (TLS) or "
        "unix:///path/to/redis.sock; None (default) publishes nothing.",
    )
    prefix: str = Field(
        "federation",
        min_length=1,
        max_length=200,
        description="Stream names are '{prefix}:signals', '{prefix}:orders', '{prefix}:fills', "
        "'{prefix}:events'.",
    )
    streams: tuple[StreamName, ...] = Field(
        STREAMS,
        min_length=1,
        description="Which streams to publish: any of 'signals', 'orders', 'fills', 'events'.",
    )
    maxlen: int = Field(
        100_000,
        ge=100,
        le=1_000_000_000,
        description="Each stream keeps about this many newest entries (approximate trimming: Redis trims "
        "whole nodes of ~100 entries, so a stream may hold a little more).",
    )
    buffer: int = Field(
        100_000,
        ge=1,
        le=100_000_000,
        description="Entries kept in memory while Redis is unreachable; beyond that the oldest are dropped "
        "(counted in the report).",
    )
    connect_timeout_s: float = Field(2.0, gt=0, le=60, description="Timeout of a connection attempt.")
    socket_timeout_s: float = Field(
        5.0, gt=0, le=300, description="Timeout of one pipelined batch of XADDs (the publisher's thread)."
    )
    reconnect_min_s: float = Field(
        0.5, gt=0, le=60, description="First reconnection delay; it doubles per failed attempt."
    )
    reconnect_max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest delay between reconnection attempts."
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"url {mask_url(value)!r} must start with redis://, rediss:// (TLS) or unix://, e.g. "
                "'redis://127.0.0.1:6379/0' (or leave url out to publish nothing)"
            )
        if scheme == "unix" and not urlsplit(value).path:
            raise ValueError("a unix:// url needs the socket's path, e.g. 'unix:///var/run/redis/redis.sock'")
        try:  # builds the connection object without connecting: catches bad ports and query options
            pool = redis.ConnectionPool.from_url(value)
            pool.make_connection()
        except TypeError as exc:
            option = str(exc).rsplit(" ", 1)[-1]
            raise ValueError(
                f"url has an unknown option {option} in its query; see redis-py's from_url for the options"
            ) from None
        except ValueError as exc:
            raise ValueError(f"url {mask_url(value)!r} is invalid: {exc}") from None
        return value

    @field_validator("streams")
    @classmethod
    def _canonical_order(cls, value: tuple[StreamName, ...]) -> tuple[StreamName, ...]:
        return tuple(name for name in STREAMS if name in value)  # no duplicates, one order everywhere

    @field_validator("prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if any(c.isspace() for c in value):
            raise ValueError(f"prefix {value!r} contains white space; use e.g. 'federation' or 'desk-1'")
        if value.endswith(":"):
            raise ValueError(
                f"prefix {value!r} ends with ':'; leave it out ('{value.rstrip(':')}'), the publisher adds "
                "it before the stream's name"
            )
        return value

    @model_validator(mode="after")
    def _max_above_min(self) -> EventStreamConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s = {self.reconnect_max_s} is below reconnect_min_s = "
                f"{self.reconnect_min_s}; it is the longest delay between reconnection attempts, raise it"
            )
        return self

    def stream(self, name: StreamName) -> str:
        """The Redis key of one stream, e.g. ``federation:orders``."""
        return f"{self.prefix}:{name}"
