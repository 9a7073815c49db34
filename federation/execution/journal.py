"""The order journal: every order is appended here before it leaves the execution actor.

One JSON line per order, written and flushed (optionally fsynced) before the venue call that sends it, with
everything needed to book its fills: the order (id, sequence number, decision time, symbol, column,
signed lots, type, limit price) and its allocations (agent, signed lots). An execution actor killed
between sending an order and recording it in the ledger therefore loses nothing: the restarted actor reads
the journal (:func:`load_journal`) and books the order's fills from the venue's reports.

Internal crosses have no venue to tell of them, so each executed cross is journaled too (one line with
its price and shares) before the block that made it returns its fills: a cross an agent was told of is
never lost with a ledger write that did not happen.

The file is per run (``<journal_dir>/<run id>.orders.jsonl``); a line cut off by a crash is ignored (its
order was not sent: the line is written before the call).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Literal


@dataclass(frozen=True, slots=True)
class JournalEntry:
    client_order_id: str
    seq: int
    ts: int
    symbol: str
    col: int
    lots: int
    """Signed: + buy, - sell."""
    order_type: Literal["market", "limit"]
    limit_price: Decimal | None
    allocations: tuple[tuple[str, int], ...]
    """(agent, signed lots) shares of the order."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.client_order_id,
                "seq": self.seq,
                "ts": self.ts,
                "symbol": self.symbol,
                "col": self.col,
                "lots": self.lots,
                "type": self.order_type,
                "limit": None if self.limit_price is None else str(self.limit_price),
                "alloc": [list(a) for a in self.allocations],
            },
            separators=(",", ":"),
        )

    @staticmethod
    def from_json(line: str) -> JournalEntry:
        d = json.loads(line)
        return JournalEntry(
            d["id"],
            int(d["seq"]),
            int(d["ts"]),
            d["symbol"],
            int(d["col"]),
            int(d["lots"]),
            d["type"],
            None if d["limit"] is None else Decimal(d["limit"]),
            tuple((str(a), int(x)) for a, x in d["alloc"]),
        )


@dataclass(frozen=True, slots=True)
class CrossEntry:
    """An internal cross executed at bar time ``ts``."""

    cross_id: str
    seq: int
    ts: int
    col: int
    price: Decimal
    shares: tuple[tuple[str, int], ...]
    """(agent, signed lots); they sum to zero."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "cross": self.cross_id,
                "seq": self.seq,
                "ts": self.ts,
                "col": self.col,
                "price": str(self.price),
                "shares": [list(a) for a in self.shares],
            },
            separators=(",", ":"),
        )


@dataclass(slots=True)
class Journal:
    """What a journal file holds: orders and executed crosses, by id."""

    orders: dict[str, JournalEntry]
    crosses: dict[str, CrossEntry]


def journal_path(journal_dir: str | None, run_id: str) -> Path:
    """The journal file of ``run_id`` in ``journal_dir`` (default: ``federation`` in the temp folder)."""
    folder = Path(journal_dir) if journal_dir else Path(tempfile.gettempdir()) / "federation"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    return folder / f"{safe}.orders.jsonl"


class OrderJournal:
    """Append-only writer of one run's journal (kept open; one write and flush per batch of orders)."""

    def __init__(self, path: Path, *, fresh: bool = False, fsync: bool = False) -> None:
        """``fresh``: a new run starts an empty journal (a leftover file of the same name is replaced);
        a restarted execution actor appends to its run's."""
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(path, "w" if fresh else "a", encoding="utf-8")  # noqa: SIM115

    def append(self, entries: Sequence[JournalEntry | CrossEntry]) -> None:
        """Write ``entries`` (one line each) and flush them to the operating system (and to the disk
        with ``fsync=True``) before returning."""
        if self._file is None:
            raise RuntimeError(f"order journal {self.path} is closed")
        self._file.write("".join(e.to_json() + "\n" for e in entries))
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load_journal(path: Path) -> Journal:
    """The orders and crosses in the journal at ``path`` (empty if there is none); a last line cut off
    by a crash is skipped."""
    out = Journal({}, {})
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # cut off while written: that order was never sent
            if line.startswith('{"cross"'):
                d = json.loads(line)
                shares = tuple((str(a), int(x)) for a, x in d["shares"])
                cross = CrossEntry(
                    d["cross"], int(d["seq"]), int(d["ts"]), int(d["col"]), Decimal(d["price"]), shares
                )
                out.crosses[cross.cross_id] = cross
            else:
                entry = JournalEntry.from_json(line)
                out.orders[entry.client_order_id] = entry
    return out
