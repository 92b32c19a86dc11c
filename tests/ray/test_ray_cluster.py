"""`ng_run +ray_address=...` on a Ray cluster of three nodes on this machine, and losing one of them.

The cluster runs in its own process (`nemo_gym.testing.LocalRayCluster`); every node is pinned to
127.0.0.1. Nodes are told apart by custom resources: the head node offers `head_node` (the model
server asks for it, so it never sits on the node we kill), the two others `replica_slot` (the agent
and the stateful counter ask for it, two replicas each, so each node holds one replica of both).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.local_ray_cluster import LocalRayCluster
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from tests.conftest import PROJECT_ROOT, spawn
from tests.e2e.test_environments_a import counter_script

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

COUNTER = "example_stateful_counter"
AGENT = "example_stateful_counter_simple_agent"
COUNTER_BLOCK = f"{COUNTER}.resources_servers.{COUNTER}"
AGENT_BLOCK = f"{AGENT}.responses_api_agents.simple_agent"
CONFIGS = [
    f"resources_servers/{COUNTER}/configs/{COUNTER}.yaml",
    "responses_api_models/openai_model/configs/openai_model.yaml",
]
TASKS = PROJECT_ROOT / f"resources_servers/{COUNTER}/data/example.jsonl"
REPEATS = 400  # 5 tasks x 400 = 2,000 rollouts


@pytest.fixture(scope="module")
def cluster():
    with LocalRayCluster([{"head_node": 1}, {"replica_slot": 1}, {"replica_slot": 1}]) as running:
        yield running


def ng_run_on(cluster: LocalRayCluster, upstream: ScriptedOpenAI, head_port: int, *extra: str) -> NgRunProcess:
    return NgRunProcess(
        CONFIGS,
        f"+ray_address={cluster.address}",
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=sk-test",
        "+policy_model_name=scripted-model",
        "+policy_model.responses_api_models.openai_model.ray_resources={head_node: 0.1}",
        f"+{COUNTER_BLOCK}.num_replicas=2",
        f"+{COUNTER_BLOCK}.ray_resources={{replica_slot: 0.1}}",
        f"+{AGENT_BLOCK}.num_replicas=2",
        f"+{AGENT_BLOCK}.ray_resources={{replica_slot: 0.1}}",
        *extra,
        cwd=PROJECT_ROOT,
        env=cluster.environment(),
    )


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def finished_rows(path: Path) -> int:
    """Rows written so far (complete lines only: the collector may be in the middle of one)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def rows_of(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_two_replicas_survive_losing_a_node_mid_collection(cluster, tmp_path):
    head_port = free_port()
    expected = {index: json.loads(line)["expected_count"] for index, line in enumerate(TASKS.read_text().splitlines())}
    output = tmp_path / "rollouts.jsonl"
    upstream = ScriptedOpenAI(counter_script)
    upstream.record_requests = False
    with upstream:
        stack = ng_run_on(cluster, upstream, head_port)
        try:
            stack.wait_ready(timeout=120)
            registry = httpx.get(f"http://127.0.0.1:{head_port}/server_instances").json()
            node_of = {(row["name"], row["replica"]): row["node"] for row in registry}
            # Replicas of one server sit on distinct nodes, and the model server on the head node.
            assert node_of[(COUNTER, 0)] != node_of[(COUNTER, 1)]
            assert node_of[(AGENT, 0)] != node_of[(AGENT, 1)]
            head_node = next(node["node_id"] for node in cluster.nodes if node["head"])
            assert node_of[("policy_model", 0)] == head_node
            # Each server process knows the cluster, and its secrets reached it through its pipe only.
            for row in registry:
                server = psutil.Process(row["pid"])
                assert server.environ()["NEMO_GYM_RAY_ADDRESS"] == cluster.address
                assert not any("sk-test" in text for text in [*server.environ().values(), *server.cmdline()])
            victim = node_of[(COUNTER, 1)]
            assert victim != head_node

            collector = spawn(
                "ng_collect_rollouts",
                f"+agent_name={AGENT}",
                f"+input_jsonl_fpath={TASKS}",
                f"+output_jsonl_fpath={output}",
                f"+num_repeats={REPEATS}",
                "+num_samples_in_parallel=64",
                f"+head_server.port={head_port}",
            )
            # Kill the node once a fifth of the rows are in: rollouts are in flight on both replicas.
            deadline = time.monotonic() + 120
            while finished_rows(output) < 400 and collector.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert collector.poll() is None, "the collection ended before the node could be killed"
            cluster.remove_node(victim)
            collector_output, _ = collector.communicate(timeout=240)
            assert stack.process.poll() is None, "losing one replica of each server stopped the whole stack"
        finally:
            ng_run_exit = stack.stop(timeout=60)

    # Ctrl+C stopped every server on every node (all nodes are this machine, so their pids are ours to see).
    assert ng_run_exit == 0, stack.output
    assert [row["pid"] for row in registry if running(row["pid"])] == []

    # Every (task, rollout) pair has exactly one row, and no failure record: the retry budget sufficed.
    assert collector.returncode == 0, collector_output
    rows = rows_of(output)
    pairs = Counter((row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows)
    assert len(rows) == 2000 and set(pairs.values()) == {1}
    assert set(pairs) == {(task, rollout) for task in range(5) for rollout in range(REPEATS)}
    failures = output.with_name(output.stem + "_failures.jsonl")
    assert not failures.exists() or failures.read_text().strip() == ""
    # Each stateful rollout ended at its own task's count: no call went to a replica that did not seed it.
    assert all(row["final_count"] == expected[row["_ng_task_index"]] and row["reward"] == 1.0 for row in rows)
    # ng_run said which replicas it lost and that the others carried on.
    assert f"replica 1 of server {COUNTER!r}" in stack.output and "replicas remain" in stack.output
