"""Record checks shared by every feed: a bar must be finite, positive, consistent and later than the last.

A record fails the first rule it breaks, in this order:

1. a field could not be parsed (reported by the parser, e.g. a non-numeric price);
2. open, high, low, close or volume is NaN or infinite;
3. open, high, low or close is <= 0;
4. volume is negative;
5. high < low;
6. open or close is outside [low, high] (relative tolerance :data:`TOLERANCE`);
7. the timestamp equals (duplicate) or precedes (out of order) the previous accepted record of the symbol.

Rule 7 only looks at records that passed rules 1-6, so one bad row does not make its neighbours fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

from agents.model import FloatArray, IntArray, ns_to_datetime
from federation.errors import DataError
from federation.feeds.market_data import DataIssue, SymbolBars

OnInvalid = Literal["skip", "error"]

TOLERANCE = 1e-9
"""Relative slack for "open/close within [low, high]", so that float rounding is not a bad record."""

SKIP_HINT = 'fix the file, or set on_invalid = "skip" in [feed] to skip such records'

_OK, _NOT_FINITE, _NOT_POSITIVE, _NEGATIVE_VOLUME, _HIGH_BELOW_LOW, _OPEN_OUTSIDE, _CLOSE_OUTSIDE = range(7)
_PRICES = ("open", "high", "low", "close")


def value_problems(
    open_: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray
) -> npt.NDArray[np.int8]:
    """Per record (any array shape), the first value rule it breaks as a code; 0 means valid."""
    codes = np.zeros(open_.shape, dtype=np.int8)
    # inf - inf is NaN and compares False; such records are caught by the finiteness rule.
    with np.errstate(invalid="ignore"):
        slack = TOLERANCE * np.abs(high)
        rules = (
            (_CLOSE_OUTSIDE, (close < low - slack) | (close > high + slack)),
            (_OPEN_OUTSIDE, (open_ < low - slack) | (open_ > high + slack)),
            (_HIGH_BELOW_LOW, high < low),
            (_NEGATIVE_VOLUME, volume < 0),
            (_NOT_POSITIVE, (open_ <= 0) | (high <= 0) | (low <= 0) | (close <= 0)),
            (
                _NOT_FINITE,
                ~(np.isfinite(open_) & np.isfinite(high) & np.isfinite(low) & np.isfinite(close))
                | ~np.isfinite(volume),
            ),
        )
    # Assigned from the last rule to the first, so that the first rule broken wins.
    for code, broken in rules:
        codes[broken] = code
    return codes


def describe(code: int, open_: float, high: float, low: float, close: float, volume: float) -> str:
    """The message for one record that broke value rule ``code`` (from :func:`value_problems`)."""
    values = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    if code == _NOT_FINITE:
        name, value = next((k, v) for k, v in values.items() if not np.isfinite(v))
        return f"{name} is {value}; prices and volume must be finite numbers"
    if code == _NOT_POSITIVE:
        name, value = next((k, values[k]) for k in _PRICES if values[k] <= 0)
        return f"{name} {value:g} is not positive; prices must be > 0"
    if code == _NEGATIVE_VOLUME:
        return f"volume {volume:g} is negative"
    if code == _HIGH_BELOW_LOW:
        return f"high {high:g} is below low {low:g}"
    name = "open" if code == _OPEN_OUTSIDE else "close"
    return f"{name} {values[name]:g} is outside [low {low:g}, high {high:g}]"


def validate(
    bars: SymbolBars, *, on_invalid: OnInvalid, problems: Mapping[int, str] | None = None
) -> tuple[SymbolBars, list[DataIssue]]:
    """The records of ``bars`` that pass every rule, and one :class:`DataIssue` per record dropped.

    ``problems`` maps a line number of ``bars`` to a parse failure found by the parser (the record's
    values there are NaN). With ``on_invalid="error"`` the first bad record in file order raises
    :class:`DataError` instead.
    """
    codes = value_problems(bars.open, bars.high, bars.low, bars.close, bars.volume)
    reasons: dict[int, str] = {}
    if problems:
        rows = np.flatnonzero(np.isin(bars.line, np.fromiter(problems, dtype=np.int64)))
        for row in rows.tolist():
            reasons[row] = problems[int(bars.line[row])]
    bad = codes != _OK
    bad[list(reasons)] = True
    for row in np.flatnonzero(bad).tolist():
        if row not in reasons:
            reasons[row] = describe(
                int(codes[row]),
                float(bars.open[row]),
                float(bars.high[row]),
                float(bars.low[row]),
                float(bars.close[row]),
                float(bars.volume[row]),
            )
    reasons.update(_order_problems(bars, np.flatnonzero(~bad)))

    issues = [DataIssue(bars.file, int(bars.line[row]), bars.symbol, reasons[row]) for row in sorted(reasons)]
    if issues and on_invalid == "error":
        raise DataError(f"{issues[0]}; {SKIP_HINT}")
    keep = np.ones(len(bars), dtype=np.bool_)
    keep[list(reasons)] = False
    return (bars.take(keep) if issues else bars), issues


def _order_problems(bars: SymbolBars, candidates: IntArray) -> dict[int, str]:
    """Rule 7 over the rows ``candidates``: {row: reason} for duplicates and out-of-order timestamps.

    A row is accepted when its time is later than every earlier candidate's: rejected rows never raise
    the running maximum, so the maximum of all earlier candidates equals that of the accepted ones.
    """
    ts = bars.ts[candidates]
    if ts.shape[0] < 2:
        return {}
    previous_max = np.maximum.accumulate(ts)[:-1]
    rejected = np.flatnonzero(ts[1:] <= previous_max) + 1
    if rejected.shape[0] == 0:
        return {}
    accepted = np.setdiff1d(np.arange(ts.shape[0]), rejected, assume_unique=True)
    # The accepted row just before each rejected one: it holds the running maximum.
    before = accepted[np.searchsorted(accepted, rejected) - 1]
    out = {}
    for i, j in zip(rejected.tolist(), before.tolist(), strict=True):
        row, prior = int(candidates[i]), int(candidates[j])
        when, prior_when = _iso(int(ts[i])), _iso(int(ts[j]))
        where = f"line {bars.line[prior]}" if bars.line[prior] > 0 else "the previous record"
        if ts[i] == ts[j]:
            out[row] = f"duplicate timestamp {when} (same as {where})"
        else:
            out[row] = f"timestamp {when} is out of order (earlier than {prior_when} at {where})"
    return out


def _iso(ts: int) -> str:
    return ns_to_datetime(ts).isoformat().replace("+00:00", "Z")
