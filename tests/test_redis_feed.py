"""The Redis Streams feed: message format, validation, consumer-group delivery (pending entries re-read,
acknowledged ones never again), outages of a private Redis killed and restarted, ``federation publish``,
whole runs on a stream (the same trades as the CSV in live mode), the example and the benchmark."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import redis

from federation.config import CsvFeedConfig, FleetConfig, RedisFeedConfig, load_config
from federation.errors import ConfigError, DataError
from federation.feeds import load_feed
from federation.feeds.redis_stream import (
    END_MARKER,
    FeedUnavailableError,
    RedisBarSource,
    Step,
    encode_bar,
    parse_entry,
    publish_market,
)
from federation.feeds.redis_stream.messages import END, ParsedBar, Unreadable
from federation.ledger import open_ledger
from federation.summary import RunSummary
from federation.supervisor import Supervisor, run_fleet
from tests.conftest import EXAMPLES, ROOT
from tests.redis_server import RedisServer, free_port

DAILY = EXAMPLES / "data" / "lean" / "daily"
UTC = ZoneInfo("UTC")
T0 = 1_704_205_800_000_000_000  # 2024-01-02T14:30:00Z
MINUTE = 60_000_000_000


# ------------------------------------------------------------------------------------------- helpers
def feed(url: str, stream: str, **overrides: Any) -> RedisFeedConfig:
    """A feed over AAA and BBB that reads the whole stream and never waits long (tests)."""
    raw: dict[str, Any] = {
        "kind": "redis",
        "url": url,
        "stream": stream,
        "symbols": ["AAA", "BBB"],
        "group": "g",
        "consumer": "c1",
        "start": "earliest",
        "block_ms": 50,
        "step_idle_ms": 100,
        "idle_timeout_s": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
    }
    return RedisFeedConfig.model_validate({**raw, **overrides})


def bar(symbol: str, k: int, close: float = 10.5, **fields: str) -> dict[str, str]:
    """The bar of ``symbol`` at minute ``k`` after T0 (prices around 10)."""
    return {**encode_bar(symbol, T0 + k * MINUTE, 10.0, 11.0, 9.0, close, 100.0), **fields}


def add(client: Any, stream: str, *entries: dict[str, str]) -> list[str]:
    return [str(client.xadd(stream, dict(e))) for e in entries]


def add_steps(client: Any, stream: str, steps: range) -> None:
    for k in steps:
        add(client, stream, bar("AAA", k, close=10 + k / 100), bar("BBB", k))


def read_all(source: RedisBarSource, *, ack: bool = True, limit_s: float = 20) -> list[Step]:
    """Every step until the feed ends (end marker, max_bars, idle timeout)."""
    steps, deadline = [], time.monotonic() + limit_s
    for step in source.steps():
        if step is not None:
            steps.append(step)
            if ack:
                source.ack(step)
        assert time.monotonic() < deadline, "the feed did not end"
    return steps


def next_step(steps: Iterator[Step | None], source: RedisBarSource, limit_s: float = 10) -> Step:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        step = next(steps)
        if step is not None:
            source.ack(step)
            return step
    raise AssertionError("no step arrived")


def minutes(steps: list[Step]) -> list[int]:
    return [(s.ts - T0) // MINUTE for s in steps]


def pending(client: Any, stream: str, group: str = "g") -> int:
    return int(client.xpending(stream, group)["pending"])


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


# ------------------------------------------------------------------------------------------ format
def test_parse_entry_reads_the_documented_fields_with_the_csv_feeds_time_rules() -> None:
    fields = {"symbol": "SPY", "open": "1", "high": "2.5", "low": "0.5", "close": "2", "volume": "1e3"}
    for ts, expected in [
        ("2024-01-02T14:30:00Z", T0),
        ("2024-01-02 09:30:00-05:00", T0),
        ("2024-01-02T14:30", T0),  # naive: the feed's timezone (UTC here)
        ("1704205800", T0),  # epoch seconds
        ("1704205800000", T0),  # milliseconds
        (str(T0), T0),  # nanoseconds
        ("20240102", T0 - (14 * 60 + 30) * MINUTE),  # a basic ISO date, not an epoch
    ]:
        parsed = parse_entry({**fields, "ts": ts}, UTC)
        assert parsed == ParsedBar("SPY", expected, 1.0, 2.5, 0.5, 2.0, 1000.0), ts
    new_york = parse_entry({**fields, "ts": "2024-01-02T09:30"}, ZoneInfo("America/New_York"))
    assert isinstance(new_york, ParsedBar) and new_york.ts == T0
    assert parse_entry({"type": "end"}, UTC) is END and parse_entry(dict(END_MARKER), UTC) is END
    assert parse_entry({**fields, "ts": "2024-01-02", "type": "bar", "source": "mine"}, UTC) == ParsedBar(
        "SPY", T0 - (14 * 60 + 30) * MINUTE, 1.0, 2.5, 0.5, 2.0, 1000.0
    )


def test_parse_entry_says_what_is_wrong() -> None:
    good = {
        "symbol": "SPY",
        "ts": "2024-01-02",
        "open": "1",
        "high": "2",
        "low": "1",
        "close": "2",
        "volume": "0",
    }
    cases = [
        ({k: v for k, v in good.items() if k not in ("close", "volume")}, "missing field close, volume"),
        ({**good, "high": "abc"}, "field high: 'abc' is not a number"),
        ({**good, "ts": "yesterday"}, "field ts: 'yesterday' is not an ISO 8601 date/time"),
        ({**good, "type": "tick"}, "type 'tick' is not 'bar' or 'end'"),
        ({}, "deleted from the stream"),
    ]
    for fields, reason in cases:
        parsed = parse_entry(fields, UTC)
        assert isinstance(parsed, Unreadable) and reason in parsed.reason, (fields, parsed)
    empty = parse_entry({**good, "close": " "}, UTC)
    assert isinstance(empty, Unreadable) and empty.symbol == "SPY" and "missing field close;" in empty.reason


def test_encoded_bars_read_back_exactly() -> None:
    values = (472.16, 473.67000000000002, 470.49, 0.1 + 0.2, 123456.0)
    fields = encode_bar("SPY", T0 + 123_000, *values)
    assert fields["ts"] == "2024-01-02T14:30:00.000123Z" and fields["volume"] == "123456"
    assert parse_entry(fields, UTC) == ParsedBar("SPY", T0 + 123_000, *values)


# --------------------------------------------------------------------------------- steps, validation
def test_bars_of_one_time_form_a_step_and_bad_entries_are_skipped_reported_and_acknowledged(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    add(
        client,
        stream,
        bar("AAA", 0),
        bar("BBB", 0),
        bar("AAA", 1, close=float("nan")),  # NaN close
        bar("AAA", 1, close=10.25),
        bar("AAA", 1),  # duplicate of the AAA bar just accepted
        bar("BBB", 1, high="1"),  # high below low
        bar("ZZZ", 1),  # not a feed symbol
        {**bar("AAA", 2), "close": "ten"},  # not a number
        {"symbol": "BBB", "ts": "2024-01-02T14:32:00Z"},  # fields missing
        bar("BBB", 2),
        encode_bar("AAA", T0 + 90 * 10**9, 10, 11, 9, 10, 1),  # after AAA's last bar, before the current step
        bar("AAA", 3),
        bar("AAA", 2),  # earlier than AAA's last bar
        dict(END_MARKER),
        bar("AAA", 4),  # after the end marker: left for the next run
    )
    source = RedisBarSource(feed(redis_url, stream))
    source.check()
    steps = read_all(source)
    source.close()
    assert minutes(steps) == [0, 1, 2, 3]
    assert [s.batch.valid.tolist() for s in steps] == [
        [[True, True]],
        [[True, False]],
        [[False, True]],
        [[True, False]],
    ]
    assert steps[1].batch.close[0, 0] == 10.25 and np.isnan(steps[1].batch.close[0, 1])
    assert steps[0].batch.symbols == ("AAA", "BBB") and steps[0].batch.ts.tolist() == [T0]
    reasons = [i.reason for i in source.take_issues()]
    assert len(reasons) == 8 == source.stats.skipped
    for expected, reason in zip(
        [
            "close is nan; prices and volume must be finite numbers",
            "duplicate timestamp 2024-01-02T14:31:00Z (same as entry",
            "high 1 is below low 9",
            "symbol 'ZZZ' is not in feed.symbols (AAA, BBB)",
            "field close: 'ten' is not a number",
            "missing field open, high, low, close, volume",
            "timestamp 2024-01-02T14:31:30Z is out of order (earlier than 2024-01-02T14:32:00Z, the time step",
            "timestamp 2024-01-02T14:32:00Z is out of order (earlier than 2024-01-02T14:33:00Z at entry",
        ],
        reasons,
        strict=True,
    ):
        assert expected in reason, reason
    issue = str(source.samples[0])
    assert re.match(rf"stream '{stream}' entry \d+-\d+: AAA: close is nan", issue), issue
    stats = source.stats
    assert (stats.bars, stats.steps, stats.entries, stats.end) == (5, 4, 14, "end_marker")
    assert stats.acked == 14, "every entry up to the end marker was acknowledged, skipped ones too"
    assert pending(client, stream) == 1, "the entry after the end marker waits for the next run"
    again = RedisBarSource(feed(redis_url, stream, idle_timeout_s=0.3))
    assert minutes(read_all(again)) == [4] and again.stats.redelivered == 1
    again.close()
    assert pending(client, stream) == 0


def test_on_invalid_error_stops_at_the_bad_entry_and_leaves_it_pending(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    ids = add(client, stream, bar("AAA", 0), bar("AAA", 1, close=-1.0), bar("AAA", 2))
    source = RedisBarSource(feed(redis_url, stream, on_invalid="error"))
    source.check()
    with pytest.raises(DataError) as caught:
        read_all(source)
    message = str(caught.value)
    assert f"entry {ids[1]}: AAA: close -1 is not positive" in message
    assert 'on_invalid = "skip"' in message and "XACK or XDEL" in message
    source.close()
    assert pending(client, stream) >= 1


def test_a_step_goes_out_after_step_idle_ms_and_a_late_bar_of_it_is_reported(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    source = RedisBarSource(feed(redis_url, stream, step_idle_ms=300, idle_timeout_s=1.0))
    source.check()
    add(client, stream, bar("AAA", 0))
    steps = source.steps()
    started = time.monotonic()
    first = next_step(steps, source)
    waited = time.monotonic() - started
    assert minutes([first]) == [0] and 0.25 <= waited < 2.0, waited
    add(client, stream, bar("BBB", 0), bar("AAA", 1))
    second = next_step(steps, source)
    assert minutes([second]) == [1]
    assert [s for s in steps if s is not None] == [], "nothing more until the idle timeout ends it"
    assert source.stats.end == "idle_timeout"
    (late,) = source.take_issues()
    assert (
        "arrived after its time step went to the agents" in late.reason
        and "step_idle_ms = 300" in late.reason
    )
    source.close()
    assert pending(client, stream) == 0


def test_max_bars_ends_the_feed_and_leaves_the_rest_pending(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    add_steps(client, stream, range(5))
    source = RedisBarSource(feed(redis_url, stream, max_bars=5))
    source.check()
    steps = read_all(source)
    source.close()
    assert minutes(steps) == [0, 1, 2] and source.stats.end == "max_bars" and source.stats.bars == 5
    assert pending(client, stream) == 5


# ------------------------------------------------------------------------------------------ delivery
def test_entries_left_unacknowledged_are_read_again_first_and_acknowledged_ones_never(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    add_steps(client, stream, range(6))
    add(client, stream, dict(END_MARKER))
    crashed = RedisBarSource(feed(redis_url, stream, read_count=4))
    crashed.check()
    steps = crashed.steps()
    done = [next_step(steps, crashed) for _ in range(3)]  # processed and acknowledged
    assert next(steps) is not None  # a fourth step handed out, never acknowledged: the run dies here
    crashed.close()
    assert minutes(done) == [0, 1, 2]
    assert pending(client, stream) == 6, "the unacknowledged step's two entries and four read ahead"

    restarted = RedisBarSource(feed(redis_url, stream, read_count=4))
    restarted.check()
    rest = read_all(restarted)
    restarted.close()
    assert minutes(rest) == [3, 4, 5], "the pending step first, then new entries, nothing twice"
    assert restarted.stats.redelivered == 6 and restarted.stats.acked == 6 + 1
    assert crashed.stats.acked + restarted.stats.acked == 13 and pending(client, stream) == 0


def test_claim_idle_takes_over_what_a_dead_consumer_left(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    add_steps(client, stream, range(3))
    add(client, stream, dict(END_MARKER))
    client.xgroup_create(stream, "g", id="0")
    client.xreadgroup("g", "dead", {stream: ">"}, count=100)  # read, never acknowledged
    time.sleep(0.15)
    source = RedisBarSource(feed(redis_url, stream, consumer="alive", claim_idle_s=0.1))
    source.check()
    steps = read_all(source)
    source.close()
    assert minutes(steps) == [0, 1, 2] and source.stats.redelivered == 7
    (claimed,) = [e for e in source.take_events() if e.code == "claimed"]
    assert claimed.detail["entries"] == 7
    assert pending(client, stream) == 0


def test_start_new_skips_what_was_there_and_an_existing_group_continues(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    add_steps(client, stream, range(2))
    first = RedisBarSource(feed(redis_url, stream, start="new", idle_timeout_s=0.3))
    first.check()
    (created,) = first.take_events()
    assert created.code == "group_created" and "new entries" in created.message
    add_steps(client, stream, range(5, 7))
    assert minutes(read_all(first)) == [5, 6]
    first.close()
    add_steps(client, stream, range(7, 8))
    second = RedisBarSource(feed(redis_url, stream, start="earliest", idle_timeout_s=0.3))
    second.check()
    assert second.take_events() == [], "the group exists: start does not apply"
    assert minutes(read_all(second)) == [7]
    second.close()


def test_check_names_the_server_and_what_to_do(client: Any, redis_url: str, redis_prefix: str) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(
        FeedUnavailableError, match=rf"cannot reach Redis at {re.escape(down)} .*start the server"
    ):
        RedisBarSource(feed(down, "s")).check()
    client.set(redis_prefix + "plain", "1")
    with pytest.raises(DataError, match="holds a string, not a stream; choose another stream name"):
        RedisBarSource(feed(redis_url, redis_prefix + "plain")).check()
    secret = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(FeedUnavailableError) as caught:
        RedisBarSource(feed(secret, "s")).check()
    assert "hunter2" not in str(caught.value) and "user:***@" in str(caught.value)


# --------------------------------------------------------------------------------------------- outages
def test_redis_killed_and_restarted_mid_stream_loses_nothing_and_is_reported(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", persist=True) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        add_steps(client, "bars", range(10))
        source = RedisBarSource(feed(server.url, "bars", idle_timeout_s=2))
        source.check()
        steps = source.steps()
        got = [next_step(steps, source) for _ in range(5)]
        server.kill()
        down_at, heartbeats = time.monotonic(), 0
        while time.monotonic() - down_at < 1.0:  # the bars already read still come; then nothing
            step = next(steps)
            if step is None:
                heartbeats += 1
            else:
                got.append(step)
                source.ack(step)
        assert heartbeats >= 3, "the caller keeps control while Redis is down"
        assert [e.code for e in source.take_events()][-1:] == ["redis_down"]
        server.start()
        add_steps(client, "bars", range(10, 15))
        add(client, "bars", dict(END_MARKER))
        for step in steps:
            if step is not None:
                got.append(step)
                source.ack(step)
        source.close()
        assert minutes(got) == list(range(15)), "every step once, in order"
        events = source.take_events()
        assert [e.code for e in events] == ["redis_up"] and events[0].detail["down_s"] >= 0.9
        stats = source.stats
        assert (stats.outages, stats.end, stats.bars, stats.acked) == (1, "end_marker", 30, 31)
        assert stats.outage_s >= 0.9 and pending(client, "bars") == 0
        client.close()


def test_a_restart_without_persistence_recreates_the_group_and_reads_what_was_added_since(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis", persist=False) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        add_steps(client, "bars", range(3))
        source = RedisBarSource(feed(server.url, "bars"))
        source.check()
        steps = source.steps()
        got = [next_step(steps, source) for _ in range(2)]
        server.kill()
        server.start()  # empty: the stream and the group are gone
        add_steps(client, "bars", range(3, 5))
        add(client, "bars", dict(END_MARKER))
        for step in steps:
            if step is not None:
                got.append(step)
                source.ack(step)
        source.close()
        assert minutes(got) == [0, 1, 2, 3, 4]
        codes = [e.code for e in source.take_events()]
        assert "group_recreated" in codes and codes[0] == "group_created"
        assert pending(client, "bars") == 0
        client.close()


# ------------------------------------------------------------------------------------- config, prepare
def test_config_refuses_what_cannot_work() -> None:
    base = {"kind": "redis", "stream": "s", "symbols": ["A"]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": "http://x"}, "is not a Redis URL"),
        ({"symbols": ["A", "A"]}, "'A' is listed twice"),
        ({"timezone": "Mars/Olympus"}, "not a known time zone"),
        ({"reconnect_min_s": 10, "reconnect_max_s": 1}, "swap them"),
        ({"idle_timeout_s": 0.1, "step_idle_ms": 200}, "make idle_timeout_s longer"),
        ({"start": "latest"}, "Input should be 'new' or 'earliest'"),
    ]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            RedisFeedConfig.model_validate({**base, **extra})


def fleet(url: str, stream: str, ledger: str, **federation: Any) -> dict[str, Any]:
    return {
        "federation": {
            "capital": 100_000,
            "mode": "live",
            "isolation": "shared",
            "ledger": ledger,
            **federation,
        },
        "live": {"decision_timeout_ms": 10_000},
        "feed": {
            "kind": "redis",
            "url": url,
            "stream": stream,
            "symbols": ["SPY", "QQQ"],
            "start": "earliest",
        },
        "agents": [
            {"class": "agents.momentum:MomentumAgent", "params": {"fast": 5, "slow": 20}},
            {"class": "agents.mean_reversion:MeanReversionAgent"},
        ],
    }


def test_prepare_refuses_backtests_and_tick_pacing_and_names_an_unreachable_server(
    redis_url: str, ledger_url: str, redis_prefix: str
) -> None:
    raw = fleet(redis_url, redis_prefix + "s", ledger_url)
    backtest = FleetConfig.model_validate({**raw, "federation": {**raw["federation"], "mode": "backtest"}})
    with pytest.raises(ConfigError, match='only a live run can follow; set \\[federation\\] mode = "live"'):
        Supervisor(backtest, source="fleet.toml").prepare()
    paced = FleetConfig.model_validate({**raw, "live": {"tick_interval_ms": 10}})
    with pytest.raises(ConfigError, match="remove tick_interval_ms"):
        Supervisor(paced, source="fleet.toml").prepare()
    down = f"redis://127.0.0.1:{free_port()}/0"
    unreachable = FleetConfig.model_validate({**raw, "feed": {**raw["feed"], "url": down}})
    with pytest.raises(FeedUnavailableError, match=re.escape(down)):
        Supervisor(unreachable, source="fleet.toml").prepare()
    with pytest.raises(ConfigError, match="is read while a live run goes on"):
        load_feed(FleetConfig.model_validate(raw).feed, base_dir=Path("."), seed=0)


def test_the_user_guide_documents_every_config_key() -> None:
    guide = (ROOT / "docs" / "redis-feed.md").read_text()
    table = guide.split("## Configuration")[1].split("\n## ")[0]
    for name in RedisFeedConfig.model_fields:
        assert name == "kind" or f"| `{name}` |" in table, f"{name} is not in docs/redis-feed.md"


# ------------------------------------------------------------------------------------------ publish
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def flat(text: str) -> str:
    return " ".join(text.split())


def test_federation_publish_writes_every_bar_in_time_order_and_the_end_marker(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "daily"
    spy, qqq = DAILY / "spy.csv", DAILY / "qqq.csv"
    args = ["--format", "lean", "--start", "2019-01-01", "--until", "2019-03-31", "--redis", redis_url]
    done = cli("publish", f"SPY={spy}", f"QQQ={qqq}", "--stream", stream, *args)
    assert done.returncode == 0, done.stderr
    expected = load_feed(
        CsvFeedConfig(
            kind="csv", format="lean", paths={"SPY": spy, "QQQ": qqq}, start="2019-01-01", end="2019-03-31"
        ),
        base_dir=ROOT,
        seed=0,
    )
    bars = int(expected.valid.sum())
    assert f"published {bars} bars of SPY, QQQ and an end marker to stream '{stream}'" in done.stdout
    entries = client.xrange(stream)
    assert len(entries) == bars + 1 and entries[-1][1] == {"type": "end"}
    parsed = [parse_entry(fields, UTC) for _, fields in entries[:-1]]
    rows, cols = np.nonzero(expected.valid)
    assert [(p.symbol, p.ts, p.close) for p in parsed] == [  # type: ignore[union-attr]
        (expected.symbols[j], int(expected.ts[i]), float(expected.close[i, j]))
        for i, j in zip(rows, cols, strict=True)
    ]
    plain = cli("publish", str(spy), "--symbol", "SPY", "--stream", stream, "--no-end", *args)
    assert plain.returncode == 0 and "an end marker" not in plain.stdout
    assert (
        client.xlen(stream) == bars + 1 + bars // 2
        and client.xrevrange(stream, count=1)[0][1]["symbol"] == "SPY"
    )


def test_federation_publish_paces_with_rate(client: Any, redis_url: str, redis_prefix: str) -> None:
    stream = redis_prefix + "paced"
    started = time.monotonic()
    done = cli(
        "publish", f"SPY={DAILY / 'spy.csv'}", "--format", "lean", "--start", "2019-01-02", "--until",
        "2019-01-31", "--rate", "50", "--stream", stream, "--redis", redis_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert client.xlen(stream) == 21 + 1
    assert time.monotonic() - started >= 21 / 50


def test_federation_publish_errors_say_what_to_do(redis_url: str, redis_prefix: str) -> None:
    spy = str(DAILY / "spy.csv")
    no_symbol = cli("publish", spy, "--stream", redis_prefix + "s")
    assert no_symbol.returncode == 2 and "pass --symbol SPY, or write SPY=" in flat(no_symbol.stderr)
    missing = cli("publish", "SPY=nope.csv", "--stream", redis_prefix + "s")
    assert missing.returncode == 2 and "nope.csv: data file of SPY not found" in flat(missing.stderr)
    down = f"redis://127.0.0.1:{free_port()}/0"
    unreachable = cli("publish", f"SPY={spy}", "--format", "lean", "--stream", "s", "--redis", down)
    assert unreachable.returncode == 2
    assert f"cannot reach Redis at {down}" in flat(unreachable.stderr) and "pass --redis URL" in flat(
        unreachable.stderr
    )
    bad_url = cli("publish", f"SPY={spy}", "--format", "lean", "--stream", "s", "--redis", "localhost:6379")
    assert bad_url.returncode == 2 and "is not a usable Redis URL" in flat(bad_url.stderr)
    bad_date = cli("publish", f"SPY={spy}", "--stream", "s", "--start", "Jan 1")
    assert bad_date.returncode == 2 and "publish: start:" in flat(bad_date.stderr)


# ---------------------------------------------------------------------------------------- whole runs
def publish_daily(
    url: str, stream: str, start: str = "2018-01-01", end: str = "2019-12-31", *, marker: bool = True
) -> int:
    """SPY and QQQ daily bars from ``start`` to ``end`` into ``stream``; returns the bars written."""
    paths = {"SPY": DAILY / "spy.csv", "QQQ": DAILY / "qqq.csv"}
    config = CsvFeedConfig.model_validate(
        {"kind": "csv", "format": "lean", "paths": paths, "start": start, "end": end}
    )
    return publish_market(load_feed(config, base_dir=ROOT, seed=0), url=url, stream=stream, end=marker).bars


def trades(summary: RunSummary, ledger_url: str) -> list[tuple[str, str, Decimal, Decimal]]:
    ledger = open_ledger(ledger_url)
    try:
        return [(f.symbol, f.liquidity, f.quantity, f.price) for f in ledger.fills(summary.run_id)]
    finally:
        ledger.close()


@pytest.mark.usefixtures("ray_session")
def test_a_fleet_on_the_stream_trades_exactly_as_on_the_csv_in_live_mode(
    client: Any, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    stream = redis_prefix + "daily"
    bars = publish_daily(redis_url, stream)
    on_stream_ledger = f"sqlite:///{tmp_path / 'redis.db'}"
    on_stream = run_fleet(FleetConfig.model_validate(fleet(redis_url, stream, on_stream_ledger)))
    raw = fleet(redis_url, stream, f"sqlite:///{tmp_path / 'csv.db'}")
    raw["feed"] = {
        "kind": "csv", "format": "lean", "start": "2018-01-01", "end": "2019-12-31",
        "paths": {"SPY": str(DAILY / "spy.csv"), "QQQ": str(DAILY / "qqq.csv")},
    }  # fmt: skip
    raw["live"]["tick_interval_ms"] = 0
    on_csv = run_fleet(FleetConfig.model_validate(raw))

    assert on_stream.status == on_csv.status == "completed"
    assert on_stream.bars == on_csv.bars == 503 and on_stream.live is not None and on_stream.live.ticks == 503
    assert on_stream.portfolio.fills > 10
    assert on_stream.portfolio == on_csv.portfolio
    for mine, theirs in zip(on_stream.agents, on_csv.agents, strict=True):
        assert (mine.bars, mine.signals, mine.fills, mine.realized_pnl) == (
            theirs.bars,
            theirs.signals,
            theirs.fills,
            theirs.realized_pnl,
        )
    assert trades(on_stream, on_stream_ledger) == trades(on_csv, raw["federation"]["ledger"])
    feed_summary = on_stream.feed
    assert feed_summary is not None and on_csv.feed is None
    assert (feed_summary.bars, feed_summary.entries, feed_summary.acked, feed_summary.end) == (
        bars,
        bars + 1,
        bars + 1,
        "end_marker",
    )
    assert (
        feed_summary.outages == 0
        and feed_summary.redelivered == 0
        and pending(client, stream, "federation") == 0
    )


@pytest.mark.usefixtures("ray_session")
def test_a_run_keeps_going_through_a_redis_outage_and_records_it(tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with RedisServer(tmp_path / "redis", persist=True) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        first = publish_daily(server.url, "bars", "2018-01-01", "2018-12-31", marker=False)
        raw = fleet(server.url, "bars", ledger_url)
        raw["feed"].update(reconnect_min_s=0.05, reconnect_max_s=0.2, block_ms=50)
        supervisor = Supervisor(FleetConfig.model_validate(raw), show_progress=False)
        out: list[RunSummary] = []
        thread = threading.Thread(target=lambda: out.append(supervisor.run()), daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the run has taken every bar published so far
            groups = client.xinfo_groups("bars") if client.exists("bars") else []
            if groups and groups[0]["pending"] == 0 and groups[0]["entries-read"] == first:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the run did not read the first year")
        server.kill()
        time.sleep(1.0)
        server.start()
        second = publish_daily(server.url, "bars", "2019-01-01", "2019-12-31")
        thread.join(timeout=120)
        assert out, "the run did not end after the end marker"
        summary = out[0]
        assert summary.status == "completed" and summary.bars == 503
        assert all(a.bars == first + second for a in summary.agents), "every bar reached every agent once"
        feed_summary = summary.feed
        assert feed_summary is not None and feed_summary.outages == 1 and feed_summary.outage_s >= 0.9
        assert feed_summary.end == "end_marker" and feed_summary.acked == first + second + 1
        assert pending(client, "bars", "federation") == 0
        ledger = open_ledger(ledger_url)
        events = ledger.events(summary.run_id, "feed")
        ledger.close()
        assert [e["code"] for e in events] == ["group_created", "redis_down", "redis_up"]
        assert server.url.split("//")[1] in events[1]["message"] and events[2]["detail"]["down_s"] >= 0.9
        client.close()


@pytest.mark.usefixtures("ray_session")
def test_a_halt_stops_a_run_that_waits_for_bars(redis_url: str, redis_prefix: str, ledger_url: str) -> None:
    raw = fleet(redis_url, redis_prefix + "quiet", ledger_url)
    supervisor = Supervisor(FleetConfig.model_validate(raw), show_progress=False)
    out: list[RunSummary] = []
    thread = threading.Thread(target=lambda: out.append(supervisor.run()), daemon=True)
    thread.start()
    time.sleep(3.0)  # agents started, nothing in the stream
    halted_at = time.monotonic()
    supervisor.halt("desk says stop")
    thread.join(timeout=60)
    assert out and time.monotonic() - halted_at < 5
    summary = out[0]
    assert summary.status == "halted" and summary.bars == 0
    assert summary.feed is not None and summary.feed.end == "halted"


@pytest.mark.usefixtures("ray_session")
def test_the_example_runs_on_what_its_readme_publishes(
    redis_url: str, redis_prefix: str, tmp_path: Path, client: Any
) -> None:
    readme = (EXAMPLES / "redis_feed" / "README.md").read_text()
    block = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)[0]
    commands = [" ".join(line.split()) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    assert len(commands) == 2 and commands[1] == "federation run examples/redis_feed/fleet.toml"
    config = load_config(ROOT / commands[1].split()[-1])
    assert isinstance(config.feed, RedisFeedConfig)
    assert commands[0].startswith("federation publish ")
    assert f"--stream {config.feed.stream}" in commands[0] and f"--redis {redis_url}" in commands[0]
    stream = redis_prefix + "example"
    args = commands[0].split()[2:]
    args[args.index("--stream") + 1] = stream
    done = cli("publish", *args)
    assert done.returncode == 0, done.stderr
    raw = config.model_dump(by_alias=True, exclude={"base_dir"})
    raw["feed"]["stream"] = stream
    raw["federation"]["ledger"] = f"sqlite:///{tmp_path / 'example.db'}"
    summary = run_fleet(FleetConfig.model_validate({**raw, "base_dir": config.base_dir}))
    assert summary.status == "completed" and summary.bars > 500 and summary.portfolio.fills > 0
    assert summary.feed is not None and summary.feed.end == "end_marker" and summary.data_issues == 0
    assert all(a.errors == 0 for a in summary.agents) and len(summary.agents) == 10


@pytest.mark.usefixtures("ray_session")
def test_bench_redis_feed_reports_every_field(redis_url: str, redis_prefix: str, client: Any) -> None:
    from federation.bench.redis_feed import bench_redis_feed

    stream = redis_prefix + "bench"
    result = bench_redis_feed(agents=2, steps=60, symbols=2, url=redis_url, stream=stream)
    assert result["status"] == "completed" and result["bars"] == 120 == result["bars_delivered"]
    assert result["steps_delivered"] == 60 and result["acked"] == 121 and result["pending_after"] == 0
    for name in (
        "bars_per_s",
        "preloaded_bars_per_s",
        "inprocess_bars_per_s",
        "feed_only_bars_per_s",
        "publish_bars_per_s",
    ):
        assert result[name] > 0, name
    assert result["ratio"] == pytest.approx(result["bars_per_s"] / result["inprocess_bars_per_s"], rel=1e-2)
    assert result["ratio_to_preloaded"] == pytest.approx(
        result["bars_per_s"] / result["preloaded_bars_per_s"], rel=1e-2
    )
    assert result["decisions_per_s"] == pytest.approx(result["bars_per_s"] * 2, rel=1e-3)
    assert result["fills"] > 0 and result["suspended_agents"] == result["agent_errors"] == 0
    assert client.exists(stream) == 0, "the benchmark deletes its stream"


def test_an_entry_with_binary_fields_is_skipped_not_a_blocked_stream(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    add_steps(client, stream, range(2))
    raw = redis.Redis.from_url(redis_url)  # bytes, as a producer with a binary payload writes them
    raw.xadd(stream, {**bar("AAA", 2), "payload": b"\xff\xfe\x00binary"})
    raw.xadd(stream, {**bar("BBB", 2), "symbol": b"BB\xff"})
    raw.close()
    add_steps(client, stream, range(3, 4))
    add(client, stream, dict(END_MARKER))
    source = RedisBarSource(feed(redis_url, stream))
    source.check()
    steps = read_all(source)
    source.close()
    assert minutes(steps) == [0, 1, 2, 3], "the entry with an extra binary field is a good bar"
    assert source.stats.skipped == 1, "the undecodable symbol is skipped and reported"
    assert pending(client, stream) == 0


def test_a_destroyed_group_is_recreated_after_what_was_handled(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    add_steps(client, stream, range(4))
    source = RedisBarSource(feed(redis_url, stream, read_count=2))
    source.check()
    steps = source.steps()
    first = [next_step(steps, source) for _ in range(2)]
    client.xgroup_destroy(stream, "g")  # an operator resets the group (or a restart lost it)
    add_steps(client, stream, range(5, 7))
    add(client, stream, dict(END_MARKER))
    rest = []
    for step in steps:
        if step is not None:
            source.ack(step)
            rest.append(step)
    source.close()
    assert minutes(first) == [0, 1]
    assert minutes(rest) == [2, 3, 5, 6], "what came after is read, in order"
    assert source.stats.skipped == 0, "nothing handled was read again (it would be out of order)"
    assert "group_recreated" in [e.code for e in source.take_events()]
    assert source.stats.end == "end_marker"


def test_a_stream_deleted_during_a_blocking_read_is_recreated_not_a_crash(
    client: Any, redis_url: str, redis_prefix: str
) -> None:
    stream = redis_prefix + "bars"
    add_steps(client, stream, range(1))
    source = RedisBarSource(feed(redis_url, stream, block_ms=2000, idle_timeout_s=4))
    source.check()
    steps = source.steps()
    assert minutes([next_step(steps, source)]) == [0]
    deleter = threading.Timer(0.5, lambda: client.delete(stream))  # while XREADGROUP blocks
    deleter.start()
    rest = [s for s in steps if s is not None]
    deleter.join()
    source.close()
    assert rest == [] and source.stats.end == "idle_timeout"
    assert "group_recreated" in [e.code for e in source.take_events()]
