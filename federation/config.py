"""The fleet config: a TOML file validated by the pydantic models below (the one source of defaults).

Relative paths (data files, agent files) are resolved against the config file's folder.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.budget import meter_problem
from federation.errors import ConfigError
from federation.events_out.config import EventStreamConfig
from federation.money import E8
from policies.breakers import BreakerSpec
from policies.budget import BudgetLimit
from policies.trading_state import TradingState

ISOLATION_TIERS = ("actor", "shared")
Isolation = Literal["actor", "shared"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LedgerSettings(_Model):
    """``[ledger]``: the write-behind buffer between the trading loop and the ledger database."""

    buffer_batches: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Batches (one per block or tick) that may wait to be written; when full, the run "
        "waits for room (back-pressure) instead of growing without bound.",
    )
    merge_batches: int = Field(
        64, ge=1, le=10_000, description="Consecutive waiting batches written in one transaction."
    )
    flush_timeout_s: float = Field(
        600.0,
        gt=0,
        description="At the end of a run, how long to wait for an unreachable database before saving "
        "the unwritten batches to a file (`federation ledger-replay` writes them later).",
    )
    retry_initial_s: float = Field(0.05, gt=0, le=60, description="First retry delay after a failed write.")
    retry_max_s: float = Field(2.0, gt=0, le=600, description="Longest retry delay (the delay doubles).")
    pool_size: int = Field(
        4,
        ge=1,
        le=100,
        description="Size of each PostgreSQL pool (a writing process has one for reads and one for its "
        "writer thread, plus a connection that polls for halts).",
    )

    @model_validator(mode="after")
    def _retry_order(self) -> LedgerSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(
                f"retry_max_s ({self.retry_max_s}) is below retry_initial_s ({self.retry_initial_s}); "
                "the delay grows from the first to the longest"
            )
        return self


class FederationSettings(_Model):
    """``[federation]``: capital, ledger, seed and the batching of the data plane."""

    capital: Decimal = Field(Decimal(1_000_000), gt=0, description="Starting cash of the whole portfolio.")
    currency: str = Field("USD", min_length=1, description="Currency of capital, prices and fees.")
    ledger: str = Field(
        "sqlite:///federation.db",
        description="Ledger URL: sqlite:///relative/path.db, sqlite:////absolute/path.db, a plain path, or "
        "postgresql://user@host:5432/db (PostgreSQL; add ?search_path=schema for a schema of its own).",
    )
    seed: int = Field(0, ge=0, description="Seed for everything random (synthetic feed).")
    block_size: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Bars delivered to agents per call in backtests; fills reach agents between blocks.",
    )
    aggregation: Literal["fixed_weights", "confidence_weighted"] = Field(
        "fixed_weights", description="How agents' signals combine into portfolio targets (policies/)."
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join ('auto' or host:port); None starts a local Ray."
    )
    mode: Literal["backtest", "live"] = Field(
        "backtest",
        description="'backtest': replay in blocks as fast as possible. 'live': one bar per tick in real "
        "time ([live]); busy agents get their missed bars coalesced.",
    )
    isolation: Isolation = Field(
        "actor",
        description="Default tier of agents that set none: 'actor' (one Ray actor each) or 'shared' "
        "(many agents per host actor).",
    )
    shared_hosts: int = Field(
        0, ge=0, le=10_000, description="Host actors of the shared tier; 0 = the cluster's CPU count."
    )
    agent_timeout_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="A call to an agent running longer than this suspends the agent for the rest of the run.",
    )


class LiveSettings(_Model):
    """``[live]``: the real-time data path (``[federation] mode = "live"``).

    The built-in tick source replays the configured feed one bar per tick at a fixed pace (paper trading
    on recorded or synthetic data). Exchange feeds are not built yet.
    """

    tick_interval_ms: float = Field(
        100.0, ge=0, le=3_600_000, description="Time between ticks; 0 = next tick as soon as one is done."
    )
    decision_timeout_ms: float = Field(
        50.0,
        gt=0,
        le=600_000,
        description="How long a tick waits for agents; a later answer counts on a later tick and the "
        "agent's missed bars are coalesced into its next batch.",
    )
    max_backlog_bars: int = Field(
        1024, ge=1, le=1_000_000, description="Bars kept for a busy agent; older ones are dropped."
    )
    max_ticks: int | None = Field(None, ge=1, description="Stop after this many ticks (default: feed end).")


class RecoverySettings(_Model):
    """``[recovery]``: how agents and the execution actor come back after a crash, a hang or a kill.

    The supervisor checkpoints each agent's ``state()`` to the ledger; an agent whose process dies is
    restarted, ``restore()``d from its last checkpoint and fed the calls it made since (the replay
    buffer), so its signals converge to what they would have been. Repeated crashes, deadline misses or
    (optionally) hook errors within a window quarantine it instead: it gets no more bars, an
    ``agent_quarantined`` event is recorded, and its targets are held or flattened.
    """

    checkpoint_every_bars: int = Field(
        50, ge=1, le=10_000_000, description="Checkpoint each agent after this many bars it processed..."
    )
    checkpoint_every_s: float = Field(10.0, gt=0, description="...or after this many seconds, if sooner.")
    replay_bars: int = Field(
        2000,
        ge=0,
        le=10_000_000,
        description="Bars kept per agent since its last checkpoint, replayed after a restart; beyond "
        "this the oldest are dropped and the restored agent misses them (recorded).",
    )
    max_restarts: int = Field(5, ge=0, le=10_000, description="Restarts of one agent within the window...")
    restart_window_s: float = Field(60.0, gt=0, description="...after which the agent is quarantined.")
    miss_deadline_ms: float | None = Field(
        None,
        gt=0,
        description="A call slower than this is a deadline miss (its signal misses the step; the step "
        "goes on). Default: [live] decision_timeout_ms in live mode; backtests count no misses.",
    )
    max_misses: int = Field(20, ge=1, description="Misses within miss_window_s that quarantine the agent.")
    miss_window_s: float = Field(10.0, gt=0)
    max_errors: int | None = Field(
        None,
        ge=1,
        description="Hook exceptions within error_window_s that quarantine the agent; unset: exceptions "
        "are recorded (with traceback) and the agent continues.",
    )
    error_window_s: float = Field(60.0, gt=0)
    spare_processes: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Idle agent processes kept ready (actor tier) so a dead agent restarts without "
        "waiting for a new process; about the number of agents that may die at once. Each costs an idle "
        "process.",
    )
    on_quarantine: Literal["hold", "flatten"] = Field(
        "hold",
        description="A quarantined agent's targets: 'hold' keeps its positions, 'flatten' closes them.",
    )
    execution_max_restarts: int = Field(
        3,
        ge=0,
        le=1000,
        description="Restarts of the execution actor per run (live mode: it reconciles with the venue, "
        "which runs as its own actor). Past this the run fails.",
    )


class CsvFeedConfig(_Model):
    """``[feed] kind = "csv"``: historical replay of one CSV file per symbol, aligned on time."""

    kind: Literal["csv"]
    format: Literal["generic", "lean"] = Field(
        "generic",
        description="'generic': header + OHLCV; 'lean': QuantConnect LEAN equity daily, hour or minute bars.",
    )
    paths: dict[str, Path | list[Path]] = Field(
        min_length=1,
        description="Symbol -> CSV file, list of files, or glob pattern ('*', '?'); one symbol's files are "
        "joined in time order.",
    )
    timezone: str | None = Field(
        None, description="Zone of naive timestamps; default UTC (generic) or America/New_York (lean)."
    )
    start: date | None = Field(None, description="First date to replay (inclusive).")
    end: date | None = Field(None, description="Last date to replay (inclusive).")
    on_invalid: Literal["skip", "error"] = Field(
        "skip", description="Bad records (NaN, <= 0, high < low, out of order, duplicate): skip or stop."
    )

    @field_validator("paths")
    @classmethod
    def _no_empty_list(cls, value: dict[str, Path | list[Path]]) -> dict[str, Path | list[Path]]:
        for symbol, files in value.items():
            if isinstance(files, list) and not files:
                raise ValueError(f"{symbol}: the list of files is empty; give at least one path or a glob")
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> CsvFeedConfig:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}; swap them")
        return self


class SyntheticFeedConfig(_Model):
    """``[feed] kind = "synthetic"``: seeded correlated geometric Brownian motion."""

    kind: Literal["synthetic"]
    symbols: list[str] = Field(min_length=1)
    bars: int = Field(1000, ge=2, le=10_000_000)
    start: datetime = datetime(2020, 1, 1)
    interval: Literal["1m", "5m", "15m", "1h", "1d"] = "1d"
    drift: float = Field(0.05, description="Annualized drift of log prices.")
    volatility: float = Field(0.2, gt=0, le=5, description="Annualized volatility.")
    correlation: float = Field(0.3, ge=0, lt=1, description="Pairwise correlation of returns.")
    start_price: float = Field(100.0, gt=0)
    seed: int | None = Field(None, ge=0, description="Overrides [federation] seed for the feed.")


REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


class RedisFeedConfig(_Model):
    """``[feed] kind = "redis"``: bars read as they arrive from a Redis stream through a consumer group.

    Live mode only (ticks are driven by arriving bars); the message format and the delivery guarantees
    are in :mod:`federation.feeds.redis_stream` and ``docs/redis-feed.md``.
    """

    kind: Literal["redis"]
    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis server: redis://[user:password@]host:port/db, rediss:// (TLS) or unix:///path.",
    )
    stream: str = Field(min_length=1, description="Key of the stream producers add bars to.")
    symbols: list[str] = Field(
        min_length=1, description="Symbols of the run; entries of other symbols are skipped and reported."
    )
    group: str = Field("federation", min_length=1, description="Consumer group the run reads with.")
    consumer: str | None = Field(
        None,
        min_length=1,
        description="Consumer name in the group; default 'federation-<hostname>' (the same after a "
        "restart, so a restarted run re-reads what it left unacknowledged).",
    )
    start: Literal["new", "earliest"] = Field(
        "new",
        description="Where a group this run creates starts: 'new' (entries added from now on) or "
        "'earliest' (the whole stream). An existing group continues where it stopped.",
    )
    timezone: str = Field("UTC", description="Zone of ISO timestamps without an offset.")
    on_invalid: Literal["skip", "error"] = Field(
        "skip",
        description="Bad entries (unreadable, NaN, <= 0, high < low, out of order, duplicate, unknown "
        "symbol): skip and report, or stop the run.",
    )
    step_idle_ms: float = Field(
        200.0,
        gt=0,
        le=600_000,
        description="A time step goes to the agents when a bar with a later time arrives, or after the "
        "stream was idle this long.",
    )
    idle_timeout_s: float | None = Field(
        None, gt=0, description="End the run when no entry arrived for this long; none: wait for ever."
    )
    max_bars: int | None = Field(None, ge=1, description="End the run after this many accepted bars.")
    read_count: int = Field(500, ge=1, le=100_000, description="Entries asked for per XREADGROUP.")
    block_ms: int = Field(
        250,
        ge=1,
        le=60_000,
        description="Longest wait of one read: how often an idle run checks for a halt or an idle timeout.",
    )
    reconnect_min_s: float = Field(
        0.1, gt=0, le=3600, description="Redis down: first wait before reconnecting (doubles each try)."
    )
    reconnect_max_s: float = Field(5.0, gt=0, le=3600, description="Redis down: longest wait between tries.")
    claim_idle_s: float | None = Field(
        None,
        gt=0,
        description="At start, take over entries other consumers of the group left unacknowledged for at "
        "least this long (a consumer that died); none: only this consumer's own.",
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(REDIS_URL_SCHEMES):
            raise ValueError(
                f"{value!r} is not a Redis URL; write redis://host:6379/0, rediss://host:6380/0 (TLS) or "
                "unix:///path/to/redis.sock"
            )
        return value

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for symbol in value:
            if not symbol.strip():
                raise ValueError("a symbol is empty; list names such as 'SPY'")
            if symbol in seen:
                raise ValueError(f"{symbol!r} is listed twice; list each symbol once")
            seen.add(symbol)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not a known time zone; use an IANA name such as 'UTC' or 'America/New_York'"
            ) from None
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> RedisFeedConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s = {self.reconnect_min_s} is above reconnect_max_s = "
                f"{self.reconnect_max_s}; swap them"
            )
        if self.idle_timeout_s is not None and self.idle_timeout_s * 1000 <= self.step_idle_ms:
            raise ValueError(
                f"idle_timeout_s = {self.idle_timeout_s} ends the run before step_idle_ms = "
                f"{self.step_idle_ms:g} completes a step; make idle_timeout_s longer"
            )
        return self


FeedConfig = Annotated[CsvFeedConfig | SyntheticFeedConfig | RedisFeedConfig, Field(discriminator="kind")]


class ExecutionConfig(_Model):
    """``[execution]``: order type and the simulated venue's fill model."""

    order_type: Literal["market", "limit"] = "market"
    limit_offset_bps: float = Field(
        0.0, ge=0, le=10_000, description="Limit orders: price = decision close -/+ offset (buy/sell)."
    )
    slippage_bps: float = Field(1.0, ge=0, le=10_000, description="Market orders fill this much worse.")
    taker_fee_bps: float = Field(1.0, ge=0, le=10_000)
    maker_fee_bps: float = Field(0.0, ge=-10_000, le=10_000, description="Negative means a rebate.")
    max_volume_share: float = Field(
        0.1, gt=0, le=1, description="At most this share of a bar's volume fills; the rest expires."
    )
    lot_size: Decimal = Field(Decimal(1), gt=0, description="Quantities are whole multiples of this.")
    price_tick: Decimal = Field(Decimal("0.0001"), gt=0, description="Prices are rounded to this tick.")
    venue_timeout_s: float = Field(
        2.0, gt=0, le=600, description="Deadline of one call to the venue actor (live mode)."
    )
    venue_retry_s: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description="How long a venue call is retried (same client order ids) on timeouts, rate limits "
        "and disconnects; then the bar goes on and the orders are re-sent with the next bar.",
    )
    journal_dir: str | None = Field(
        None,
        description="Folder of the order journal (one file per run, written before orders leave the "
        "execution actor); default: a 'federation' folder in the system's temporary folder.",
    )

    @model_validator(mode="after")
    def _representable(self) -> ExecutionConfig:
        # The ledger stores integers of 1e-8: quantities, prices and their products must fit exactly.
        for key, value in (
            ("lot_size", self.lot_size),
            ("price_tick", self.price_tick),
            ("lot_size x price_tick", self.lot_size * self.price_tick),
        ):
            if (value / E8) % 1:
                raise ValueError(
                    f"{key} = {value} is finer than 1e-8, the ledger precision; use a multiple of 0.00000001"
                )
        return self


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_NS = {
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86_400 * 10**9,
    "w": 7 * 86_400 * 10**9,
}


