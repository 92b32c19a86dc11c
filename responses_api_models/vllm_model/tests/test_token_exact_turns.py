"""Token-exact turns on vllm_model, against the scripted vLLM whose toy tokenizer re-tokenizes the way a
real one does (the model samples one character per token; `/tokenize` merges; tool calls are
re-rendered with other whitespace). Our server on uvicorn, httpx as the agent: one client, one rollout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from nemo_gym.client import ServerClient
from nemo_gym.testing import toy_chatml
from nemo_gym.testing.scripted_openai import Turn
from nemo_gym.testing.scripted_vllm import ScriptedVLLM
from nemo_gym.tool_call_text import parse_tool_calls
from responses_api_models.vllm_model.app import VLLMModel, VLLMModelConfig
from responses_api_models.vllm_model.token_in import TurnPrompts, continue_ids

TOKEN_ID_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
QUESTION = [{"role": "user", "content": "Compare the weather in Oslo and in Bern."}]


def two_lookups(body: dict[str, Any]) -> Turn:
    """Look up Oslo, then Bern, then answer from both results."""
    results = [message["content"] for message in body["messages"] if message["role"] == "tool"]
    if len(results) < 2:
        city = ["Oslo", "Bern"][len(results)]
        return Turn(tool_calls=[("get_weather", json.dumps({"city": city}))])
    return Turn(text=f"Oslo is {results[0]} and Bern is {results[1]}; the warmer one is Bern.")


class Rollout:
    """One agent's conversation with the model server: sends `required_prefix_token_ids` as simple_agent does."""

    def __init__(self, model_url: str, question: str | None = None):
        self.client = httpx.Client(base_url=model_url, timeout=30)
        self.input: list[dict[str, Any]] = [{"role": "user", "content": question}] if question else list(QUESTION)
        self.calls: list[list[dict[str, Any]]] = []

    def call(self, send_prefix: bool = True, **extra: Any) -> httpx.Response:
        body: dict[str, Any] = {"input": self.input, "tools": [WEATHER_TOOL], **extra}
        if send_prefix and self.calls:
            body["required_prefix_token_ids"] = full_ids(self.calls[-1])
        return self.client.post("/v1/responses", json=body)

    def step(self, tool_output: str = "cold", **extra: Any) -> list[dict[str, Any]]:
        answer = self.call(**extra)
        assert answer.status_code == 200, answer.text
        output = answer.json()["output"]
        self.calls.append(output)
        self.input = self.input + output
        for item in output:
            if item["type"] == "function_call":
                self.input.append({"type": "function_call_output", "call_id": item["call_id"], "output": tool_output})
        return output


def full_ids(output: list[dict[str, Any]]) -> list[int]:
    return output[-1]["prompt_token_ids"] + output[-1]["generation_token_ids"]


@pytest.fixture
def start_model(serve: Callable[[Any], str]) -> Callable[..., str]:
    def start(upstream: ScriptedVLLM, **config: Any) -> str:
        settings = {"return_token_id_information": True, **config}
        server = VLLMModel(
            config=VLLMModelConfig(name="policy_model", base_url=upstream.url, model="toy", **settings),
            server_client=ServerClient("http://127.0.0.1:9"),
        )
        return serve(server.setup_webserver())

    return start


@pytest.fixture
def vllm() -> Iterator[ScriptedVLLM]:
    with ScriptedVLLM(two_lookups) as upstream:
        yield upstream


def test_each_prompt_is_the_previous_ids_plus_the_new_items_and_the_model_text_is_never_re_tokenized(vllm, start_model):
    rollout = Rollout(start_model(vllm))
    for _ in range(3):
        rollout.step()

    first, second, third = rollout.calls
    assert [item["type"] for item in first] == ["function_call"]
    assert [item["type"] for item in third] == ["message"]
    for previous, current in [(first, second), (second, third)]:
        prefix = full_ids(previous)
        prompt = current[-1]["prompt_token_ids"]
        assert prompt[: len(prefix)] == prefix
        # The sampled <|im_end|> is not repeated: the template's continuation starts after it.
        assert previous[-1]["generation_token_ids"][-1] == toy_chatml.EOS_ID
        assert toy_chatml.decode(prompt[len(prefix) :]) == (
            "\n<|im_start|>user\n<tool_response>\ncold\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        )
    # vLLM generated from exactly those ids (token-in), asked for sampled log probs and ids back.
    completions = [request for request in vllm.requests if "prompt" in request]
    assert [request["prompt"] for request in completions] == [call[-1]["prompt_token_ids"] for call in rollout.calls]
    assert all(request["logprobs"] == 0 and request["return_token_ids"] is True for request in completions)
    # /tokenize: the whole question once, the anchor's head learnt once (two calls), then one call a turn;
    # no request ever carried the model's own words back to the tokenizer.
    assert len(vllm.tokenize_requests) == 1 + 2 + 1
    sent_to_tokenizer = json.dumps(vllm.tokenize_requests[1:])
    assert "Oslo" not in sent_to_tokenizer and 'get_weather\\"' not in sent_to_tokenizer


def test_sampled_ids_detokenize_to_the_turn_and_carry_one_log_prob_each(vllm, start_model):
    rollout = Rollout(start_model(vllm))
    for _ in range(3):
        rollout.step()
    for output in rollout.calls:
        assert all(key in output[-1] for key in TOKEN_ID_KEYS)
        assert not any(key in item for item in output[:-1] for key in TOKEN_ID_KEYS)
        ids, log_probs = output[-1]["generation_token_ids"], output[-1]["generation_log_probs"]
        assert len(ids) == len(log_probs) and all(value < 0 for value in log_probs)
        text = toy_chatml.decode(ids).removesuffix(toy_chatml.IM_END)
        content, calls = parse_tool_calls(text, ["get_weather"], strip_content=False)
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
            (item["name"], json.loads(item["arguments"])) for item in output if item["type"] == "function_call"
        ]
        messages = [item for item in output if item["type"] == "message"]
        assert (content or "") == "".join(part["text"] for item in messages for part in item["content"])
    assert rollout.calls[-1][-1]["content"][0]["text"] == "Oslo is cold and Bern is cold; the warmer one is Bern."


