"""Historical replay from CSV files: the generic header format and LEAN equity daily/hour/minute trade bars.

The formats are documented in :mod:`federation.feeds`. A symbol's data is one file, a list of files or a
glob pattern; its files are read one by one, joined in time order (by each file's first record) and then
validated as one series, so the order and duplicate checks span files while every issue names its own
file and line. A file that cannot be read as asked (missing file, missing header column, unparseable
time, a LEAN quote or tick file) stops the load with :class:`DataError`; a record with a bad value
(non-numeric or failing :mod:`federation.feeds.validation`) is skipped or stops the load according to
``on_invalid``.
"""

from __future__ import annotations

import bisect
import csv
import glob
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from agents.model import FloatArray
from federation.config import CsvFeedConfig
from federation.errors import ConfigError, DataError
from federation.feeds.market_data import OHLCV, DataIssue, MarketData, SymbolBars
from federation.feeds.validation import SKIP_HINT, validate

TIME_COLUMNS = ("timestamp", "time", "datetime", "date")
"""Accepted names of the generic format's time column; the first one present in this order is used."""

LEAN_PRICE_SCALE = 10_000
"""LEAN equity prices are integers in deci-cents (1/10,000 of a dollar)."""

GLOB_CHARACTERS = ("*", "?")
"""A ``feed.paths`` entry containing one of these is a glob pattern."""

_MS_PER_DAY = 86_400_000
# The reference to an earlier record at the end of validation's order messages: "... line 12)".
_EARLIER_LINE = re.compile(r"line (\d+)\)$")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_GENERIC_HEADER = "timestamp,open,high,low,close,volume"

_MIN_NS, _MAX_NS = -(2**63), 2**63 - 1
# Upper bounds (exclusive) of an epoch integer's magnitude per unit; each range starts at 1973-03-03.
_EPOCH_UNITS = ((10**11, 10**9), (10**14, 10**6), (10**17, 10**3))


def load_csv(config: CsvFeedConfig, *, base_dir: Path) -> MarketData:
    """Read every ``config.paths`` file (relative paths against ``base_dir``), validate and align them."""
    zone = _zone(config)
    series: list[SymbolBars] = []
    issues: list[DataIssue] = []
    for symbol, entry in config.paths.items():
        files, label = _files(entry, symbol, base_dir)
        parse = _parse_lean if config.format == "lean" else _parse_generic
        parsed = [parse(file, symbol, zone) for file in files]
        bars, problems, sources = _join(parsed, symbol, label)
        bars = _in_window(bars, config, zone)
        clean, found = validate(bars, on_invalid="skip", problems=problems)
        found = [sources.localize(issue) for issue in found]
        if found and config.on_invalid == "error":
            raise DataError(f"{found[0]}; {SKIP_HINT}")
        if len(clean) == 0 and not found:
            raise DataError(
                f"{label}: no data rows for {symbol}; add bars or remove the file from feed.paths"
            )
        if len(clean) == 0:
            first = found[0]
            where = f"line {first.line}" if first.file == label else f"{first.file}:{first.line}"
            raise DataError(
                f"{label}: no valid records for {symbol}; {len(found)} skipped, the first: "
                f"{first.reason} ({where}); check the file and feed.format"
            )
        series.append(clean)
        issues.extend(found)
    return MarketData.align(series, issues)


def _files(entry: Path | list[Path], symbol: str, base_dir: Path) -> tuple[list[Path], str]:
    """The files of one ``feed.paths`` entry (globs expanded, sorted) and a label for messages."""
    items = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for item in items:
        if not any(char in str(item) for char in GLOB_CHARACTERS):
            files.append(item if item.is_absolute() else base_dir / item)
            continue
        pattern = str(item) if item.is_absolute() else str(Path(glob.escape(str(base_dir))) / item)
        matches = sorted(Path(match) for match in glob.glob(pattern) if Path(match).is_file())
        if not matches:
            shown = item if item.is_absolute() else base_dir / item
            raise DataError(
                f"{shown}: the glob pattern of {symbol} matches no file; check feed.paths (relative "
                "patterns are resolved against the config file's folder)"
            )
        files.extend(matches)
    seen: set[Path] = set()
    for file in files:
        if file in seen:
            raise DataError(f"{file}: listed more than once for {symbol} in feed.paths")
        seen.add(file)
    if len(items) == 1:
        only = items[0]
        label = str(only if only.is_absolute() else base_dir / only)
    else:
        label = f"{files[0]} and {len(files) - 1} more files"
    return files, label