def duration_ns(text: str, what: str) -> int:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"1w"`` or ``"250ms"`` in nanoseconds; else ValueError."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{what} {text!r} is not a duration; write e.g. '90s', '5m', '1h', '1d' or '1w'")
    value = Decimal(match.group(1)) * _DURATION_NS[match.group(2)]
    if value <= 0:
        raise ValueError(f"{what} {text!r} must be longer than zero")
    return int(value)


class BudgetEntry(_Model):
    """One budget of an agent (``[[agents.budgets]]`` or ``[budgets] default``)."""

    kind: str = Field(
        description="Meter capped: compute_s, api_calls, llm_tokens, sandbox_s, fees, a meter the agent "
        "names itself, or 'money' for the priced sum of every meter ([budgets] prices)."
    )
    limit: Decimal = Field(gt=0, description="Cap in the meter's unit (money: the currency).")
    period: Literal["run", "day", "rolling"] = Field(
        "run",
        description="'run' (whole run), 'day' (UTC calendar day of the budget clock) or 'rolling' (window).",
    )
    window: str | None = Field(None, description="Length of a rolling period, e.g. '1h', '30m', '7d'.")
    soft: float = Field(0.8, gt=0, le=1, description="Fraction of the limit that records a soft_limit event.")
    action: Literal["throttle", "suspend", "stop"] = Field(
        "suspend",
        description="At the limit: 'throttle' (call the agent on one step in throttle_factor), 'suspend' "
        "(stop calling it until the period frees the budget), 'stop' (for the rest of the run).",
    )
    throttle_factor: int = Field(4, ge=2, le=10_000, description="Throttled: one call per this many steps.")
    on_suspend: Literal["hold", "flatten"] = Field(
        "hold", description="Suspended or stopped: 'hold' the agent's target positions or 'flatten' them."
    )

    @field_validator("kind")
    @classmethod
    def _meter_name(cls, value: str) -> str:
        problem = meter_problem(value, budget=True)
        if problem is not None:
            raise ValueError(f"budget kind: {problem} ('money' caps the priced sum of every meter)")
        return value

    @field_validator("limit")
    @classmethod
    def _representable(cls, value: Decimal) -> Decimal:
        if (value / E8) % 1:
            raise ValueError(
                f"limit {value} is finer than 1e-8, the ledger's precision; round it to 8 decimal places"
            )
        return value

    @model_validator(mode="after")
    def _compute_fits_a_step(self) -> BudgetEntry:
        if self.kind == "compute_s" and self.limit < Decimal("0.01"):
            raise ValueError(
                f"a compute_s budget of {self.limit} s is below 0.01 s, the least one step reserves; "
                "raise it (or cap money instead)"
            )
        return self

    @model_validator(mode="after")
    def _window_for_rolling(self) -> BudgetEntry:
        if self.period == "rolling":
            if self.window is None:
                raise ValueError("period 'rolling' needs a window, e.g. window = '1h'")
            duration_ns(self.window, "window")
        elif self.window is not None:
            raise ValueError(f"window is only for period 'rolling' (this budget's period is {self.period!r})")
        return self

    def to_limit(self) -> BudgetLimit:
        """The budget as the budget book takes it (integers of 1e-8)."""
        return BudgetLimit(
            kind=self.kind,
            limit_e8=int((self.limit / E8).to_integral_value()),
            period=self.period,
            window_ns=duration_ns(self.window, "window") if self.window else 0,
            soft=self.soft,
            action=self.action,
            throttle_factor=self.throttle_factor,
            on_suspend=self.on_suspend,
        )


