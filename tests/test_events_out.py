"""Events out (federation/events_out/) against real Redis servers: the shared test server for the
format, order and trimming; a private ``redis-server`` of this file's own, killed and restarted, for
outages (the shared server is never stopped)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from federation.bench.events import bench_events
from federation.events_out import (
    EventStreamConfig,
    RedisEventPublisher,
    decode_allocation,
    decode_event,
    decode_fill,
    decode_order,
    open_publisher,
)
from federation.events_out.config import STREAMS
from federation.events_out.wire import (
    encode_allocation,
    encode_event,
    encode_fill,
    encode_order,
    encode_signals,
)
from federation.ledger.records import AllocationRecord, EventRecord, FillRecord, LedgerBatch, OrderRecord
from tests.conftest import ROOT

FAST = {"connect_timeout_s": 0.5, "socket_timeout_s": 0.5, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}
"""Reconnect within a fifth of a second, so outage tests take about a second."""


# ------------------------------------------------------------------------------------ helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateRedis:
    """A ``redis-server`` of one test, on a port of its own, without persistence (a restart empties it)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed (tests/services.py installs it)"
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), *options, "--enable-debug-command", "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            wait_for(lambda: _pings(client), 10, "the private redis-server to start")
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """Not started: the test starts, kills and restarts it."""
    server = PrivateRedis(tmp_path)
    yield server
    server.kill()


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.01)


def event(i: int) -> EventRecord:
    return EventRecord(1_000 + i, "risk_denial", "max_position", f"denial {i}", "mom-1", {"i": i})


