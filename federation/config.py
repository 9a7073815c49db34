"""The fleet config: a TOML file validated by the pydantic models below (the one source of defaults).

Relative paths (data files, agent files) are resolved against the config file's folder.
"""

from __future__ import annotations

import tomllib
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from federation.errors import ConfigError
from federation.money import E8

ISOLATION_TIERS = ("actor", "shared")
Isolation = Literal["actor", "shared"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FederationSettings(_Model):
    """``[federation]``: capital, ledger, seed and the batching of the data plane."""

    capital: Decimal = Field(Decimal(1_000_000), gt=0, description="Starting cash of the whole portfolio.")
    currency: str = Field("USD", min_length=1, description="Currency of capital, prices and fees.")
    ledger: str = Field(
        "sqlite:///federation.db",
        description="Ledger URL: sqlite:///relative/path.db, sqlite:////absolute/path.db or a plain path.",
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


FeedConfig = Annotated[CsvFeedConfig | SyntheticFeedConfig, Field(discriminator="kind")]


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


class RiskConfig(_Model):
    """``[risk]``: minimal pre-trade checks on the portfolio's net orders."""

    max_position: Decimal | None = Field(None, gt=0, description="Max |position| per symbol, in units.")
    max_position_by_symbol: dict[str, Annotated[Decimal, Field(gt=0)]] = Field(
        default_factory=dict, description="Per-symbol overrides of max_position."
    )
    max_order_notional: Decimal | None = Field(None, gt=0, description="Max |qty x price| per order.")


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
    feed: FeedConfig
    execution: ExecutionConfig = ExecutionConfig()
    risk: RiskConfig = RiskConfig()
    live: LiveSettings = LiveSettings()
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
