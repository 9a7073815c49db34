"""The full plan of issue 6 from the command line: 100 agents, 60 s of live trading, everything breaking
(``pytest -m slow``; about 8 minutes here: two start-ups of 220 processes and two 60 s runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.test_plans import CHAOS, _cli


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_full_plan(tmp_path: Path) -> None:
    """Every invariant holds; the JSON report has ``ok`` and one entry per invariant."""
    done = _cli(
        "chaos",
        str(CHAOS / "fleet.toml"),
        "--plan",
        str(CHAOS / "full_plan.toml"),
        "--json",
        "-q",
        cwd=tmp_path,
        timeout=1700,
    )
    report = json.loads(done.stdout)
    failed = {k: v for k, v in report["invariants"].items() if not v["ok"]}
    assert done.returncode == 0 and report["ok"], failed
    assert report["faults"]["kill_agent"] >= 100 and report["faults"]["kill_execution"] == 2
    assert report["invariants"]["fills_missing"]["value"] == 0
