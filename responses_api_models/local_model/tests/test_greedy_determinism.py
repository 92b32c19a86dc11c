"""Temperature 0 is deterministic on the local model: two rollouts of one task say the same thing.

The tutorial's `+responses_create_params.temperature=0.0` used to give "SFO" in one rollout and
"San Francisco" in its pair: llama.cpp computed them in different batch shapes (the other slot's
tokens alongside, a prefix cached by another request). The real-model test runs one task alone,
beside a sampling request and as a concurrent pair (on main: "SFO" alone, "San Francisco" beside
the other request); the others check the mechanism without loading weights.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from responses_api_models.local_model.engine import (
    LocalChatEngine,
    ModelWeightsNotFoundError,
    _EngineGate,
    default_model_path,
)

TASKS = Path(__file__).resolve().parents[3] / "resources_servers/example_single_tool_call/data/example.jsonl"


def llama_request(params: dict[str, Any]) -> dict[str, Any]:
    bare = object.__new__(LocalChatEngine)  # _llama_request reads nothing from a loaded engine
    return bare._llama_request(params, messages=[{"role": "user", "content": "hi"}])


def test_a_greedy_request_recomputes_its_prompt_and_others_keep_the_cache():
    assert llama_request({"temperature": 0.0})["cache_prompt"] is False
    assert "cache_prompt" not in llama_request({"temperature": 0.7})
    assert "cache_prompt" not in llama_request({})  # the default temperature samples


def test_a_greedy_request_runs_alone_and_waits_for_running_ones():
    gate = _EngineGate()
    first_sharing, let_go, greedy_in = threading.Event(), threading.Event(), threading.Event()

    def sampling() -> None:
        with gate.shared():
            first_sharing.set()
            let_go.wait()

    def greedy() -> None:
        with gate.alone():
            greedy_in.set()

    running = threading.Thread(target=sampling)
    running.start()
    first_sharing.wait()
    with gate.shared():  # sampling requests share the engine
        pass
    waiting = threading.Thread(target=greedy)
    waiting.start()
    assert not greedy_in.wait(0.3)  # not while a sampling request runs
    let_go.set()
    waiting.join()
    running.join()
    assert greedy_in.is_set()

    # And while a greedy request runs, nobody else does.
    holding, release, other_in = threading.Event(), threading.Event(), threading.Event()

    def greedy_holding() -> None:
        with gate.alone():
            holding.set()
            release.wait()

    def other() -> None:
        with gate.shared():
            other_in.set()

    holder = threading.Thread(target=greedy_holding)
    holder.start()
    holding.wait()
    late = threading.Thread(target=other)
    late.start()
    assert not other_in.wait(0.3)
    release.set()
    late.join()
    holder.join()
    assert other_in.is_set()


def chat_params(task: dict[str, Any]) -> dict[str, Any]:
    """The tutorial's first model call, as simple_agent sends it (Chat Completions shape)."""
    request = task["responses_create_params"]
    messages = [
        {"role": "system" if item["role"] == "developer" else item["role"], "content": item["content"]}
        for item in request["input"]
    ]
    tools = [
        {"type": "function", "function": {key: value for key, value in tool.items() if key != "type"}}
        for tool in request["tools"]
    ]
    return {"messages": messages, "tools": tools, "temperature": 0.0, "max_tokens": 48}


async def rollout(engine: LocalChatEngine, task: dict[str, Any]) -> tuple[str, str]:
    """A tool call, its result, the answer: what the tutorial's rollout asks of the model."""
    params = chat_params(task)
    first = (await engine.chat(params))["choices"][0]["message"]
    calls = first.get("tool_calls") or []
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": json.dumps({"weather": "cloudy, 14 C"})}
        for call in calls
    ]
    params["messages"] = [*params["messages"], first, *results]
    answer = (await engine.chat(params))["choices"][0]["message"]
    return json.dumps(calls[0]["function"]["arguments"]) if calls else "", answer.get("content") or ""


STORY = {
    "messages": [{"role": "user", "content": "Write a long story about a dragon and a knight."}],
    "temperature": 0.8,
    "max_tokens": 150,
}


@pytest.mark.local_model
@pytest.mark.slow  # eight generations and a story on the real model
def test_a_rollout_at_temperature_0_says_the_same_whatever_runs_beside_it():
    """On main, the tutorial's first task said {"city": "SFO"} alone and "San Francisco" beside a sampling request."""
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install 'nemo-gym-lite[local]')")
    try:
        default_model_path()
    except ModelWeightsNotFoundError as error:
        pytest.skip(str(error))
    task = json.loads(TASKS.read_text().splitlines()[0])

    async def runs(engine: LocalChatEngine) -> dict[str, tuple[str, str]]:
        found = {"alone": await rollout(engine, task)}
        # Beside a sampling request that is generating: llama.cpp would batch their tokens together,
        # and the first rollout's prompt now sits in a slot's cache.
        story = asyncio.ensure_future(engine.chat(dict(STORY)))
        await asyncio.sleep(0.3)
        found["beside another request"] = await rollout(engine, task)
        await story
        # Its pair in flight at the same time, as ng_collect_rollouts runs a task's repeats.
        found["pair, first"], found["pair, second"] = await asyncio.gather(rollout(engine, task), rollout(engine, task))
        return found

    # The shipped local_model settings (configs/local_model.yaml).
    with LocalChatEngine(n_ctx=4096, n_parallel=2, force_tool_call_after_user=True) as engine:
        found = asyncio.run(runs(engine))
    assert found["alone"][0], "the forced first turn called the tool"
    assert {name: found["alone"] for name in found} == found
