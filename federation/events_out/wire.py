"""Events out: the wire format: ledger records and signals as Redis stream entries and back, and the
packed ``XADD`` commands that carry them (the format is documented in :mod:`federation.events_out`)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from federation.ledger.records import AllocationRecord, EventRecord, FillRecord, OrderRecord

Fields: TypeAlias = dict[str, str]
FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]


def _pack_xadd(key: str, maxlen: bytes, fields: Fields) -> bytes:
    """``XADD key MAXLEN ~ maxlen * field value ...`` in the Redis protocol (RESP)."""
    k = key.encode()
    out = [
        b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n$%d\r\n%s\r\n$1\r\n*\r\n"
        % (6 + 2 * len(fields), len(k), k, len(maxlen), maxlen)
    ]
    for name, value in fields.items():
        # backslashreplace: text with a lone surrogate (e.g. an agent's exception message) is sent escaped
        f, v = name.encode("utf-8", "backslashreplace"), value.encode("utf-8", "backslashreplace")
        out.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(f), f, len(v), v))
    return b"".join(out)


# ------------------------------------------------------------------------------------------ encoding
def _dec(value: Decimal) -> str:
    """Exact fixed-point text: ``Decimal("1E+2")`` -> ``"100"``, ``Decimal("0.00000001")`` stays."""
    return format(value, "f")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _dec(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats as the strings ``NaN``, ``Infinity``, ``-Infinity`` (strict JSON)."""
    if isinstance(value, np.floating):
        value = float(value)  # float32/float16 are not floats: their NaN would pass unseen
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json(value: Any) -> str:
    """Compact strict JSON of known-clean values (strings, finite numbers)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _detail_json(value: Any) -> str:
    """Compact strict JSON of anything an event's detail may hold."""
    return json.dumps(_finite(value), separators=(",", ":"), default=_json_default, allow_nan=False)


def encode_order(order: OrderRecord) -> Fields:
    """The fields of an order entry (without the publisher's common fields)."""
    fields = {
        "kind": "order",
        "ts": str(order.ts),
        "client_order_id": order.client_order_id,
        "seq": str(order.seq),
        "symbol": order.symbol,
        "side": order.side,
        "order_type": order.order_type,
        "quantity": _dec(order.quantity),
        "status": order.status,
        "filled_quantity": _dec(order.filled_quantity),
        "allocations": _json([[agent, _dec(qty)] for agent, qty in order.allocations]),
    }
    if order.limit_price is not None:
        fields["limit_price"] = _dec(order.limit_price)
    if order.reason_code is not None:
        fields["reason_code"] = order.reason_code
    if order.reason is not None:
        fields["reason"] = order.reason
    return fields


def encode_fill(fill: FillRecord, allocations: Iterable[AllocationRecord]) -> Fields:
    """The fields of a fill entry with its agents' shares."""
    return {
        "kind": "fill",
        "ts": str(fill.ts),
        "fill_id": fill.fill_id,
        "client_order_id": fill.client_order_id,
        "symbol": fill.symbol,
        "quantity": _dec(fill.quantity),
        "price": _dec(fill.price),
        "fee": _dec(fill.fee),
        "liquidity": fill.liquidity,
        "allocations": _json(
            [
                {"agent": a.agent, "quantity": _dec(a.quantity), "price": _dec(a.price), "fee": _dec(a.fee)}
                for a in allocations
            ]
        ),
    }


def encode_allocation(allocation: AllocationRecord, ts: int) -> Fields:
    """The fields of an allocation entry whose fill was published before (``ts``: the batch's time)."""
    return {
        "kind": "allocation",
        "ts": str(ts),
        "fill_id": allocation.fill_id,
        "agent": allocation.agent,
        "symbol": allocation.symbol,
        "quantity": _dec(allocation.quantity),
        "price": _dec(allocation.price),
        "fee": _dec(allocation.fee),
    }


def encode_event(event: EventRecord) -> Fields:
    """The fields of an audit event entry."""
    fields = {
        "kind": event.kind,
        "ts": str(event.ts),
        "code": event.code,
        "message": event.message,
        "detail": _detail_json(event.detail),
    }
    if event.agent is not None:
        fields["agent"] = event.agent
    return fields


