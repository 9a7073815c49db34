"""Events out: what publishing to Redis streams costs the caller, and how fast entries reach Redis.

- **Publisher.** ``batches`` ledger batches (each ``orders`` orders, ``fills`` fills with ``allocations``
  agent shares each, and ``events`` audit events) go through :meth:`RedisEventPublisher.publish_batch`
  back to back. ``publish_batch_us_*``: the call's time on the caller's thread (p50, p99, mean; it
  only queues). ``entries_per_s``: entries acknowledged by Redis over the wall time from the first call
  until the publisher's thread has sent everything (``close``), so it includes the encoding on the
  publisher's thread, which shares the GIL with the caller.
- **Inline baseline.** The same batches encoded and sent by the caller itself, one pipelined ``XADD``
  round trip per batch (what publishing on the hot path would cost): ``inline_batch_us_*`` and
  ``inline_entries_per_s``. ``caller_ratio`` = inline mean / publisher mean: how many times less the
  caller's thread pays with the publisher.
- **Signals.** ``publish_signals`` of one agent's block (``block_size`` bars x 6 symbols, a signal on
  every tenth bar), called in a tight loop: ``publish_signals_us_*`` on the caller's thread, which
  includes waiting for the GIL while the publisher's thread encodes the blocks before (a caller that
  also waits on Ray or I/O leaves the publisher that time instead).

Streams are written under a fresh prefix and deleted afterwards. Results are a JSON-ready dict.
"""

from __future__ import annotations

import statistics
import time
import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import redis

from federation.bench.machine import machine_facts
from federation.events_out import EventStreamConfig, RedisEventPublisher
from federation.events_out.wire import encode_event, encode_fill, encode_order
from federation.ledger import mask_url
from federation.ledger.records import AllocationRecord, EventRecord, FillRecord, LedgerBatch, OrderRecord


def _batch(k: int, *, orders: int, fills: int, allocations: int, events: int) -> LedgerBatch:
    """A ledger batch shaped like one step of a busy run (prices with cents, fees to 1e-8)."""
    ts = 1_700_000_000_000_000_000 + k * 60_000_000_000
    batch = LedgerBatch()
    for j in range(orders):
        shares = tuple((f"agent-{a}", Decimal(10 + a)) for a in range(allocations))
        batch.orders.append(
            OrderRecord(
                f"exec-{k}-{j}", k * orders + j, ts, f"S{j:03d}", "buy", "market", Decimal(30 + j), None,
                "filled", Decimal(30 + j), allocations=shares,
            )
        )  # fmt: skip
    for j in range(fills):
        fill_id = f"fill-{k}-{j}"
        batch.fills.append(
            FillRecord(
                fill_id, f"exec-{k}-{j}", ts, f"S{j:03d}", Decimal(30 + j), Decimal("101.23"),
                Decimal("0.30369000"), "taker",
            )
        )  # fmt: skip
        for a in range(allocations):
            batch.allocations.append(
                AllocationRecord(
                    fill_id, f"agent-{a}", f"S{j:03d}", Decimal(10 + a), Decimal("101.23"), Decimal("0.10123")
                )
            )
    for j in range(events):
        batch.events.append(
            EventRecord(ts, "risk_denial", "max_position", "order denied: above max_position", f"agent-{j}",
                        {"symbol": f"S{j:03d}", "limit": "1000", "requested": "1200"})
        )  # fmt: skip
    return batch


def _inline(client: redis.Redis, config: EventStreamConfig, batch: LedgerBatch, n: int) -> int:
    """Encode and send one batch on this thread, one pipelined round trip; returns the next ``n``."""
    shares: dict[str, list[AllocationRecord]] = {}
    for allocation in batch.allocations:
        shares.setdefault(allocation.fill_id, []).append(allocation)
    entries = [(config.stream("orders"), encode_order(o)) for o in batch.orders]
    entries += [(config.stream("fills"), encode_fill(f, shares.get(f.fill_id, ()))) for f in batch.fills]
    entries += [(config.stream("events"), encode_event(e)) for e in batch.events]
    pipe = client.pipeline(transaction=False)
    for key, fields in entries:
        n += 1
        fields.update(run_id="bench", source="inline", publisher="inline", n=str(n))
        pipe.xadd(key, fields, maxlen=config.maxlen, approximate=True)  # type: ignore[arg-type]
    pipe.execute()
    return n


