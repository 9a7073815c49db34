"""Market-data feeds: CSV parsing (generic and LEAN), validation, alignment, synthetic bars, blocks."""

from __future__ import annotations

import re
import textwrap
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation import feeds
from federation.config import CsvFeedConfig, SyntheticFeedConfig, load_config
from federation.errors import ConfigError, DataError
from federation.feeds import DataIssue, MarketData, load_feed
from federation.feeds.synthetic import year_fraction

LEAN_DIR = Path(__file__).resolve().parents[1] / "examples" / "data" / "lean" / "daily"
MINUTE_DIR = Path(__file__).resolve().parents[1] / "examples" / "data" / "lean" / "minute"
SPY_DAYS = ["20131004", "20131007", "20131008", "20131009", "20131010", "20131011"]
HEADER = "timestamp,open,high,low,close,volume\n"


UTC_MINUS_4 = timezone(timedelta(hours=-4))  # New York in October 2013 (EDT)


def ns(text: str) -> int:
    """ISO time with offset -> epoch ns, computed independently of the feed code."""
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load(folder: Path, paths: dict[str, Any], **options: Any) -> MarketData:
    config = CsvFeedConfig(kind="csv", paths=paths, **options)
    return load_feed(config, base_dir=folder, seed=0)


def synthetic(**options: Any) -> MarketData:
    seed = options.pop("federation_seed", 0)
    config = SyntheticFeedConfig(kind="synthetic", **{"symbols": ["A", "B"], **options})
    return load_feed(config, base_dir=Path("."), seed=seed)


# --- generic CSV -----------------------------------------------------------------------------------


def test_generic_header_any_case_and_order_with_offsets(tmp_path: Path) -> None:
    write(
        tmp_path,
        "x.csv",
        "Volume,CLOSE,note,Low,High,Open,Date\n"
        "1000,10.5,hi,9.5,11,10,2024-01-02T09:30:00-05:00\n"
        "2000,11.5,,10.5,12,11,2024-01-02T15:31:00Z\n",
    )
    data = load(tmp_path, {"X": "x.csv"})
    assert data.symbols == ("X",)
    assert data.ts.tolist() == [ns("2024-01-02T14:30:00+00:00"), ns("2024-01-02T15:31:00+00:00")]
    assert data.open[:, 0].tolist() == [10.0, 11.0]
    assert data.high[:, 0].tolist() == [11.0, 12.0]
    assert data.low[:, 0].tolist() == [9.5, 10.5]
    assert data.close[:, 0].tolist() == [10.5, 11.5]
    assert data.volume[:, 0].tolist() == [1000.0, 2000.0]
    assert data.valid.all()
    assert data.issues == ()


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = feeds.__doc__ or ""
    example = doc.split("Example::\n\n", 1)[1].split("\n\n", 1)[0]
    write(tmp_path, "x.csv", "\n".join(line.strip() for line in example.splitlines()) + "\n")
    data = load(tmp_path, {"X": "x.csv"}, on_invalid="error")
    assert data.ts.tolist() == [ns("2024-01-02T14:30:00+00:00"), ns("2024-01-02T14:31:00+00:00")]
    assert data.close[:, 0].tolist() == [472.65, 472.30]


