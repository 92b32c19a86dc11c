"""A NeMo Gym agent folder runs here unchanged: copied into a project's `responses_api_agents/`, it is
started by `ng_run` from its own YAML and driven by `ng_collect_rollouts`; and a NeMo Gym server that
builds its app with a plain `FastAPI()` (as NeMo Gym's gymnasium base does) still gets our sessions,
`/health` and NeMo Gym's rollout-prefixed paths."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

from nemo_gym.base_resources_server import BaseResourcesServerConfig, BaseRunRequest, SimpleResourcesServer
from nemo_gym.base_responses_api_agent import (
    BaseResponsesAPIAgent,
    BaseResponsesAPIAgentConfig,
    Body,
    SimpleResponsesAPIAgent,
)
from nemo_gym.errors import InputError, RequestTimeoutError
from nemo_gym.openai_utils import (
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseUsage,
    accumulate_response_usage,
)
from nemo_gym.rollout_correlation import (
    RolloutContextMiddleware,
    current_rollout_id,
    maybe_rollout_id_from_run_body,
)
from nemo_gym.server_utils import SESSION_ID_KEY, request
from nemo_gym.testing import NgRunProcess, ScriptedOpenAI, ThreadedServer, Turn, free_port, registry_client
from tests.conftest import PROJECT_ROOT, child_env, cli

HERE = Path(__file__).parent
OPENAI_MODEL_CONFIG = "responses_api_models/openai_model/configs/openai_model.yaml"


def nemo_gym_style_project(root: Path) -> Path:
    """A project as a NeMo Gym user would make it: our package, models and pyproject linked in, the
    environment and the agent folder copied into `resources_servers/` and `responses_api_agents/`."""
    root.mkdir()
    for name in ("nemo_gym", "responses_api_models", "pyproject.toml"):
        (root / name).symlink_to(PROJECT_ROOT / name)
    shutil.copytree(HERE / "envs" / "lucky_number", root / "resources_servers" / "lucky_number")
    shutil.copytree(HERE / "agents" / "relay_agent", root / "responses_api_agents" / "relay_agent")
    return root


def guess_then_answer(body: dict[str, Any]) -> Turn:
    """Call check_guess once, then answer 7 (the secret of the first task only)."""
    if not any(item.get("type") == "function_call_output" for item in body.get("input") or []):
        return Turn(tool_calls=[("check_guess", '{"guess": 7}')])
    return Turn(text="My answer is 7.")


def test_an_agent_in_a_nested_folder_is_named_by_its_path_as_nemo_gym_configs_do(tmp_path: Path) -> None:
    """NeMo Gym's YAML may name an implementation below the server type's folder
    (`conversational_tool_use/simulation` is responses_api_agents/conversational_tool_use/simulation/);
    ng_run starts it from there and a collection runs through it. Paths leaving the folder stay refused."""
    project = nemo_gym_style_project(tmp_path / "project")
    nested = project / "responses_api_agents" / "relay_family" / "relay"
    nested.parent.mkdir()
    (project / "responses_api_agents" / "relay_agent").rename(nested)
    config = nested / "configs" / "relay.yaml"
    (nested / "configs" / "relay_agent.yaml").rename(config)
    config.write_text(config.read_text().replace("    relay_agent:\n", "    relay_family/relay:\n"))
    output = tmp_path / "rollouts.jsonl"
    env = child_env() | {"PYTHONPATH": str(project)}
    port = free_port()
    with ScriptedOpenAI(guess_then_answer) as upstream:
        with NgRunProcess(
            ["responses_api_agents/relay_family/relay/configs/relay.yaml", OPENAI_MODEL_CONFIG],
            f"+head_server.port={port}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=sk-test",
            "+policy_model_name=scripted-model",
            cwd=project,
            env=env,
        ) as stack:
            stack.wait_ready(120)
            result = cli(
                "ng_collect_rollouts",
                "+agent_name=lucky_number_relay_agent",
                "+input_jsonl_fpath=resources_servers/lucky_number/data/example.jsonl",
                f"+output_jsonl_fpath={output}",
                f"+head_server.port={port}",
                cwd=project,
                env=env,
                timeout=240,
            )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["reward"] in (0.0, 1.0)

    escaping = tmp_path / "escaping.yaml"
    escaping.write_text(config.read_text().replace("relay_family/relay:", "relay_family/../../resources_servers:"))
    refused = cli("ng_dump_config", f"+config_paths=[{escaping}]", cwd=project, env=env)
    assert refused.returncode != 0
    assert "must be a folder path under responses_api_agents/" in refused.stderr


def test_a_nemo_gym_agent_folder_is_started_by_ng_run_and_collects_scored_rollouts(tmp_path: Path) -> None:
    project = nemo_gym_style_project(tmp_path / "project")
    output = tmp_path / "rollouts.jsonl"
    env = child_env() | {"PYTHONPATH": str(project)}
    port = free_port()
    with ScriptedOpenAI(guess_then_answer) as upstream:
        with NgRunProcess(
            ["responses_api_agents/relay_agent/configs/relay_agent.yaml", OPENAI_MODEL_CONFIG],
            f"+head_server.port={port}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=sk-test",
            "+policy_model_name=scripted-model",
            cwd=project,
            env=env,
        ) as stack:
            stack.wait_ready(120)
            assert "lucky_number_relay_agent" in stack.output
            result = cli(
                "ng_collect_rollouts",
                "+agent_name=lucky_number_relay_agent",
                "+input_jsonl_fpath=resources_servers/lucky_number/data/example.jsonl",
                f"+output_jsonl_fpath={output}",
                "+num_repeats=2",
                f"+head_server.port={port}",
                cwd=project,
                env=env,
                timeout=240,
            )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = sorted(
        (json.loads(line) for line in output.read_text().splitlines()),
        key=lambda row: (row["_ng_task_index"], row["_ng_rollout_index"]),
    )
    assert [(row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)
    ]  # fmt: skip
    # The environment's verify scored what the agent relayed: the tool call went through it, and
    # only the task whose secret is 7 is answered right.
    assert [row["reward"] for row in rows] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert all(row["used_tool"] and row["extracted_answer"] == 7 for row in rows)
    tool_outputs = [item for item in rows[0]["response"]["output"] if item["type"] == "function_call_output"]
    assert json.loads(tool_outputs[0]["output"]) == {"verdict": "a guess", "hints_used": 1}


def test_an_agent_entrypoint_missing_from_the_project_is_one_clear_line(tmp_path: Path) -> None:
    project = nemo_gym_style_project(tmp_path / "project")
    shutil.rmtree(project / "responses_api_agents" / "relay_agent" / "__pycache__", ignore_errors=True)
    (project / "responses_api_agents" / "relay_agent" / "app.py").unlink()
    config = project / "relay.yaml"
    shutil.copy(HERE / "agents" / "relay_agent" / "configs" / "relay_agent.yaml", config)
    result = cli(
        "ng_run",
        f"+config_paths=[{config},{OPENAI_MODEL_CONFIG}]",
        f"+head_server.port={free_port()}",
        "+policy_base_url=http://127.0.0.1:9/v1",
        "+policy_api_key=sk-test",
        "+policy_model_name=m",
        cwd=project,
        env=child_env() | {"PYTHONPATH": str(project)},
        timeout=120,
    )
    assert result.returncode == 2
    assert "lucky_number_relay_agent" in result.stderr and "relay_agent/app.py" in result.stderr
    assert "Traceback" not in result.stderr


# ---- a server whose app is a plain FastAPI(), as NeMo Gym's gymnasium base builds it -------------
class StepCounterServer(SimpleResourcesServer):
    config: BaseResourcesServerConfig
    steps: dict[str, int] = {}

    def setup_webserver(self) -> FastAPI:
        app = FastAPI()
        self.setup_session_middleware(app)
        app.add_middleware(RolloutContextMiddleware)
        app.post("/step")(self.step)
        return app

    async def step(self, request: Request) -> dict[str, Any]:
        session_id = request.session[SESSION_ID_KEY]
        self.steps[session_id] = self.steps.get(session_id, 0) + 1
        return {"steps": self.steps[session_id], "rollout_id": current_rollout_id()}


@pytest.fixture
def step_counter():
    server = StepCounterServer(config=BaseResourcesServerConfig(name="step_counter"), server_client=registry_client({}))
    with ThreadedServer.of(server) as running:
        yield running


def test_a_plain_fastapi_app_gets_sessions_health_and_rollout_paths(step_counter: ThreadedServer) -> None:
    with httpx.Client(base_url=step_counter.url) as first, httpx.Client(base_url=step_counter.url) as second:
        assert first.get("/health").json()["name"] == "step_counter"
        assert [first.post("/step").json()["steps"] for _ in range(3)] == [1, 2, 3]
        assert second.post("/step").json() == {"steps": 1, "rollout_id": None}
        prefixed = first.post("/ng-rollout/4-1-a2/step")
        assert prefixed.json() == {"steps": 4, "rollout_id": "4-1-a2"}
        assert first.post("/ng-rollout/.hidden/step").status_code == 404  # not a rollout id: no such route


def test_the_rollout_id_of_a_run_body_is_nemo_gyms() -> None:
    assert maybe_rollout_id_from_run_body({"_ng_task_index": 3, "_ng_rollout_index": 1}) == "3-1"
    assert maybe_rollout_id_from_run_body({"_ng_task_index": 3, "_ng_rollout_index": 1, "_ng_attempt_index": 2}) == (
        "3-1-a2"
    )
    assert maybe_rollout_id_from_run_body({"_ng_rollout_id": "job.7", "_ng_task_index": 3}) == "job.7"
    assert maybe_rollout_id_from_run_body({"responses_create_params": {}}) is None
    with pytest.raises(InputError, match="_ng_rollout_id"):
        maybe_rollout_id_from_run_body({"_ng_rollout_id": "../etc"})


class RolloutIdAgent(SimpleResponsesAPIAgent):
    config: BaseResponsesAPIAgentConfig

    async def responses(self, body: dict = Body()) -> dict:
        return body

    async def run(self, request: Request, body: BaseRunRequest = Body()) -> dict:
        return {"rollout_id": current_rollout_id(), "seen": sorted(body.model_extra)}


def test_run_knows_its_rollout_and_capture_paths_stay_plain() -> None:
    agent = RolloutIdAgent(config=BaseResponsesAPIAgentConfig(name="a"), server_client=registry_client({}))
    task = {"responses_create_params": {"input": "hi"}, "_ng_task_index": 5, "_ng_rollout_index": 2}
    with ThreadedServer.of(agent) as running, httpx.Client(base_url=running.url) as client:
        assert client.post("/run", json=task).json() == {
            "rollout_id": "5-2",
            "seen": ["_ng_rollout_index", "_ng_task_index"],
        }
        assert client.post("/run", json={"responses_create_params": {"input": "hi"}}).json()["rollout_id"] is None
        assert client.post("/run", json=task | {"_ng_rollout_id": "/x"}).status_code == 400
    assert not issubclass(BaseResponsesAPIAgent, SimpleResponsesAPIAgent)
    # Nothing switches NeMo Gym's per-rollout capture on here: downstream paths stay as they are.
    assert agent.url_path_for_run("/v1/responses", task) == "/v1/responses"
    assert agent.config.skip_verification is False and agent.config.token_id_capture is False


class CookieRelayAgent(SimpleResponsesAPIAgent):
    """As NeMo Gym's gymnasium agent: `responses` sets the model server's cookies on FastAPI's
    injected `response` and returns a typed model."""

    config: BaseResponsesAPIAgentConfig

    async def responses(
        self, request: Request, response: Response, body: NeMoGymResponseCreateParamsNonStreaming = Body()
    ) -> NeMoGymResponse:
        response.set_cookie("model_affinity", "replica-2")
        return NeMoGymResponse(id="r", output=[NeMoGymResponseOutputMessage(id="m", content=[])])

    async def run(self, body: BaseRunRequest = Body()) -> dict:
        return {}


def test_cookies_an_agent_sets_on_the_injected_response_reach_the_caller() -> None:
    agent = CookieRelayAgent(config=BaseResponsesAPIAgentConfig(name="a"), server_client=registry_client({}))
    with ThreadedServer.of(agent) as running, httpx.Client(base_url=running.url) as client:
        answer = client.post("/v1/responses", json={"input": "hi"})
    assert answer.status_code == 200 and answer.json()["id"] == "r"
    assert answer.cookies["model_affinity"] == "replica-2"


def test_usage_of_several_model_calls_adds_up() -> None:
    first = NeMoGymResponseUsage(
        input_tokens=10, output_tokens=2, total_tokens=12, output_tokens_details={"reasoning_tokens": 1}
    )
    second = NeMoGymResponseUsage(
        input_tokens=5, output_tokens=3, total_tokens=8, input_tokens_details={"cached_tokens": 4}
    )
    summed = accumulate_response_usage(accumulate_response_usage(None, first), second)
    assert (summed.input_tokens, summed.output_tokens, summed.total_tokens) == (15, 5, 20)
    assert summed.output_tokens_details.reasoning_tokens == 1 and summed.input_tokens_details.cached_tokens == 4
    assert first.input_tokens == 10  # the running total is a copy
    assert accumulate_response_usage(None, None) is None and accumulate_response_usage(first, None) is first


async def test_request_takes_aiohttps_timeout_and_is_an_async_context_manager() -> None:
    """As speed_bench scrapes its model's /metrics: `async with await request(..., timeout=s) as r`."""
    app = FastAPI()

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse("vllm:spec_decode_num_accepted_tokens_total 12\n")

    @app.get("/stuck")
    async def stuck() -> PlainTextResponse:
        await asyncio.sleep(3)
        return PlainTextResponse("")

    with ThreadedServer(app) as running:
        async with await request(method="GET", url=f"{running.url}/metrics", timeout=30) as response:
            assert response.status == 200
            assert "accepted_tokens_total 12" in await response.text()
        with pytest.raises(RequestTimeoutError):
            await request(method="GET", url=f"{running.url}/stuck", timeout=0.5)
