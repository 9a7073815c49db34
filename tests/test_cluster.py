"""The same config on a multi-node Ray cluster: agents of both tiers spread over the nodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

FLEET = """
[federation]
ledger = "sqlite:///{ledger}"
shared_hosts = 2
[feed]
kind = "synthetic"
symbols = ["A", "B"]
bars = 200
[[agents]]
class = "agents.momentum:MomentumAgent"
isolation = "actor"
count = 4
params = {{ fast = 3, slow = 12 }}
[[agents]]
class = "agents.mean_reversion:MeanReversionAgent"
isolation = "shared"
count = 4
params = {{ lookback = 10 }}
"""


def test_agents_spread_over_the_nodes_of_a_cluster(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(ledger=tmp_path / "c.db"))
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "cluster_run.py"), str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and len(result["cluster_nodes"]) == 2
    agents = result["agents"]
    assert all(a["node"] in result["cluster_nodes"] for a in agents)
    for tier in ("actor", "shared"):
        nodes = {a["node"] for a in agents if a["isolation"] == tier}
        assert len(nodes) == 2, f"{tier} agents all ran on one node: {agents}"
    assert sum(a["fills"] for a in agents) > 0