def test_generic_naive_times_are_in_the_feed_timezone(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", HEADER + "2024-07-01 12:00,1,1,1,1,1\n2024-07-02,1,1,1,1,1\n")
    utc = load(tmp_path, {"X": "x.csv"})
    berlin = load(tmp_path, {"X": "x.csv"}, timezone="Europe/Berlin")
    assert utc.ts.tolist() == [ns("2024-07-01T12:00:00+00:00"), ns("2024-07-02T00:00:00+00:00")]
    assert berlin.ts.tolist() == [ns("2024-07-01T10:00:00+00:00"), ns("2024-07-01T22:00:00+00:00")]


def test_generic_epoch_integers_by_magnitude_and_compact_dates(tmp_path: Path) -> None:
    base = ns("2024-01-01T00:00:00+00:00")
    rows = [
        "1704067200",  # seconds
        "1704067260000",  # milliseconds, +1 min
        "1704067320000000",  # microseconds, +2 min
        "1704067380000000000",  # nanoseconds, +3 min
        "20240102",  # 8 digits: a date, not an epoch
    ]
    write(tmp_path, "x.csv", HEADER + "".join(f"{t},1,1,1,1,1\n" for t in rows))
    data = load(tmp_path, {"X": "x.csv"})
    minute = 60 * 10**9
    assert data.ts.tolist() == [
        base,
        base + minute,
        base + 2 * minute,
        base + 3 * minute,
        base + 1440 * minute,
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100000000000", 100_000_000_000 * 10**6),  # 10^11: milliseconds (1973-03-03)
        ("100000000000000", 100_000_000_000_000 * 10**3),  # 10^14: microseconds
        ("100000000000000000", 100_000_000_000_000_000),  # 10^17: nanoseconds
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_epoch_unit_boundaries(tmp_path: Path, value: str, expected: int) -> None:
    write(tmp_path, "x.csv", HEADER + f"{value},1,1,1,1,1\n")
    assert load(tmp_path, {"X": "x.csv"}).ts.tolist() == [expected]


# Just below each boundary the smaller unit applies, which puts the time after 2262.
@pytest.mark.parametrize(
    "value", ["99999999999", "99999999999999", "99999999999999999", "9223372036854775808", "2300-01-01"]
)
def test_times_beyond_nanosecond_range_are_errors(tmp_path: Path, value: str) -> None:
    write(tmp_path, "x.csv", HEADER + f"{value},1,1,1,1,1\n")
    with pytest.raises(DataError, match=rf"x\.csv:2: column timestamp: '{value}' is outside 1677-09-22"):
        load(tmp_path, {"X": "x.csv"})


def test_generic_skips_blank_lines_and_counts_them_in_line_numbers(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", HEADER + "\n2024-01-01,1,1,1,1,1\n\n2024-01-02,1,1,1,-1,1\n")
    data = load(tmp_path, {"X": "x.csv"})
    assert len(data) == 1
    assert [issue.line for issue in data.issues] == [5]


# --- LEAN ------------------------------------------------------------------------------------------


def test_lean_spy_daily_real_file() -> None:
    config = CsvFeedConfig(kind="csv", format="lean", paths={"SPY": Path("spy.csv")})
    data = load_feed(config, base_dir=LEAN_DIR, seed=0)
    assert len(data) == 5849
    assert data.issues == ()
    # 19980102 00:00,973100,975300,965300,973600,2150000 (deci-cents, New York midnight = 05:00 UTC)
    assert data.ts[0] == ns("1998-01-02T05:00:00+00:00")
    assert data.open[0, 0] == 97.31
    assert data.high[0, 0] == 97.53
    assert data.low[0, 0] == 96.53
    assert data.close[0, 0] == 97.36
    assert data.volume[0, 0] == 2_150_000
    # Line 125: 19980701 00:00,1140600,... in daylight-saving time (UTC-4).
    assert data.ts[124] == ns("1998-07-01T04:00:00+00:00")
    assert data.open[124, 0] == 114.06
    assert np.nanmin(data.low) > 50 and np.nanmax(data.high) < 500


def test_lean_start_end_use_the_local_date() -> None:
    config = CsvFeedConfig(
        kind="csv",
        format="lean",
        paths={"SPY": Path("spy.csv")},
        start="2020-01-01",
        end="2020-12-31",
    )
    data = load_feed(config, base_dir=LEAN_DIR, seed=0)
    text = (LEAN_DIR / "spy.csv").read_text()
    assert len(data) == sum(line.startswith("2020") for line in text.splitlines()) == 253
    assert data.ts[0] == ns("2020-01-02T05:00:00+00:00")
    assert data.ts[-1] == ns("2020-12-31T05:00:00+00:00")


def test_example_fleet_loads_all_files_aligned() -> None:
    names = ["spy", "qqq", "iwm", "aapl", "ibm", "goog", "eem"]
    config = CsvFeedConfig(kind="csv", format="lean", paths={n.upper(): Path(f"{n}.csv") for n in names})
    data = load_feed(config, base_dir=LEAN_DIR, seed=0)
    assert data.symbols == tuple(n.upper() for n in names)
    assert data.valid.sum(axis=0).tolist() == [5849, 3964, 5244, 5849, 5849, 4183, 5245]
    assert data.issues == ()


def test_lean_file_with_a_header_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", HEADER + "20240102 00:00,1,1,1,1,1\n")
    with pytest.raises(DataError, match=r"x\.csv:1: .*format = \"generic\""):
        load(tmp_path, {"X": "x.csv"}, format="lean")


# --- LEAN minute, several files per symbol ---------------------------------------------------------


def minute_rows(day: str) -> list[str]:
    return (MINUTE_DIR / "spy" / f"{day}_spy_minute_trade.csv").read_text().splitlines()


def lean_minute(paths: Any, **options: Any) -> MarketData:
    config = CsvFeedConfig(kind="csv", format="lean", paths={"SPY": paths}, **options)
    return load_feed(config, base_dir=MINUTE_DIR, seed=0)


def test_lean_minute_glob_over_real_files() -> None:
    data = lean_minute("spy/*_trade.csv")
    assert data.issues == ()
    assert len(data) == sum(len(minute_rows(day)) for day in SPY_DAYS) == 4839
    # 20131004_spy_minute_trade.csv line 1: 14760000,1676500,1676500,1676500,1676500,20000
    # 14,760,000 ms after midnight = 04:06 New York (EDT, UTC-4) = 08:06 UTC.
    assert minute_rows("20131004")[0] == "14760000,1676500,1676500,1676500,1676500,20000"
    assert data.ts[0] == ns("2013-10-04T08:06:00+00:00")
    assert (data.open[0, 0], data.high[0, 0], data.low[0, 0], data.close[0, 0]) == (167.65,) * 4
    assert data.volume[0, 0] == 20_000
    # 20131011 last line: 71940000,1704100,... = 19:59 New York = 23:59 UTC.
    assert data.ts[-1] == ns("2013-10-11T23:59:00+00:00")
    assert data.close[-1, 0] == 170.41
    assert bool(np.all(np.diff(data.ts) > 0))
    # One session per file: the first bar of each day is the file's first row.
    new_york_days = [str(datetime.fromtimestamp(t / 1e9, UTC_MINUS_4).date()) for t in data.ts.tolist()]
    counts = {day: new_york_days.count(day) for day in dict.fromkeys(new_york_days)}
    assert counts == {f"{d[:4]}-{d[4:6]}-{d[6:]}": len(minute_rows(d)) for d in SPY_DAYS}


def test_lean_minute_list_of_paths_equals_the_glob_in_any_order() -> None:
    by_glob = lean_minute("spy/2013100?_spy_minute_trade.csv")
    listed = [Path(f"spy/{day}_spy_minute_trade.csv") for day in SPY_DAYS[:4]]
    for paths in (listed, listed[::-1]):
        data = lean_minute(paths)
        assert np.array_equal(data.ts, by_glob.ts)
        assert np.array_equal(data.close, by_glob.close)
        assert np.array_equal(data.volume, by_glob.volume)
    assert len(by_glob) == sum(len(minute_rows(day)) for day in SPY_DAYS[:4])


def test_lean_minute_start_end_select_sessions() -> None:
    data = lean_minute("spy/*_trade.csv", start="2013-10-08", end="2013-10-08")
    assert len(data) == len(minute_rows("20131008"))
    assert data.ts[0] == ns("2013-10-08T08:00:00+00:00")  # 14400000 ms = 04:00 New York


def test_lean_minute_paths_in_a_toml_config(tmp_path: Path) -> None:
    folder = MINUTE_DIR / "spy"
    agents = '[[agents]]\nclass = "agents.momentum:MomentumAgent"\n'
    glob_toml = f'[feed]\nkind = "csv"\nformat = "lean"\npaths = {{ SPY = "{folder}/*_trade.csv" }}\n'
    list_toml = (
        f'[feed]\nkind = "csv"\nformat = "lean"\n[feed.paths]\nSPY = ["{folder}/20131004_spy_minute_trade.csv",'
        f' "{folder}/20131007_spy_minute_trade.csv"]\n'
    )
    write(tmp_path, "glob.toml", glob_toml + agents)
    write(tmp_path, "list.toml", list_toml + agents)
    by_glob = load_config(tmp_path / "glob.toml").feed
    listed = load_config(tmp_path / "list.toml").feed
    assert isinstance(by_glob, CsvFeedConfig) and isinstance(listed, CsvFeedConfig)
    assert by_glob.paths == {"SPY": folder / "*_trade.csv"}
    assert listed.paths["SPY"] == [folder / f"{day}_spy_minute_trade.csv" for day in SPY_DAYS[:2]]
    assert len(load_feed(by_glob, base_dir=tmp_path, seed=0)) == 4839
    assert len(load_feed(listed, base_dir=tmp_path, seed=0)) == 711 + 828


def test_the_documented_paths_examples_load() -> None:
    doc = feeds.__doc__ or ""
    snippets = [part.split("\n\n", 1)[0] for part in doc.split("::\n\n")[1:]]
    configs = [textwrap.dedent(s) for s in snippets if s.startswith("    [feed]")]
    assert len(configs) == 2
    lengths = []
    for text in configs:
        feed = CsvFeedConfig(**tomllib.loads(text)["feed"])
        lengths.append(len(load_feed(feed, base_dir=MINUTE_DIR.parents[2], seed=0)))
    assert lengths == [4839, 711 + 828]


def test_empty_list_of_paths_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="SPY: the list of files is empty"):
        CsvFeedConfig(kind="csv", paths={"SPY": []})


def test_glob_without_match_is_an_error() -> None:
    with pytest.raises(DataError, match=r"spy/\*_quote\.csv: the glob pattern of SPY matches no file"):
        lean_minute("spy/*_quote.csv")


def test_file_listed_twice_is_an_error() -> None:
    with pytest.raises(DataError, match=r"20131004_spy_minute_trade\.csv: listed more than once for SPY"):
        lean_minute(["spy/20131004_spy_minute_trade.csv", "spy/20131004_*.csv"])


QUOTE_ROW = "14400000,1674200,1675800,1674200,1675600,20000,1678700,1678700,1676000,1676000,20000\n"


@pytest.mark.parametrize("name", ["20131004_spy_minute_quote.csv", "20131004_spy_bars.csv"])
def test_lean_quote_bars_are_refused(tmp_path: Path, name: str) -> None:
    write(tmp_path, name, QUOTE_ROW)
    with pytest.raises(DataError, match=r"quote bars are not supported: use the \*_trade\.csv files"):
        load(tmp_path, {"SPY": name}, format="lean")


def test_lean_minute_file_needs_a_date_prefix(tmp_path: Path) -> None:
    write(tmp_path, "spy_minute_trade.csv", "\n".join(minute_rows("20131004")) + "\n")
    with pytest.raises(DataError, match=r"spy_minute_trade\.csv: .*must start with YYYYMMDD_"):
        load(tmp_path, {"SPY": "spy_minute_trade.csv"}, format="lean")
    write(tmp_path, "20131304_spy_minute_trade.csv", "14760000,1,1,1,1,1\n")  # month 13
    with pytest.raises(DataError, match="must start with YYYYMMDD_"):
        load(tmp_path, {"SPY": "20131304_spy_minute_trade.csv"}, format="lean")


@pytest.mark.parametrize("value", ["86400000", "09:30", "20131004 09:30"])
def test_lean_minute_bad_time_is_an_error(tmp_path: Path, value: str) -> None:
    write(tmp_path, "20131004_x_minute_trade.csv", f"34200000,1,1,1,1,1\n{value},1,1,1,1,1\n")
    with pytest.raises(DataError, match=rf"_trade\.csv:2: column 1 \(time\): '{value}' is not milliseconds"):
        load(tmp_path, {"X": "20131004_x_minute_trade.csv"}, format="lean")


def test_issues_across_files_name_each_file_and_its_own_lines(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        "20240102_a_minute_trade.csv",
        "34200000,10000,10000,10000,10000,1\n34260000,10000,10000,10000,10000,1\n",
    )
    second = write(
        tmp_path,
        "20240102_b_minute_trade.csv",
        "34260000,10000,10000,10000,10000,1\n"  # 09:31 again: duplicate of the first file's line 2
        "34320000,10000,10000,10000,10000,1\n"
        "34380000,10000,10000,10000,0,1\n",  # close 0
    )
    data = load(tmp_path, {"X": "2024*.csv"}, format="lean")
    assert data.ts.tolist() == [ns(f"2024-01-02T14:3{m}:00+00:00") for m in (0, 1, 2)]
    assert [(i.file, i.line) for i in data.issues] == [(str(second), 1), (str(second), 3)]
    assert data.issues[0].reason == f"duplicate timestamp 2024-01-02T14:31:00Z (same as line 2 of {first})"
    assert data.issues[1].reason.startswith("close 0 is not positive")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(second))}:1: X: duplicate timestamp .*on_invalid = \"skip\""
    ):
        load(tmp_path, {"X": "2024*.csv"}, format="lean", on_invalid="error")


