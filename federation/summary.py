"""The run summary: per agent and for the portfolio; printed as a table or as JSON (``--json``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from federation.ledger.records import CostRow


class AgentSummary(BaseModel):
    name: str
    class_: str = Field(serialization_alias="class")
    isolation: str
    bars: int = Field(description="Bars delivered to the agent.")
    signals: int = Field(description="Valid signals the agent emitted.")
    signals_rejected: int = Field(description="Invalid signals dropped (NaN, out of range, unknown symbol).")
    orders: int = Field(description="Portfolio orders that carried part of this agent's demand.")
    orders_denied: int
    fills: int = Field(description="Fills attributed to the agent (venue fills and internal crosses).")
    realized_pnl: float = Field(description="Average-cost realized P&L, net of fees.")
    unrealized_pnl: float
    fees: float
    equity: float = Field(description="Capital allocated + realized + unrealized P&L.")
    capital: float
    cpu_s: float = Field(description="CPU seconds spent in the agent's hooks (its own thread's time).")
    wall_s: float = Field(description="Wall-clock seconds spent in the agent's hooks.")
    status: str = Field(description="'active', or 'suspended' after a call overran agent_timeout_s.")
    node_id: str | None = Field(description="Ray node the agent ran on (None if it was suspended).")
    rss_mb: float | None = Field(
        description="Resident memory of the agent's process at the end of the run; in the shared tier "
        "the host's divided by the agents it hosts (see sharing)."
    )
    uss_mb: float | None = Field(description="Unique (private) memory, measured and split like rss_mb.")
    sharing: int | None = Field(description="Agents in the same process (1 in the actor tier).")
    errors: int = Field(description="Exceptions raised by the agent's hooks.")
    last_error: str | None = None
    budget_state: str = Field(
        "active", description="Budget state at the end: active, throttled, suspended or stopped."
    )
    budget_actions: dict[str, int] = Field(
        default_factory=dict,
        description="What the agent's budgets did, counted: throttle, suspend, stop, resume.",
    )
    held_steps: int = Field(0, description="Steps (blocks or ticks) the agent was not called (budget).")
    cost: float = Field(0.0, description="Money spent over every priced meter (and fees).")
    trading_state: str = Field(
        "active", description="Risk trading state at the end: active, reducing, halted."
    )
    breaker_trips: int = Field(0, description="Circuit-breaker trips of the agent's own breakers.")
    risk_denials: int = Field(
        0, description="Risk denials of this agent's demand (agent and portfolio checks)."
    )
    allocated_capital: float = Field(
        0.0, description="Capital sizing the agent's signals at the end ([allocation] rebalances move it)."
    )
    restarts: int = Field(0, description="Times the agent's process died and it was restored ([recovery]).")
    injected: dict[str, int] = Field(
        default_factory=dict, description="Hook faults the chaos harness injected (raise, hang, slow)."
    )


class CostSummary(BaseModel):
    """One row of the cost report (``federation costs`` prints the same rows from the ledger): one budget
    of an agent in one period, or a meter the agent used without a budget."""

    agent: str
    kind: str = Field(description="Meter (compute_s, api_calls, llm_tokens, fees, ...) or 'money'.")
    usage: float = Field(
        description="In the meter's unit (money for money and fees): what counted against the budget in "
        "this period (run, day); for rolling budgets and meters without one, the whole run's."
    )
    cost: float = Field(description="Money for that usage ([budgets] prices).")
    budget: float | None = Field(description="The budget's cap (None: a meter without a budget).")
    period: str | None = Field(description="'run', 'day YYYY-MM-DD' or 'rolling N s'; None without a budget.")
    remaining: float | None = Field(description="What was left of the budget at the end of the period.")
    peak_period_usage: float | None = Field(description="The most one period (or rolling window) held.")
    reservations: int
    refusals: int
    actions: dict[str, int] = Field(description="What the budget did: throttle, suspend, stop, resume.")
    state: str


class PortfolioSummary(BaseModel):
    initial_capital: float
    equity: float
    cash: float
    pnl: float
    gross_exposure: float
    net_exposure: float
    orders: int
    orders_denied: int
    fills: int
    internal_crosses: int
    fees: float
    positions: dict[str, float]
    trading_state: str = Field("active", description="The federation's trading state at the end.")
    breaker_trips: int = Field(0, description="Trips of the portfolio's circuit breakers.")
    risk_denials: int = Field(0, description="Risk denials recorded (agent and portfolio level).")


class RecoverySummary(BaseModel):
    """Restarts and quarantines of the run ([recovery])."""

    agent_restarts: int = Field(description="Agent process restarts (each restored from its checkpoint).")
    recovered: int = Field(description="Restarts whose agents answered again.")
    recovery_p50_s: float = Field(description="From a death seen to the agent's first answer after it.")
    recovery_p99_s: float
    recovery_max_s: float
    suspended: dict[str, str] = Field(
        description="Agents quarantined for the rest of the run -> why (restarts, misses, errors, hang)."
    )
    execution_restarts: int = Field(description="Times the execution actor died and was reconciled.")
    checkpoints: int = Field(description="Agent checkpoints taken (the latest of each is in the ledger).")


class LiveSummary(BaseModel):
    ticks: int
    tick_to_orders_p50_ms: float = Field(
        description="From a bar entering the supervisor to the aggregated orders reaching the execution "
        "actor."
    )
    tick_to_orders_p99_ms: float
    tick_to_orders_max_ms: float
    coalesced_bars: int = Field(description="Bars a busy runner received later, coalesced into one batch.")
    dropped_bars: int = Field(description="Bars dropped from a busy runner's backlog (max_backlog_bars).")
    late_answers: int = Field(description="Runner answers that arrived after the tick that asked.")


class FeedSummary(BaseModel):
    """A streaming feed's delivery (``[feed] kind = "redis"``): what was read, acknowledged, re-read,
    and how long Redis was unreachable."""

    kind: str
    stream: str
    group: str
    consumer: str
    entries: int = Field(description="Stream entries handled: bars, skipped entries, the end marker.")
    bars: int = Field(description="Bars accepted into time steps.")
    acked: int = Field(description="Entries acknowledged (XACK) after their step was processed.")
    redelivered: int = Field(
        description="Entries read again from the group's pending list (left unacknowledged by an earlier "
        "run, taken over from another consumer, or lost in an outage)."
    )
    outages: int = Field(description="Times Redis became unreachable during the run.")
    outage_s: float = Field(description="Seconds Redis was unreachable, in total.")
    end: str | None = Field(
        description="What ended the feed: end_marker, max_bars, max_ticks, idle_timeout, halted, "
        "interrupted (None: the run stopped for another reason)."
    )


class LedgerWriterSummary(BaseModel):
    """One process's write-behind buffer over the run (the supervisor's, the execution actor's)."""

    writer: str
    batches: int = Field(description="Batches handed to the buffer.")
    transactions: int = Field(description="Transactions committed (waiting batches are merged).")
    outages: int = Field(description="Times the database could not be written (each is a ledger event).")
    outage_s: float = Field(description="Seconds the database could not be written, summed.")
    max_queued: int = Field(description="The most writes that waited at once.")
    backpressure_s: float = Field(description="Seconds the run waited for room in a full buffer.")
    retried_duplicates: int = Field(
        description="Retried writes the database had already committed (applied once)."
    )
    unwritten_file: str | None = Field(
        None, description="Where writes were saved when the database never came back (ledger-replay)."
    )
    error: str | None = None

    @staticmethod
    def from_report(state: dict[str, Any], error: str | None = None) -> LedgerWriterSummary:
        return LedgerWriterSummary(
            writer=state["writer"],
            batches=state["batches"],
            transactions=state["transactions"],
            outages=len(state["outages"]),
            outage_s=state["outage_s"],
            max_queued=state["max_queued"],
            backpressure_s=state["backpressure_s"],
            retried_duplicates=state["retried_duplicates"],
            unwritten_file=state["unwritten_file"],
            error=error,
        )


