"""The ``federation`` command line (typer + rich).

Exit codes: 0 ok, 2 bad input (config, data file, agent class), 1 internal failure, 130 interrupted (Ctrl-C;
the summary so far is still printed).
"""

from __future__ import annotations

import json
import keyword
import logging
import os
import re
import sys
import traceback
from enum import StrEnum
from importlib import resources
from pathlib import Path
from string import Template
from typing import Annotated, Literal, TextIO

import typer
from rich.console import Console

from federation.config import load_config
from federation.errors import UserInputError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    name="federation",
    help="""Run many trading strategies at once as isolated Ray actors.

Examples:

  federation run examples/fleet.toml                 # run a fleet, print a summary table

  federation run examples/fleet.toml --json > out.json   # the same summary as JSON

  federation run fleet.toml --ledger sqlite:///runs/a.db

  federation run examples/fleet100.toml --isolation shared   # 100 agents packed on host actors

  federation run fleet.toml --address auto           # join a running Ray cluster

  federation new-agent my_strategy                   # writes my_strategy.py + my_strategy.toml

  federation costs budgets.db --json                 # usage, cost and budgets of the latest run

  federation halt runs.db                            # kill switch for the running run

  federation chaos examples/chaos/fleet.toml --plan examples/chaos/small_plan.toml   # fault injection

  federation bench fleet --agents 100 --isolation shared --mode backtest   # JSON on stdout
""",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Fleet config file (TOML).", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    ledger: Annotated[
        str | None, typer.Option(help="Ledger URL, overrides [federation] ledger (e.g. sqlite:///runs.db).")
    ] = None,
    block_size: Annotated[
        int | None, typer.Option(min=1, help="Bars per call to agents, overrides [federation] block_size.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    isolation: Annotated[
        Isolation | None,
        typer.Option(help="Run every agent in this tier, overriding the config (actor or shared)."),
    ] = None,
    mode: Annotated[Mode | None, typer.Option(help="backtest or live, overrides [federation] mode.")] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join ('auto', host:port or ray://...); default: [federation] ray_address, "
            "then RAY_ADDRESS, else a local Ray."
        ),
    ] = None,
) -> None:
    """Run the fleet in CONFIG and print a per-agent and portfolio summary.

    Ctrl-C stops cleanly: the ledger is flushed and the summary so far is printed.
    """
    from federation.summary import render
    from federation.supervisor import Supervisor

    overrides = {
        "ledger": ledger,
        "block_size": block_size,
        "isolation": isolation.value if isolation else None,
        "mode": mode.value if mode else None,
        "ray_address": address,
    }
    cfg = load_config(config, overrides=overrides)
    supervisor = Supervisor(cfg, source=str(config), console=stderr, show_progress=not quiet)
    json_out = _stdout_for_json() if json_output else None
    summary = supervisor.run()
    if json_out is not None:
        json_out.write(summary.to_json() + "\n")
        json_out.close()
    else:
        render(summary, Console(width=None if sys.stdout.isatty() else 160))
    unwritten = [w for w in summary.ledger_writers if w.error or w.unwritten_file]
    if unwritten:
        for w in unwritten:
            stderr.print(f"[red]error: ledger ({w.writer}): {w.error or w.unwritten_file}[/red]")
        stderr.print(
            "[red]the ledger is incomplete: write the saved batches with `federation ledger-replay FILE "
            "--ledger URL` once the database is back[/red]"
        )
        raise typer.Exit(1)
    if summary.status == "halted":
        stderr.print("[yellow]halted by the kill switch: open orders were cancelled[/yellow]")
    if summary.status == "interrupted":
        stderr.print("[yellow]interrupted: the ledger holds everything up to the last whole block[/yellow]")
        raise typer.Exit(EXIT_INTERRUPTED)


def _stdout_for_json() -> TextIO:
    """The real stdout, for JSON alone; from now on anything else written to fd 1 goes to stderr.

    Ray forwards its workers' output to the driver's stdout, which would corrupt the JSON.
    """
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return out


class Isolation(StrEnum):
    actor = "actor"
    shared = "shared"


class Mode(StrEnum):
    backtest = "backtest"
    live = "live"


class RiskMode(StrEnum):
    minimal = "minimal"
    full = "full"


class AgentKind(StrEnum):
    per_bar = "per-bar"
    vectorized = "vectorized"


