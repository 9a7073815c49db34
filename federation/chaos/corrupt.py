"""Data corruption for CSV feeds: copies of the feed's files holding bad records the feed must skip.

The data validation layer (:mod:`federation.feeds.validation`) drops a record whose price is NaN or not
positive, and one whose timestamp equals (duplicate) or precedes (out of order) the previous record of its
symbol. :func:`corrupt_csv_feed` writes copies of a ``kind = "csv"`` feed's files with a share of such
records injected, and says how many of each kind it injected, so a fault test can check that every one
was skipped and that the good data is unchanged::

    corrupted = corrupt_csv_feed(config, tmp_path / "feed", rate=0.005, seed=7)
    market = load_feed(with_corrupted_feed(config, corrupted).feed, base_dir=config.base_dir, seed=0)
    assert count_issues(market.issues) == corrupted.counts     # (for a feed that had no bad record)

The kinds:

- ``nan_price``: one of open, high, low, close of a record becomes ``nan``;
- ``non_positive_price``: one of them becomes 0 or its negative;
- ``out_of_order``: a copy of an earlier record of the same file (an earlier timestamp) is inserted after
  a later record;
- ``duplicate``: a copy of a record is inserted right after it (the same timestamp again).

Only records within the feed's ``start`` / ``end`` window that the feed accepts are used, so every
injection is read and counted. Each one is placed so that it changes nothing else: a record whose price
is spoiled is one whose removal lets no previously skipped record in, and copies never displace the
record they copy. Files of the feed with nothing injected are copied unchanged; file names are kept (a
LEAN minute file takes its date from its name).
"""

from __future__ import annotations

import codecs
import csv
import io
import random
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from federation.config import CsvFeedConfig, FleetConfig
from federation.errors import ConfigError
from federation.feeds.csv_feed import _files, _in_window, _join, _parse_generic, _parse_lean, _zone
from federation.feeds.market_data import OHLCV, DataIssue
from federation.feeds.validation import validate

CorruptionKind = Literal["nan_price", "non_positive_price", "out_of_order", "duplicate"]
KINDS: tuple[CorruptionKind, ...] = get_args(CorruptionKind)

MAX_RATE = 0.25
"""The largest share of records that may be corrupted (beyond it, bad records would mostly hit each
other's neighbours and the counts could no longer be exact)."""

_SOURCE_WINDOW = 10
"""An out-of-order copy is of one of this many accepted records before the one it follows."""


@dataclass(frozen=True, slots=True)
class Injection:
    """One bad record written into a corrupted copy."""

    kind: CorruptionKind
    symbol: str
    file: Path
    """The corrupted copy that holds it."""
    line: int
    """Its line in ``file`` (1-based), as the feed's skipped-record report will name it."""
    ts: int
    """Its bar time (epoch ns): of the record spoiled, or of the record copied."""


@dataclass(frozen=True, slots=True)
class CorruptedFeed:
    """What :func:`corrupt_csv_feed` wrote."""

    paths: dict[str, list[Path]]
    """Symbol -> its corrupted files (absolute), in the order of the feed's own; ``feed.paths`` for them."""
    counts: dict[CorruptionKind, int]
    """Injected records per kind (every kind present, 0 for none)."""
    injections: tuple[Injection, ...]
    records: int
    """Accepted records of the window, which ``rate`` was applied to."""
    spoiled: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    """(symbol, ts) of the good records whose prices were spoiled: the bars the feed loses."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def issue_kind(reason: str) -> CorruptionKind | None:
    """The corruption kind a skipped record's reason (``DataIssue.reason``) is, or None for another."""
    if reason.startswith("duplicate timestamp"):
        return "duplicate"
    if reason.startswith("timestamp ") and "is out of order" in reason:
        return "out_of_order"
    if re.match(r"(open|high|low|close) is nan;", reason):
        return "nan_price"
    if re.match(r"(open|high|low|close) \S+ is not positive", reason):
        return "non_positive_price"
    return None


def count_issues(issues: Iterable[DataIssue]) -> dict[CorruptionKind, int]:
    """Skipped records per corruption kind (every kind present; other reasons are not counted)."""
    found = Counter(kind for kind in (issue_kind(i.reason) for i in issues) if kind is not None)
    return {kind: found[kind] for kind in KINDS}


def with_corrupted_feed(config: FleetConfig, corrupted: CorruptedFeed) -> FleetConfig:
    """A copy of ``config`` whose feed reads the corrupted files (everything else unchanged)."""
    feed = _csv_feed(config)
    return config.model_copy(update={"feed": feed.model_copy(update={"paths": dict(corrupted.paths)})})


