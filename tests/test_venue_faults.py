"""The venue's fault modes: the exchange alone (in-process), then the engine trading on the venue actor
with each fault mode alone: no fill lost or doubled, ledger positions equal the venue's, no id reused."""

from __future__ import annotations

import pickle
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from federation.config import ExecutionConfig, RiskConfig
from federation.execution import (
    Exchange,
    ExecutionEngine,
    RemoteVenue,
    SimulatedVenue,
    TargetUpdates,
    VenueFaults,
    VenueOrder,
    build_risk_policy,
    start_venue_actor,
)
from federation.execution.journal import OrderJournal, load_journal
from federation.execution.venue import VenueFill, VenueReport
from federation.execution.venue_faults import VenueDisconnected, VenueRateLimited, VenueTimeout
from federation.ledger import PORTFOLIO, RunRecord, SQLiteLedger
from tests.test_execution import make_batch

D = Decimal
CFG = ExecutionConfig(slippage_bps=0.0, taker_fee_bps=1.0)
BAR = (100.0, 110.0, 90.0, 105.0, 1_000_000.0)


def order(cid: str, col: int = 0, lots: int = 10, ts: int = 0, kind: str = "market") -> VenueOrder:
    return VenueOrder(cid, col, lots, kind, D("95") if kind == "limit" else None, ts)  # type: ignore[arg-type]


def advance(ex: Exchange, ts: int, cols: list[int], cursor: int = 0, bar: tuple[float, ...] = BAR) -> Any:
    o, h, lo, _, v = bar
    return ex.advance(ts, cols, [o] * len(cols), [h] * len(cols), [lo] * len(cols), [v] * len(cols), cursor)


# --------------------------------------------------------------------------------------- the exchange
def test_submit_is_idempotent_by_client_order_id_and_reuse_is_reported() -> None:
    ex = Exchange(CFG, ["AAA", "BBB"])
    assert ex.submit([order("o1")])[0] == [("o1", "accepted", None, None)]
    assert ex.submit([order("o1")])[0] == [("o1", "accepted", None, None)]  # a retry: same answer
    truth = ex.truth()
    assert truth["orders"]["o1"]["requests"] == 2 and truth["reused_ids"] == []
    acks, _ = ex.submit([order("o1", col=1)])  # same id, another order
    assert acks[0][1:3] == ("rejected", "duplicate_client_order_id")
    assert ex.truth()["reused_ids"] == ["o1"]
    # One order per symbol works at a time.
    assert ex.submit([order("o2")])[0][0][1:3] == ("rejected", "symbol_busy")


def test_an_order_matches_once_on_the_first_later_bar_and_answers_can_be_read_again() -> None:
    ex = Exchange(CFG, ["AAA"])
    ex.submit([order("o1", ts=5)])
    assert advance(ex, 5, [0]) == ([], 0)  # its own decision bar: not yet
    events, cursor = advance(ex, 6, [0])
    assert [type(e) for e in events] == [VenueFill, VenueReport] and cursor == 2
    assert advance(ex, 6, [0], cursor) == ([], 2)  # the same bar again: nothing new
    assert advance(ex, 6, [0], 0)[0] == events  # a lost answer is read again from its cursor
    ex.submit([order("o1", ts=5)])  # sent again after it filled: a reuse
    assert ex.truth()["reused_ids"] == ["o1"]


@pytest.mark.parametrize("kind", ["market", "limit"])
def test_matching_rules_are_the_simulated_venues(kind: str) -> None:
    cfg = ExecutionConfig(slippage_bps=3.0, taker_fee_bps=2.0, maker_fee_bps=-1.0, max_volume_share=0.001)
    ex, sim = Exchange(cfg, ["AAA"]), SimulatedVenue(cfg)
    cursor = 0
    for k, lots in enumerate([10, -7, 5_000, -3]):
        ex.submit([order(f"o{k}", lots=lots, ts=k, kind=kind)])
        sim.submit(order(f"o{k}", lots=lots, ts=k, kind=kind))
        bar = (100.0, 101.0, 94.0 + k, 100.0, 2_000_000.0)
        events, cursor = advance(ex, k + 1, [0], cursor, bar=bar)
        fill, why = sim.match(0, *bar[:3], bar[4], k + 1)  # type: ignore[misc]
        report = events[-1]
        assert isinstance(report, VenueReport)
        if fill is None:
            assert events == [report] and report.status == "expired" and report.reason_code == why
        else:
            assert events == [fill, report] and report.filled_lots == abs(fill.lots)