bench_app = typer.Typer(
    help="Benchmarks: JSON results, each with the in-process baseline measured in the same run.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


def _emit(result: dict[str, object], json_file: Path | None, out: TextIO) -> None:
    text = json.dumps(result, indent=2)
    if json_file is None:
        out.write(text + "\n")
        out.flush()
        return
    json_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_file.with_suffix(json_file.suffix + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(json_file)
    stderr.print(f"wrote {json_file}")


@bench_app.command("fleet")
def bench_fleet_command(
    agents: Annotated[int, typer.Option(min=1, max=100_000, help="Agents in the fleet.")] = 100,
    isolation: Annotated[Isolation, typer.Option(help="Tier of every agent.")] = Isolation.shared,
    mode: Annotated[Mode, typer.Option(help="backtest (blocks) or live (one bar per tick).")] = Mode.backtest,
    bars: Annotated[
        int | None, typer.Option(min=2, help="Bars replayed (ticks in live mode); default 2000 / 200.")
    ] = None,
    symbols: Annotated[int, typer.Option(min=1, max=1000, help="Symbols every agent trades.")] = 4,
    block_size: Annotated[int, typer.Option(min=1, help="Bars per call in backtest mode.")] = 256,
    agent: Annotated[
        AgentKind, typer.Option(help="per-bar: on_bar per bar (typical user code); vectorized: on_batch.")
    ] = AgentKind.per_bar,
    tick_ms: Annotated[float, typer.Option(min=0, help="Live mode: milliseconds between ticks.")] = 100.0,
    shared_hosts: Annotated[int, typer.Option(min=0, help="Shared tier hosts; 0 = cluster CPUs.")] = 0,
    idle_window: Annotated[
        float, typer.Option(min=0.5, help="Seconds over which idle CPU is measured.")
    ] = 10.0,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join; default a local Ray.")] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON here instead of stdout.")
    ] = None,
) -> None:
    """Start a fleet of built-in agents on a synthetic feed; measure start-up, memory, idle CPU,
    decisions/s against the same agents in one Python loop (ratio), and live tick latency."""
    from federation.bench.fleet import bench_fleet

    out = _stdout_for_json()
    result = bench_fleet(
        agents=agents,
        isolation=isolation.value,
        mode=mode.value,
        bars=bars,
        symbols=symbols,
        block_size=block_size,
        agent_kind=agent.value,
        tick_ms=tick_ms,
        shared_hosts=shared_hosts,
        idle_window_s=idle_window,
        address=address,
    )
    _emit(result, json_file, out)


@bench_app.command("execution")
def bench_execution_command(
    orders: Annotated[int, typer.Option(min=1, max=10_000_000, help="Orders to send.")] = 20_000,
    symbols: Annotated[
        int, typer.Option(min=1, max=1000, help="Symbols (one order per symbol per bar).")
    ] = 10,
    agents: Annotated[int, typer.Option(min=1, max=10_000, help="Agents sharing every order.")] = 10,
    risk: Annotated[
        RiskMode,
        typer.Option(
            help="minimal: portfolio max position + notional; full: every agent and portfolio check."
        ),
    ] = RiskMode.minimal,
    ledger: Annotated[
        str | None,
        typer.Option(
            help="Ledger written through the write-behind buffer (default: a temporary SQLite file); a "
            "postgresql:// URL also runs an SQLite pass beside it. The benchmark's rows are deleted."
        ),
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON here instead of stdout.")
    ] = None,
) -> None:
    """Orders/s through risk + simulated venue + ledger (vs. no ledger: ratio), and the risk checks'
    p50/p99 (µs)."""
    from federation.bench.execution import bench_execution

    out = _stdout_for_json()
    result = bench_execution(orders=orders, symbols=symbols, agents=agents, risk=risk.value, ledger=ledger)
    _emit(result, json_file, out)


@bench_app.command("budget")
def bench_budget_command(
    agents: Annotated[int, typer.Option(min=1, max=10_000, help="Agents reserving at once.")] = 100,
    reservations: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Reserve -> settle pairs per agent.")
    ] = 200,
    processes: Annotated[
        int, typer.Option(min=1, max=256, help="Caller processes (agents dealt among them as threads).")
    ] = 4,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join; default a local Ray.")] = None,
    authority: Annotated[
        Literal["actor", "redis", "both"],
        typer.Option(
            help="Budget authority measured: the Ray actor, Redis (callers reserve against it directly), or "
            "both in one run (Redis's figures under 'redis')."
        ),
    ] = "actor",
    redis: Annotated[
        str, typer.Option(help="Redis of --authority redis/both (its keys are deleted afterwards).")
    ] = "redis://127.0.0.1:6379/0",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON here instead of stdout.")
    ] = None,
) -> None:
    """Reservations/s through the budget authority with many agents at once, against the same calls in
    one Python loop (ratio); latency p50/p99 (ms); and a refusal phase that must not pass any cap."""
    from federation.bench.budget import bench_budget

    out = _stdout_for_json()
    result = bench_budget(
        agents=agents,
        reservations=reservations,
        processes=processes,
        address=address,
        authority=authority,
        redis_url=redis,
    )
    _emit(result, json_file, out)