def test_out_of_order_within_a_later_file_cites_its_own_line(tmp_path: Path) -> None:
    write(tmp_path, "20240102_a.csv", "34200000,1,1,1,1,1\n")
    second = write(tmp_path, "20240103_a.csv", "34260000,1,1,1,1,1\n\n34200000,1,1,1,1,1\n")
    data = load(tmp_path, {"X": ["20240103_a.csv", "20240102_a.csv"]}, format="lean")
    assert len(data) == 2
    assert [(i.file, i.line) for i in data.issues] == [(str(second), 3)]
    assert data.issues[0].reason.endswith("(earlier than 2024-01-03T14:31:00Z at line 1)")


# --- alignment, blocks, last_close -----------------------------------------------------------------


def test_alignment_is_the_union_of_timestamps(tmp_path: Path) -> None:
    write(tmp_path, "a.csv", HEADER + "".join(f"2024-01-0{d},{d},{d},{d},{d},1\n" for d in (1, 2, 3)))
    write(tmp_path, "b.csv", HEADER + "".join(f"2024-01-0{d},{d}0,{d}0,{d}0,{d}0,1\n" for d in (2, 4)))
    data = load(tmp_path, {"A": "a.csv", "B": "b.csv"})
    nan = np.nan
    assert data.ts.tolist() == [ns(f"2024-01-0{d}T00:00:00+00:00") for d in (1, 2, 3, 4)]
    assert data.valid.tolist() == [[True, False], [True, True], [True, False], [False, True]]
    assert np.array_equal(data.close, np.array([[1, nan], [2, 20], [3, nan], [nan, 40]]), equal_nan=True)
    assert np.isnan(data.volume[~data.valid]).all()
    assert np.array_equal(data.last_close(), np.array([[1, nan], [2, 20], [3, 20], [3, 40]]), equal_nan=True)