class BudgetSettings(_Model):
    """``[budgets]``: prices of the meters, the budget clock, and budgets for agents that set none."""

    prices: dict[str, Annotated[Decimal, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Money per unit of each meter, e.g. { compute_s = 0.0001, api_calls = 0.002, "
        "llm_tokens = 0.00001 } (0.01 per 1k tokens). Fees are money already.",
    )
    clock: Literal["bar", "wall"] = Field(
        "bar",
        description="Time that places spending in 'day' and 'rolling' periods: the bar being processed "
        "(deterministic backtests) or the wall clock.",
    )
    reservation_ttl_s: float = Field(
        300.0,
        gt=0,
        le=86_400 * 7,
        description="A reservation not settled within this many seconds is charged in full.",
    )
    default: list[BudgetEntry] = Field(
        default_factory=list, description="Budgets of every agent whose [[agents]] entry sets none."
    )
    authority: Literal["actor", "redis"] = Field(
        "actor",
        description="Where reservations are decided: 'actor' (one Ray actor, one call at a time) or "
        "'redis' (Lua scripts in Redis that agents on any node call directly, for runs that span "
        "nodes; see docs/budget-authority.md).",
    )
    redis: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis of authority = 'redis': redis://[user:password@]host:port/db, rediss:// (TLS) "
        "or unix:///path/to/socket.",
    )
    key_prefix: str = Field(
        "federation:budget",
        description="Start of every Redis key of the budgets (authority = 'redis'); each run adds "
        "':{<its own id>}:' after it.",
    )
    redis_timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How long a call to Redis may take (authority = 'redis'); one that does not answer in "
        "time is refused (nothing is granted unchecked).",
    )

    @field_validator("prices")
    @classmethod
    def _priced_meters(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for meter in value:
            if meter == "fees":
                raise ValueError("prices.fees: fees are money already; price the other meters")
            problem = meter_problem(meter)
            if problem is not None:
                raise ValueError(f"prices.{meter}: {problem}")
        return value

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"redis = {value!r} is not a Redis URL; use redis://host:6379/0, rediss://... or "
                "unix:///path/to/socket"
            )
        return value

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "{} \t\n"):
            raise ValueError(
                f"key_prefix = {value!r}: use a non-empty prefix without spaces or braces (the braces "
                "after it keep one run's keys together), e.g. 'federation:budget'"
            )
        return value


