"""The entry format of a bar stream: encoding (for producers) and parsing (for the feed).

One stream entry per bar, fields ``symbol``, ``ts``, ``open``, ``high``, ``low``, ``close``, ``volume``
and an optional ``type`` (``bar``, the default, or ``end``); see :mod:`federation.feeds.redis_stream`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

from agents.model import ns_to_datetime

# The CSV feed's time parser, so that a stream and a CSV file accept exactly the same times.
from federation.feeds.csv_feed import _parse_time
from federation.feeds.market_data import OHLCV

BAR_FIELDS: Final = ("symbol", "ts", *OHLCV)
"""The fields of a bar entry, in the order :func:`encode_bar` writes them."""
TYPE_FIELD: Final = "type"
BAR_TYPE: Final = "bar"
END_TYPE: Final = "end"
END_MARKER: Final[Mapping[str, str]] = {TYPE_FIELD: END_TYPE}
"""The fields of the end-of-stream entry: a run reading it ends once the bars before it are processed."""


@dataclass(frozen=True, slots=True)
class ParsedBar:
    """A bar entry whose fields could be read (its values are checked later, with the other rules)."""

    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An entry that is not a readable bar: why, and its symbol if it had one ("?" otherwise)."""

    symbol: str
    reason: str


class EndOfStream:
    """The end marker (``type = end``)."""


END: Final = EndOfStream()

Parsed = ParsedBar | Unreadable | EndOfStream


def iso(ts: int) -> str:
    """Epoch nanoseconds as ISO 8601 UTC with a ``Z`` (microseconds shown only when not zero)."""
    return ns_to_datetime(ts).isoformat().replace("+00:00", "Z")


def number(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` (``20000`` rather than ``20000.0``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def encode_bar(
    symbol: str, ts: int, open_: float, high: float, low: float, close: float, volume: float
) -> dict[str, str]:
    """The fields of one bar entry; ``ts`` is epoch nanoseconds, written as ISO 8601 UTC."""
    return {
        "symbol": symbol,
        "ts": iso(ts),
        "open": number(open_),
        "high": number(high),
        "low": number(low),
        "close": number(close),
        "volume": number(volume),
    }


def parse_entry(fields: Mapping[str, str] | None, zone: ZoneInfo) -> Parsed:
    """Read one entry's fields (decoded strings). Fields other than the documented ones are ignored.

    ``zone`` is the feed's timezone, for ISO times without an offset. Numbers are read with ``float``,
    so ``nan`` or ``inf`` parse here and are refused by the value rules afterwards.
    """
    if not fields:
        return Unreadable(
            "?", "the entry was deleted from the stream (XDEL or XTRIM) before it was acknowledged"
        )
    kind = fields.get(TYPE_FIELD, BAR_TYPE).strip().lower()
    if kind == END_TYPE:
        return END
    symbol = fields.get("symbol", "").strip() or "?"
    if kind != BAR_TYPE:
        return Unreadable(symbol, f"type {kind!r} is not {BAR_TYPE!r} or {END_TYPE!r}")
    missing = [name for name in BAR_FIELDS if name not in fields or not fields[name].strip()]
    if missing:
        return Unreadable(
            symbol,
            f"missing field {', '.join(missing)}; a bar entry has the fields {', '.join(BAR_FIELDS)}",
        )
    try:
        ts = _parse_time(fields["ts"], zone)
    except ValueError as exc:
        return Unreadable(symbol, f"field ts: {exc}")
    values: list[float] = []
    for name in OHLCV:
        text = fields[name].strip()
        try:
            value = float(text)
        except ValueError:
            return Unreadable(symbol, f"field {name}: {text!r} is not a number")
        values.append(value)
    return ParsedBar(symbol, ts, *values)
