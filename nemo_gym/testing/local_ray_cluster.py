"""A Ray cluster of several nodes on this machine, pinned to 127.0.0.1, for tests and benchmarks.

    with LocalRayCluster([{"head_node": 1}, {"replica_slot": 1}, {"replica_slot": 1}]) as cluster:
        ...  # ng_run +ray_address={cluster.address}; cluster.remove_node(node_id) kills one node

The cluster lives in its own process (`python -m nemo_gym.testing.local_ray_cluster`), built with
`ray.cluster_utils.Cluster`, so the calling process never imports Ray (and a test can check that
ng_run without `ray_address` does not either). Each node gets one CPU, a small object store, no
dashboard and no usage reporting, and its own custom resources (how a test tells nodes apart).
Commands go to that process on its stdin, one JSON line each; end of input shuts the cluster down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

OBJECT_STORE_BYTES = 80 * 1024 * 1024
LOOPBACK = "127.0.0.1"
QUIET_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray takes 127.0.0.1 as this node's address instead of rewriting it (Ray issue #59110).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


class LocalRayCluster:
    """Start with `start()` (or `with`); `address` is the head's host:port, `nodes` one dict per node."""

    def __init__(self, node_resources: Sequence[dict[str, float]], *, start_timeout_s: float = 120.0):
        self.node_resources = [dict(resources) for resources in node_resources]
        self.start_timeout_s = start_timeout_s
        self.address = ""
        self.nodes: list[dict[str, Any]] = []
        """[{"node_id": ..., "resources": {...}, "head": bool}] in the order asked for."""
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def environment() -> dict[str, str]:
        """The environment for processes that join the cluster (ng_run): this one, plus Ray's quiet settings."""
        return dict(os.environ) | QUIET_RAY_ENV

    def start(self) -> LocalRayCluster:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "nemo_gym.testing.local_ray_cluster"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.environment(),
            start_new_session=True,
        )
        started = self._ask({"start": self.node_resources}, timeout_s=self.start_timeout_s)
        self.address, self.nodes = started["address"], started["nodes"]
        return self

    def remove_node(self, node_id: str) -> None:
        """Kill one node (not the head) the way a lost machine goes: its raylet and its workers."""
        self._ask({"remove": node_id}, timeout_s=60)

    def _ask(self, command: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        stdout = process.stdout
        with self._lock:
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
            answer: list[str] = []
            reader = threading.Thread(target=lambda: answer.append(stdout.readline()), daemon=True)
            reader.start()
            reader.join(timeout_s)
        if not answer or not answer[0]:
            raise RuntimeError(f"the local Ray cluster did not answer {command} within {timeout_s:.0f} s")
        reply = json.loads(answer[0])
        if "error" in reply:
            raise RuntimeError(f"the local Ray cluster failed: {reply['error']}")
        return reply

    def close(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        try:
            assert process.stdin is not None
            process.stdin.close()  # end of input: the cluster shuts down
            process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


STARTUP_ATTEMPTS = 3
"""Ray gives each raylet a fixed 30 s to register with its GCS (`ray._private.node`), which a 2-core
machine busy with other tests' servers can exceed; a cluster that timed out is shut down and started again."""


def _start_cluster(cluster_class: Any, args: list[dict[str, Any]]) -> tuple[Any, list[Any]]:
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        cluster = cluster_class()
        try:
            # The first node added is the head.
            handles = [cluster.add_node(**args[0], include_dashboard=False)]
            handles += [cluster.add_node(**node_args) for node_args in args[1:]]
            cluster.wait_for_nodes()
            return cluster, handles
        except Exception as error:
            cluster.shutdown()
            if attempt == STARTUP_ATTEMPTS or "timed out during startup" not in str(error):
                raise
    raise AssertionError("unreachable")


def _serve() -> None:
    """The cluster process: start nodes, remove them on request, shut down at end of input."""
    from ray.cluster_utils import Cluster

    cluster: Cluster | None = None
    nodes: dict[str, Any] = {}
    try:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if "start" in command:
                    layout = command["start"]
                    args = [
                        dict(
                            node_ip_address=LOOPBACK,
                            num_cpus=1,
                            resources=resources,
                            object_store_memory=OBJECT_STORE_BYTES,
                        )
                        for resources in layout
                    ]
                    cluster, handles = _start_cluster(Cluster, args)
                    listed = []
                    for handle, resources in zip(handles, layout, strict=True):
                        nodes[handle.node_id] = handle
                        listed.append({"node_id": handle.node_id, "resources": resources, "head": handle is handles[0]})
                    reply: dict[str, Any] = {"address": cluster.address, "nodes": listed}
                elif "remove" in command:
                    assert cluster is not None
                    cluster.remove_node(nodes.pop(command["remove"]), allow_graceful=False)
                    reply = {"removed": command["remove"]}
                else:
                    reply = {"error": f"unknown command {command}"}
            except Exception as error:  # reported to the caller, who raises it
                reply = {"error": f"{type(error).__name__}: {error}"}
            print(json.dumps(reply), flush=True)
    finally:
        if cluster is not None:
            cluster.shutdown()


if __name__ == "__main__":
    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
    _serve()
