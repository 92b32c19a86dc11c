"""The scripted vLLM stand-in drifts the way a real engine does, or the token-exact tests would prove nothing."""

from __future__ import annotations

import json

import httpx

from nemo_gym.testing import toy_chatml
from nemo_gym.testing.scripted_openai import Turn
from nemo_gym.testing.scripted_vllm import ScriptedVLLM, generated_text

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def test_sampled_ids_spell_the_text_but_re_tokenize_to_other_ids():
    text = generated_text(Turn(tool_calls=[("lookup", json.dumps({"name": "the value"}))]))
    sampled = toy_chatml.sample_ids(text)
    assert toy_chatml.decode(sampled) == text
    assert toy_chatml.encode(text) != sampled
    assert len(toy_chatml.encode(text)) < len(sampled)


def test_the_template_renders_tool_calls_with_other_whitespace_and_reads_itself_back():
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":1}'}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Find it.\nQuickly."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    rendered = toy_chatml.render(messages, [TOOL])
    assert '{"name": "lookup", "arguments": {"q": 1}}' in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    parsed, tools = toy_chatml.parse_chatml(rendered)
    assert tools == [TOOL]
    assert [m["role"] for m in parsed] == ["system", "user", "assistant", "tool"]
    assert parsed[1]["content"] == "Find it.\nQuickly."
    assert parsed[2]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q": 1}'}
    assert parsed[3]["content"] == "42"


def test_endpoints_answer_in_vllms_shapes():
    with ScriptedVLLM(lambda body: Turn(text="the end")) as vllm:
        tokenized = httpx.post(
            f"{vllm.root_url}/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10
        ).json()
        assert tokenized["count"] == len(tokenized["tokens"]) and tokenized["max_model_len"] == vllm.max_model_len
        completion = httpx.post(
            f"{vllm.url}/completions",
            json={"prompt": tokenized["tokens"], "max_tokens": 50, "logprobs": 0, "return_token_ids": True},
            timeout=10,
        ).json()
    choice = completion["choices"][0]
    assert choice["text"] == "the end" and choice["finish_reason"] == "stop"
    assert choice["prompt_token_ids"] == tokenized["tokens"]
    assert choice["token_ids"][-1] == toy_chatml.EOS_ID  # sampled EOS: in the ids, not in the text
    assert len(choice["logprobs"]["token_logprobs"]) == len(choice["token_ids"])
    assert completion["usage"]["completion_tokens"] == len(choice["token_ids"])
