"""A Ray cluster of simulated nodes on this machine, every node pinned to 127.0.0.1 (tests, benchmarks).

    with loopback_ray_cluster([1, 2]) as cluster:      # a head with 1 CPU and a worker node with 2
        os.environ["NEMO_GYM_RAY_ADDRESS"] = cluster.address

Each node is a real raylet (its own processes, its own CPU count and a custom resource `node_<i>`,
so work can be pinned to one node); all share this machine's cores. Ray is imported only here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Loopback only: Ray must neither pick this machine's interface address nor phone home.
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: with Ray 2.60 a driver cannot reach nodes pinned to
# 127.0.0.1 without it (ray-project/ray#59110); it is read when ray is imported.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
REPO_ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def loopback_ray_cluster(node_cpus: Sequence[float]) -> Iterator[Any]:
    """Start one node per entry of `node_cpus` (the first is the head); yield the
    `ray.cluster_utils.Cluster` (`.address` is what `ray.init(address=...)` takes); stop them all."""
    if not node_cpus:
        raise ValueError("a cluster needs at least one node")
    if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        raise RuntimeError("ray was imported before loopback_ray_cluster(): its nodes would not stay on 127.0.0.1")
    # Left set afterwards: Ray read them when it was imported, so a later cluster in this process
    # (and any driver it starts) keeps using them either way.
    os.environ.update(LOOPBACK_RAY_ENV)
    saved = {"PYTHONPATH": os.environ.get("PYTHONPATH")}
    # Ray workers are started by the raylets with this environment; they must import this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), saved["PYTHONPATH"]]))
    from ray.cluster_utils import Cluster

    def node(index: int, cpus: float) -> dict[str, Any]:
        return {"num_cpus": cpus, "node_ip_address": "127.0.0.1", "resources": {f"node_{index}": 1}}

    cluster = Cluster(initialize_head=True, head_node_args={**node(0, node_cpus[0]), "include_dashboard": False})
    try:
        for index, cpus in enumerate(node_cpus[1:], start=1):
            cluster.add_node(**node(index, cpus))
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