def test_the_chat_path_re_renders_the_history_and_breaks_the_prefix(vllm, start_model):
    rollout = Rollout(start_model(vllm, token_exact_turns=False))
    rollout.step()
    rollout.step()
    prefix = full_ids(rollout.calls[0])
    prompt = rollout.calls[1][-1]["prompt_token_ids"]
    assert prompt[: len(prefix)] != prefix
    # Same call, other text and other ids: compact JSON as sampled, spaced JSON as the template renders it.
    assert '{"name":"get_weather"' in toy_chatml.decode(rollout.calls[0][-1]["generation_token_ids"])
    assert '{"name": "get_weather"' in toy_chatml.decode(prompt)
    assert "required_prefix_token_ids" not in vllm.requests[1]


def test_a_turn_cut_by_the_token_limit_is_incomplete_and_the_next_prompt_closes_it(vllm, start_model):
    rollout = Rollout(start_model(vllm))
    answer = rollout.call(max_output_tokens=5)
    assert answer.json()["status"] == "incomplete"
    assert answer.json()["incomplete_details"] == {"reason": "max_output_tokens"}
    cut = answer.json()["output"]
    assert len(cut[-1]["generation_token_ids"]) == 5
    assert [item["type"] for item in cut] == ["message"]  # a half-written call stays text
    rollout.calls.append(cut)
    rollout.input = rollout.input + cut + [{"role": "user", "content": "Go on."}]
    following = rollout.step()
    suffix = following[-1]["prompt_token_ids"][len(full_ids(cut)) :]
    assert following[-1]["prompt_token_ids"][: len(full_ids(cut))] == full_ids(cut)
    assert toy_chatml.decode(suffix).startswith("<|im_end|>\n<|im_start|>user\nGo on.")


def test_a_full_context_ends_the_episode_with_an_empty_turn_that_keeps_the_prefix(start_model):
    with ScriptedVLLM(two_lookups) as probe:
        first_prompt = len(Rollout(start_model(probe)).step()[-1]["prompt_token_ids"])
    # Room for the first turn (a tool call of about 60 tokens), not for the second prompt.
    with ScriptedVLLM(two_lookups, max_model_len=first_prompt + 80) as vllm:
        rollout = Rollout(start_model(vllm))
        rollout.step()
        answer = rollout.call(max_output_tokens=70)  # fits no more: vLLM says the context is exceeded
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "incomplete"
        assert body["output"][-1]["generation_token_ids"] == []
        assert body["output"][-1]["prompt_token_ids"][: len(full_ids(rollout.calls[0]))] == full_ids(rollout.calls[0])
        sent = len(vllm.requests)
        rollout.input.append({"role": "user", "content": "x" * 100})  # the prompt alone is now too long
        answer = rollout.call()
        assert answer.status_code == 200 and answer.json()["status"] == "incomplete"
        assert len(vllm.requests) == sent, "no generation is asked for when the prompt leaves no room"


def test_a_required_prefix_with_no_model_turn_to_continue_is_refused(vllm, start_model):
    client = httpx.Client(base_url=start_model(vllm), timeout=30)
    answer = client.post("/v1/responses", json={"input": QUESTION, "required_prefix_token_ids": [1, 2]})
    assert answer.status_code == 400
    assert "required_prefix_token_ids" in answer.json()["error"]["message"]


def test_ids_asked_for_but_not_returned_by_vllm_are_an_error(start_model):
    def drop_ids(completion: dict[str, Any]) -> dict[str, Any]:
        for choice in completion["choices"]:
            choice.pop("token_ids", None)
            choice["logprobs"] = None
        return completion

    with ScriptedVLLM(two_lookups, mangle=drop_ids) as vllm:
        answer = Rollout(start_model(vllm)).call()
    assert answer.status_code == 502
    assert "token ids" in answer.json()["error"]["message"]