def test_truth_has_the_contract_format() -> None:
    ex = Exchange(ExecutionConfig(lot_size=D("0.5")), ["AAA"])
    ex.submit([order("o1", lots=-4)])
    advance(ex, 1, [0])
    truth = ex.truth()
    assert set(truth) == {"positions", "fills", "orders", "reused_ids", "faults"}
    assert truth["positions"] == {"AAA": "-2.0"}
    fill = truth["fills"][0]
    assert set(fill) == {"fill_id", "client_order_id", "symbol", "quantity", "price", "fee", "ts"}
    assert fill["quantity"] == "-2.0" and fill["ts"] == 1 and fill["fill_id"] == "SIM-00000001"
    assert truth["orders"]["o1"] == {
        "symbol": "AAA",
        "quantity": "-2.0",
        "status": "filled",
        "filled": "2.0",
        "requests": 1,
    }
    assert set(truth["faults"]) == {
        "timeouts",
        "timeouts_applied",
        "rejects",
        "rate_limited",
        "disconnected_calls",
        "partial_fills",
        "delayed_fills",
        "duplicate_fills",
    }


def test_call_faults_timeouts_rate_limits_and_disconnects() -> None:
    ex = Exchange(CFG, ["AAA"], VenueFaults(seed=1, timeout_rate=1.0))
    applied = 0
    for k in range(20):
        with pytest.raises(VenueTimeout):
            ex.submit([order(f"o{k}", ts=k)])
        applied += f"o{k}" in ex.truth()["orders"]
        ex.set_faults(VenueFaults())
        advance(ex, k + 1, [0])  # clears the symbol for the next order
        ex.set_faults(VenueFaults(seed=k + 2, timeout_rate=1.0))
    faults = ex.truth()["faults"]
    assert faults["timeouts"] == 20 and faults["timeouts_applied"] == applied and 0 < applied < 20

    ex = Exchange(CFG, ["AAA"], VenueFaults(rate_limit_rate=1.0, retry_after_ms=250))
    with pytest.raises(VenueRateLimited) as info:
        ex.submit([order("o1")])
    assert info.value.retry_after_s == 0.25 and ex.truth()["orders"] == {}
    again = pickle.loads(pickle.dumps(info.value))  # crosses processes intact
    assert again.retry_after_s == 0.25

    ex = Exchange(CFG, ["AAA"])
    ex.disconnect(60)
    with pytest.raises(VenueDisconnected):
        ex.submit([order("o1")])
    assert ex.truth()["faults"]["disconnected_calls"] == 1 and ex.truth()["orders"] == {}


def test_fill_faults_are_seeded_and_reproducible() -> None:
    def run(faults: VenueFaults) -> tuple[list[Any], dict[str, Any]]:
        ex = Exchange(CFG, ["AAA"], faults)
        log = []
        cursor = 0
        for k in range(60):
            ex.submit([order(f"o{k}", lots=50, ts=2 * k)])
            events, cursor2 = advance(ex, 2 * k + 1, [0], cursor)
            log += events
            cursor = cursor2
        for k in range(10):  # delayed reports come with later calls
            events, cursor = advance(ex, 1000 + k, [], cursor)
            log += events
        return log, ex.truth()

    faults = VenueFaults(
        seed=7, reject_rate=0.2, partial_fill_rate=0.3, delayed_fill_rate=0.3, duplicate_fill_rate=0.3
    )
    log, truth = run(faults)
    assert run(faults) == (log, truth)
    counts = truth["faults"]
    assert all(counts[k] > 0 for k in ("rejects", "partial_fills", "delayed_fills", "duplicate_fills"))
    fills = [e for e in log if isinstance(e, VenueFill)]
    assert len(fills) == len(truth["fills"]) + counts["duplicate_fills"]
    assert len({f.fill_id for f in fills}) == len(truth["fills"])
    partial = [e for e in log if isinstance(e, VenueReport) and e.status == "partially_filled"]
    assert len(partial) == counts["partial_fills"] and all(0 < r.filled_lots < 50 for r in partial)
    rejected = [e for e in log if isinstance(e, VenueReport) and e.status == "rejected"]
    assert len(rejected) == counts["rejects"] and rejected[0].reason_code == "venue_reject"
    # Every order got exactly one final report, whatever the delays.
    finals = [e.client_order_id for e in log if isinstance(e, VenueReport)]
    assert sorted(finals) == sorted(truth["orders"])


