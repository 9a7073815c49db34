"""The PostgreSQL server really stops and starts again in the middle of a run: the run goes on, every
fill reaches the database exactly once, and the ledger equals that of the same run on SQLite."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import asyncpg
import pytest

from federation.config import load_config
from federation.ledger import open_ledger
from federation.supervisor import run_fleet
from tests.postgres_server import PrivateServer, private_postgres  # noqa: F401 (the server fixture)
from tests.test_run import write_fleet

pytestmark = pytest.mark.usefixtures("ray_session")

SLOW_AGENT = '''
import time
from agents import Agent, Signal

class SlowBreakout(Agent):
    """A 5-bar breakout that takes 8 ms per bar (so the run lasts a few seconds)."""

    def on_start(self):
        self.closes = {}

    def on_bar(self, bar):
        time.sleep(0.008)
        seen = self.closes.setdefault(bar.symbol, [])
        seen.append(bar.close)
        if len(seen) < 6:
            return None
        return Signal(bar.symbol, 0.4 if bar.close > max(seen[-6:-1]) else -0.2)
'''

AGENTS = """
[[agents]]
class = "slow_agent.py:SlowBreakout"
name = "slow"
count = 2
"""


def _fills_in(url: str) -> int:
    async def count() -> int:
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (OSError, asyncpg.PostgresError):
            return 0
        try:
            n = await conn.fetchval("SELECT count(*) FROM fills")
            return int(n or 0)
        except asyncpg.PostgresError:
            return 0
        finally:
            await conn.close()

    return asyncio.run(count())


def _fleet(tmp_path: Path, ledger: str) -> Path:
    (tmp_path / "slow_agent.py").write_text(SLOW_AGENT)
    path = write_fleet(tmp_path, AGENTS, extra="")
    text = path.read_text().replace("block_size = 64", "block_size = 8")
    text = text.replace(f'ledger = "sqlite:///{tmp_path / "ledger.db"}"', f'ledger = "{ledger}"')
    text = text.replace("[feed]", "[ledger]\nretry_initial_s = 0.02\nretry_max_s = 0.2\n\n[feed]", 1)
    path.write_text(text)
    return path


def test_database_restart_mid_run_loses_and_doubles_nothing(server: PrivateServer, tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "ref").mkdir()
    restarted = threading.Event()

    def restart_when_trading() -> None:
        deadline = time.monotonic() + 120
        while _fills_in(server.url) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop("fast")
        time.sleep(1.5)
        server.start()
        restarted.set()

    chaos = threading.Thread(target=restart_when_trading, daemon=True)
    chaos.start()
    pg_summary = run_fleet(load_config(_fleet(tmp_path / "pg", server.url)))
    chaos.join(timeout=60)
    assert restarted.is_set(), "the server was restarted during the run"
    assert pg_summary.status == "completed"
    outages = sum(w.outages for w in pg_summary.ledger_writers)
    assert outages >= 1 and all(w.unwritten_file is None for w in pg_summary.ledger_writers)

    ref_summary = run_fleet(load_config(_fleet(tmp_path / "ref", f"sqlite:///{tmp_path / 'ref.db'}")))

    pg = open_ledger(server.url)
    ref = open_ledger(f"sqlite:///{tmp_path / 'ref.db'}")
    pg_fills, ref_fills = pg.fills(pg_summary.run_id), ref.fills(ref_summary.run_id)
    assert len(pg_fills) > 20
    strip = lambda fills: [(f.ts, f.symbol, f.quantity, f.price, f.fee, f.liquidity) for f in fills]  # noqa: E731
    assert strip(pg_fills) == strip(ref_fills), "every fill once, as in the run that saw no outage"
    assert pg.positions(pg_summary.run_id) == ref.positions(ref_summary.run_id)
    assert pg.cash(pg_summary.run_id) == ref.cash(ref_summary.run_id)
    ((distinct,),) = pg.query("SELECT count(DISTINCT fill_id) FROM fills WHERE run_id = ?", pg_summary.run_id)
    assert distinct == len(pg_fills)
    assert [o.status for o in pg.orders(pg_summary.run_id)] == [
        o.status for o in ref.orders(ref_summary.run_id)
    ]
    assert pg.events(pg_summary.run_id, "ledger"), "the outage is recorded in the ledger"
    assert pg.run_status(pg_summary.run_id) == "completed"
    pg.close()
    ref.close()


def test_a_database_that_never_returns_fails_the_command_and_names_the_saved_batches(
    server: PrivateServer, tmp_path: Path
) -> None:
    from federation.ledger import replay_unwritten
    from tests.test_cli import cli

    (tmp_path / "run").mkdir()
    path = _fleet(tmp_path / "run", server.url)
    path.write_text(path.read_text().replace("[ledger]\n", "[ledger]\nflush_timeout_s = 1\n", 1))

    def stop_when_trading() -> None:
        deadline = time.monotonic() + 120
        while _fills_in(server.url) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop("immediate")

    chaos = threading.Thread(target=stop_when_trading, daemon=True)
    chaos.start()
    done = cli("run", str(path), "--json", cwd=tmp_path, timeout=300)
    chaos.join(timeout=10)
    assert done.returncode == 1, done.stderr[-3000:]
    err = " ".join(done.stderr.split())
    assert "the ledger is incomplete" in err and "federation ledger-replay" in err
    summary = json.loads(done.stdout)
    saved = [w["unwritten_file"] for w in summary["ledger_writers"] if w["unwritten_file"]]
    assert saved, "the summary names the files the unwritten batches went to"
    server.start()
    target = open_ledger(server.url)
    for file in saved:
        replay_unwritten(file, target)
        Path(file).unlink()
    run_id = summary["run_id"]
    assert target.run_status(run_id) == summary["status"]
    fills = target.fills(run_id)
    assert len(fills) == len({f.fill_id for f in fills}) > 20
    target.close()