def _stats(samples_ns: list[int], prefix: str) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {
        f"{prefix}_p50": round(us[len(us) // 2], 2),
        f"{prefix}_p99": round(us[min(len(us) - 1, int(len(us) * 0.99))], 2),
        f"{prefix}_mean": round(statistics.fmean(us), 2),
    }


def bench_events(
    url: str,
    *,
    batches: int = 5000,
    orders: int = 4,
    fills: int = 4,
    allocations: int = 3,
    events: int = 2,
    block_size: int = 256,
) -> dict[str, Any]:
    """Run the events-out benchmark against the Redis at ``url``; see the module docstring."""
    if min(batches, orders + fills + events, block_size) < 1 or min(orders, fills, allocations, events) < 0:
        raise ValueError("batches, block_size and entries per batch must be >= 1 (counts >= 0)")
    prefix = f"bench-events-{uuid.uuid4().hex[:8]}"
    config = EventStreamConfig(url=url, prefix=prefix, buffer=batches * (orders + fills + events) + 1)
    made = [
        _batch(k, orders=orders, fills=fills, allocations=allocations, events=events) for k in range(batches)
    ]
    entries = batches * (orders + fills + events)
    client = redis.Redis.from_url(url)
    try:
        client.ping()
        publisher = RedisEventPublisher(config, "bench", "bench")
        caller_ns: list[int] = []
        start = time.perf_counter()
        for batch in made:
            t0 = time.perf_counter_ns()
            publisher.publish_batch(batch)
            caller_ns.append(time.perf_counter_ns() - t0)
        report = publisher.close(timeout_s=600)
        drained_s = time.perf_counter() - start
        if report.published != entries:
            raise RuntimeError(f"the publisher sent {report.published} of {entries} entries: {report}")

        inline_ns: list[int] = []
        n, start = 0, time.perf_counter()
        for batch in made:
            t0 = time.perf_counter_ns()
            n = _inline(client, config, batch, n)
            inline_ns.append(time.perf_counter_ns() - t0)
        inline_s = time.perf_counter() - start

        symbols = tuple(f"S{j:03d}" for j in range(6))
        ts = np.arange(block_size, dtype=np.int64)
        weights = np.full((block_size, len(symbols)), np.nan)
        weights[::10] = 0.25
        signals = RedisEventPublisher(config, "bench", "bench-signals")
        signal_ns: list[int] = []
        for _ in range(max(1, batches // 10)):
            t0 = time.perf_counter_ns()
            signals.publish_signals("agent-0", symbols, ts, weights, np.ones_like(weights))
            signal_ns.append(time.perf_counter_ns() - t0)
        signals.close(timeout_s=600)
    finally:
        for name in ("signals", "orders", "fills", "events"):
            client.delete(config.stream(name))
        client.close()
    caller = _stats(caller_ns, "publish_batch_us")
    inline = _stats(inline_ns, "inline_batch_us")
    return {
        "machine": machine_facts(),
        "redis": mask_url(url),
        "prefix": prefix,
        "batches": batches,
        "entries_per_batch": orders + fills + events,
        "allocations_per_fill": allocations,
        "entries": entries,
        **caller,
        "entries_per_s": round(entries / drained_s),
        "drain_s": round(drained_s, 3),
        **inline,
        "inline_entries_per_s": round(entries / inline_s),
        "caller_ratio": round(inline["inline_batch_us_mean"] / caller["publish_batch_us_mean"], 1),
        **_stats(signal_ns, "publish_signals_us"),
        "signal_block": [block_size, len(symbols)],
    }
