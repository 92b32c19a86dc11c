"""example_stateful_counter: per-session state over real HTTP, verify, cleanup, and 64 rollouts at once."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from fastapi import Request

from nemo_gym.servers.resources import BaseSeedSessionResponse
from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from resources_servers.example_stateful_counter.app import (
    CounterSeedSessionRequest,
    ExampleStatefulCounterConfig,
    ExampleStatefulCounterServer,
)
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig
from responses_api_models.openai_model.app import OpenAIModel, OpenAIModelConfig

PARAMS = {"input": [{"role": "user", "content": "add 1 then add 2 then get the count"}]}


def make_server(**config: Any) -> ExampleStatefulCounterServer:
    return ExampleStatefulCounterServer(
        config=ExampleStatefulCounterConfig(name="counter", domain="agent", **config), server_client=registry_client({})
    )


@pytest.fixture
def served():
    server = make_server(max_sessions=3)
    with ThreadedServer(server.setup_webserver()) as http:
        yield server, http.url


def verify(client: httpx.Client, url: str, expected: int, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = {
        "responses_create_params": PARAMS,
        "response": {"id": "resp_1", "output": output or []},
        "initial_count": 3,
        "expected_count": expected,
    }
    response = client.post(f"{url}/verify", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_seeded_session_counts_and_verify_scores_it_then_forgets_it(served):
    server, url = served
    with httpx.Client() as rollout:
        rollout.post(
            f"{url}/seed_session", json={"responses_create_params": PARAMS, "initial_count": 3}
        ).raise_for_status()
        assert rollout.post(f"{url}/increment_counter", json={"count": 1}).json() == {"success": True}
        rollout.post(f"{url}/increment_counter", json={"count": 2})
        assert rollout.post(f"{url}/get_counter_value", json={}).json() == {"count": 6}
        row = verify(rollout, url, expected=6)
        assert row["reward"] == 1.0 and row["final_count"] == 6 and row["expected_count"] == 6
        assert server.counters == {}
        # A second verify of the same rollout finds no state: no double credit.
        again = verify(rollout, url, expected=6)
        assert again["reward"] == 0.0 and again["final_count"] is None


def test_wrong_count_scores_zero(served):
    _, url = served
    with httpx.Client() as rollout:
        rollout.post(f"{url}/seed_session", json={"initial_count": 3})
        rollout.post(f"{url}/increment_counter", json={"count": -1})
        row = verify(rollout, url, expected=6)
        assert row["reward"] == 0.0 and row["final_count"] == 2


def test_empty_episode_is_graded_on_state_alone(served):
    _, url = served
    with httpx.Client() as rollout:
        rollout.post(f"{url}/seed_session", json={"initial_count": 4})
        assert verify(rollout, url, expected=5, output=[])["reward"] == 0.0
    with httpx.Client() as rollout:
        rollout.post(f"{url}/seed_session", json={"initial_count": 5})
        # The counter already holds the target: reward 1 without a single tool call, by design.
        assert verify(rollout, url, expected=5, output=[])["reward"] == 1.0


def test_unseeded_session_scores_zero_and_unseeded_increment_starts_at_zero(served):
    server, url = served
    with httpx.Client() as rollout:
        row = verify(rollout, url, expected=0)
        assert row["reward"] == 0.0 and row["final_count"] is None
    with httpx.Client() as rollout:
        rollout.post(f"{url}/increment_counter", json={"count": 2})
        assert rollout.post(f"{url}/get_counter_value", json={}).json() == {"count": 2}
        assert verify(rollout, url, expected=2)["reward"] == 1.0
    assert server.counters == {}


def test_two_sessions_never_see_each_other(served):
    _, url = served
    with httpx.Client() as first, httpx.Client() as second:
        first.post(f"{url}/seed_session", json={"initial_count": 100})
        second.post(f"{url}/seed_session", json={"initial_count": 0})
        first.post(f"{url}/increment_counter", json={"count": 1})
        second.post(f"{url}/increment_counter", json={"count": 7})
        assert first.post(f"{url}/get_counter_value", json={}).json() == {"count": 101}
        assert second.post(f"{url}/get_counter_value", json={}).json() == {"count": 7}


def test_malformed_requests_are_rejected_with_the_field_named(served):
    server, url = served
    with httpx.Client() as rollout:
        missing = rollout.post(f"{url}/seed_session", json={"responses_create_params": PARAMS})
        assert missing.status_code == 422 and "initial_count" in missing.text
        bad = rollout.post(f"{url}/increment_counter", json={"count": "three"})
        assert bad.status_code == 422 and "count" in bad.text
        assert server.counters == {}


def test_abandoned_sessions_are_bounded(served):
    server, url = served
    for initial in range(5):  # five rollouts that never reach verify, max_sessions=3
        with httpx.Client() as rollout:
            rollout.post(f"{url}/seed_session", json={"initial_count": initial})
    assert sorted(server.counters.values()) == [2, 3, 4]


# ---- 64 rollouts at once through the real agent and model servers ---------------------------------------


class PeakTrackingCounterServer(ExampleStatefulCounterServer):
    """The real server, also recording how many rollouts held state at once."""

    peak_sessions: int = 0

    async def seed_session(self, request: Request, body: CounterSeedSessionRequest) -> BaseSeedSessionResponse:
        result = await super().seed_session(request, body)
        self.peak_sessions = max(self.peak_sessions, len(self.counters))
        return result


def counter_script(body: dict[str, Any]) -> Turn:
    """Make each increment the user asked for, one per turn, then read the counter and report it."""
    items = body["input"]
    user = next(item["content"] for item in items if item.get("role") == "user")
    increments = [int(n) for n in re.findall(r"add (-?\d+)", user)]
    made = sum(1 for item in items if item.get("type") == "function_call" and item["name"] == "increment_counter")
    if made < len(increments):
        return Turn(tool_calls=[("increment_counter", json.dumps({"count": increments[made]}))])
    outputs = [item for item in items if item.get("type") == "function_call_output"]
    if not any(item.get("type") == "function_call" and item["name"] == "get_counter_value" for item in items):
        return Turn(tool_calls=[("get_counter_value", "{}")])
    return Turn(text=f"The counter is {json.loads(outputs[-1]['output'])['count']}.")


def test_64_concurrent_rollouts_each_end_with_their_own_count():
    upstream = ScriptedOpenAI(counter_script, latency_s=0.02).start()
    ports = {name: free_port() for name in ("resources", "model", "agent")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    def client():
        return registry_client(
            {"resources": ("resources_servers", urls["resources"]), "model": ("responses_api_models", urls["model"])}
        )

    resources = PeakTrackingCounterServer(
        config=ExampleStatefulCounterConfig(name="resources", port=ports["resources"]), server_client=client()
    )
    model = OpenAIModel(
        config=OpenAIModelConfig(
            name="model", port=ports["model"], openai_base_url=upstream.url, openai_model="scripted"
        ),
        server_client=client(),
    )
    agent = SimpleAgent(
        config=SimpleAgentConfig(
            name="agent",
            port=ports["agent"],
            max_steps=10,
            resources_server={"type": "resources_servers", "name": "resources"},
            model_server={"type": "responses_api_models", "name": "model"},
        ),
        server_client=client(),
    )
    servers = [
        ThreadedServer(s.setup_webserver(), port=ports[n]).start()
        for n, s in (("resources", resources), ("model", model), ("agent", agent))
    ]
    tools = [
        {
            "type": "function",
            "name": "increment_counter",
            "parameters": {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]},
        },
        {"type": "function", "name": "get_counter_value", "parameters": {"type": "object", "properties": {}}},
    ]
    tasks = [
        {
            "responses_create_params": {
                "input": [{"role": "user", "content": f"add {i + 1} then add {-2 * i} then get the count"}],
                "tools": tools,
            },
            "initial_count": 1000 + 7 * i,
            "expected_count": 1000 + 7 * i + (i + 1) - 2 * i,
        }
        for i in range(64)
    ]

    async def run_all() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as http:
            responses = await asyncio.gather(*(http.post(f"{urls['agent']}/run", json=task) for task in tasks))
        for response in responses:
            assert response.status_code == 200, response.text
        return [response.json() for response in responses]

    try:
        rows = asyncio.run(run_all())
    finally:
        for server in servers:
            server.stop()
        upstream.stop()

    assert len(rows) == 64
    for task, row in zip(tasks, rows):
        assert row["final_count"] == task["expected_count"] and row["reward"] == 1.0
        assert row["response"]["output"][-1]["content"][0]["text"] == f"The counter is {task['expected_count']}."
    assert resources.counters == {}  # every rollout's state was freed by its verify
    assert resources.peak_sessions >= 16, resources.peak_sessions  # the rollouts really overlapped
