"""The ``federation`` command line (typer + rich).

Exit codes: 0 ok, 2 bad input (config, data file, agent class), 1 internal failure, 130 interrupted (Ctrl-C;
the summary so far is still printed).
"""

from __future__ import annotations

import keyword
import logging
import os
import re
import sys
import traceback
from importlib import resources
from pathlib import Path
from string import Template
from typing import Annotated

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

  federation new-agent my_strategy                   # writes my_strategy.py + my_strategy.toml
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
) -> None:
    """Run the fleet in CONFIG and print a per-agent and portfolio summary.

    Ctrl-C stops cleanly: the ledger is flushed and the summary so far is printed.
    """
    from federation.summary import render
    from federation.supervisor import Supervisor

    cfg = load_config(config, overrides={"ledger": ledger, "block_size": block_size})
    supervisor = Supervisor(cfg, source=str(config), console=stderr, show_progress=not quiet)
    if json_output:
        # Ray forwards workers' and its own output to this process's stdout; from here on everything
        # written to file descriptor 1 goes to stderr, and the JSON alone to the real stdout.
        sys.stdout.flush()
        json_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
    summary = supervisor.run()
    if json_output:
        json_out.write(summary.to_json() + "\n")
        json_out.close()
    else:
        render(summary, Console(width=None if sys.stdout.isatty() else 160))
    if summary.status == "interrupted":
        stderr.print("[yellow]interrupted: the ledger holds everything up to the last whole block[/yellow]")
        raise typer.Exit(EXIT_INTERRUPTED)


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
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        traceback.print_exc()
        stderr.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