@pytest.mark.parametrize("size", [1, 7, 100, 5000])
def test_blocks_cover_every_row_once_as_views(size: int) -> None:
    data = synthetic(bars=250, symbols=["A", "B", "C"])
    blocks = list(data.blocks(size))
    assert [len(b) for b in blocks] == [min(size, 250 - i) for i in range(0, 250, size)]
    assert np.array_equal(np.concatenate([b.ts for b in blocks]), data.ts)
    assert np.array_equal(np.concatenate([b.close for b in blocks]), data.close)
    assert all(np.shares_memory(b.close, data.close) for b in blocks)
    assert all(b.symbols == data.symbols for b in blocks)


def test_blocks_rejects_a_non_positive_size() -> None:
    with pytest.raises(ValueError, match="block size"):
        next(synthetic(bars=10).blocks(0))


def test_market_data_is_read_only() -> None:
    data = synthetic(bars=10)
    with pytest.raises(ValueError, match="read-only"):
        data.close[0, 0] = 1.0


def test_data_issue_str() -> None:
    assert (
        str(DataIssue("spy.csv", 12, "SPY", "high 1 is below low 2"))
        == "spy.csv:12: SPY: high 1 is below low 2"
    )
    assert str(DataIssue("<synthetic>", 0, "A", "bad")) == "<synthetic>: A: bad"