class RunSummary(BaseModel):
    run_id: str
    status: str = Field(description="completed, halted (kill switch), interrupted or failed.")
    ledger: str
    currency: str
    bars: int = Field(description="Time steps replayed.")
    symbols: list[str]
    elapsed_s: float
    startup_s: float = Field(description="Seconds from launch until every agent was ready.")
    replay_s: float = Field(description="Seconds from the first bar to the last agent's answer.")
    decision_s: float = Field(
        description="Backtest: seconds of the replay spent from sending a block to the agents to the last "
        "answer (the decision plane; the rest is aggregation, execution and the ledger). 0 in live mode."
    )
    mode: str = Field(description="backtest or live.")
    live: LiveSummary | None = Field(description="Live mode's tick statistics (None in backtests).")
    data_issues: int = Field(description="Records the feed skipped (see data_issue_samples).")
    data_issue_samples: list[str]
    agents: list[AgentSummary]
    portfolio: PortfolioSummary
    costs: list[CostSummary] = Field(default_factory=list, description="Usage and cost per agent and meter.")
    halt_reason: str | None = Field(None, description="Why the kill switch halted the run, if it did.")
    rebalances: int = Field(
        0,
        description="Capital re-splits by the [allocation] policy that took effect (one per block at most).",
    )
    events_out: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The Redis event publishers ([events]; supervisor, execution): published, dropped, "
        "outages.",
    )
    ledger_writers: list[LedgerWriterSummary] = Field(
        default_factory=list,
        description="The write-behind buffers (supervisor, execution): batches, database outages, waits.",
    )
    feed: FeedSummary | None = Field(None, description="A streaming feed's delivery and outages (redis).")
    recovery: RecoverySummary | None = Field(
        None, description="Agent and execution-actor restarts and quarantines ([recovery])."
    )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