def read(url: str, key: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        rows = cast(list[tuple[str, dict[str, str]]], client.xrange(key))
        return [fields for _, fields in rows]
    finally:
        client.close()


def config(url: str, prefix: str, **overrides: Any) -> EventStreamConfig:
    return EventStreamConfig(url=url, prefix=prefix.rstrip(":"), **overrides)


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"url": "http://127.0.0.1:6379"}, "must start with redis://, rediss:// (TLS) or unix://"),
        ({"url": "127.0.0.1:6379"}, "must start with redis://"),
        ({"url": "redis://h:99999/0"}, "Port out of range"),
        ({"url": "redis://h:6379/0?colour=blue"}, "unknown option 'colour'"),
        ({"url": "unix://"}, "needs the socket's path"),
        ({"prefix": "federation:"}, "leave it out ('federation')"),
        ({"prefix": "my desk"}, "white space"),
        ({"maxlen": 10}, "greater than or equal to 100"),
        ({"buffer": 0}, "greater than or equal to 1"),
        ({"streams": ["trades"]}, "'signals', 'orders', 'fills' or 'events'"),
        ({"streams": []}, "at least 1 item"),
        (
            {"reconnect_min_s": 5, "reconnect_max_s": 1},
            "reconnect_max_s = 1.0 is below reconnect_min_s = 5.0",
        ),
        ({"max_len": 1000}, "Extra inputs are not permitted"),
    ],
)
def test_bad_config_says_which_value_and_what_to_do(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        EventStreamConfig(**values)
    assert message in str(info.value)


def test_config_defaults_are_off_and_passwords_stay_out_of_messages() -> None:
    off = EventStreamConfig()
    assert off.url is None and open_publisher(off, "run", "supervisor") is None
    assert off.stream("orders") == "federation:orders" and set(off.streams) == set(STREAMS)
    with pytest.raises(ValidationError) as info:
        EventStreamConfig(url="redis://user:s3cret@h:99999/0")
    message = info.value.errors()[0]["msg"]  # pydantic's own input echo is the config loader's to mask
    assert "s3cret" not in message and "user:***@h" in message


# ------------------------------------------------------------------------------------ format
def sample_batch() -> LedgerBatch:
    """Every record type, with the decimals that break floats and the optional fields both ways."""
    return LedgerBatch(
        orders=[
            OrderRecord(
                "mom-1-7", 7, 1_700_000_000_000_000_001, "SPY", "buy", "market", Decimal("12345678901.23456789"),
                None, "submitted", allocations=(("mom-1", Decimal("0.1")), ("rev-2", Decimal("0.2"))),
            ),
            OrderRecord(
                "rev-2-8", 8, 1_700_000_000_000_000_002, "QQQ", "sell", "limit", Decimal("-3"), Decimal("0.00000001"),
                "expired", Decimal("-1.5"), "volume_cap", "10% of the bar's volume", (("rev-2", Decimal("-3")),),
            ),
        ],
        fills=[
            FillRecord("f-1", "mom-1-7", 1_700_000_000_000_000_003, "SPY", Decimal("0.3"), Decimal("412.10"),
                       Decimal("0.00041210"), "taker"),
            FillRecord("x-1", "internal", 1_700_000_000_000_000_004, "QQQ", Decimal("0"), Decimal("1E+2"),
                       Decimal("0"), "internal"),
        ],
        allocations=[
            AllocationRecord("f-1", "mom-1", "SPY", Decimal("0.1"), Decimal("412.10"), Decimal("0.00013737")),
            AllocationRecord("f-1", "rev-2", "SPY", Decimal("0.2"), Decimal("412.10"), Decimal("0.00027473")),
            AllocationRecord("x-1", "mom-1", "QQQ", Decimal("5"), Decimal("100"), Decimal("0")),
            AllocationRecord("x-1", "rev-2", "QQQ", Decimal("-5"), Decimal("100"), Decimal("0")),
            AllocationRecord("f-0", "mom-1", "SPY", Decimal("7"), Decimal("411"), Decimal("0.01")),
        ],
        events=[
            EventRecord(5, "trading_state", "halted", "kill switch", None, {"from": "ACTIVE", "to": "HALTED"}),
            EventRecord(6, "budget", "soft_limit", "80% of money", "mom-1",
                        {"amount": "80.00000001", "nested": {"list": [1, 2.5, "x"]}, "flag": True}),
        ],
    )  # fmt: skip


def test_every_record_type_round_trips_exactly(redis_url: str, redis_prefix: str) -> None:
    cfg = config(redis_url, redis_prefix)
    batch = sample_batch()
    weights = np.array([[0.5, np.nan], [np.nan, np.nan], [1 / 3, -0.25]])
    confidences = np.array([[0.9, np.nan], [np.nan, np.nan], [1.0, 0.1]])
    publisher = RedisEventPublisher(cfg, "run-7", "execution")
    publisher.publish_batch(batch)
    publisher.publish_signals("mom-1", ("SPY", "QQQ"), np.array([10, 11, 12]), weights, confidences)
    report = publisher.close()
    assert (report.published, report.pending, report.dropped, report.unsent) == (9, 0, 0, 0)
    assert report.down is False and report.outages == 0 and report.last_error is None

    orders = read(redis_url, cfg.stream("orders"))
    assert [decode_order(f) for f in orders] == batch.orders
    assert orders[0]["quantity"] == "12345678901.23456789" and "limit_price" not in orders[0]
    assert orders[1]["limit_price"] == "0.00000001" and orders[1]["reason_code"] == "volume_cap"

    fills = read(redis_url, cfg.stream("fills"))
    assert [f["kind"] for f in fills] == ["fill", "fill", "allocation"]
    assert [decode_fill(f) for f in fills[:2]] == [
        (batch.fills[0], batch.allocations[:2]),
        (batch.fills[1], batch.allocations[2:4]),
    ]
    assert fills[1]["price"] == "100"  # fixed-point, never "1E+2"
    assert decode_allocation(fills[2]) == batch.allocations[4]
    assert fills[2]["ts"] == str(batch.fills[1].ts)

    events = read(redis_url, cfg.stream("events"))
    assert [decode_event(f) for f in events] == batch.events
    assert "agent" not in events[0] and events[1]["agent"] == "mom-1"

    signals = read(redis_url, cfg.stream("signals"))
    assert [(s["agent"], s["ts"], s["weights"], s["confidences"]) for s in signals] == [
        ("mom-1", "10", '{"SPY":0.5}', '{"SPY":0.9}'),
        ("mom-1", "12", '{"SPY":0.3333333333333333,"QQQ":-0.25}', '{"SPY":1.0,"QQQ":0.1}'),
    ]

    every = orders + fills + events + signals
    assert {(f["run_id"], f["source"]) for f in every} == {("run-7", "execution")}
    assert len({f["publisher"] for f in every}) == 1
    assert sorted(int(f["n"]) for f in every) == list(range(1, 10))


def test_entries_keep_the_publish_order(redis_url: str, redis_prefix: str) -> None:
    cfg = config(redis_url, redis_prefix, streams=["orders", "events"])
    publisher = RedisEventPublisher(cfg, "run", "execution")
    for i in range(3000):  # several chunks of 500, published while the thread sends
        order = OrderRecord(f"a-{i}", i, i, "SPY", "buy", "market", Decimal(i), None, "submitted")
        publisher.publish_batch(LedgerBatch(orders=[order], fills=[], events=[event(i)]))
    assert publisher.close(timeout_s=30).published == 6000
    orders, events = read(redis_url, cfg.stream("orders")), read(redis_url, cfg.stream("events"))
    assert [int(o["seq"]) for o in orders] == list(range(3000))
    assert [decode_event(e).detail["i"] for e in events] == list(range(3000))
    assert [int(o["n"]) for o in orders] == list(range(1, 6000, 2))
    assert [int(e["n"]) for e in events] == list(range(2, 6001, 2))


def test_only_the_chosen_streams_are_written(redis_url: str, redis_prefix: str) -> None:
    cfg = config(redis_url, redis_prefix, streams=["fills"])
    publisher = RedisEventPublisher(cfg, "run", "execution")
    publisher.publish_batch(sample_batch())
    publisher.publish_signals("mom-1", ("SPY",), np.array([1]), np.array([[0.5]]))
    report = publisher.close()
    assert report.streams == (cfg.stream("fills"),) and report.published == 3
    client = redis.Redis.from_url(redis_url)
    assert [client.exists(cfg.stream(name)) for name in STREAMS] == [0, 0, 1, 0]
    client.close()


def test_streams_stay_near_maxlen(redis_url: str, redis_prefix: str) -> None:
    cfg = config(redis_url, redis_prefix, maxlen=300, streams=["events"])
    publisher = RedisEventPublisher(cfg, "run", "supervisor")
    for i in range(5000):
        publisher.publish_batch(LedgerBatch(events=[event(i)]))
    assert publisher.close(timeout_s=30).published == 5000
    kept = read(redis_url, cfg.stream("events"))
    # Approximate trimming removes whole nodes (100 entries by default): never below the cap, at most
    # one node's worth above it; what is kept is the newest, in order.
    assert 300 <= len(kept) <= 400
    assert [int(e["n"]) for e in kept] == list(range(5001 - len(kept), 5001))


def test_docs_describe_every_field_and_config_key() -> None:
    """docs/events.md names every field each stream carries and every [events] key."""
    docs = (ROOT / "docs" / "events.md").read_text()
    batch = sample_batch()
    signal = next(encode_signals("a", ("SPY",), np.array([1]), np.array([[0.5]]), np.array([[1.0]])))
    produced = {
        "signals": set(signal),
        "orders": set(encode_order(batch.orders[1])) | set(encode_order(batch.orders[0])),
        "fills": set(encode_fill(batch.fills[0], batch.allocations[:2]))
        | set(encode_allocation(batch.allocations[0], 1)),
        "events": set(encode_event(batch.events[1])),
    }
    common = {"run_id", "source", "publisher", "n"}
    for name, fields in produced.items():
        section = docs.split(f"### `{{prefix}}:{name}`")[1].split("###")[0]
        missing = sorted(f for f in fields - {"kind", "ts"} if f"`{f}`" not in section)
        assert not missing, f"docs/events.md, {name}: fields not described: {missing}"
    common_section = docs.split("## Fields of every entry")[1].split("##")[0]
    assert all(f"`{f}`" in common_section for f in {*common, "kind", "ts"})
    config_section = docs.split("## Config")[1].split("## ")[0]
    missing_keys = [k for k in EventStreamConfig.model_fields if f"`{k}`" not in config_section]
    assert not missing_keys, f"docs/events.md: [events] keys not described: {missing_keys}"
    assert re.search(r"XREAD", docs) and "decode_responses=True" in docs


# ------------------------------------------------------------------------------------ Redis down
def test_publishing_with_redis_down_is_fast_never_raises_and_is_reported(tmp_path: Path) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.perf_counter()
    publisher = RedisEventPublisher(EventStreamConfig(url=nobody, **FAST), "run", "execution")
    assert time.perf_counter() - started < 0.2  # connecting happens on the publisher's thread
    batch = LedgerBatch(orders=sample_batch().orders, events=[event(0)])
    samples = []
    for _ in range(20_000):
        t0 = time.perf_counter_ns()
        publisher.publish_batch(batch)
        samples.append(time.perf_counter_ns() - t0)
    # Microseconds, not a network timeout (a connect attempt alone takes milliseconds): bounds generous
    # enough for a 2-core machine busy with other tests.
    assert statistics.median(samples) < 200_000 and statistics.fmean(samples) < 1_000_000
    wait_for(lambda: publisher.report().down, 5, "the outage to be seen")
    (notice,) = publisher.take_notices()
    assert notice.code == "redis_down" and "unreachable" in notice.message and notice.error
    assert notice.to_event().kind == "events_out" and notice.to_event().code == "redis_down"
    started = time.perf_counter()
    report = publisher.close(timeout_s=0.5)
    assert time.perf_counter() - started < 10
    assert report.down and report.outages == 1 and report.outage_s > 0 and report.published == 0
    assert report.unsent == 60_000 and report.pending == 0 and "Connection" in (report.last_error or "")
    publisher.publish_batch(batch)  # after close: counted, not raised
    assert publisher.report().unsent == 60_003


def test_outage_then_reconnect_sends_everything_kept_in_order(private_redis: PrivateRedis) -> None:
    private_redis.start()
    cfg = EventStreamConfig(url=private_redis.url, prefix="p", streams=["events"], **FAST)
    publisher = RedisEventPublisher(cfg, "run", "supervisor")
    for i in range(50):
        publisher.publish_batch(LedgerBatch(events=[event(i)]))
    wait_for(lambda: publisher.report().published == 50, 5, "the first 50 events")

    private_redis.kill()
    for i in range(50, 250):
        publisher.publish_batch(LedgerBatch(events=[event(i)]))
    wait_for(lambda: publisher.report().down, 5, "the outage to be seen")
    time.sleep(0.3)  # a few failed reconnection attempts
    assert publisher.report().pending == 200

    private_redis.start()  # same port, empty: the first 50 events went with the old server
    wait_for(lambda: publisher.report().published == 250, 10, "the kept events to be sent")
    kept = read(private_redis.url, cfg.stream("events"))
    assert [decode_event(e).detail["i"] for e in kept] == list(range(50, 250))
    assert [int(e["n"]) for e in kept] == list(range(51, 251))

    down, up = publisher.take_notices()
    assert (down.code, up.code) == ("redis_down", "redis_up") and up.down_s and up.down_s > 0.2
    assert up.pending == 200 and "back after" in up.message
    report = publisher.close()
    assert report.outages == 1 and not report.down and report.outage_s >= up.down_s
    assert (report.dropped, report.unsent, report.pending) == (0, 0, 0)


def test_a_pipeline_cut_in_flight_is_not_sent_twice(private_redis: PrivateRedis) -> None:
    """The server stalls (DEBUG SLEEP) while a pipeline is in flight: the publisher times out, but the
    server then runs the XADDs it had received. After reconnecting, the publisher must find them there
    and send only the rest."""
    private_redis.start()
    cfg = EventStreamConfig(
        url=private_redis.url, prefix="p", streams=["events"], **{**FAST, "socket_timeout_s": 0.3}
    )
    publisher = RedisEventPublisher(cfg, "run", "execution")
    publisher.publish_batch(LedgerBatch(events=[event(0)]))
    wait_for(lambda: publisher.report().published == 1, 5, "the first event")

    admin = redis.Redis.from_url(private_redis.url, socket_timeout=5)
    stall = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", "1.5"))
    stall.start()
    time.sleep(0.2)  # the server is asleep now
    for i in range(1, 301):
        publisher.publish_batch(LedgerBatch(events=[event(i)]))
    stall.join()
    admin.close()
    wait_for(lambda: publisher.report().published == 301, 10, "all events to be acknowledged")
    report = publisher.close()
    assert report.outages >= 1  # the timeout was seen as an outage
    kept = read(private_redis.url, cfg.stream("events"))
    assert [int(e["n"]) for e in kept] == list(range(1, 302))  # each once, in order


def test_a_full_buffer_drops_the_oldest_and_counts_them(private_redis: PrivateRedis) -> None:
    cfg = EventStreamConfig(url=private_redis.url, prefix="p", streams=["events"], buffer=100, **FAST)
    publisher = RedisEventPublisher(cfg, "run", "supervisor")  # the server is not started yet
    wait_for(lambda: publisher.report().down, 5, "the outage at start")
    for i in range(250):
        publisher.publish_batch(LedgerBatch(events=[event(i)]))
    private_redis.start()
    wait_for(lambda: publisher.report().published == 100, 10, "the kept events to be sent")
    kept = read(private_redis.url, cfg.stream("events"))
    assert [decode_event(e).detail["i"] for e in kept] == list(range(150, 250))
    report = publisher.close()
    assert (report.dropped, report.published, report.unsent) == (150, 100, 0)
    _, up = publisher.take_notices()
    assert up.code == "redis_up" and up.dropped == 150


def test_redis_refusing_writes_for_now_is_an_outage(private_redis: PrivateRedis) -> None:
    """OOM (like READONLY, MISCONF, NOPERM): Redis answers but takes no writes; the entries are kept and
    sent once it does."""
    private_redis.start()
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    cfg = EventStreamConfig(url=private_redis.url, prefix="p", streams=["events"], **FAST)
    publisher = RedisEventPublisher(cfg, "run", "execution")
    for i in range(20):
        publisher.publish_batch(LedgerBatch(events=[event(i)]))
    wait_for(lambda: publisher.report().down, 5, "the refusal to be seen as an outage")
    time.sleep(0.3)  # retried a few times, still one outage
    report = publisher.report()
    assert (report.outages, report.pending, report.published, report.rejected) == (1, 20, 0, 0)
    assert "OutOfMemoryError" in (report.last_error or "")
    admin.config_set("maxmemory", "0")
    admin.close()
    wait_for(lambda: publisher.report().published == 20, 5, "the kept events to be sent")
    assert [decode_event(e) for e in read(private_redis.url, cfg.stream("events"))] == [
        event(i) for i in range(20)
    ]
    assert publisher.close().outages == 1


def test_redis_refusing_one_stream_does_not_stop_the_others(redis_url: str, redis_prefix: str) -> None:
    cfg = config(redis_url, redis_prefix)
    client = redis.Redis.from_url(redis_url)
    client.set(cfg.stream("orders"), "not a stream")
    client.close()
    publisher = RedisEventPublisher(cfg, "run", "execution")
    publisher.publish_batch(LedgerBatch(orders=sample_batch().orders[:1], events=[event(1)]))
    report = publisher.close()
    assert (report.rejected, report.published, report.outages) == (1, 1, 0)
    assert "WRONGTYPE" in (report.last_error or "")
    assert [decode_event(e) for e in read(redis_url, cfg.stream("events"))] == [event(1)]


def test_signals_with_the_wrong_shape_are_refused_at_once(redis_url: str, redis_prefix: str) -> None:
    publisher = RedisEventPublisher(config(redis_url, redis_prefix), "run", "supervisor")
    try:
        with pytest.raises(ValueError, match=r"agent 'mom-1': weights \(2, 2\) do not match ts \(3\)"):
            publisher.publish_signals("mom-1", ("A", "B"), np.arange(3), np.zeros((2, 2)))
    finally:
        publisher.close()


def test_bench_events_measures_both_sides(redis_url: str) -> None:
    result = bench_events(redis_url, batches=50, block_size=16)
    assert result["entries"] == 500 and result["entries_per_s"] > 0
    assert result["publish_batch_us_p50"] > 0 and result["inline_batch_us_p50"] > 0
    assert result["caller_ratio"] > 0 and result["publish_signals_us_p50"] > 0
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match=f"{result['prefix']}:*"))  # cleaned up
    client.close()


