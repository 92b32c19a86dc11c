"""`+model=...` end to end: each form starts its model server against a scripted upstream, on `ng_run`
and on the one-command `ng_collect_rollouts`, and the rollouts come back scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from nemo_gym.testing import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from tests.conftest import TUTORIAL_AGENT, TUTORIAL_DATA, child_env, cli

pytestmark = pytest.mark.slow
ENV_CONFIG = "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml"
SECRET = "sk-test-model-choice-secret"


class RecordingUpstream(ScriptedOpenAI):
    """The scripted model, also under Azure's deployment route, noting each call's path and credentials."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str | None, str | None]] = []

    def _app(self) -> web.Application:
        app = super()._app()
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        return app

    def _note(self, request: web.Request) -> None:
        self.calls.append((request.path, request.headers.get("Authorization"), request.headers.get("api-key")))

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        return await super()._responses(request)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        return await super()._chat(request)

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")


@pytest.fixture
def upstream():
    with RecordingUpstream() as server:
        yield server


def clean_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in child_env().items() if k not in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "VLLM_API_KEY")}
    return env | variables


def collect(output: Path, *extra: str, env: dict[str, str], limit: int = 2, timeout: float = 240):
    return cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={TUTORIAL_DATA}",
        f"+output_jsonl_fpath={output}",
        f"+limit={limit}",
        *extra,
        env=env,
        timeout=timeout,
    )


def rewards(output: Path) -> list[float]:
    return [json.loads(line)["reward"] for line in output.read_text().splitlines()]


def test_one_command_collection_with_openai_model_and_the_key_from_OPENAI_API_KEY(upstream, tmp_path):
    output = tmp_path / "rollouts.jsonl"
    result = collect(
        output,
        f"+config_paths=[{ENV_CONFIG}]",
        f"+model=openai/scripted-model@{upstream.url}",
        f"+head_server.port={free_port()}",
        env=clean_env(OPENAI_API_KEY=SECRET),
    )
    assert result.returncode == 0, result.stderr
    assert rewards(output) == [1.0, 1.0]
    assert {path for path, _, _ in upstream.calls} == {"/v1/responses"}  # openai_model passes Responses through
    assert {auth for _, auth, _ in upstream.calls} == {f"Bearer {SECRET}"}
    assert {request["model"] for request in upstream.requests} == {"scripted-model"}
    assert SECRET not in result.stdout + result.stderr + output.read_text()


def test_ng_run_with_vllm_model_at_the_address_after_the_at(upstream, tmp_path):
    head_port = free_port()
    with NgRunProcess(
        [ENV_CONFIG],
        f"+model=vllm/org/scripted-model@{upstream.url}",
        f"+head_server.port={head_port}",
        env=clean_env(),
    ) as stack:
        assert "policy_model" in stack.output
        output = tmp_path / "rollouts.jsonl"
        result = collect(output, f"+head_server.port={head_port}", env=clean_env())
    assert result.returncode == 0, result.stderr
    assert rewards(output) == [1.0, 1.0]
    assert {path for path, _, _ in upstream.calls} == {"/v1/chat/completions"}  # vLLM is asked in Chat Completions
    assert {request["model"] for request in upstream.requests} == {"org/scripted-model"}


def test_ng_run_with_azure_deployment_endpoint_and_key_from_the_environment(upstream, tmp_path):
    head_port = free_port()
    env = clean_env(AZURE_OPENAI_ENDPOINT=upstream.root, AZURE_OPENAI_API_KEY=SECRET)
    with NgRunProcess([ENV_CONFIG], "+model=azure/my-deployment", f"+head_server.port={head_port}", env=env) as stack:
        output = tmp_path / "rollouts.jsonl"
        result = collect(output, f"+head_server.port={head_port}", env=env)
        assert SECRET not in stack.output
    assert result.returncode == 0, result.stderr
    assert rewards(output) == [1.0, 1.0]
    assert {path for path, _, _ in upstream.calls} == {"/openai/deployments/my-deployment/chat/completions"}
    assert {key for _, _, key in upstream.calls} == {SECRET}


@pytest.mark.local_model
def test_one_command_collection_on_the_local_model_needs_no_key(tmp_path):
    pytest.importorskip("xllamacpp")
    output = tmp_path / "rollouts.jsonl"
    result = collect(
        output,
        f"+config_paths=[{ENV_CONFIG}]",
        "+model=local",
        f"+head_server.port={free_port()}",
        "+responses_create_params.max_output_tokens=48",
        "+startup_timeout_s=600",  # a busy machine loads the weights slowly
        env=clean_env(),
        limit=1,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in output.read_text().splitlines()]
    assert [item["name"] for item in row["response"]["output"] if item["type"] == "function_call"] == ["get_weather"]