def cost_summary(row: CostRow) -> CostSummary:
    """A ledger cost row for the summary and ``federation costs`` (floats, exact values in the ledger)."""

    def num(value: Decimal | None) -> float | None:
        return None if value is None else float(value)

    return CostSummary(
        agent=row.agent,
        kind=row.kind,
        usage=float(row.usage),
        cost=float(row.cost),
        budget=num(row.budget),
        period=row.period,
        remaining=num(row.remaining),
        peak_period_usage=num(row.peak_period_usage),
        reservations=row.reservations,
        refusals=row.refusals,
        actions=row.actions,
        state=row.state,
    )


def _money(x: float) -> str:
    return f"{x:,.2f}"


def render(summary: RunSummary, console: Console, max_agents: int = 60) -> None:
    """Print the summary as tables (agents sorted by equity, best first)."""
    table = Table(title=f"run {summary.run_id} ({summary.status})", title_justify="left")
    for col in (
        "agent",
        "class",
        "tier",
        "bars",
        "signals",
        "orders",
        "fills",
        "realized",
        "unrealized",
        "cpu s",
        "mem MB",
        "errors",
    ):
        text = col in ("agent", "class", "tier")
        table.add_column(col, justify="left" if text else "right", no_wrap=True)
    ranked = sorted(summary.agents, key=lambda a: a.equity, reverse=True)
    for a in ranked[:max_agents]:
        table.add_row(
            a.name,
            a.class_.rpartition(":")[2],
            a.isolation if a.status == "active" else f"[red]{a.isolation}, suspended[/red]",
            str(a.bars),
            str(a.signals),
            str(a.orders),
            str(a.fills),
            _money(a.realized_pnl),
            _money(a.unrealized_pnl),
            f"{a.cpu_s:.2f}",
            "-" if a.uss_mb is None else f"{a.uss_mb:.0f}",
            f"[red]{a.errors}[/red]" if a.errors else "0",
        )
    if len(ranked) > max_agents:
        table.caption = f"{len(ranked) - max_agents} more agents: see --json"
    console.print(table)
    p = summary.portfolio
    console.print(
        f"portfolio: equity {_money(p.equity)} {summary.currency} (P&L {_money(p.pnl)}), "
        f"gross exposure {_money(p.gross_exposure)}, orders {p.orders} ({p.orders_denied} denied), "
        f"fills {p.fills}, internal crosses {p.internal_crosses}, fees {_money(p.fees)}"
    )
    console.print(
        f"{summary.bars} bars x {len(summary.symbols)} symbols in {summary.elapsed_s:.1f} s "
        f"(start-up {summary.startup_s:.1f} s); ledger {summary.ledger}"
    )
    if summary.live is not None:
        lv = summary.live
        console.print(
            f"live: {lv.ticks} ticks, tick to orders p50 {lv.tick_to_orders_p50_ms:.1f} ms, "
            f"p99 {lv.tick_to_orders_p99_ms:.1f} ms; {lv.coalesced_bars} bars coalesced, "
            f"{lv.late_answers} late answers"
        )
    if summary.feed is not None:
        f = summary.feed
        down = (
            f"[yellow]{f.outages} Redis outages ({f.outage_s:.1f} s)[/yellow]" if f.outages else "no outage"
        )
        console.print(
            f"feed: stream {f.stream!r} (group {f.group!r}, consumer {f.consumer!r}): {f.bars} bars, "
            f"{f.acked} entries acknowledged, {f.redelivered} re-read; {down}; ended by {f.end or 'the run'}"
        )
    rec = summary.recovery
    if rec is not None and (rec.agent_restarts or rec.execution_restarts or rec.suspended):
        console.print(
            f"[yellow]recovery: {rec.agent_restarts} agent restarts ({rec.recovered} back; p50 "
            f"{rec.recovery_p50_s:.2f} s, p99 {rec.recovery_p99_s:.2f} s), "
            f"{rec.execution_restarts} execution actor restarts, {len(rec.suspended)} agents "
            "suspended[/yellow]"
        )
        for name, why in list(rec.suspended.items())[:10]:
            console.print(f"  {name}: {why}")
    for w in summary.ledger_writers:
        if w.outages:
            console.print(
                f"[yellow]ledger ({w.writer}): the database could not be written {w.outages} time(s), "
                f"{w.outage_s:.1f} s in all[/yellow]; up to {w.max_queued} writes waited and were written in "
                "order (ledger events ledger_outage)"
            )
        if w.error or w.unwritten_file:
            console.print(f"[red]ledger ({w.writer}): {w.error or 'writes were saved to a file'}[/red]")
    if summary.data_issues:
        console.print(f"[yellow]{summary.data_issues} data records skipped[/yellow], e.g.:")
        for line in summary.data_issue_samples:
            console.print(f"  {line}")
    if p.risk_denials or p.breaker_trips or p.trading_state != "active":
        console.print(
            f"risk: {p.risk_denials} denials (ledger events risk_denial), {p.breaker_trips} portfolio "
            f"breaker trips, federation {p.trading_state}"
        )
        for a in summary.agents:
            if a.breaker_trips or a.trading_state != "active":
                console.print(f"  {a.name}: {a.breaker_trips} breaker trips, now {a.trading_state}")
    if summary.halt_reason:
        console.print(f"[red]halted: {summary.halt_reason}[/red]")
    budgeted = [c for c in summary.costs if c.budget is not None]
    if budgeted:
        console.print(f"budgets: {len({c.agent for c in budgeted})} agents (details: federation costs)")
        for a in summary.agents:
            if a.budget_actions:
                acts = ", ".join(f"{k} x{v}" for k, v in sorted(a.budget_actions.items()))
                console.print(f"  {a.name}: {acts}; now {a.budget_state}, {a.held_steps} steps not called")
    for a in summary.agents:
        if a.errors:
            console.print(f"[red]agent {a.name!r}: {a.errors} errors[/red], last: {a.last_error}")