def _seconds_or_duration(value: Any, what: str) -> int:
    """A duration in config: a number of seconds or a string such as ``"5m"``; in nanoseconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(Decimal(repr(value)) * 10**9)
    return duration_ns(value, what)


class BreakerConfig(_Model):
    """``[risk.breakers]`` (portfolio) or ``risk.breakers`` of an ``[[agents]]`` entry: circuit breakers on
    equity (realized + unrealized P&L, marked at each bar's close)."""

    loss_pct: float | None = Field(
        None,
        gt=0,
        lt=100,
        description="Trip when equity is this many percent below its value at the start of the trailing "
        "window.",
    )
    window: float | str = Field(
        "1d", description="Trailing window of loss_pct: seconds, or a duration such as '5m', '1h', '1d'."
    )
    max_drawdown_pct: float | None = Field(
        None, gt=0, lt=100, description="Trip when equity is this many percent below its peak."
    )
    action: Literal["reducing", "halted"] = Field(
        "reducing",
        description="State a trip holds the account in: 'reducing' (only orders that reduce |position|) or "
        "'halted' (no orders; working orders of the account's symbols are cancelled).",
    )
    cooldown: float | str = Field(
        "1h", description="How long a trip lasts (bar time): seconds, or a duration such as '15m'."
    )
    max_trips_per_day: int | None = Field(
        3,
        ge=1,
        le=1_000_000,
        description="The trip that reaches this count in a UTC day lasts until the day ends; none: no cap.",
    )

    @field_validator("window", "cooldown")
    @classmethod
    def _duration(cls, value: float | str, info: Any) -> float | str:
        ns = _seconds_or_duration(value, info.field_name)
        shown = f"{value:g} s" if isinstance(value, float) else repr(value)
        if info.field_name == "window" and ns <= 0:
            raise ValueError(f"window {shown} must be longer than zero, e.g. '5m'")
        if ns < 0:
            raise ValueError(f"cooldown {shown} must be zero or longer, e.g. '15m'")
        return value

    @model_validator(mode="after")
    def _some_breaker(self) -> BreakerConfig:
        if self.loss_pct is None and self.max_drawdown_pct is None:
            raise ValueError(
                "a breaker needs loss_pct (loss within window) or max_drawdown_pct (or both); set one or "
                "remove the breakers table"
            )
        return self

    def to_spec(self) -> BreakerSpec:
        """The breaker as the engine takes it (durations in nanoseconds)."""
        return BreakerSpec(
            loss_pct=self.loss_pct,
            window_ns=_seconds_or_duration(self.window, "window"),
            max_drawdown_pct=self.max_drawdown_pct,
            action=TradingState.HALTED if self.action == "halted" else TradingState.REDUCING,
            cooldown_ns=_seconds_or_duration(self.cooldown, "cooldown"),
            max_trips_per_day=self.max_trips_per_day,
        )


class InstrumentConfig(_Model):
    """``[risk.instruments.SYMBOL]``: the venue's precision and minimum size of one instrument."""

    lot_size: Decimal | None = Field(
        None, gt=0, description="Order quantities must be whole multiples of this (units)."
    )
    price_tick: Decimal | None = Field(
        None, gt=0, description="Limit prices must be whole multiples of this; the engine rounds to it."
    )
    min_quantity: Decimal | None = Field(None, gt=0, description="Smallest order quantity (units).")

    @model_validator(mode="after")
    def _representable(self) -> InstrumentConfig:
        for key, value in (("lot_size", self.lot_size), ("price_tick", self.price_tick)):
            if value is not None and (value / E8) % 1:
                raise ValueError(
                    f"{key} = {value} is finer than 1e-8, the ledger precision; use a multiple of 0.00000001"
                )
        return self


class RiskLimits(_Model):
    """Limits that apply to an agent's own demand (``[[agents]] risk``) or to the portfolio (``[risk]``)."""

    max_order_quantity: Decimal | None = Field(
        None, gt=0, description="Max |quantity| of one order, in units."
    )
    max_order_notional: Decimal | None = Field(None, gt=0, description="Max |qty x price| per order.")
    max_position: Decimal | None = Field(None, gt=0, description="Max |position| per symbol, in units.")
    max_position_by_symbol: dict[str, Annotated[Decimal, Field(gt=0)]] = Field(
        default_factory=dict, description="Per-symbol overrides of max_position."
    )
    max_gross_exposure: Decimal | None = Field(
        None, gt=0, description="Max sum of |position x last close| over symbols (account currency)."
    )
    max_net_exposure: Decimal | None = Field(
        None, gt=0, description="Max |sum of position x last close| over symbols (account currency)."
    )
    max_leverage: float | None = Field(
        None, gt=0, le=1_000, description="Max gross exposure / equity of the account."
    )
    max_orders_per_minute: float | None = Field(
        None, gt=0, le=1_000_000, description="Order rate (token bucket refilled in bar time)."
    )
    order_burst: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Orders allowed at once by the token bucket; default: max_orders_per_minute, rounded up.",
    )
    breakers: BreakerConfig | None = Field(None, description="Circuit breakers on equity; none: no breaker.")

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> RiskLimits:
        if self.order_burst is not None and self.max_orders_per_minute is None:
            raise ValueError(
                f"order_burst = {self.order_burst} is set without max_orders_per_minute; set the rate too or "
                "remove order_burst"
            )
        return self