def test_journal_round_trip_and_a_cut_off_line_is_ignored(tmp_path: Path) -> None:
    from federation.execution.journal import JournalEntry

    path = tmp_path / "j.jsonl"
    journal = OrderJournal(path, fsync=True)
    entry = JournalEntry("r-O0000001", 1, 5, "AAA", 0, -3, "limit", D("1.25"), (("a0", -2), ("a1", -1)))
    journal.append([entry])
    journal.close()
    with open(path, "a") as f:
        f.write('{"id": "r-O00000')
    assert load_journal(path).orders == {"r-O0000001": entry}


# ------------------------------------------------------------------------ the engine on the venue actor
N_BARS = 40


def _feed(symbols: int = 2, bars: int = N_BARS, volume: float = 1_000_000.0) -> list[Any]:
    """One-bar batches (live mode's shape) of a random walk."""
    rng = np.random.default_rng(0)
    out = []
    price = 100.0
    for t in range(bars):
        price = round(price * (1 + rng.normal(0, 0.01)), 2)
        row = {f"S{j}": (price, price * 1.01, price * 0.99, price, volume) for j in range(symbols)}
        out.append(make_batch([row], t0=t))
    return out


def _targets(bars: int, agents: int, symbols: int, seed: int = 1) -> list[TargetUpdates]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(bars):
        k = 2
        out.append(
            TargetUpdates(
                np.zeros(k, dtype=np.int64),
                rng.integers(0, agents, k).astype(np.int64),
                rng.integers(0, symbols, k).astype(np.int64),
                rng.integers(-40, 40, k).astype(np.int64),
            )
        )
    return out


def _run(
    tmp_path: Path,
    faults: VenueFaults,
    *,
    retry_s: float = 5.0,
    disconnect_at: tuple[int, float] | None = None,
) -> tuple[SQLiteLedger, dict[str, Any], ExecutionEngine]:
    cfg = ExecutionConfig(
        slippage_bps=1.0, taker_fee_bps=1.0, venue_retry_s=retry_s, venue_timeout_s=5.0, max_volume_share=0.5
    )
    batches = _feed()
    symbols = batches[0].symbols
    venue = start_venue_actor(cfg, symbols, faults)
    try:
        ledger = SQLiteLedger(tmp_path / "ledger.db")
        ledger.begin_run(RunRecord("r", 0, "{}", D(30_000), "USD", 0), [])
        engine = ExecutionEngine(
            run_id="r",
            agents=["a0", "a1", "a2"],
            capital=[D(10_000)] * 3,
            symbols=symbols,
            config=cfg,
            risk=build_risk_policy(RiskConfig()),
            ledger=ledger,
            venue=RemoteVenue(venue, timeout_s=cfg.venue_timeout_s, retry_s=cfg.venue_retry_s),
            journal=OrderJournal(tmp_path / "journal.jsonl"),
        )
        for k, (batch, targets) in enumerate(zip(batches, _targets(len(batches), 3, 2), strict=True)):
            if disconnect_at is not None and k == disconnect_at[0]:
                ray.get(venue.disconnect.remote(disconnect_at[1]))
            engine.process_block(batch, targets)
        engine.finish()
        truth = ray.get(venue.truth.remote())
    finally:
        ray.kill(venue)
    return ledger, truth, engine


def check_invariants(ledger: Any, run_id: str, truth: dict[str, Any], capital: dict[str, Decimal]) -> None:
    """Fills at the venue == ledger fills by id (once each), positions equal exactly, no reused id,
    cash consistent (the portfolio's and the sum of the agents' sub-accounts), allocations add up.
    ``capital``: each agent's starting capital."""
    fills = [f for f in ledger.fills(run_id) if f.liquidity != "internal"]
    ids = [f.fill_id for f in fills]
    assert len(ids) == len(set(ids))
    venue = {f["fill_id"]: f for f in truth["fills"]}
    assert set(ids) == set(venue), (set(venue) - set(ids), set(ids) - set(venue))
    for f in fills:
        v = venue[f.fill_id]
        assert (D(v["quantity"]), D(v["price"]), D(v["fee"])) == (f.quantity, f.price, f.fee)
    assert {s: D(q) for s, q in truth["positions"].items()} == ledger.positions(run_id)
    assert truth["reused_ids"] == []
    spent = sum((f.quantity * f.price + f.fee for f in fills), D(0))
    total = sum(capital.values(), D(0))
    assert ledger.cash(run_id) == total - spent
    agent_cash = [_or(ledger.cash(run_id, a), c) for a, c in capital.items()]
    assert sum(agent_cash, D(0)) == ledger.cash(run_id)
    agent_positions: dict[str, Decimal] = {}
    for a in capital:
        for s, q in ledger.positions(run_id, a).items():
            agent_positions[s] = agent_positions.get(s, D(0)) + q
    assert {s: q for s, q in agent_positions.items() if q} == ledger.positions(run_id, PORTFOLIO)
    by_fill = ledger.query(
        "SELECT f.fill_id, f.qty_e8, f.fee_e8, SUM(a.qty_e8), SUM(a.fee_e8) FROM fills f JOIN fill_allocations a "
        "ON a.run_id = f.run_id AND a.fill_id = f.fill_id WHERE f.run_id = ? AND f.liquidity <> 'internal' "
        "GROUP BY f.fill_id, f.qty_e8, f.fee_e8",
        run_id,
    )
    assert len(by_fill) == len(fills)
    assert all(q == aq and fee == afee for _, q, fee, aq, afee in by_fill)


