"""Replicas without Ray: the client's routing over real loopback servers, and `num_replicas` in ng_run.

Routing: a rollout's first call picks a replica in turn, and every later call with its cookies goes
to that replica (another one would not know its session). A replica that refuses connections gets
no new rollouts; a call pinned to it fails with ReplicaGoneError, which the collector retries and
its circuit breaker does not count while a sibling lives.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter

import httpx
import pytest

from nemo_gym.client import ServerClient, ServerInfo
from nemo_gym.errors import ReplicaGoneError, ServerUnreachableError
from nemo_gym.replica_routing import replica_cookie_name
from nemo_gym.rollouts.circuit_breaker import COUNTS, NEUTRAL, classify
from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from resources_servers.example_stateful_counter.app import ExampleStatefulCounterConfig, ExampleStatefulCounterServer
from tests.conftest import PROJECT_ROOT, cli
from tests.e2e.test_environments_a import counter_script

COUNTER = "example_stateful_counter"
AGENT = "example_stateful_counter_simple_agent"
COUNTER_BLOCK = f"{COUNTER}.resources_servers.{COUNTER}"
AGENT_BLOCK = f"{AGENT}.responses_api_agents.simple_agent"
CONFIGS = [
    f"resources_servers/{COUNTER}/configs/{COUNTER}.yaml",
    "responses_api_models/openai_model/configs/openai_model.yaml",
]
TASKS = PROJECT_ROOT / f"resources_servers/{COUNTER}/data/example.jsonl"


def counter_replica() -> ThreadedServer:
    server = ExampleStatefulCounterServer(
        config=ExampleStatefulCounterConfig(name="counter", domain="agent"), server_client=registry_client({})
    )
    return ThreadedServer.of(server).start()


def client_for(replicas: list[ThreadedServer], healthy: list[bool | None] | None = None) -> ServerClient:
    rows = [
        ServerInfo(
            name="counter",
            server_type="resources_servers",
            implementation="x",
            url=http.url,
            replica=index,
            healthy=(healthy or [None] * len(replicas))[index],
        )
        for index, http in enumerate(replicas)
    ]
    return ServerClient("http://127.0.0.1:9", registry=rows)


async def one_rollout(client: ServerClient, start: int, increments: list[int]) -> tuple[str, int]:
    """Seed, increment, read back: the calls an agent makes, threading the cookies it gets back."""
    seeded = await client.post("counter", "/seed_session", json={"initial_count": start})
    cookies = dict(seeded.cookies)
    for step in increments:
        result = await client.post("counter", "/increment_counter", json={"count": step}, cookies=cookies)
        cookies.update(result.cookies)
    count = (await client.post("counter", "/get_counter_value", json={}, cookies=cookies)).json()["count"]
    return cookies[replica_cookie_name("counter")], count


def test_rollouts_spread_over_replicas_and_each_stays_on_the_replica_that_seeded_it():
    replicas = [counter_replica(), counter_replica()]
    try:

        async def main() -> list[tuple[str, int]]:
            client = client_for(replicas)
            try:
                return await asyncio.gather(*(one_rollout(client, n, [1, n, 2]) for n in range(40)))
            finally:
                await client.aclose()

        results = asyncio.run(main())
    finally:
        for http in replicas:
            http.stop()
    # Every count is its own: no call of a rollout reached a replica that had not seeded it.
    assert [count for _, count in results] == [n + 1 + n + 2 for n in range(40)]
    assert Counter(replica for replica, _ in results) == {"0": 20, "1": 20}


def test_a_dead_replica_gets_no_new_rollouts_and_a_rollout_pinned_to_it_fails_without_tripping_the_breaker():
    alive, doomed = counter_replica(), counter_replica()
    try:

        async def main() -> tuple[ReplicaGoneError, list[tuple[str, int]], ServerUnreachableError]:
            client = client_for([alive, doomed])
            try:
                seeded = [await client.post("counter", "/seed_session", json={"initial_count": 0}) for _ in range(2)]
                pinned_to_doomed = next(
                    dict(result.cookies) for result in seeded if result.cookies[replica_cookie_name("counter")] == "1"
                )
                doomed.stop()
                await asyncio.sleep(0.2)  # let our loop see the server close its idle keep-alive connections
                with pytest.raises(ReplicaGoneError) as gone:
                    await client.post("counter", "/increment_counter", json={"count": 1}, cookies=pinned_to_doomed)
                after = [await one_rollout(client, 10, [5]) for _ in range(6)]
                alive.stop()
                await asyncio.sleep(0.2)
                with pytest.raises(ServerUnreachableError) as none_left:
                    await client.post("counter", "/seed_session", json={"initial_count": 0})
                return gone.value, after, none_left.value
            finally:
                await client.aclose()

        gone, after, none_left = asyncio.run(main())
    finally:
        alive.stop()
        doomed.stop()
    assert after == [("0", 15)] * 6  # all new rollouts on the live replica, and right
    assert "replica 1 of server 'counter'" in str(gone)
    assert classify(gone)[0] == NEUTRAL  # one dead replica among live ones is not a dead server
    assert not isinstance(none_left, ReplicaGoneError) and classify(none_left)[0] == COUNTS


def test_a_replica_the_registry_reports_dead_gets_nothing_and_a_rollout_pinned_to_it_fails_at_once():
    replicas = [counter_replica(), counter_replica()]
    try:

        async def main() -> tuple[list[tuple[str, int]], ReplicaGoneError]:
            client = client_for(replicas, healthy=[True, False])
            try:
                after = [await one_rollout(client, 1, [1]) for _ in range(4)]
                with pytest.raises(ReplicaGoneError) as gone:
                    await client.post(
                        "counter", "/get_counter_value", json={}, cookies={replica_cookie_name("counter"): "1"}
                    )
                return after, gone.value
            finally:
                await client.aclose()

        after, gone = asyncio.run(main())
    finally:
        for http in replicas:
            http.stop()
    assert after == [("0", 2)] * 4
    assert "replica 1 of server 'counter'" in str(gone)


def test_num_replicas_runs_local_copies_and_a_collection_stays_correct(tmp_path):
    head_port = free_port()
    output = tmp_path / "rollouts.jsonl"
    expected = [json.loads(line)["expected_count"] for line in TASKS.read_text().splitlines()]
    with ScriptedOpenAI(counter_script) as upstream:
        stack = NgRunProcess(
            CONFIGS,
            f"+head_server.port={head_port}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=sk-test",
            "+policy_model_name=scripted-model",
            f"+{COUNTER_BLOCK}.num_replicas=2",
            f"+{AGENT_BLOCK}.num_replicas=2",
            cwd=PROJECT_ROOT,
        )
        try:
            stack.wait_ready()
            registry = httpx.get(f"http://127.0.0.1:{head_port}/server_instances").json()
            result = cli(
                "ng_collect_rollouts",
                f"+agent_name={AGENT}",
                f"+input_jsonl_fpath={TASKS}",
                f"+output_jsonl_fpath={output}",
                "+num_repeats=20",
                "+num_samples_in_parallel=16",
                f"+head_server.port={head_port}",
                timeout=120,
            )
            # A replica that dies while its sibling lives is reported; the stack goes on without it.
            pid_of = {(row["name"], row["replica"]): row["pid"] for row in registry}
            os.kill(pid_of[(COUNTER, 1)], signal.SIGKILL)
            deadline = time.monotonic() + 20
            while "replicas remain" not in stack.output and time.monotonic() < deadline:
                time.sleep(0.1)
            assert stack.process.poll() is None, stack.output
            health = {
                (row["name"], row["replica"]): row["healthy"]
                for row in httpx.get(f"http://127.0.0.1:{head_port}/server_instances").json()
            }
            # The last replica of a server going stops the stack, as a single server's death always has.
            os.kill(pid_of[(COUNTER, 0)], signal.SIGKILL)
            assert stack.process.wait(timeout=20) == 1
        finally:
            stack.stop()
    assert result.returncode == 0, result.stderr
    urls = {(row["name"], row["replica"]): row["url"] for row in registry}
    assert len(urls) == 5 and urls[(COUNTER, 0)] != urls[(COUNTER, 1)] and urls[(AGENT, 0)] != urls[(AGENT, 1)]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 100
    assert all(row["reward"] == 1.0 and row["final_count"] == expected[row["_ng_task_index"]] for row in rows)
    assert f"replica 1 of server {COUNTER!r} is gone; 1 of 2 replicas remain" in stack.output
    assert health[(COUNTER, 1)] is False and health[(COUNTER, 0)] is True
