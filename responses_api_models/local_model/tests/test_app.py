"""local_model as a server: the `<tool_call>` text path through the agent, and the real weights end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.training.formats import to_messages
from resources_servers.example_single_tool_call.app import ExampleSingleToolCallConfig, ExampleSingleToolCallServer
from resources_servers.example_stateful_counter.app import ExampleStatefulCounterConfig, ExampleStatefulCounterServer
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig
from responses_api_models.local_model.app import LocalModel, LocalModelConfig
from tests.conftest import TUTORIAL_AGENT, cli

COUNTER_DATA = Path(__file__).parents[3] / "resources_servers/example_stateful_counter/data/example.jsonl"

pytest.importorskip("xllamacpp", reason="the local model needs `pip install -e .[local]`")


class ScriptedLlamaServer:
    """Stands in for `xllamacpp.Server` (the one method the engine calls) and answers with fixed raw
    text, so the engine's real `<tool_call>` parsing, the Responses conversion and the agent loop run."""

    def __init__(self, texts: list[str]):
        self.texts, self.requests = texts, []

    def handle_chat_completions(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        text = self.texts[min(len(self.requests) - 1, len(self.texts) - 1)]
        return {
            "id": "chatcmpl-x",
            "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10},
        }


def test_a_tool_call_block_in_the_model_text_makes_the_agent_call_the_tool():
    ports = {name: free_port() for name in ("resources", "model", "agent")}

    def client():
        return registry_client(
            {
                "env": ("resources_servers", f"http://127.0.0.1:{ports['resources']}"),
                "policy_model": ("responses_api_models", f"http://127.0.0.1:{ports['model']}"),
            }
        )

    resources = ExampleSingleToolCallServer(
        config=ExampleSingleToolCallConfig(name="env", domain="agent"), server_client=client()
    )
    model = LocalModel(config=LocalModelConfig(name="policy_model", n_parallel=1), server_client=client())
    agent = SimpleAgent(
        config=SimpleAgentConfig(
            name="agent",
            max_steps=4,
            resources_server={"type": "resources_servers", "name": "env"},
            model_server={"type": "responses_api_models", "name": "policy_model"},
        ),
        server_client=client(),
    )
    servers = [
        ThreadedServer(s.setup_webserver(), port=ports[n]).start()
        for n, s in (("resources", resources), ("model", model), ("agent", agent))
    ]
    try:
        llama = ScriptedLlamaServer(
            [
                'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
                "It is cold in Oslo, take a coat.",
            ]
        )
        model._engine._server = llama
        row = {
            "responses_create_params": {
                "input": "Weather in Oslo?",
                "tools": [
                    {
                        "type": "function",
                        "name": "get_weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    }
                ],
            }
        }
        result = httpx.post(f"http://127.0.0.1:{ports['agent']}/run", json=row, timeout=60)
        assert result.status_code == 200, result.text
        output = result.json()["response"]["output"]
        assert [item["type"] for item in output] == ["message", "function_call", "function_call_output", "message"]
        assert output[0]["content"][0]["text"].startswith("Let me check.")
        assert output[1]["name"] == "get_weather" and json.loads(output[1]["arguments"]) == {"city": "Oslo"}
        assert json.loads(output[2]["output"])["weather_description"] == "The weather in Oslo is cold."
        # The tool was rendered into the prompt, and the tool result went back to the model.
        assert "get_weather" in json.dumps(llama.requests[0]["messages"])
        assert "The weather in Oslo is cold." in json.dumps(llama.requests[1]["messages"])
    finally:
        for server in servers:
            server.stop()


def test_text_after_and_between_bare_calls_is_recorded_in_order_and_exported():
    """Issue 18 part 4: a second call and the text around it were missing from the recorded output."""
    ports = {name: free_port() for name in ("resources", "model", "agent")}

    def client():
        return registry_client(
            {
                "env": ("resources_servers", f"http://127.0.0.1:{ports['resources']}"),
                "policy_model": ("responses_api_models", f"http://127.0.0.1:{ports['model']}"),
            }
        )

    resources = ExampleStatefulCounterServer(config=ExampleStatefulCounterConfig(name="env"), server_client=client())
    model = LocalModel(config=LocalModelConfig(name="policy_model", n_parallel=1), server_client=client())
    agent = SimpleAgent(
        config=SimpleAgentConfig(
            name="agent",
            max_steps=4,
            resources_server={"type": "resources_servers", "name": "env"},
            model_server={"type": "responses_api_models", "name": "policy_model"},
        ),
        server_client=client(),
    )
    servers = [
        ThreadedServer(s.setup_webserver(), port=ports[n]).start()
        for n, s in (("resources", resources), ("model", model), ("agent", agent))
    ]
    try:
        model._engine._server = ScriptedLlamaServer(
            [
                '{"name": "increment_counter", "arguments": {"count": 1}} and then I will add 2\n'
                '{"name": "increment_counter", "arguments": {"count": 2}}\nThat was both.',
                "The counter is 6.",
            ]
        )
        row = json.loads(COUNTER_DATA.read_text().splitlines()[0])
        result = httpx.post(f"http://127.0.0.1:{ports['agent']}/run", json=row, timeout=60)
        assert result.status_code == 200, result.text
        recorded = result.json()
        output = recorded["response"]["output"]
        assert [item["type"] for item in output] == [
            "function_call",
            "message",
            "function_call",
            "message",
            "function_call_output",
            "function_call_output",
            "message",
        ]
        texts = [item["content"][0]["text"] for item in output if item["type"] == "message"]
        assert texts == ["and then I will add 2", "That was both.", "The counter is 6."]
        assert [json.loads(item["arguments"]) for item in output if item["type"] == "function_call"] == [
            {"count": 1},
            {"count": 2},
        ]
        assert recorded["reward"] == 1.0  # 3 + 1 + 2: both calls ran
        messages = to_messages(recorded)["messages"]
        first_turn = next(message for message in messages if message["role"] == "assistant")
        assert "and then I will add 2" in first_turn["content"] and "That was both." in first_turn["content"]
        assert len(first_turn["tool_calls"]) == 2
    finally:
        for server in servers:
            server.stop()


@pytest.mark.slow
@pytest.mark.local_model
def test_ng_run_with_real_smollm2_weights_collects_five_rollouts_offline(tmp_path):
    head_port = free_port()
    output = tmp_path / "rollouts.jsonl"
    started = time.monotonic()
    with NgRunProcess(
        [
            "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml",
            "responses_api_models/local_model/configs/local_model.yaml",
        ],
        f"+head_server.port={head_port}",
    ):
        ready = time.monotonic() - started
        result = cli(
            "ng_collect_rollouts",
            f"+head_server.port={head_port}",
            f"+agent_name={TUTORIAL_AGENT}",
            "+input_jsonl_fpath=resources_servers/example_single_tool_call/data/example.jsonl",
            f"+output_jsonl_fpath={output}",
            "+limit=5",
            "+responses_create_params.max_output_tokens=48",
            "+responses_create_params.temperature=0.0",
            timeout=600,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        assert row["response"]["model"].startswith("SmolLM2-135M")
        assert row["response"]["usage"]["output_tokens"] > 0
        types = [item["type"] for item in row["response"]["output"]]
        assert types[0] == "function_call" and "function_call_output" in types  # the constrained first turn
    print(
        f"ng_run with the local model ready in {ready:.1f} s; 5 offline rollouts in {time.monotonic() - started:.1f} s"
    )