CAPITAL = {f"a{i}": D(10_000) for i in range(3)}


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


MODES = {
    "reject": VenueFaults(seed=1, reject_rate=0.3),
    "timeout": VenueFaults(seed=2, timeout_rate=0.3),
    "rate_limit": VenueFaults(seed=3, rate_limit_rate=0.3, retry_after_ms=5),
    "partial": VenueFaults(seed=4, partial_fill_rate=0.5),
    "delayed": VenueFaults(seed=5, delayed_fill_rate=0.5, max_delay_calls=3),
    "duplicate": VenueFaults(seed=6, duplicate_fill_rate=0.5),
}
COUNTER = {
    "reject": "rejects",
    "timeout": "timeouts",
    "rate_limit": "rate_limited",
    "partial": "partial_fills",
    "delayed": "delayed_fills",
    "duplicate": "duplicate_fills",
}


@pytest.mark.parametrize("mode", list(MODES))
def test_each_fault_mode_alone_loses_and_doubles_nothing(
    mode: str, tmp_path: Path, ray_session: None
) -> None:
    ledger, truth, engine = _run(tmp_path, MODES[mode])
    assert truth["faults"][COUNTER[mode]] > 0
    assert sum(truth["faults"].values()) == truth["faults"][COUNTER[mode]] + (
        truth["faults"]["timeouts_applied"] if mode == "timeout" else 0
    )
    check_invariants(ledger, "r", truth, CAPITAL)
    assert len(truth["fills"]) > 10
    orders = {o.client_order_id: o for o in ledger.orders("r")}
    assert not [o for o in orders.values() if o.status == "submitted"]  # every order got its final status
    if mode == "reject":
        rejected = [o for o in orders.values() if o.status == "rejected"]
        assert len(rejected) == truth["faults"]["rejects"]
        assert rejected[0].reason_code == "venue_reject" and "rejected" in (rejected[0].reason or "")
    if mode == "partial":
        assert any(o.status == "partially_filled" for o in orders.values())
    if mode in ("timeout", "rate_limit"):
        assert engine.venue.stats()["retries"] > 0
        assert any(o["requests"] > 1 for o in truth["orders"].values()) or mode == "rate_limit"
    if mode == "duplicate":
        assert engine.venue.stats()["duplicate_fills"] == truth["faults"]["duplicate_fills"]
    journal = load_journal(tmp_path / "journal.jsonl")
    assert set(journal.orders) == set(truth["orders"])  # every order the venue saw was journaled first
    assert ledger.events("r", "venue_error") == []


def test_a_disconnect_longer_than_the_retry_budget_is_recorded_and_loses_nothing(
    tmp_path: Path, ray_session: None
) -> None:
    ledger, truth, engine = _run(tmp_path, VenueFaults(), retry_s=0.2, disconnect_at=(10, 1.5))
    errors = ledger.events("r", "venue_error")
    assert errors and engine.venue_errors == len(errors)
    assert {e["code"] for e in errors} <= {"submit", "advance"}
    assert "gave up" in errors[0]["message"] and "disconnected" in errors[0]["message"]
    assert truth["faults"]["disconnected_calls"] > 0
    check_invariants(ledger, "r", truth, CAPITAL)
    # Orders whose submit gave up were sent again with the same ids (no new id for the same order).
    assert any(o["requests"] > 1 for o in truth["orders"].values()) or all(
        e["code"] == "advance" for e in errors
    )