class _Sources:
    """Where the records of several joined files came from: maps joined line numbers back to each file.

    File ``k``'s lines are numbered ``offsets[k] + line``, so the numbers stay unique and increasing.
    """

    def __init__(self, files: list[str], offsets: list[int]) -> None:
        self.files = files
        self.offsets = offsets

    def locate(self, line: int) -> tuple[str, int]:
        k = bisect.bisect_right(self.offsets, line - 1) - 1
        return self.files[k], line - self.offsets[k]

    def localize(self, issue: DataIssue) -> DataIssue:
        """The issue with its own file and line; an earlier record it cites is named the same way."""
        if len(self.files) == 1:
            return issue
        file, line = self.locate(issue.line)
        reason = issue.reason
        if reason.startswith(("duplicate timestamp", "timestamp ")):

            def earlier(match: re.Match[str]) -> str:
                other, other_line = self.locate(int(match.group(1)))
                return f"line {other_line})" if other == file else f"line {other_line} of {other})"

            reason = _EARLIER_LINE.sub(earlier, reason)
        return DataIssue(file, line, issue.symbol, reason)


def _join(
    parsed: list[tuple[SymbolBars, dict[int, str]]], symbol: str, label: str
) -> tuple[SymbolBars, dict[int, str], _Sources]:
    """One symbol's files as one series: ordered by their first record's time (empty files last)."""
    if len(parsed) == 1:
        bars, problems = parsed[0]
        return bars, problems, _Sources([bars.file], [0])
    parsed = sorted(parsed, key=lambda item: int(item[0].ts[0]) if len(item[0]) else _MAX_NS)
    offsets: list[int] = []
    joined_problems: dict[int, str] = {}
    offset = 0
    for bars, found in parsed:
        offsets.append(offset)
        joined_problems.update({offset + line: reason for line, reason in found.items()})
        offset += int(bars.line[-1]) if len(bars) else 0
    columns = [np.concatenate([getattr(bars, name) for bars, _ in parsed]) for name in OHLCV]
    joined = SymbolBars(
        symbol,
        label,
        np.concatenate([bars.line + start for (bars, _), start in zip(parsed, offsets, strict=True)]),
        np.concatenate([bars.ts for bars, _ in parsed]),
        *columns,
    )
    return joined, joined_problems, _Sources([bars.file for bars, _ in parsed], offsets)


def _zone(config: CsvFeedConfig) -> ZoneInfo:
    name = config.timezone or ("America/New_York" if config.format == "lean" else "UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"feed.timezone: {name!r} is not a known time zone; use an IANA name such as 'UTC' or "
            "'America/New_York'"
        ) from None


def _in_window(bars: SymbolBars, config: CsvFeedConfig, zone: ZoneInfo) -> SymbolBars:
    """The records whose local date (in ``zone``) is within [start, end]; an empty window is an error."""
    if config.start is None and config.end is None:
        return bars
    keep = np.ones(len(bars), dtype=np.bool_)
    if config.start is not None:
        keep &= bars.ts >= _midnight_ns(config.start, zone)
    if config.end is not None:
        keep &= bars.ts < _midnight_ns(config.end + timedelta(days=1), zone)
    if len(bars) and not keep.any():
        first, last = (_local_date(int(t), zone) for t in (bars.ts.min(), bars.ts.max()))
        raise DataError(
            f"{bars.file}: no records of {bars.symbol} between start {config.start} and end {config.end} "
            f"(the data covers {first} to {last}); change start/end in [feed]"
        )
    return bars.take(keep)


def _midnight_ns(day: date, zone: ZoneInfo) -> int:
    return _to_ns(datetime.combine(day, time()), zone)