def test_the_models_own_end_of_turn_is_never_repeated_and_nothing_else_is_dropped():
    end, newline = 2, 1034
    assert continue_ids([5, 6, end], [end, newline, 9]) == [5, 6, end, newline, 9]
    assert continue_ids([5, 6], [end, newline, 9]) == [5, 6, end, newline, 9]  # cut short: the template closes it
    assert continue_ids([5, newline], [end, newline, 9]) == [5, newline, end, newline, 9]


def test_without_return_token_ids_the_ids_come_from_the_logprob_tokens(start_model):
    """vLLM before 0.10.2 ignores `return_token_ids`; the sampled ids are read from `token_id:<n>` tokens
    and the prompt ids are the ones sent."""

    def as_older_vllm(completion: dict[str, Any]) -> dict[str, Any]:
        for choice in completion["choices"]:
            choice.pop("token_ids", None)
            choice.pop("prompt_token_ids", None)
        return completion

    with ScriptedVLLM(two_lookups, mangle=as_older_vllm) as vllm:
        rollout = Rollout(start_model(vllm))
        rollout.step()
        rollout.step()
    first, second = rollout.calls
    assert first[-1]["generation_token_ids"][-1] == toy_chatml.EOS_ID
    assert second[-1]["prompt_token_ids"] == vllm.requests[1]["prompt"]
    assert second[-1]["prompt_token_ids"][: len(full_ids(first))] == full_ids(first)


def test_the_cut_point_is_learnt_once_and_again_when_the_template_renders_the_anchor_differently():
    today = {"date": "1 Dec"}
    bodies: list[dict[str, Any]] = []

    async def tokenize(body: dict[str, Any]) -> dict[str, Any]:
        # A template that writes the date into its system prompt, as Llama 3.2's does.
        bodies.append(body)
        system = {"role": "system", "content": f"Today is {today['date']}."}
        rendered = toy_chatml.render([system, *body["messages"]], body.get("tools"))
        return {"tokens": toy_chatml.encode(rendered), "max_model_len": 4096}

    prompts = TurnPrompts()
    new = [{"role": "user", "content": "And now?"}]
    expected = "<|im_end|>\n<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n"
    assert toy_chatml.decode(asyncio.run(prompts.suffix(tokenize, new, {}))) == expected
    assert len(bodies) == 2  # learnt: the anchored conversation with two letters
    assert toy_chatml.decode(asyncio.run(prompts.suffix(tokenize, new, {}))) == expected
    assert len(bodies) == 3  # cached: one call
    today["date"] = "2 Dec"
    assert toy_chatml.decode(asyncio.run(prompts.suffix(tokenize, new, {}))) == expected
    assert len(bodies) == 5  # the cached head no longer matched: learnt again with one more call
    assert prompts.max_model_len == 4096


def test_sampling_settings_and_structured_output_reach_the_completion_and_chat_only_keys_do_not(vllm, start_model):
    rollout = Rollout(start_model(vllm))
    rollout.step(temperature=0.3, top_p=0.9, max_output_tokens=200, text={"format": {"type": "json_object"}})
    rollout.step(temperature=0.3)
    first, second = (request for request in vllm.requests if "prompt" in request)
    assert (first["model"], first["temperature"], first["top_p"], first["max_tokens"]) == ("toy", 0.3, 0.9, 200)
    assert first["response_format"] == {"type": "json_object"}
    chat_only = {"messages", "tools", "tool_choice", "parallel_tool_calls", "required_prefix_token_ids"}
    assert not chat_only & (set(first) | set(second))
    # No max_output_tokens: the turn may use the room the context leaves, not vLLM's default of 16.
    assert second["max_tokens"] == vllm.max_model_len - len(second["prompt"])


def test_tokenize_and_generation_of_a_rollout_stay_on_its_replica(serve):
    with ScriptedVLLM(two_lookups) as a, ScriptedVLLM(two_lookups) as b:
        server = VLLMModel(
            config=VLLMModelConfig(
                name="policy_model", base_url=[a.url, b.url], model="toy", return_token_id_information=True
            ),
            server_client=ServerClient("http://127.0.0.1:9"),
        )
        url = serve(server.setup_webserver())
        for number in range(6):
            rollout = Rollout(url, question=f"Rollout {number}: compare Oslo and Bern.")
            for _ in range(3):
                rollout.step()
        prompts = [[request["prompt"] for request in replica.requests] for replica in (a, b)]
        tokenized = [len(replica.tokenize_requests) for replica in (a, b)]
    # Each rollout's three prompts (one question each) are all on one replica: every continuation
    # there extends an earlier prompt there, and each replica tokenized only for its own rollouts.
    assert sum(len(on_replica) for on_replica in prompts) == 18
    for on_replica, calls in zip(prompts, tokenized):
        firsts = [p for p in on_replica if not any(q != p and p[: len(q)] == q for q in on_replica)]
        assert len(on_replica) == 3 * len(firsts)
        assert calls >= len(on_replica)