def test_one_record_that_cannot_be_encoded_is_refused_alone(redis_url: str, redis_prefix: str) -> None:
    class Unencodable:
        def __str__(self) -> str:
            raise ValueError("no text form")

    cfg = config(redis_url, redis_prefix, streams=["events"])
    publisher = RedisEventPublisher(cfg, "run", "supervisor")
    batch = LedgerBatch(
        events=[
            event(1),
            EventRecord(2, "agent_error", "hook", "bad text \udcff from an agent"),  # a lone surrogate
            EventRecord(3, "risk", "x", "float32 NaN", detail={"v": np.float32("nan")}),
            EventRecord(4, "risk", "y", "cannot encode", detail={"v": Unencodable()}),
            event(5),
        ]
    )
    publisher.publish_batch(batch)
    publisher.publish_batch(LedgerBatch(events=[event(6)]))
    report = publisher.close()
    assert report.published == 5 and report.rejected == 1, "only the record that cannot be encoded"
    entries = read(redis_url, cfg.stream("events"))
    assert [int(e["ts"]) for e in entries] == [1001, 2, 3, 1005, 1006], "it went on after the bad one"
    assert entries[1]["message"] == "bad text \\udcff from an agent"
    assert json.loads(entries[2]["detail"]) == {"v": "NaN"}
