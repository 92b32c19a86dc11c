"""simple_agent over real HTTP: tool dispatch rules, cookies, usage and stop conditions."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from nemo_gym.client import PoolLimits, ServerClient, ServerInfo
from nemo_gym.servers.agent import DEFAULT_MAX_STEPS
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.testing.inprocess import PeakRss, ThreadedServer, free_port, registry_client
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn, huge_answer
from responses_api_agents.simple_agent.app import (
    SimpleAgent,
    SimpleAgentConfig,
    SimpleAgentRunRequest,
    SimpleAgentVerifyResponse,
)
from responses_api_models.openai_model.app import OpenAIModel, OpenAIModelConfig

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class RecordingResources(SimpleResourcesServer):
    """Records every route it serves, and the session id each call carried."""

    config: BaseResourcesServerConfig
    calls: list[tuple[str, str]] = []

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/get_weather")(self.get_weather)
        return app

    async def seed_session(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("seed_session", request.session["session_id"]))
        return {}

    async def get_weather(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("get_weather", request.session["session_id"]))
        if "city" not in body:
            return {"error": "city is required"}
        return {"weather": f"cold in {body['city']}"}

    async def verify(self, request: Request, body: BaseVerifyRequest) -> BaseVerifyResponse:
        self.calls.append(("verify", request.session["session_id"]))
        return BaseVerifyResponse(**body.model_dump(), reward=1.0)


def scripted(turns: list[Turn]):
    """A script that plays `turns` in order, one per model call of the episode."""

    def script(body: dict[str, Any]) -> Turn:
        model_calls_so_far = sum(1 for item in body["input"] if item.get("type") == "function_call")
        return turns[min(model_calls_so_far, len(turns) - 1)]

    return script


@pytest.fixture
def stack(request):
    # The param is the model's turns, or {"turns": [...], "latency_s": ..., "agent": {config overrides}}.
    setup = request.param if isinstance(request.param, dict) else {"turns": request.param}
    upstream = ScriptedOpenAI(
        scripted(setup["turns"]), latency_s=setup.get("latency_s", 0.0), mangle=setup.get("mangle")
    ).start()
    ports = {name: free_port() for name in ("resources", "model", "agent")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    def client():
        return registry_client(
            {"resources": ("resources_servers", urls["resources"]), "model": ("responses_api_models", urls["model"])}
        )

    resources = RecordingResources(
        config=BaseResourcesServerConfig(name="resources", port=ports["resources"]), server_client=client()
    )
    resources.calls = []
    model = OpenAIModel(
        config=OpenAIModelConfig(name="model", port=ports["model"], openai_base_url=upstream.url, openai_model="m"),
        server_client=client(),
    )
    agent_config = {
        "name": "agent",
        "port": ports["agent"],
        "max_steps": 5,
        "resources_server": {"type": "resources_servers", "name": "resources"},
        "model_server": {"type": "responses_api_models", "name": "model"},
    } | setup.get("agent", {})
    agent_class = setup.get("agent_class", SimpleAgent)
    agent = agent_class(config=SimpleAgentConfig(**agent_config), server_client=client())
    servers = [
        ThreadedServer(s.setup_webserver(), port=ports[n]).start()
        for n, s in (("resources", resources), ("model", model), ("agent", agent))
    ]
    yield urls["agent"], resources, upstream
    for server in servers:
        server.stop()
    upstream.stop()


def run(agent_url: str, tools=(WEATHER_TOOL,)) -> dict[str, Any]:
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": "weather in Paris?"}], "tools": list(tools)},
        "expected": "kept",
    }
    response = httpx.post(f"{agent_url}/run", json=row, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def tool_outputs(row: dict[str, Any]) -> list[str]:
    return [item["output"] for item in row["response"]["output"] if item["type"] == "function_call_output"]


@pytest.mark.parametrize(
    "stack", [[Turn(tool_calls=[("get_weather", '{"city": "Paris"}')]), Turn(text="Cold.")]], indirect=True
)
def test_cookies_thread_one_session_through_seed_tools_and_verify(stack):
    agent_url, resources, _ = stack
    row = run(agent_url)
    assert row["reward"] == 1.0 and row["expected"] == "kept"
    assert row["episode_end"] == "completed"
    assert [name for name, _ in resources.calls] == ["seed_session", "get_weather", "verify"]
    assert len({session for _, session in resources.calls}) == 1
    assert json.loads(tool_outputs(row)[0]) == {"weather": "cold in Paris"}
    assert row["response"]["usage"]["total_tokens"] == 240  # two model calls summed


@pytest.mark.parametrize(
    "stack", [[Turn(tool_calls=[("verify", "{}"), ("seed_session", "{}")]), Turn(text="Done.")]], indirect=True
)
def test_undeclared_tools_never_reach_the_resources_server(stack):
    agent_url, resources, _ = stack
    row = run(agent_url)
    # verify ran once (the real one at the end); seed_session once (the real one at the start).
    assert [name for name, _ in resources.calls] == ["seed_session", "verify"]
    outputs = [json.loads(text) for text in tool_outputs(row)]
    assert len(outputs) == 2
    assert all("is not available" in output["error"] and "get_weather" in output["error"] for output in outputs)


@pytest.mark.parametrize(
    "stack", [[Turn(tool_calls=[("get_weather", '{"city": "Par')]), Turn(text="Sorry.")]], indirect=True
)
def test_invalid_json_arguments_become_an_error_tool_output(stack):
    agent_url, resources, _ = stack
    row = run(agent_url)
    assert "not valid JSON" in json.loads(tool_outputs(row)[0])["error"]
    assert "get_weather" not in [name for name, _ in resources.calls]


@pytest.mark.parametrize(
    "stack", [[Turn(tool_calls=[("get_weather", '{"town": 3}')]), Turn(text="Hm.")]], indirect=True
)
def test_tool_server_errors_become_tool_outputs(stack):
    agent_url, _, _ = stack
    row = run(agent_url)
    assert json.loads(tool_outputs(row)[0]) == {"error": "city is required"}
    assert row["response"]["output"][-1]["type"] == "message"


@pytest.mark.parametrize("stack", [[Turn(tool_calls=[("get_weather", '{"city": "X"}')])]], indirect=True)
def test_max_steps_bounds_a_model_that_never_stops_calling_tools(stack):
    agent_url, resources, upstream = stack
    row = run(agent_url)
    assert len(upstream.requests) == 5  # max_steps=5
    assert len(tool_outputs(row)) == 5
    assert row["reward"] == 1.0
    assert row["episode_end"] == "max_steps"  # the row says it was cut off, not that the model finished


@pytest.mark.parametrize("stack", [[Turn(text="I ran out of", finish_length=True)]], indirect=True)
def test_episode_stops_on_incomplete_details(stack):
    agent_url, _, upstream = stack
    row = run(agent_url)
    assert len(upstream.requests) == 1
    assert row["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert row["episode_end"] == "max_output_tokens"


def test_max_steps_has_a_default_and_null_means_the_default():
    refs = {"resources_server": {"name": "r"}, "model_server": {"name": "m"}}
    assert SimpleAgentConfig(name="a", **refs).max_steps == DEFAULT_MAX_STEPS
    assert SimpleAgentConfig(name="a", max_steps=None, **refs).max_steps == DEFAULT_MAX_STEPS
    assert SimpleAgentConfig(name="a", **refs).episode_timeout_s > 0


@pytest.mark.parametrize(
    "stack",
    [
        {
            "turns": [Turn(tool_calls=[("get_weather", '{"city": "X"}')])],
            "latency_s": 0.3,
            "agent": {"max_steps": 1000, "episode_timeout_s": 1.0},
        }
    ],
    indirect=True,
)
def test_the_episode_deadline_stops_a_model_that_never_stops_and_keeps_whole_steps(stack):
    agent_url, resources, upstream = stack
    row = run(agent_url)
    assert row["episode_end"] == "deadline"
    calls = [item for item in row["response"]["output"] if item["type"] == "function_call"]
    assert 1 <= len(calls) < len(upstream.requests) <= 5  # the step cut off mid-way is not in the row
    assert len(tool_outputs(row)) == len(calls)  # every call in the row has its output
    assert [name for name, _ in resources.calls][-1] == "verify"


@pytest.mark.parametrize(
    "stack", [{"turns": [Turn(text="never seen")], "latency_s": 3, "agent": {"episode_timeout_s": 0.5}}], indirect=True
)
def test_an_episode_without_one_finished_step_by_the_deadline_is_a_failure_not_a_score(stack):
    agent_url, resources, _ = stack
    row = {"responses_create_params": {"input": "hi", "tools": [WEATHER_TOOL]}}
    response = httpx.post(f"{agent_url}/run", json=row, timeout=30)
    assert response.status_code == 502
    assert "episode deadline" in response.json()["error"]["message"]
    assert "verify" not in [name for name, _ in resources.calls]


class TokenIdUpstream:
    """Attaches a token-id bundle to each answer, the way a model server with
    `return_token_id_information` does: the prompt is the required prefix (when one was sent and
    `keep_prefix`) plus two tokens for the new messages, else a fresh rendering of its own."""

    def __init__(self, keep_prefix: bool):
        self.keep_prefix = keep_prefix
        self.upstream: ScriptedOpenAI | None = None
        self.calls = 0

    def __call__(self, answer: dict[str, Any]) -> dict[str, Any]:
        assert self.upstream is not None
        self.calls += 1
        body = self.upstream.requests[-1]
        required = body.get("required_prefix_token_ids")
        prompt = [*required, 50, 51] if (required and self.keep_prefix) else [90 + self.calls, 1, 2]
        answer["output"][-1] |= {
            "prompt_token_ids": prompt,
            "generation_token_ids": [10 * self.calls, 10 * self.calls + 1],
            "generation_log_probs": [-0.5, -0.25],
        }
        return answer


def _token_stack(keep_prefix: bool) -> dict[str, Any]:
    return {
        "turns": [Turn(tool_calls=[("get_weather", '{"city": "Paris"}')]), Turn(text="Cold.")],
        "mangle": TokenIdUpstream(keep_prefix),
    }


@pytest.mark.parametrize("stack", [_token_stack(keep_prefix=True)], indirect=True)
def test_each_call_requires_the_previous_calls_full_token_ids_and_the_row_says_the_prefix_held(stack):
    agent_url, _, upstream = stack
    upstream.mangle.upstream = upstream
    row = run(agent_url)
    first, second = upstream.requests[-2:]
    assert "required_prefix_token_ids" not in first
    # Call 2 must continue call 1's prompt + generation exactly, instead of a re-rendered prompt.
    assert second["required_prefix_token_ids"] == [91, 1, 2, 10, 11]
    assert row["token_prefix_invariant"] == "held"
    assert row["episode_end"] == "completed"


@pytest.mark.parametrize("stack", [_token_stack(keep_prefix=False)], indirect=True)
def test_a_model_server_that_re_renders_the_prompt_is_recorded_as_breaking_the_prefix(stack):
    agent_url, _, upstream = stack
    upstream.mangle.upstream = upstream
    row = run(agent_url)
    assert row["token_prefix_invariant"] == "broken"


@pytest.mark.parametrize(
    "stack", [[Turn(tool_calls=[("get_weather", '{"city": "Paris"}')]), Turn(text="Cold.")]], indirect=True
)
def test_rows_without_token_ids_carry_no_prefix_verdict(stack):
    agent_url, _, upstream = stack
    row = run(agent_url)
    assert "token_prefix_invariant" not in row
    assert all("required_prefix_token_ids" not in body for body in upstream.requests)


def test_a_model_server_answer_over_the_agents_cap_fails_the_rollout_in_bounded_memory():
    """The agent's own client is bounded too: a model server that answers 300 MB (here played by the
    scripted upstream, which speaks the same /v1/responses) fails that rollout with a 424 naming the URL
    and the cap, the agent holding at most its cap, and the next rollout runs."""
    mib = 1024 * 1024
    upstream = ScriptedOpenAI(scripted([Turn(text="Cold.")])).start()
    ports = {name: free_port() for name in ("resources", "agent")}
    model_url = upstream.url.removesuffix("/v1")

    def client() -> ServerClient:
        rows = [
            ServerInfo(
                name="resources",
                server_type="resources_servers",
                implementation="t",
                url=f"http://127.0.0.1:{ports['resources']}",
            ),
            ServerInfo(name="model", server_type="responses_api_models", implementation="t", url=model_url),
        ]
        return ServerClient("http://127.0.0.1:9", registry=rows, limits=PoolLimits(max_response_bytes=16 * mib))

    resources = RecordingResources(
        config=BaseResourcesServerConfig(name="resources", port=ports["resources"]), server_client=client()
    )
    agent = SimpleAgent(
        config=SimpleAgentConfig(
            name="agent",
            port=ports["agent"],
            resources_server={"type": "resources_servers", "name": "resources"},
            model_server={"type": "responses_api_models", "name": "model"},
        ),
        server_client=client(),
    )
    servers = [
        ThreadedServer(resources.setup_webserver(), port=ports["resources"]).start(),
        ThreadedServer(agent.setup_webserver(), port=ports["agent"]).start(),
    ]
    agent_url = f"http://127.0.0.1:{ports['agent']}"
    try:
        run(agent_url)  # warm
        upstream.answer_with = huge_answer(300 * mib, with_content_length=False)
        with PeakRss() as rss:
            answer = httpx.post(f"{agent_url}/run", json={"responses_create_params": {"input": "hi"}}, timeout=60)
        assert answer.status_code == 424
        error = answer.json()["error"]
        assert error["type"] == "ResponseTooLargeError"
        assert f"POST {model_url}/v1/responses: the answer is over the 16 MiB response cap" in error["message"]
        assert rss.grown < 100 * mib, f"grew {rss.grown / mib:.0f} MiB"
        upstream.answer_with = None
        assert run(agent_url)["reward"] == 1.0
    finally:
        for server in servers:
            server.stop()
        upstream.stop()


@pytest.mark.parametrize(
    "stack",
    [
        {
            "turns": [Turn(tool_calls=[("get_weather", '{"city": "Paris"}')]), Turn(text="Cold.")],
            "agent": {"skip_verification": True, "skip_verification_reward": 0.25},
        }
    ],
    indirect=True,
)
def test_skip_verification_gives_the_configured_reward_and_never_calls_verify(stack):
    # NeMo Gym's skip_verification: the episode runs (seed and tools on one session), /verify is never called.
    agent_url, resources, _ = stack
    row = run(agent_url)
    assert row["reward"] == 0.25 and row["verification_skipped"] is True
    assert row["expected"] == "kept" and row["episode_end"] == "completed"
    assert [name for name, _ in resources.calls] == ["seed_session", "get_weather"]
    assert json.loads(tool_outputs(row)[0]) == {"weather": "cold in Paris"}
    assert row["response"]["output"][-1]["content"][0]["text"] == "Cold."


class AnnotatingAgent(SimpleAgent):
    """Written as NeMo Gym's agents subclass its simple agent (labbench2_vlm's does): it rewrites the
    request, calls `super().run()` and post-processes the model it gets back."""

    async def run(self, request: Request, body: SimpleAgentRunRequest) -> SimpleAgentVerifyResponse:
        row = body.model_dump(exclude_unset=True) | {"annotated_before": True}
        result = await super().run(request, SimpleAgentRunRequest.model_validate(row))
        assert isinstance(result, SimpleAgentVerifyResponse)
        assert result.response.output_text == "Cold."  # typed, as NeMo Gym's model is
        return SimpleAgentVerifyResponse.model_validate(result.model_dump(mode="json") | {"annotated_after": True})


@pytest.mark.parametrize(
    "stack",
    [
        {
            "turns": [Turn(tool_calls=[("get_weather", '{"city": "Paris"}')]), Turn(text="Cold.")],
            "agent_class": AnnotatingAgent,
        }
    ],
    indirect=True,
)
def test_a_subclass_overriding_run_gets_nemo_gyms_verify_response_model(stack):
    agent_url, resources, _ = stack
    row = run(agent_url)
    assert row["annotated_before"] is True and row["annotated_after"] is True
    assert row["reward"] == 1.0 and row["expected"] == "kept"
    assert [json.loads(output) for output in tool_outputs(row)] == [{"weather": "cold in Paris"}]