def _csv_feed(config: FleetConfig) -> CsvFeedConfig:
    if not isinstance(config.feed, CsvFeedConfig):
        raise ConfigError(
            f"data corruption needs a CSV feed; this config's feed.kind is {config.feed.kind!r}; use a "
            'config with [feed] kind = "csv" or leave data corruption out of the plan'
        )
    return config.feed


# ------------------------------------------------------------------------------------------------ files
@dataclass(slots=True)
class _Text:
    """One data file as physical lines, and which record (by the CSV reader's line number, the number
    the feed reports) is exactly one physical line (only those are edited or copied)."""

    lines: list[str]
    bom: bool
    single: dict[int, list[str]]
    price_columns: list[int]
    """Columns of open, high, low, close."""
    modified: dict[int, str] = field(default_factory=dict)
    """Line -> its new text."""
    after: dict[int, list[str]] = field(default_factory=dict)
    """Line -> the lines inserted after it."""

    @classmethod
    def read(cls, path: Path, data_format: str) -> _Text:
        raw = path.read_bytes()
        bom = raw.startswith(codecs.BOM_UTF8)
        text = raw.decode("utf-8-sig")
        lines = io.StringIO(text, newline="").readlines()
        reader = csv.reader(io.StringIO(text, newline=""))
        single: dict[int, list[str]] = {}
        columns = [1, 2, 3, 4]  # LEAN: time,open,high,low,close,volume
        for k, row in enumerate(reader):
            number = reader.line_num
            if k == 0 and data_format != "lean":  # the generic format's header (the feed checked it)
                names = [name.strip().lower() for name in row]
                columns = [names.index(name) for name in OHLCV[:4]]
            if list(csv.reader([lines[number - 1]])) == [row]:
                single[number] = row
        return cls(lines, bom, single, columns)

    def ending(self, line: int) -> str:
        text = self.lines[line - 1]
        return text[len(text.rstrip("\r\n")) :] or "\n"

    def write(self, path: Path) -> dict[tuple[int, int], int]:
        """Write the edited file; returns {(anchor line, k): output line} of the k-th copy inserted after
        each anchor, and {(line, -1): output line} of each edited line."""
        out: list[str] = []
        where: dict[tuple[int, int], int] = {}
        for number, text in enumerate(self.lines, start=1):
            if number in self.modified:
                text = self.modified[number]
                where[(number, -1)] = len(out) + 1
            inserted = self.after.get(number, [])
            if inserted and not text.endswith(("\n", "\r")):
                text += "\n"
            out.append(text)
            for k, copy in enumerate(inserted):
                out.append(copy)
                where[(number, k)] = len(out)
        path.write_text(("\ufeff" if self.bom else "") + "".join(out), encoding="utf-8", newline="")
        return where


def _format_row(fields: list[str], ending: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=ending).writerow(fields)
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class _Record:
    """An in-window record of one symbol, in the order the feed validates them."""

    file: int
    """Index into the symbol's files."""
    line: int
    ts: int
    good: bool