@bench_app.command("events")
def bench_events_command(
    batches: Annotated[int, typer.Option(min=1, max=10_000_000, help="Ledger batches published.")] = 5000,
    redis_url: Annotated[
        str, typer.Option("--redis", help="Redis server; fresh streams are used and deleted.")
    ] = "redis://127.0.0.1:6379/0",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON here instead of stdout.")
    ] = None,
) -> None:
    """Events out ([events]): the caller's cost of publish_batch (µs) against sending the same batch
    inline (caller_ratio), and entries/s reaching Redis through the publisher's thread."""
    from federation.bench.events import bench_events

    out = _stdout_for_json()
    _emit(bench_events(redis_url, batches=batches), json_file, out)


@bench_app.command("redis-feed")
def bench_redis_feed_command(
    agents: Annotated[int, typer.Option(min=1, max=100_000, help="Agents in the fleet.")] = 100,
    isolation: Annotated[Isolation, typer.Option(help="Tier of every agent.")] = Isolation.shared,
    steps: Annotated[int, typer.Option(min=2, help="Time steps published (bars = steps x symbols).")] = 500,
    symbols: Annotated[int, typer.Option(min=1, max=1000, help="Symbols every agent trades.")] = 4,
    agent: Annotated[
        AgentKind, typer.Option(help="per-bar: on_bar per bar (typical user code); vectorized: on_batch.")
    ] = AgentKind.per_bar,
    redis_url: Annotated[
        str, typer.Option("--redis", help="Redis server; a fresh stream is used and deleted.")
    ] = "redis://127.0.0.1:6379/0",
    shared_hosts: Annotated[int, typer.Option(min=0, help="Shared tier hosts; 0 = cluster CPUs.")] = 0,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join; default a local Ray.")] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON here instead of stdout.")
    ] = None,
) -> None:
    """Bars/s from a Redis stream into a live fleet, against the same fleet on the same bars in memory
    (ratio_to_preloaded) and the same agents in one Python loop (ratio); the feed alone; tick latency."""
    from federation.bench.redis_feed import bench_redis_feed

    out = _stdout_for_json()
    result = bench_redis_feed(
        agents=agents,
        isolation=isolation.value,
        steps=steps,
        symbols=symbols,
        agent_kind=agent.value,
        url=redis_url,
        shared_hosts=shared_hosts,
        address=address,
    )
    _emit(result, json_file, out)


class CostFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command()
def chaos(
    config: Annotated[Path, typer.Argument(help="Fleet config file (TOML), live mode.", show_default=False)],
    plan: Annotated[Path, typer.Option("--plan", help="Fault plan (TOML): what to break, and when.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the fleet in CONFIG while injecting the faults of PLAN, then check the invariants.

    Kills agent processes and the execution actor, makes the venue fail, corrupts bars, restarts
    PostgreSQL and takes Redis down on the plan's schedule (seeded); then compares the ledger with the
    venue: no fill lost or doubled, no client order id sent twice, positions and cash equal, no budget
    exceeded, killed agents back in time, healthy agents' latency within bounds. Exit code 1 if any
    invariant fails. See examples/chaos/ and docs/reliability.md.
    """
    from federation.chaos.harness import run_chaos
    from federation.chaos.report import render

    json_out = _stdout_for_json() if json_output else None
    report = run_chaos(config, plan, console=stderr, show_progress=not quiet)
    if json_out is not None:
        json_out.write(report.to_json() + "\n")
        json_out.close()
    else:
        render(report, Console(width=None if sys.stdout.isatty() else 160))
    if not report.ok:
        stderr.print(f"[red]chaos: invariants failed: {', '.join(report.failed)}[/red]")
        raise typer.Exit(EXIT_INTERNAL)


@app.command()
def costs(
    target: Annotated[
        str,
        typer.Argument(
            help="A ledger (file path, sqlite:/// or postgresql:// URL; its latest run unless --run) or a "
            "run id (looked up in --ledger).",
            show_default=False,
        ),
    ],
    run_id: Annotated[str | None, typer.Option("--run", help="Run id within the ledger given.")] = None,
    ledger: Annotated[str, typer.Option(help="Ledger to look a run id up in.")] = "sqlite:///federation.db",
    json_output: Annotated[bool, typer.Option("--json", help="Rows as a JSON list.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Rows as CSV.")] = False,
) -> None:
    """Usage, cost, budget, remaining and actions per agent and meter of one run.

    Examples: federation costs budgets.db --json; federation costs 20261130T141500-ab12cd --ledger runs.db
    """
    from federation.cost_report import cost_rows, render_costs, rows_as_csv
    from federation.run_control import find_run

    if json_output and csv_output:
        raise UserInputError("choose one of --json and --csv")
    url, run = find_run(target, run_id, ledger)
    rows = cost_rows(url, run)
    if json_output:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif csv_output:
        sys.stdout.write(rows_as_csv(rows))
    else:
        render_costs(run, rows, Console(width=None if sys.stdout.isatty() else 160))


@app.command()
def report(
    target: Annotated[
        str,
        typer.Argument(
            help="A ledger (file path, sqlite:/// or postgresql:// URL; its latest run unless --run) or a "
            "run id (looked up in --ledger).",
            show_default=False,
        ),
    ],
    run_id: Annotated[str | None, typer.Option("--run", help="Run id within the ledger given.")] = None,
    ledger: Annotated[str, typer.Option(help="Ledger to look a run id up in.")] = "sqlite:///federation.db",
    agent: Annotated[str | None, typer.Option(help="Only this agent's account and orders.")] = None,
    orders: Annotated[bool, typer.Option("--orders", help="Also the order history.")] = False,
    status: Annotated[
        str | None, typer.Option(help="With --orders: only orders of this status (e.g. denied).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Cash, realized P&L, fees, fills and positions per agent and for the portfolio; with --orders the
    order history (denials and expiries with their reasons, and agent-level risk denials).

    Examples: federation report runs.db --orders --status denied; federation report
    postgresql://me@db/ledger --agent momentum-0 --json
    """
    from federation.run_control import find_run
    from federation.run_report import render_report, run_report

    url, run = find_run(target, run_id, ledger)
    result = run_report(url, run, agent=agent, orders=orders, status=status)
    if json_output:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        render_report(result, Console(width=None if sys.stdout.isatty() else 200))


@app.command("ledger-replay")
def ledger_replay(
    file: Annotated[Path, typer.Argument(help="The file a run saved its unwritten ledger batches to.")],
    ledger: Annotated[str, typer.Option(help="The run's ledger URL.", show_default=False)],
) -> None:
    """Write the batches a run saved when its ledger database did not come back in time (each once:
    batches that did reach the database are skipped)."""
    from federation.ledger import open_ledger, replay_unwritten

    if not file.is_file():
        raise UserInputError(f"{file}: no such file; give the path the run's error message named")
    target = open_ledger(ledger)
    try:
        applied = replay_unwritten(file, target)
    finally:
        target.close()
    stderr.print(f"{applied} operations written to {ledger}; you may delete {file}")


@app.command()
def halt(
    ledger: Annotated[
        str, typer.Argument(help="Ledger of the running run (file path, sqlite:/// or postgresql:// URL).")
    ],
    run_id: Annotated[
        str | None, typer.Option("--run", help="Run to halt; default: the ledger's newest running run.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Recorded with the halt.")] = "kill switch (federation halt)",
) -> None:
    """Kill switch: the run stops trading at its next step, cancels its open orders and ends as 'halted'."""
    from federation.run_control import request_halt

    run = request_halt(ledger, run_id, reason)
    stderr.print(f"halt requested for run {run}; its supervisor acts on it at the next step")


class CsvFormat(StrEnum):
    generic = "generic"
    lean = "lean"


@app.command()
def publish(
    files: Annotated[
        list[str],
        typer.Argument(
            help="CSV files: PATH (its symbol from --symbol) or SYMBOL=PATH; several files of one symbol "
            "are joined in time order, several symbols interleaved by time.",
            show_default=False,
        ),
    ],
    stream: Annotated[str, typer.Option(help="Stream key to add the bars to.", show_default=False)],
    redis_url: Annotated[str, typer.Option("--redis", help="Redis server URL.")] = "redis://127.0.0.1:6379/0",
    symbol: Annotated[
        str | None, typer.Option(help="Symbol of the files given as a plain PATH.", show_default=False)
    ] = None,
    csv_format: Annotated[
        CsvFormat, typer.Option("--format", help="generic (header + OHLCV) or lean (LEAN equity bars).")
    ] = CsvFormat.generic,
    timezone: Annotated[
        str | None, typer.Option(help="Zone of naive times; default UTC (generic), America/New_York (lean).")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First date to publish (YYYY-MM-DD).")] = None,
    end_date: Annotated[
        str | None, typer.Option("--until", help="Last date to publish (YYYY-MM-DD).")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(min=0.01, help="Bars per second (default: as fast as possible).")
    ] = None,
    end: Annotated[
        bool,
        typer.Option("--end/--no-end", help="Add the end marker after the bars (a run reading it ends)."),
    ] = True,
) -> None:
    """Replay CSV bars into a Redis stream, one entry per bar, for a fleet whose feed is kind = "redis".

    The files are read like a csv feed (same formats and checks; bad records are skipped and counted).
    Example: federation publish SPY=examples/data/lean/daily/spy.csv --format lean --stream bars:daily
    """
    from pydantic import ValidationError

    from federation.config import CsvFeedConfig, format_validation_error
    from federation.feeds import load_feed
    from federation.feeds.redis_stream import publish_market
    from federation.ledger import mask_url

    paths: dict[str, list[Path]] = {}
    for item in files:
        name, sep, path = item.partition("=")
        if sep and name and path and "/" not in name and not Path(item).exists():
            paths.setdefault(name, []).append(Path(path))
        elif symbol:
            paths.setdefault(symbol, []).append(Path(item))
        else:
            raise UserInputError(
                f"{item}: which symbol are these bars? pass --symbol SPY, or write SPY={item}"
            )
    raw = {
        "kind": "csv",
        "format": csv_format.value,
        "paths": {name: found[0] if len(found) == 1 else found for name, found in paths.items()},
        "timezone": timezone,
        "start": start,
        "end": end_date,
    }
    try:
        feed = CsvFeedConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserInputError(format_validation_error("publish", exc)) from None
    market = load_feed(feed, base_dir=Path.cwd(), seed=0)
    if market.issues:
        stderr.print(
            f"[yellow]{len(market.issues)} bad records skipped (not published)[/yellow], "
            f"e.g. {market.issues[0]}"
        )
    result = publish_market(market, url=redis_url, stream=stream, rate=rate, end=end)
    marker = " and an end marker" if end else ""
    typer.echo(
        f"published {result.bars} bars of {', '.join(market.symbols)}{marker} to stream {stream!r} at "
        f"{mask_url(redis_url)} in {result.seconds:.2f} s"
    )


_IDENT = re.compile(r"[^0-9a-zA-Z_]+")


@app.command("new-agent")
def new_agent(
    name: Annotated[str, typer.Argument(help="Agent name, e.g. my_strategy (file my_strategy.py).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the files.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Write a ready-to-run agent file and its fleet config from a template."""
    stem = _IDENT.sub("_", name.strip()).strip("_").lower()
    if not stem or stem[0].isdigit() or keyword.iskeyword(stem):
        raise UserInputError(
            f"agent name {name!r} does not make a Python module name; use letters, digits and _, "
            "starting with a letter (e.g. my_strategy)"
        )
    class_name = "".join(part.capitalize() for part in stem.split("_"))
    agent_file, config_file = directory / f"{stem}.py", directory / f"{stem}.toml"
    for path in (agent_file, config_file):
        if path.exists() and not force:
            raise UserInputError(f"{path} already exists; choose another name or pass --force to overwrite")
    values = {
        "class_name": class_name,
        "stem": stem,
        "agent_file": agent_file.name,
        "config_file": config_file,
    }
    templates = resources.files("federation") / "templates"
    directory.mkdir(parents=True, exist_ok=True)
    for path, template in ((agent_file, "agent.py.tmpl"), (config_file, "config.toml.tmpl")):
        text = Template((templates / template).read_text(encoding="utf-8")).substitute(values)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    stderr.print(f"wrote {agent_file} and {config_file}; run it with: federation run {config_file}")


def main() -> None:
    """Console entry point: maps errors to exit codes and readable messages."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(standalone_mode=False)
    except UserInputError as exc:
        stderr.print(f"[bold red]error:[/bold red] {exc}", highlight=False, markup=True)
        sys.exit(EXIT_INPUT)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(EXIT_INTERNAL)
    except KeyboardInterrupt:
        stderr.print(
            "[yellow]interrupted again while stopping; the ledger records the run as interrupted[/yellow]"
        )
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # Usage errors (bad option values): typer's own click exceptions, which print themselves.
        if isinstance(exc, typer.TyperException) and hasattr(exc, "show"):
            exc.show()
            sys.exit(getattr(exc, "exit_code", EXIT_INPUT))
        traceback.print_exc()
        stderr.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
