"""Finding a run in a ledger, and asking a running supervisor to halt (the kill switch).

A halt request is a row in the ledger's ``controls`` table: any process that can open the ledger may
write it, and the supervisor of that run reads it at its next step, so ``federation halt`` works without
a connection to the supervisor's process or its Ray cluster.
"""

from __future__ import annotations

from pathlib import Path

from federation.errors import ConfigError, UserInputError
from federation.ledger import Ledger, check_ledger_url, is_postgres_url, mask_url, open_ledger
from federation.ledger.sqlite import sqlite_path


def _looks_like_ledger(target: str) -> bool:
    return "://" in target or target.endswith((".db", ".sqlite", ".sqlite3")) or Path(target).is_file()


def open_existing_ledger(url: str) -> Ledger:
    """Open a ledger that must exist already (reading it must not create an empty file, nor tables in
    a database that holds no ledger)."""
    check_ledger_url(url)
    if is_postgres_url(url):
        if not _holds_ledger(url):
            raise UserInputError(
                f"ledger {mask_url(url)!r}: the database (or its search_path schema) holds no federation "
                "ledger; give the URL the run was written to"
            )
        return open_ledger(url, migrate=False)
    path = sqlite_path(url)
    if not path.is_file():
        raise UserInputError(f"ledger {url!r}: no such file ({path.resolve()}); give the ledger of the run")
    return open_ledger(url)


def _holds_ledger(url: str) -> bool:
    import asyncio

    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1], timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConfigError(f"ledger {mask_url(url)!r}: cannot connect ({exc}); check the URL") from None
        try:
            return bool(await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"))
        finally:
            await conn.close()

    return asyncio.run(probe())


def find_run(target: str, run_id: str | None, default_ledger: str) -> tuple[str, str]:
    """(ledger URL, run id) for a target that is a ledger (newest run unless ``run_id``) or a run id."""
    if _looks_like_ledger(target):
        url, wanted = target, run_id
    else:
        url, wanted = default_ledger, target
    ledger = open_existing_ledger(url)
    try:
        runs = [r["run_id"] for r in ledger.runs()]
    finally:
        ledger.close()
    if not runs:
        raise UserInputError(f"ledger {url!r} holds no runs yet")
    if wanted is None:
        return url, runs[0]
    if wanted not in runs:
        recent = ", ".join(runs[:5])
        raise UserInputError(f"run {wanted!r} is not in ledger {url!r}; its newest runs: {recent}")
    return url, wanted


def request_halt(ledger_url: str, run_id: str | None, reason: str) -> str:
    """Ask the supervisor of ``run_id`` (default: the newest running run in the ledger) to halt."""
    ledger = open_existing_ledger(ledger_url)
    try:
        if run_id is None:
            running = [r["run_id"] for r in ledger.runs() if r["status"] == "running"]
            if not running:
                raise UserInputError(f"ledger {ledger_url!r} has no running run; name one with --run")
            run_id = running[0]
        status = ledger.run_status(run_id)
        if status is None:
            raise UserInputError(f"run {run_id!r} is not in ledger {ledger_url!r}")
        if status != "running":
            raise UserInputError(f"run {run_id!r} is not running (its status is {status!r}); nothing to halt")
        ledger.request_halt(run_id, reason)
    finally:
        ledger.close()
    return run_id
