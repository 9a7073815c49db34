"""The execution actor killed mid-run (between the venue's answer and the ledger write, with writes still
buffered, ...) and restarted with ``recover=True``: the ledger ends equal to the venue, nothing is lost,
doubled or delivered twice, and no client order id is used twice."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from federation.config import ExecutionConfig, RiskConfig
from federation.execution import TargetUpdates, VenueFaults, start_execution_actor, start_venue_actor
from federation.execution.journal import journal_path
from federation.ledger import RunRecord, open_ledger
from tests.test_venue_faults import CAPITAL, _feed, _targets, check_invariants

D = Decimal
AGENTS = list(CAPITAL)


class Driver:
    """What the supervisor does: sends blocks, mirrors desired positions, and restarts a dead execution
    actor (recover, restore_desired, send the block again); counts what agents received."""

    def __init__(self, url: str, venue: Any, cfg: ExecutionConfig, symbols: tuple[str, ...]) -> None:
        self.venue = venue
        self.kwargs: dict[str, Any] = {
            "run_id": "r",
            "agents": AGENTS,
            "capital": list(CAPITAL.values()),
            "symbols": symbols,
            "execution": cfg,
            "risk": RiskConfig(),
            "ledger_url": url,
        }
        self.handle = start_execution_actor(venue=venue, **self.kwargs)
        self.desired = np.zeros((len(AGENTS), len(symbols)), dtype=np.int64)
        self.delivered_ts = -1
        self.received: dict[str, int] = dict.fromkeys(AGENTS, 0)
        self.fees: dict[str, int] = dict.fromkeys(AGENTS, 0)
        self.restarts = 0
        self.recovered_fills = 0

    def block(self, batch: Any, targets: TargetUpdates, kill_after: bool = False) -> None:
        while True:
            try:
                outcome = ray.get(self.handle.process_block.remote(batch, targets))
                break
            except ray.exceptions.RayActorError:
                self.restart()
        self._take(outcome)
        if len(targets.rows):
            self.desired[targets.agents, targets.cols] = targets.lots
        self.delivered_ts = int(batch.ts[-1])
        if kill_after:  # its last writes may still wait in the write-behind buffer
            ray.kill(self.handle, no_restart=True)

    def restart(self) -> None:
        self.restarts += 1
        with contextlib.suppress(Exception):
            ray.kill(self.handle, no_restart=True)
        self.handle = start_execution_actor(venue=self.venue, recover=True, **self.kwargs)
        outcome = ray.get(self.handle.recover.remote(self.delivered_ts))
        ray.get(self.handle.restore_desired.remote(self.desired.copy()))
        self.recovered_fills += sum(len(rows) for rows in outcome.fills.values())
        self._take(outcome)

    def _take(self, outcome: Any) -> None:
        for name, rows in outcome.fills.items():
            self.received[name] += len(rows)
        for name, fee in outcome.fees_e8.items():
            self.fees[name] += fee

    def finish(self) -> dict[str, Any]:
        while True:
            try:
                report: dict[str, Any] = ray.get(self.handle.finish.remote())
                break
            except ray.exceptions.RayActorError:
                self.restart()
        for name, rows in report.get("late_fills", {}).items():  # reported after the last block
            self.received[name] += len(rows)
        for name, fee in report.get("late_fees_e8", {}).items():
            self.fees[name] += fee
        return report


def _check_run(url: str, driver: Driver, truth: dict[str, Any], journal: Path) -> Any:
    ledger = open_ledger(url)
    check_invariants(ledger, "r", truth, CAPITAL)
    orders = ledger.orders("r")
    assert not [o for o in orders if o.status == "submitted"], "an order was left without a final status"
    # Only orders of the last bar were still working at the end: none stayed stuck after a restart.
    last_ts = max(o.ts for o in orders)
    assert all(o.ts == last_ts for o in orders if o.reason_code == "run_ended")
    # Every fill allocation reached its agent exactly once, with its exact fee.
    for agent in AGENTS:
        rows = ledger.query(
            "SELECT COUNT(*), COALESCE(SUM(fee_e8), 0) FROM fill_allocations WHERE run_id = ? AND agent = ?",
            "r",
            agent,
        )
        assert (driver.received[agent], driver.fees[agent]) == (int(rows[0][0]), int(rows[0][1])), agent
    # No client order id twice: in the journal (one line per order sent), at the venue, in the ledger.
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    sent = [d["id"] for d in lines if "id" in d]
    assert len(sent) == len(set(sent))
    assert set(truth["orders"]) <= set(sent)
    crossed = [d["cross"] for d in lines if "cross" in d]
    assert len(crossed) == len(set(crossed))
    assert not set(crossed) & set(sent)
    seqs = [o.seq for o in orders]
    assert len(seqs) == len(set(seqs))
    recovered = ledger.events("r", "execution_recovered")
    assert len(recovered) == driver.restarts
    return ledger


def _setup(url: str, tmp_path: Path, faults: VenueFaults, retry_s: float = 5.0) -> tuple[Any, Driver, Any]:
    cfg = ExecutionConfig(
        slippage_bps=1.0,
        taker_fee_bps=1.0,
        venue_retry_s=retry_s,
        venue_timeout_s=5.0,
        max_volume_share=0.5,
        journal_dir=str(tmp_path / "journal"),
    )
    open_ledger(url).begin_run(RunRecord("r", 0, "{}", D(30_000), "USD", 0), [])
    batches = _feed(bars=30)
    venue = start_venue_actor(cfg, batches[0].symbols, faults)
    return batches, Driver(url, venue, cfg, batches[0].symbols), cfg


def _drive(batches: Any, driver: Driver, kills: dict[int, str]) -> dict[str, Any]:
    """Every bar, with the execution actor dying at ``kills`` (bar -> crash point)."""
    targets = _targets(len(batches), len(AGENTS), 2, seed=3)
    for k, (batch, t) in enumerate(zip(batches, targets, strict=True)):
        point = kills.get(k)
        if point in ("after_submit", "after_advance"):
            ray.get(driver.handle.arm_crash.remote(point))
        driver.block(batch, t, kill_after=point == "kill_after_block")
    driver.finish()
    truth: dict[str, Any] = ray.get(driver.venue.truth.remote())
    return truth


@pytest.mark.parametrize("point", ["after_submit", "after_advance", "kill_after_block"])
def test_execution_actor_killed_and_recovered(
    point: str, ledger_url: str, tmp_path: Path, ray_session: None
) -> None:
    faults = VenueFaults(seed=11, delayed_fill_rate=0.4, duplicate_fill_rate=0.3, partial_fill_rate=0.3)
    batches, driver, cfg = _setup(ledger_url, tmp_path, faults)
    try:
        truth = _drive(batches, driver, {6: point, 13: point, 21: point})
    finally:
        ray.kill(driver.venue)
    assert driver.restarts == 3
    assert truth["faults"]["delayed_fills"] > 0 and len(truth["fills"]) > 10
    ledger = _check_run(ledger_url, driver, truth, journal_path(cfg.journal_dir, "r"))
    detail = [e["detail"] for e in ledger.events("r", "execution_recovered")]
    if point == "after_submit":  # the venue took orders the ledger never heard of: booked from the journal
        assert sum(d["journal_only_orders"] for d in detail) > 0
    if point == "after_advance":  # the venue filled orders the ledger did not record: booked at recovery
        assert sum(d["fills_booked"] for d in detail) > 0


def test_recovery_on_postgresql_with_call_faults(
    postgres_url: str, tmp_path: Path, ray_session: None
) -> None:
    faults = VenueFaults(
        seed=5,
        timeout_rate=0.1,
        rate_limit_rate=0.1,
        retry_after_ms=5,
        reject_rate=0.1,
        delayed_fill_rate=0.3,
        duplicate_fill_rate=0.2,
    )
    batches, driver, cfg = _setup(postgres_url, tmp_path, faults)
    try:
        truth = _drive(batches, driver, {4: "after_submit", 12: "kill_after_block", 19: "after_advance"})
    finally:
        ray.kill(driver.venue)
    assert driver.restarts == 3
    _check_run(postgres_url, driver, truth, journal_path(cfg.journal_dir, "r"))


def test_orders_the_venue_never_received_are_closed_and_halts_are_restored(
    ledger_url: str, tmp_path: Path, ray_session: None
) -> None:
    batches, driver, cfg = _setup(ledger_url, tmp_path, VenueFaults(), retry_s=0.1)
    targets = _targets(len(batches), len(AGENTS), 2, seed=3)
    try:
        for k in range(5):
            driver.block(batches[k], targets[k])
        ray.get(driver.venue.disconnect.remote(3.0))
        driver.block(batches[5], targets[5], kill_after=True)  # its orders never reached the venue
        ray.get(driver.venue.disconnect.remote(0.0))
        driver.restart()
        ray.get(driver.handle.halt.remote("test"))
        ray.kill(driver.handle, no_restart=True)
        for k in range(6, 12):
            driver.block(batches[k], targets[k])
        report = driver.finish()
        truth = ray.get(driver.venue.truth.remote())
    finally:
        ray.kill(driver.venue)
    ledger = _check_run(ledger_url, driver, truth, journal_path(cfg.journal_dir, "r"))
    not_sent = [o for o in ledger.orders("r") if o.reason_code == "not_sent"]
    assert not_sent and all(o.status == "expired" for o in not_sent)
    assert ledger.events("r", "venue_error")
    assert report["portfolio"]["trading_state"] == "halted"
    halted_at = ledger.events("r", "trading_state")[-1]["ts"]
    assert not [o for o in ledger.orders("r") if o.ts > halted_at and o.status != "denied"]