def _local_date(ts: int, zone: ZoneInfo) -> date:
    return (_EPOCH + timedelta(microseconds=ts // 1000)).astimezone(zone).date()


def _to_ns(moment: datetime, zone: ZoneInfo) -> int:
    """Exact integer epoch nanoseconds (``timestamp()`` is a float); a naive ``moment`` is in ``zone``.

    A naive wall time that occurs twice (DST ends) is the first one; one that is skipped (DST starts) is
    read with the offset before the change. ``zone.utcoffset`` is used because it is several times faster
    than attaching the zone and subtracting aware datetimes.
    """
    if moment.tzinfo is None:
        offset = zone.utcoffset(moment)
        delta = moment - _NAIVE_EPOCH - (offset if offset is not None else timedelta())
    else:
        delta = moment - _EPOCH
    return delta // _MICROSECOND * 1000


def _read(file: Path, symbol: str) -> tuple[list[int], list[list[str]]]:
    """Line numbers (1-based; a quoted multi-line row counts as its last line) and fields of every
    non-blank row."""
    try:
        handle = file.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(
            f"{file}: data file of {symbol} not found; check feed.paths (relative paths are resolved "
            "against the config file's folder)"
        ) from None
    except OSError as exc:
        raise DataError(f"{file}: cannot open the data file of {symbol}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            numbered = [(reader.line_num, row) for row in reader if len(row) > 1 or (row and row[0].strip())]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(
                f"{file}: not readable as UTF-8 CSV near line {reader.line_num + 1}: {exc}"
            ) from None
    return [line for line, _ in numbered], [row for _, row in numbered]


def _parse_generic(file: Path, symbol: str, zone: ZoneInfo) -> tuple[SymbolBars, dict[int, str]]:
    lines, rows = _read(file, symbol)
    if not rows:
        raise DataError(f"{file}: the file is empty; expected a header row such as {_GENERIC_HEADER}")
    header = rows[0]
    names = [name.strip().lower() for name in header]
    time_column = next((name for name in TIME_COLUMNS if name in names), None)
    missing = [name for name in OHLCV if name not in names]
    if time_column is None or missing:
        if time_column is None:
            missing.insert(0, "a time column (" + " / ".join(TIME_COLUMNS) + ")")
        hint = ""
        if _looks_like_data(header[0]):
            hint = " (this looks like a data row: the first line must be the header; LEAN files need "
            hint += 'format = "lean")'
        raise DataError(
            f"{file}:{lines[0]}: missing column {', '.join(missing)} in the header {','.join(header)}"
            f"{hint}; the generic format needs a header with a time column and open, high, low, close, "
            f"volume (any order, any case), e.g. {_GENERIC_HEADER}"
        )
    lines, rows = lines[1:], rows[1:]
    t = names.index(time_column)
    columns = [names.index(name) for name in OHLCV]
    width = max(t, *columns) + 1
    problems: dict[int, str] = {}
    for i in [i for i, row in enumerate(rows) if len(row) < width]:
        if len(rows[i]) <= t:
            raise DataError(
                f"{file}:{lines[i]}: no {time_column} value (the row has {len(rows[i])} fields, the header "
                f"{len(header)}); fix or delete the line"
            )
        problems[lines[i]] = f"the row has {len(rows[i])} fields, the header {len(header)}"
        rows[i] = rows[i] + ["nan"] * (width - len(rows[i]))
    table = list(zip(*rows, strict=False)) if rows else [()] * width
    stamps: list[int] = []
    for line, text in zip(lines, table[t], strict=True):
        try:
            stamps.append(_parse_time(text, zone))
        except ValueError as exc:
            raise DataError(f"{file}:{line}: column {time_column}: {exc}") from None
    cells = [table[column] for column in columns]
    return _bars(file, symbol, lines, stamps, cells, problems, scale=1), problems


def _parse_lean(file: Path, symbol: str, zone: ZoneInfo) -> tuple[SymbolBars, dict[int, str]]:
    """A LEAN equity trade-bar file; the first row tells daily/hour ("YYYYMMDD HH:MM") from minute (ms)."""
    lines, rows = _read(file, symbol)
    name = file.name.lower()
    if name.endswith("_tick.csv"):
        raise DataError(
            f"{file}: a LEAN tick file; ticks are not bars and are not supported: use the minute, hour or "
            "daily trade-bar files"
        )
    if name.endswith("_quote.csv") or (rows and len(rows[0]) == 11):
        raise DataError(
            f"{file}: a LEAN quote (bid/ask) bar file; quote bars are not supported: use the *_trade.csv "
            "files (time,open,high,low,close,volume)"
        )
    first = rows[0][0].strip() if rows else ""
    midnight = _file_date(file) if first.isascii() and first.isdigit() else None
    problems: dict[int, str] = {}
    for i in [i for i, row in enumerate(rows) if len(row) < 6]:
        problems[lines[i]] = (
            f"the row has {len(rows[i])} fields; LEAN rows have 6: time,open,high,low,close,volume"
        )
        rows[i] = rows[i] + ["nan"] * (6 - len(rows[i]))
    table = list(zip(*rows, strict=False)) if rows else [()] * 6
    stamps: list[int] = []
    for line, text in zip(lines, table[0], strict=True):
        try:
            if midnight is None:
                stamps.append(_parse_lean_time(text, zone))
            else:
                stamps.append(_parse_lean_ms(text, midnight, zone))
        except ValueError as exc:
            if midnight is not None:
                raise DataError(f"{file}:{line}: column 1 (time): {exc}") from None
            hint = (
                ""
                if stamps
                else ' (a header row? LEAN files have none; with a header use format = "generic")'
            )
            raise DataError(
                f"{file}:{line}: column 1 (time): {text!r} is not 'YYYYMMDD HH:MM' as in LEAN equity "
                f"daily/hour files{hint}"
            ) from None
    return _bars(file, symbol, lines, stamps, table[1:6], problems, scale=LEAN_PRICE_SCALE), problems


def _bars(
    file: Path,
    symbol: str,
    lines: list[int],
    stamps: list[int],
    cells: Sequence[Sequence[str]],
    problems: dict[int, str],
    *,
    scale: int,
) -> SymbolBars:
    """Columns of strings to :class:`SymbolBars`; non-numeric cells become NaN plus an entry in problems."""
    values = [_floats(column, name, lines, problems) for column, name in zip(cells, OHLCV, strict=True)]
    if scale != 1:
        for prices in values[:4]:
            prices /= scale
    return SymbolBars(
        symbol, str(file), np.array(lines, dtype=np.int64), np.array(stamps, dtype=np.int64), *values
    )


def _floats(cells: Sequence[str], column: str, lines: list[int], problems: dict[int, str]) -> FloatArray:
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        try:
            out[i] = float(cell)
        except ValueError:
            out[i] = np.nan
            problems.setdefault(lines[i], f"column {column}: {cell.strip()!r} is not a number")
    return out


def _parse_time(text: str, zone: ZoneInfo) -> int:
    """ISO 8601 (naive values are in ``zone``) or an integer epoch in s / ms / µs / ns, to epoch ns.

    An 8-digit integer is a basic ISO date (YYYYMMDD), not an epoch value.
    """
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) != 8:
        number = int(text)
        factor = next((factor for bound, factor in _EPOCH_UNITS if number < bound), 1)
        return _in_range(number * factor, text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date/time (2024-01-31, 2024-01-31T09:30:00-05:00) or an "
            "integer epoch (seconds, milliseconds, microseconds or nanoseconds)"
        ) from None
    return _in_range(_to_ns(moment, zone), text)


def _in_range(ts: int, text: str) -> int:
    if not _MIN_NS <= ts <= _MAX_NS:
        raise ValueError(
            f"{text!r} is outside 1677-09-22 .. 2262-04-11, the range of nanosecond timestamps "
            "(an epoch value is read in seconds below 10^11, milliseconds below 10^14, microseconds "
            "below 10^17, nanoseconds above)"
        )
    return ts


def _parse_lean_time(text: str, zone: ZoneInfo) -> int:
    if len(text) != 14 or text[8] != " " or text[11] != ":" or not text[:8].isdigit():
        raise ValueError(text)
    return _in_range(_to_ns(datetime.fromisoformat(f"{text[:8]}T{text[9:]}"), zone), text)


def _file_date(file: Path) -> datetime:
    """Midnight of the date a LEAN minute file is named after (``YYYYMMDD_...``): its rows hold no date."""
    name = file.name
    try:
        if len(name) < 9 or name[8] != "_" or not name[:8].isdigit():
            raise ValueError(name)
        return datetime(int(name[:4]), int(name[4:6]), int(name[6:8]))
    except ValueError:
        raise DataError(
            f"{file}: rows with a time in milliseconds since midnight (LEAN minute bars) take their date "
            "from the file name, which must start with YYYYMMDD_ (e.g. 20131004_spy_minute_trade.csv); "
            "rename the file"
        ) from None


def _parse_lean_ms(text: str, midnight: datetime, zone: ZoneInfo) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) >= _MS_PER_DAY:
        raise ValueError(
            f"{text!r} is not milliseconds since midnight (0 to {_MS_PER_DAY - 1}) as in the other rows of "
            "this LEAN minute file"
        )
    return _in_range(_to_ns(midnight + timedelta(milliseconds=int(text)), zone), text)


def _looks_like_data(cell: str) -> bool:
    try:
        _parse_time(cell, ZoneInfo("UTC"))
    except ValueError:
        return cell.strip()[:8].isdigit()
    return True