def encode_signals(
    agent: str,
    symbols: Sequence[str],
    ts: IntArray,
    weights: FloatArray,
    confidences: FloatArray | None,
) -> Iterator[Fields]:
    """One signal entry per bar (row) with at least one non-NaN weight; ValueError on an infinite one."""
    given = ~np.isnan(weights)
    rows = np.flatnonzero(given.any(axis=1))
    if rows.size == 0:
        return
    if not np.isfinite(weights[given]).all():
        raise ValueError(f"agent {agent!r}: infinite signal weight")
    clean = confidences is None or bool(np.isfinite(confidences[given]).all())
    # Built by hand, not json.dumps per row (a third of the cost): finite floats' repr is valid JSON.
    names = [json.dumps(symbol) for symbol in symbols]
    times = ts[rows].tolist()
    w = weights[rows].tolist()
    c = None if confidences is None else confidences[rows].tolist()
    mask = given[rows].tolist()
    for k, when in enumerate(times):
        cols = [j for j, on in enumerate(mask[k]) if on]
        fields = {
            "kind": "signal",
            "ts": str(when),
            "agent": agent,
            "weights": "{" + ",".join(f"{names[j]}:{w[k][j]!r}" for j in cols) + "}",
        }
        if c is not None:
            fields["confidences"] = (
                "{" + ",".join(f"{names[j]}:{c[k][j]!r}" for j in cols) + "}"
                if clean
                else _detail_json({symbols[j]: c[k][j] for j in cols})
            )
        yield fields


# ------------------------------------------------------------------------------------------ decoding
def _text(fields: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }


def decode_order(fields: dict[Any, Any]) -> OrderRecord:
    """An order entry (str or bytes fields) back as the ledger's record, exactly."""
    f = _text(fields)
    return OrderRecord(
        client_order_id=f["client_order_id"],
        seq=int(f["seq"]),
        ts=int(f["ts"]),
        symbol=f["symbol"],
        side=f["side"],  # type: ignore[arg-type]
        order_type=f["order_type"],  # type: ignore[arg-type]
        quantity=Decimal(f["quantity"]),
        limit_price=Decimal(f["limit_price"]) if "limit_price" in f else None,
        status=f["status"],  # type: ignore[arg-type]
        filled_quantity=Decimal(f["filled_quantity"]),
        reason_code=f.get("reason_code"),
        reason=f.get("reason"),
        allocations=tuple((agent, Decimal(qty)) for agent, qty in json.loads(f["allocations"])),
    )


def decode_fill(fields: dict[Any, Any]) -> tuple[FillRecord, list[AllocationRecord]]:
    """A fill entry back as the ledger's fill and allocation records, exactly."""
    f = _text(fields)
    fill = FillRecord(
        fill_id=f["fill_id"],
        client_order_id=f["client_order_id"],
        ts=int(f["ts"]),
        symbol=f["symbol"],
        quantity=Decimal(f["quantity"]),
        price=Decimal(f["price"]),
        fee=Decimal(f["fee"]),
        liquidity=f["liquidity"],  # type: ignore[arg-type]
    )
    shares = [
        AllocationRecord(
            fill.fill_id,
            a["agent"],
            fill.symbol,
            Decimal(a["quantity"]),
            Decimal(a["price"]),
            Decimal(a["fee"]),
        )
        for a in json.loads(f["allocations"])
    ]
    return fill, shares


def decode_allocation(fields: dict[Any, Any]) -> AllocationRecord:
    """An ``allocation`` entry back as the ledger's record."""
    f = _text(fields)
    return AllocationRecord(
        f["fill_id"], f["agent"], f["symbol"], Decimal(f["quantity"]), Decimal(f["price"]), Decimal(f["fee"])
    )


def decode_event(fields: dict[Any, Any]) -> EventRecord:
    """An event entry back as the ledger's record (Decimal values in ``detail`` come back as strings)."""
    f = _text(fields)
    return EventRecord(
        ts=int(f["ts"]),
        kind=f["kind"],
        code=f["code"],
        message=f["message"],
        agent=f.get("agent"),
        detail=json.loads(f["detail"]),
    )
