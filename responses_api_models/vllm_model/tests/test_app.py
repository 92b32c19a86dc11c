"""vllm_model over real HTTP: our server on uvicorn, scripted vLLM-like replicas on aiohttp, httpx as
the agent. One httpx.Client (one cookie jar) is one rollout."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from nemo_gym.client import ServerClient
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from responses_api_models.vllm_model.app import (
    VLLMModel,
    VLLMModelConfig,
    replica_order,
)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


class TokenIdUpstream(ScriptedOpenAI):
    """A replica that answers like vLLM >= 0.10.2 asked for `return_token_ids` and logprobs."""

    async def _chat(self, request: web.Request) -> web.Response:
        answer = await super()._chat(request)
        completion = orjson.loads(answer.body)
        completion["prompt_token_ids"] = [1, 2, 3]
        choice = completion["choices"][0]
        choice["token_ids"] = [7, 8]
        choice["logprobs"] = {
            "content": [{"token": "token_id:7", "logprob": -0.5}, {"token": "token_id:8", "logprob": -0.25}]
        }
        return web.Response(body=orjson.dumps(completion), content_type="application/json")


class ContextFullUpstream(ScriptedOpenAI):
    """A replica whose context is always exceeded, answering as vLLM does."""

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests.append(orjson.loads(await request.read()))
        message = (
            "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
            "(4900 in the messages, 100 in the completion)."
        )
        return web.json_response(
            {"object": "error", "message": message, "type": "BadRequestError", "code": 400}, status=400
        )


@pytest.fixture
def replicas() -> Iterator[list[ScriptedOpenAI]]:
    with ScriptedOpenAI() as a, ScriptedOpenAI() as b:
        yield [a, b]


@pytest.fixture
def start_model(serve: Callable[[Any], str]) -> Callable[..., str]:
    def start(base_url: str | list[str], **config: Any) -> str:
        server = VLLMModel(
            config=VLLMModelConfig(name="policy_model", base_url=base_url, model="m", **config),
            server_client=ServerClient("http://127.0.0.1:9"),
        )
        return serve(server.setup_webserver())

    return start


def first_turn(marker: str = "What is the weather?") -> dict[str, Any]:
    return {"input": [{"role": "user", "content": marker}], "tools": [WEATHER_TOOL]}


def play_rollout(model_url: str, marker: str) -> list[dict[str, Any]]:
    """Two turns of a tool-calling rollout through one cookie jar; the two responses."""
    with httpx.Client(base_url=model_url, timeout=30) as rollout:
        params = first_turn(marker)
        first = rollout.post("/v1/responses", json=params)
        first.raise_for_status()
        call = first.json()["output"][-1]
        params["input"] += first.json()["output"] + [
            {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temperature_c": 3}'}
        ]
        second = rollout.post("/v1/responses", json=params)
        second.raise_for_status()
        return [first.json(), second.json()]


def rollout_marker(chat_body: dict[str, Any]) -> str:
    return next(m["content"] for m in chat_body["messages"] if m["role"] == "user")


def test_all_turns_of_a_rollout_hit_one_replica_and_rollouts_spread_over_both(replicas, start_model):
    model_url = start_model([replica.url for replica in replicas])
    markers = [f"rollout {number}" for number in range(16)]
    for marker in markers:
        play_rollout(model_url, marker)

    seen = [[rollout_marker(body) for body in replica.requests] for replica in replicas]
    assert set(seen[0]).isdisjoint(seen[1]), "a rollout's turns were split across replicas"
    assert set(seen[0]) | set(seen[1]) == set(markers)
    assert all(per_replica.count(marker) == 2 for per_replica in seen for marker in set(per_replica))
    assert seen[0] and seen[1], "every rollout landed on one replica"


def test_replica_choice_is_a_stable_hash_with_the_next_replicas_as_fallback():
    assert replica_order("session-abc", 3) == replica_order("session-abc", 3)
    assert sorted(replica_order("session-abc", 3)) == [0, 1, 2]
    homes = {replica_order(f"session-{number}", 4)[0] for number in range(200)}
    assert homes == {0, 1, 2, 3}


def test_tool_call_becomes_a_function_call_item_with_usage(replicas, start_model):
    model_url = start_model(replicas[0].url)
    answer = httpx.post(f"{model_url}/v1/responses", json=first_turn(), timeout=30)

    assert answer.status_code == 200
    response = answer.json()
    assert response["status"] == "completed"
    assert response["model"] == "m"
    [call] = response["output"]
    assert call["type"] == "function_call"
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "San Francisco"}
    assert call["call_id"]
    assert response["usage"]["input_tokens"] == 100
    assert response["usage"]["output_tokens"] == 20
    assert response["usage"]["total_tokens"] == 120

    [sent] = replicas[0].requests
    assert sent["model"] == "m"
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert "logprobs" not in sent, "token ids were requested although return_token_id_information is off"


def test_generation_cut_by_the_token_limit_is_an_incomplete_response(start_model):
    with ScriptedOpenAI(script=lambda body: Turn(text="The answer is", finish_length=True)) as upstream:
        model_url = start_model(upstream.url)
        answer = httpx.post(
            f"{model_url}/v1/responses", json={"input": "Explain everything.", "max_output_tokens": 3}, timeout=30
        )

    response = answer.json()
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["content"][0]["text"] == "The answer is"
    assert upstream.requests[0]["max_tokens"] == 3


def test_full_context_ends_the_episode_with_an_empty_incomplete_turn(start_model):
    with ContextFullUpstream() as upstream:
        model_url = start_model(upstream.url)
        answer = httpx.post(f"{model_url}/v1/responses", json=first_turn(), timeout=30)

    assert answer.status_code == 200
    response = answer.json()
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "context_limit"}
    [message] = response["output"]
    assert message["type"] == "message"
    assert message["content"][0]["text"] == ""
    assert len(upstream.requests) == 1, "a context overflow must not be retried"


def test_token_ids_are_requested_attached_and_forwarded_on_the_next_turn(start_model):
    # The chat path (token_exact_turns off); tests/test_token_exact_turns.py covers the default.
    with TokenIdUpstream() as upstream:
        model_url = start_model(upstream.url, return_token_id_information=True, token_exact_turns=False)
        first, second = play_rollout(model_url, "What is the weather?")

    sent = upstream.requests[0]
    assert sent["logprobs"] is True
    assert sent["return_tokens_as_token_ids"] is True
    assert sent["return_token_ids"] is True
    assert "top_logprobs" not in sent

    call = first["output"][-1]
    assert call["type"] == "function_call"
    assert call["prompt_token_ids"] == [1, 2, 3]
    assert call["generation_token_ids"] == [7, 8]
    assert call["generation_log_probs"] == [-0.5, -0.25]
    assert second["output"][-1]["generation_token_ids"] == [7, 8]

    [assistant] = [m for m in upstream.requests[1]["messages"] if m["role"] == "assistant"]
    assert assistant["prompt_token_ids"] == [1, 2, 3]
    assert assistant["generation_token_ids"] == [7, 8]
    assert assistant["generation_log_probs"] == [-0.5, -0.25]


def test_token_ids_asked_for_but_not_returned_is_an_error_not_a_silent_gap(replicas, start_model):
    model_url = start_model(replicas[0].url, return_token_id_information=True, token_exact_turns=False)
    answer = httpx.post(f"{model_url}/v1/responses", json=first_turn(), timeout=30)

    assert answer.status_code == 502
    assert "token ids" in answer.json()["error"]["message"]


def test_failing_upstream_is_a_502_naming_it(start_model):
    with ScriptedOpenAI(fault_every=1, fault_status=500) as upstream:
        model_url = start_model(upstream.url, max_attempts=2)
        answer = httpx.post(f"{model_url}/v1/responses", json=first_turn(), timeout=30)

    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["type"] == "HTTPStatusError"
    assert f"{upstream.url}/chat/completions" in error["message"]
    assert "500" in error["message"]
    assert len(upstream.requests) == 2, "max_attempts bounds the retries"


def test_a_replica_that_refuses_connections_is_skipped(replicas, start_model):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    model_url = start_model([dead_url, replicas[0].url], max_attempts=1)

    for number in range(6):
        assert play_rollout(model_url, f"rollout {number}")[1]["status"] == "completed"
    assert len(replicas[0].requests) == 12


def test_chat_pass_through_forces_model_and_moves_thinking_out_of_history(replicas, start_model):
    model_url = start_model(replicas[0].url, replace_developer_role_with_system=True)
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>greet back</think>Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    answer = httpx.post(
        f"{model_url}/v1/chat/completions", json={"model": "whatever", "messages": messages}, timeout=30
    )

    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"]
    [sent] = replicas[0].requests
    assert sent["model"] == "m"
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][2]["content"] == "Hello!"
    assert sent["messages"][2]["reasoning_content"] == "greet back"


def test_reasoning_items_in_responses_history_reach_vllm_as_reasoning_content(replicas, start_model):
    model_url = start_model(replicas[0].url)
    params = {
        "input": [
            {"role": "user", "content": "Hi"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "greet back"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
            {"role": "user", "content": "Bye"},
        ]
    }
    assert httpx.post(f"{model_url}/v1/responses", json=params, timeout=30).status_code == 200

    assistant = replicas[0].requests[0]["messages"][1]
    assert assistant == {"role": "assistant", "content": "Hello!", "reasoning_content": "greet back"}


@pytest.mark.parametrize("file_name, token_ids", [("vllm_model.yaml", False), ("vllm_model_for_training.yaml", True)])
def test_shipped_configs_validate(file_name, token_ids):
    from pathlib import Path

    from omegaconf import OmegaConf

    path = Path(__file__).parents[1] / "configs" / file_name
    env = OmegaConf.create(
        {
            "policy_base_url": ["http://a:8000/v1", "http://b:8000/v1"],
            "policy_api_key": "k",
            "policy_model_name": "Qwen/Qwen3-8B",
        }
    )
    merged = OmegaConf.merge(env, OmegaConf.load(path))
    values = OmegaConf.to_container(merged, resolve=True)["policy_model"]["responses_api_models"]["vllm_model"]
    config = VLLMModelConfig.model_validate(values)
    assert config.replica_urls == ["http://a:8000/v1", "http://b:8000/v1"]
    assert config.model == "Qwen/Qwen3-8B"
    assert config.return_token_id_information is token_ids


def test_metadata_extra_body_reaches_vllm_under_the_requests_own_parameters(replicas, start_model):
    # NeMo Gym's per-request vLLM parameters, e.g. the seed `ng_collect_rollouts +num_repeats_add_seed=true` adds.
    model_url = start_model(replicas[0].url)
    params = first_turn() | {
        "temperature": 0.5,
        "metadata": {"extra_body": json.dumps({"seed": 7, "temperature": 2.0, "top_k": 20})},
    }
    answer = httpx.post(f"{model_url}/v1/responses", json=params, timeout=30)
    assert answer.status_code == 200, answer.text
    [sent] = replicas[0].requests
    assert sent["seed"] == 7 and sent["top_k"] == 20
    assert sent["temperature"] == 0.5

    bad = httpx.post(
        f"{model_url}/v1/responses", json=first_turn() | {"metadata": {"extra_body": "seed=7"}}, timeout=30
    )
    assert bad.status_code == 400
    assert "metadata.extra_body must be a string holding a JSON object" in bad.text
    assert len(replicas[0].requests) == 1
