"""Run a fleet on a local two-node Ray cluster (``ray.cluster_utils.Cluster``); print where agents ran.

Used by ``tests/test_cluster.py`` in a separate process, because the test session's own Ray cannot be
joined to another cluster. Usage: ``python tests/cluster_run.py CONFIG``.
"""

from __future__ import annotations

import json
import sys

import ray
from ray.cluster_utils import Cluster

from federation.config import load_config
from federation.supervisor import run_fleet


def main(config: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        summary = run_fleet(load_config(config, overrides={"ray_address": cluster.address}))
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        print(
            json.dumps(
                {
                    "status": summary.status,
                    "cluster_nodes": nodes,
                    "agents": [
                        {"name": a.name, "isolation": a.isolation, "node": a.node_id, "fills": a.fills}
                        for a in summary.agents
                    ],
                }
            )
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