# --- validation ------------------------------------------------------------------------------------

GOOD_1 = "2024-01-01,10,11,9,10,100\n"
GOOD_2 = "2024-01-02,10,11,9,10,100\n"
GOOD_4 = "2024-01-04,10,11,9,10,100\n"

# (third data row, which is line 4 of the file; the reason the feed must give)
BAD_RECORDS = [
    ("2024-01-03,nan,11,9,10,100", "open is nan"),
    ("2024-01-03,10,inf,9,10,100", "high is inf"),
    ("2024-01-03,10,11,9,10,-inf", "volume is -inf"),
    ("2024-01-03,10,11,9,0,100", "close 0 is not positive"),
    ("2024-01-03,10,11,-9,10,100", "low -9 is not positive"),
    ("2024-01-03,10,11,9,10,-5", "volume -5 is negative"),
    ("2024-01-03,10,9,11,10,100", "high 9 is below low 11"),
    ("2024-01-03,12,11,9,10,100", "open 12 is outside [low 9, high 11]"),
    ("2024-01-03,10,11,9,8.5,100", "close 8.5 is outside [low 9, high 11]"),
    ("2024-01-03,10,11,9,abc,100", "column close: 'abc' is not a number"),
    ("2024-01-03,10,11,9,,100", "column close: '' is not a number"),
    ("2024-01-03,10,11", "the row has 3 fields, the header 6"),
    ("2024-01-02,10,11,9,10,100", "duplicate timestamp 2024-01-02T00:00:00Z (same as line 3)"),
    ("2024-01-01T12:00Z,10,11,9,10,100", "timestamp 2024-01-01T12:00:00Z is out of order"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_RECORDS)
def test_bad_record_is_skipped_with_its_line(tmp_path: Path, row: str, reason: str) -> None:
    write(tmp_path, "x.csv", HEADER + GOOD_1 + GOOD_2 + row + "\n" + GOOD_4)
    data = load(tmp_path, {"X": "x.csv"})
    assert data.ts.tolist() == [ns(f"2024-01-0{d}T00:00:00+00:00") for d in (1, 2, 4)]
    assert len(data.issues) == 1
    issue = data.issues[0]
    assert (issue.file, issue.line, issue.symbol) == (str(tmp_path / "x.csv"), 4, "X")
    assert reason in issue.reason


@pytest.mark.parametrize(("row", "reason"), BAD_RECORDS)
def test_bad_record_is_an_error_when_asked(tmp_path: Path, row: str, reason: str) -> None:
    write(tmp_path, "x.csv", HEADER + GOOD_1 + GOOD_2 + row + "\n" + GOOD_4)
    with pytest.raises(DataError) as caught:
        load(tmp_path, {"X": "x.csv"}, on_invalid="error")
    message = str(caught.value)
    assert f"{tmp_path / 'x.csv'}:4: X: " in message
    assert reason in message
    assert 'on_invalid = "skip"' in message


def test_lean_prices_are_validated_after_scaling(tmp_path: Path) -> None:
    write(
        tmp_path,
        "x.csv",
        "20240102 00:00,100000,110000,90000,100000,5\n20240103 00:00,100000,90000,110000,1,5\n",
    )
    data = load(tmp_path, {"X": "x.csv"}, format="lean")
    assert data.close[:, 0].tolist() == [10.0]
    assert [(i.line, i.reason) for i in data.issues] == [(2, "high 9 is below low 11")]


def test_order_is_checked_against_accepted_records_only(tmp_path: Path) -> None:
    rows = [
        "2024-01-01,10,11,9,10,1",
        "2024-01-05,10,11,9,10,1",
        "2024-01-02,10,11,9,10,1",  # earlier than 01-05: out of order
        "2024-01-03,10,11,9,10,1",  # still earlier than 01-05, the last accepted record
        "2024-01-07,nan,11,9,10,1",  # bad value: does not count as the latest time
        "2024-01-06,10,11,9,10,1",  # later than 01-05: accepted
    ]
    write(tmp_path, "x.csv", HEADER + "\n".join(rows) + "\n")
    data = load(tmp_path, {"X": "x.csv"})
    assert data.ts.tolist() == [ns(f"2024-01-0{d}T00:00:00+00:00") for d in (1, 5, 6)]
    assert [i.line for i in data.issues] == [4, 5, 6]
    assert "earlier than 2024-01-05T00:00:00Z at line 3" in data.issues[1].reason
    assert "open is nan" in data.issues[2].reason


def test_error_mode_reports_the_first_bad_line(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", HEADER + GOOD_1 + "2024-01-02,10,11,9,-1,1\n2024-01-01,10,11,9,10,1\n")
    with pytest.raises(DataError, match=r"x\.csv:3: X: close -1 is not positive"):
        load(tmp_path, {"X": "x.csv"}, on_invalid="error")


def test_a_file_without_any_valid_record_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", HEADER + "2024-01-01,$1,$1,$1,$1,1\n")
    with pytest.raises(DataError, match=r"x\.csv: no valid records for X.*'\$1' is not a number"):
        load(tmp_path, {"X": "x.csv"})


# --- start / end, file errors ----------------------------------------------------------------------


def test_start_end_inclusive_on_local_dates(tmp_path: Path) -> None:
    rows = [f"2024-01-0{d}T12:00:00Z,1,1,1,1,1" for d in range(1, 6)]
    rows.insert(1, "2024-01-02T02:00:00Z,1,1,1,1,1")  # 2024-01-01 21:00 in New York
    write(tmp_path, "x.csv", HEADER + "\n".join(rows) + "\n")
    utc = load(tmp_path, {"X": "x.csv"}, start="2024-01-02", end="2024-01-04")
    assert utc.ts.tolist() == [ns("2024-01-02T02:00:00+00:00")] + [
        ns(f"2024-01-0{d}T12:00:00+00:00") for d in (2, 3, 4)
    ]
    new_york = load(
        tmp_path, {"X": "x.csv"}, start="2024-01-02", end="2024-01-04", timezone="America/New_York"
    )
    assert new_york.ts.tolist() == [ns(f"2024-01-0{d}T12:00:00+00:00") for d in (2, 3, 4)]


def test_start_end_without_records_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", HEADER + GOOD_1 + GOOD_2)
    with pytest.raises(
        DataError, match=r"x\.csv: no records of X between start 2025-01-01.*2024-01-01 to 2024-01-02"
    ):
        load(tmp_path, {"X": "x.csv"}, start="2025-01-01")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: data file of X not found"):
        load(tmp_path, {"X": "nope.csv"})


def test_empty_file(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", "\n")
    with pytest.raises(DataError, match=r"x\.csv: the file is empty"):
        load(tmp_path, {"X": "x.csv"})


def test_header_without_rows(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", HEADER)
    with pytest.raises(DataError, match=r"x\.csv: no data rows for X"):
        load(tmp_path, {"X": "x.csv"})


def test_missing_column(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", "date,open,high,low,close\n2024-01-01,1,1,1,1\n")
    with pytest.raises(DataError, match=r"x\.csv:1: missing column volume in the header"):
        load(tmp_path, {"X": "x.csv"})


def test_missing_time_column_and_no_header(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", "20240102 00:00,1,1,1,1,1\n")
    with pytest.raises(DataError, match=r"x\.csv:1: missing column a time column.*looks like a data row"):
        load(tmp_path, {"X": "x.csv"})


@pytest.mark.parametrize("value", ["01/02/2024", "2024-13-01", "yesterday", "-5"])
def test_bad_time_is_an_error_even_when_skipping(tmp_path: Path, value: str) -> None:
    write(tmp_path, "x.csv", "Time,open,high,low,close,volume\n" + GOOD_1.replace("2024-01-01", value))
    with pytest.raises(DataError, match=rf"x\.csv:2: column time: '{value}' is not an ISO 8601"):
        load(tmp_path, {"X": "x.csv"})


def test_unknown_timezone_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, "x.csv", HEADER + GOOD_1)
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        load(tmp_path, {"X": "x.csv"}, timezone="Mars/Olympus")


# --- synthetic -------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed() -> None:
    first, again = synthetic(bars=300, federation_seed=7), synthetic(bars=300, federation_seed=7)
    other = synthetic(bars=300, federation_seed=8)
    for name in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.close, other.close)
    # The feed's own seed overrides the federation seed.
    assert np.array_equal(synthetic(bars=300, seed=7, federation_seed=99).close, first.close)


def test_synthetic_shape_times_and_consistent_ohlc() -> None:
    data = synthetic(bars=1000, symbols=["A", "B", "C"], interval="5m", start=datetime(2024, 1, 1, 9, 30))
    assert data.symbols == ("A", "B", "C")
    assert data.close.shape == (1000, 3) and data.ts.shape == (1000,)
    assert data.valid.all()
    assert data.ts[0] == ns("2024-01-01T09:30:00+00:00")
    assert set(np.diff(data.ts).tolist()) == {5 * 60 * 10**9}
    assert (data.low > 0).all() and (data.volume > 0).all()
    assert (data.high >= np.maximum(data.open, data.close)).all()
    assert (data.low <= np.minimum(data.open, data.close)).all()
    assert np.allclose(data.open[0], 100.0, rtol=1e-12)
    assert np.array_equal(data.open[1:], data.close[:-1])


def test_synthetic_correlation_and_volatility_as_configured() -> None:
    data = synthetic(bars=5000, symbols=["A", "B", "C"], correlation=0.6, volatility=0.3, drift=0.0)
    returns = np.diff(np.log(data.close), axis=0)
    corr = np.corrcoef(returns.T)
    assert np.all(np.abs(corr[np.triu_indices(3, 1)] - 0.6) < 0.1)
    annual = returns.std(axis=0) / np.sqrt(year_fraction("1d"))
    assert np.all(np.abs(annual - 0.3) < 0.03)


def test_synthetic_without_correlation_is_uncorrelated() -> None:
    data = synthetic(bars=5000, correlation=0.0)
    returns = np.diff(np.log(data.close), axis=0)
    assert abs(np.corrcoef(returns.T)[0, 1]) < 0.1


def test_year_fraction() -> None:
    assert year_fraction("1d") == 1 / 252
    assert year_fraction("1h") == pytest.approx(1 / (252 * 6.5))
    assert year_fraction("1m") == pytest.approx(1 / (252 * 6.5 * 60))


def test_synthetic_overflow_is_reported() -> None:
    with pytest.raises(DataError, match=r"synthetic feed: A bar .*lower feed\.drift"):
        synthetic(bars=10, drift=1e6)


def test_synthetic_duplicate_symbols() -> None:
    with pytest.raises(ConfigError, match="A listed more than once"):
        synthetic(symbols=["A", "B", "A"])