class RiskConfig(RiskLimits):
    """``[risk]``: pre-trade checks on the portfolio's net orders, and the portfolio's breakers."""

    price_collar_bps: float | None = Field(
        None,
        gt=0,
        le=10_000,
        description="Limit prices must be within this many basis points of the last trade price.",
    )
    min_order_quantity: Decimal | None = Field(
        None, gt=0, description="Smallest order quantity (units); instruments can override it."
    )
    instruments: dict[str, InstrumentConfig] = Field(
        default_factory=dict,
        description="Per symbol: lot_size, price_tick and min_quantity the venue requires.",
    )


class AgentRiskConfig(RiskLimits):
    """``risk`` of an ``[[agents]]`` entry: limits on that agent's own demand and sub-account, checked
    before netting (each instance of the entry gets its own limits, order bucket and breakers)."""


class AllocationConfig(_Model):
    """``[allocation]``: how capital is split among agents, and when it is re-split (policies.allocation)."""

    policy: Literal["fixed", "equal", "inverse_volatility", "sharpe_adaptive"] = Field(
        "fixed",
        description="'fixed': by [[agents]] weight; 'equal': 1/n each; 'inverse_volatility': proportional to "
        "1 / volatility of each agent's trailing returns; 'sharpe_adaptive': proportional to weight x "
        "max(trailing Sharpe ratio, 0).",
    )
    rebalance: Literal["1d", "1w", "1M"] | None = Field(
        None, description="Re-split at the first bar of each new UTC day, ISO week or month; none: never."
    )
    rebalance_bars: int | None = Field(
        None, ge=1, le=100_000_000, description="Re-split every this many bars (instead of rebalance)."
    )
    window: int = Field(60, ge=2, le=1_000_000, description="Bars of trailing returns the policies look at.")
    min_periods: int = Field(
        20, ge=2, description="An agent with fewer valid returns in the window keeps its configured share."
    )
    min_weight: float = Field(
        0.0, ge=0, le=1, description="Lowest weight of an agent (inverse_volatility, sharpe_adaptive)."
    )
    max_weight: float = Field(
        1.0, gt=0, le=1, description="Highest weight of an agent (inverse_volatility, sharpe_adaptive)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AllocationConfig:
        if self.rebalance is not None and self.rebalance_bars is not None:
            raise ValueError(
                f"rebalance = {self.rebalance!r} and rebalance_bars = {self.rebalance_bars} are both set; "
                "keep one (a calendar period or a number of bars)"
            )
        if self.min_periods > self.window:
            raise ValueError(
                f"min_periods = {self.min_periods} is more than window = {self.window}, so no agent could "
                "ever be measured; lower min_periods or widen the window"
            )
        if self.min_weight > self.max_weight:
            raise ValueError(
                f"min_weight = {self.min_weight} is above max_weight = {self.max_weight}; swap them"
            )
        adaptive = self.policy in ("inverse_volatility", "sharpe_adaptive")
        if adaptive and self.rebalance is None and self.rebalance_bars is None:
            raise ValueError(
                f"policy {self.policy!r} re-weights only when it rebalances; set rebalance = '1d', '1w' or "
                "'1M', or rebalance_bars = N"
            )
        if not adaptive and (self.min_weight, self.max_weight) != (0.0, 1.0):
            raise ValueError(
                f"min_weight and max_weight bound the inverse_volatility and sharpe_adaptive policies, not "
                f"{self.policy!r}; remove them or choose one of those policies"
            )
        return self


class AgentEntry(_Model):
    """One ``[[agents]]`` entry; with ``count`` or ``grid`` it defines several agents."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_: str = Field(alias="class", min_length=3, description="'module:Class' or 'path/file.py:Class'.")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+$", description="Default: class name.")
    symbols: list[str] | None = Field(None, min_length=1, description="Default: every feed symbol.")
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="Parameter -> values; one agent per combination (x count)."
    )
    count: int = Field(1, ge=1, le=100_000, description="Instances per parameter combination.")
    isolation: Isolation | None = Field(
        None, description="'actor' or 'shared'; default: [federation] isolation."
    )
    weight: float = Field(1.0, gt=0, description="Share of capital relative to the other agents.")
    risk: AgentRiskConfig | None = Field(
        None, description="This agent's own risk limits and breakers, checked before netting; none: none."
    )
    budgets: list[BudgetEntry] | None = Field(
        None, description="This agent's budgets (each instance gets its own); default: [budgets] default."
    )

    @field_validator("class_")
    @classmethod
    def _class_has_colon(cls, value: str) -> str:
        module, sep, attr = value.rpartition(":")
        if not sep or not module or not attr.isidentifier():
            raise ValueError(
                f"{value!r} is not 'module:Class' or 'path/to/file.py:Class' (e.g. 'agents.momentum:"
                "MomentumAgent')"
            )
        return value

    @field_validator("isolation", mode="before")
    @classmethod
    def _known_tier(cls, value: Any) -> Any:
        if value is not None and value not in ISOLATION_TIERS:
            hint = " (the sandbox tier is not built yet)" if value == "sandbox" else ""
            raise ValueError(
                f"isolation {value!r} is not a tier{hint}; choose 'actor' (one Ray actor per agent) or "
                "'shared' (many agents per host actor)"
            )
        return value

    @field_validator("grid")
    @classmethod
    def _grid_values_not_empty(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"grid.{key} is empty; give at least one value")
        return value

    @model_validator(mode="after")
    def _grid_and_params_disjoint(self) -> AgentEntry:
        both = sorted(set(self.grid) & set(self.params))
        if both:
            raise ValueError(f"{', '.join(both)} set in both params and grid; keep one")
        return self


class FleetConfig(_Model):
    """The whole config file."""

    federation: FederationSettings = FederationSettings()
    ledger: LedgerSettings = LedgerSettings()
    events: EventStreamConfig = EventStreamConfig()
    feed: FeedConfig
    execution: ExecutionConfig = ExecutionConfig()
    risk: RiskConfig = RiskConfig()
    allocation: AllocationConfig = AllocationConfig()
    budgets: BudgetSettings = BudgetSettings()
    live: LiveSettings = LiveSettings()
    recovery: RecoverySettings = RecoverySettings()
    agents: list[AgentEntry] = Field(min_length=1)
    base_dir: Path = Field(Path("."), exclude=True, description="Folder of the config file (set by load).")


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: ``source: field.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        loc = loc.replace("class_", "class")
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc or '(top level)'}: {msg}{got}")
    return "\n".join(lines)


def load_config(path: str | Path, *, overrides: dict[str, Any] | None = None) -> FleetConfig:
    """Read and validate a fleet config file; raises :class:`ConfigError` naming the file and field.

    ``overrides`` replaces keys of ``[federation]`` (e.g. ``{"ledger": url}`` from ``--ledger``); an
    ``isolation`` override applies to every agent, also those that set their own tier.
    """
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    if overrides:
        raw.setdefault("federation", {}).update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("isolation") is not None and isinstance(raw.get("agents"), list):
            for entry in raw["agents"]:
                if isinstance(entry, dict):
                    entry.pop("isolation", None)
    if "base_dir" in raw:
        raise ConfigError(f"{file}: base_dir: unknown top-level key")
    try:
        return FleetConfig.model_validate({**raw, "base_dir": file.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(file), exc)) from None