# ------------------------------------------------------------------------------------------------- main
def corrupt_csv_feed(
    config: FleetConfig,
    out_dir: Path,
    *,
    rate: float,
    seed: int,
    kinds: Sequence[CorruptionKind] = KINDS,
) -> CorruptedFeed:
    """Write corrupted copies of ``config``'s CSV feed into ``out_dir`` (created; one folder per symbol).

    ``round(rate * records)`` bad records are injected, ``records`` being the records of the feed's
    ``start`` / ``end`` window that the feed accepts; the kinds take turns (in an order drawn from
    ``seed``), so each of ``kinds`` gets its share. The same config, rate and seed give the same files.
    Point a config at them with :func:`with_corrupted_feed`.
    """
    feed = _csv_feed(config)
    if not 0.0 <= rate <= MAX_RATE:
        raise ConfigError(f"data corruption rate {rate!r} is outside 0 .. {MAX_RATE}; e.g. 0.005 for 0.5 %")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ConfigError(f"data corruption kinds {list(kinds)!r}: choose one or more of {list(KINDS)}")
    zone = _zone(feed)
    parse = _parse_lean if feed.format == "lean" else _parse_generic
    symbols: dict[str, tuple[list[Path], list[_Record]]] = {}
    for symbol, entry in feed.paths.items():
        files, label = _files(entry, symbol, config.base_dir)
        parsed = [parse(file, symbol, zone) for file in files]
        joined, problems, sources = _join(parsed, symbol, label)
        window = _in_window(joined, feed, zone)
        clean, _ = validate(window, on_invalid="skip", problems=problems)
        accepted = set(clean.line.tolist())
        index = {str(file): k for k, file in enumerate(files)}
        records = []
        for joined_line, ts in zip(window.line.tolist(), window.ts.tolist(), strict=True):
            name, line = sources.locate(joined_line)
            records.append(_Record(index[name], line, ts, joined_line in accepted))
        symbols[symbol] = (files, records)

    texts: dict[tuple[str, int], _Text] = {}

    def text(symbol: str, k: int) -> _Text:
        if (symbol, k) not in texts:
            texts[(symbol, k)] = _Text.read(symbols[symbol][0][k], feed.format)
        return texts[(symbol, k)]

    rng = random.Random(seed)
    pool = [(s, i) for s, (_, records) in symbols.items() for i, r in enumerate(records) if r.good]
    total = round(rate * len(pool))
    rng.shuffle(pool)
    order = list(kinds)
    rng.shuffle(order)
    wanted = Counter(order[n % len(order)] for n in range(total))
    turn = 0
    spoiled: set[tuple[str, int]] = set()
    placed: list[tuple[CorruptionKind, str, int, int, int, int]] = []
    """kind, symbol, file, anchor line, copy number (-1: the anchor itself was edited), ts."""
    for symbol, i in pool:
        if len(placed) == total:
            break
        records = symbols[symbol][1]
        record = records[i]
        body = text(symbol, record.file)
        if record.line not in body.single:
            continue
        # The kinds still wanted, the next in turn first: each record takes the first it can be.
        for kind in [order[(turn + j) % len(order)] for j in range(len(order))]:
            if wanted[kind] == 0:
                continue
            if kind in ("nan_price", "non_positive_price"):
                after = records[i + 1] if i + 1 < len(records) else None
                if after is not None and not after.good:
                    continue  # its removal could let a skipped record after it in
                fields = list(body.single[record.line])
                column = rng.choice(body.price_columns)
                if kind == "nan_price":
                    fields[column] = "nan"
                else:
                    fields[column] = rng.choice(["0", f"-{fields[column].strip().lstrip('+-')}"])
                body.modified[record.line] = _format_row(fields, body.ending(record.line))
                spoiled.add((symbol, record.ts))
                placed.append((kind, symbol, record.file, record.line, -1, record.ts))
            else:
                source = record
                if kind == "out_of_order":
                    earlier = [
                        r
                        for r in records[max(0, i - 4 * _SOURCE_WINDOW) : i]
                        if r.good and r.file == record.file and r.line in body.single
                    ][-_SOURCE_WINDOW:]
                    if not earlier:
                        continue
                    source = rng.choice(earlier)
                copies = body.after.setdefault(record.line, [])
                copies.append(body.lines[source.line - 1].rstrip("\r\n") + body.ending(record.line))
                placed.append((kind, symbol, record.file, record.line, len(copies) - 1, source.ts))
            wanted[kind] -= 1
            turn = (order.index(kind) + 1) % len(order)
            break
    if len(placed) < total:
        missing = ", ".join(f"{n} {kind}" for kind, n in wanted.items() if n)
        raise ConfigError(
            f"data corruption rate {rate:g} asks for {total} bad records among the {len(pool)} records of "
            f"the feed's window, but {missing} found no record to be placed at; lower the rate"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[Path]] = {}
    where: dict[tuple[str, int], dict[tuple[int, int], int]] = {}
    folders: set[str] = set()
    for symbol, (files, _) in symbols.items():
        folder = _folder_name(symbol, folders)
        names_clash = len({f.name for f in files}) < len(files)
        targets = []
        for k, file in enumerate(files):
            target = out_dir / folder / (f"{k:04d}" if names_clash else "") / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (symbol, k) in texts and (texts[(symbol, k)].modified or texts[(symbol, k)].after):
                where[(symbol, k)] = texts[(symbol, k)].write(target)
            else:
                shutil.copyfile(file, target)
            targets.append(target.resolve())
        paths[symbol] = targets

    injections = [
        Injection(kind, symbol, paths[symbol][k], where[(symbol, k)][(line, copy)], ts)
        for kind, symbol, k, line, copy, ts in placed
    ]
    counts = Counter(i.kind for i in injections)
    return CorruptedFeed(
        paths=paths,
        counts={kind: counts[kind] for kind in KINDS},
        injections=tuple(sorted(injections, key=lambda i: (i.symbol, str(i.file), i.line))),
        records=len(pool),
        spoiled=frozenset(spoiled),
    )


def _folder_name(symbol: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", symbol) or "symbol"
    name, n = base, 1
    while name.lower() in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name.lower())
    return name
