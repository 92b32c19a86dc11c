"""Token-exact multi-turn rollouts from the real SmolLM2 weights, collected the way a user collects them.

`ng_run` (example_stateful_counter + local_model with `return_token_id_information: true`) and
`ng_collect_rollouts` write 20 rows; every model call in them is then checked on its own, turn by
turn, not only through the agent's `token_prefix_invariant` verdict.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from responses_api_models.local_model.engine import LocalChatEngine
from responses_api_models.local_model.tool_prompt import parse_tool_calls
from tests.conftest import cli

pytest.importorskip("xllamacpp", reason="the local model needs `pip install -e .[local]`")

ENV = "example_stateful_counter"
TOKEN_ID_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
MODEL_ITEM_TYPES = ("message", "function_call", "reasoning")
END_OF_GENERATION = ("<|im_end|>", "<|endoftext|>")  # SmolLM2 stops on either; neither is in the text


def model_calls(output: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The output items of each model call: runs of model items, split by the tool outputs between them."""
    calls: list[list[dict[str, Any]]] = []
    run: list[dict[str, Any]] = []
    for item in output:
        if item["type"] in MODEL_ITEM_TYPES:
            run.append(item)
        elif run:
            calls.append(run)
            run = []
    if run:
        calls.append(run)
    return calls


def said(call: list[dict[str, Any]]) -> tuple[str | None, list[tuple[str, Any]]]:
    """What a call's output items say: the message text and the (name, arguments) of its tool calls."""
    texts = [part["text"] for item in call if item["type"] == "message" for part in item["content"]]
    tools = [(item["name"], json.loads(item["arguments"])) for item in call if item["type"] == "function_call"]
    return ("".join(texts) or None), tools


def said_by_tokens(decoded: str, tool_names: list[str]) -> tuple[str | None, list[tuple[str, Any]]]:
    """The same, read from the detokenized sampled ids with the server's own parser."""
    for end in END_OF_GENERATION:
        decoded = decoded.removesuffix(end)
    content, calls = parse_tool_calls(decoded, tool_names)
    if not calls:  # a plain answer is kept verbatim, whitespace and all
        return decoded or None, []
    return content, [(call["function"]["name"], json.loads(call["function"]["arguments"])) for call in calls]


@pytest.mark.slow
@pytest.mark.local_model
def test_twenty_counter_rollouts_keep_every_turns_tokens_as_the_next_prompts_prefix(tmp_path):
    head_port = free_port()
    output = tmp_path / "rollouts.jsonl"
    started = time.monotonic()
    with NgRunProcess(
        [f"resources_servers/{ENV}/configs/{ENV}.yaml", "responses_api_models/local_model/configs/local_model.yaml"],
        f"+head_server.port={head_port}",
        "+policy_model.responses_api_models.local_model.return_token_id_information=true",
        "+policy_model.responses_api_models.local_model.n_ctx=2048",
        # One thread per slot: on a shared, busy machine llama.cpp's spinning worker threads wait on
        # each other when descheduled (here 2 threads made a rollout take about a minute).
        "+policy_model.responses_api_models.local_model.n_threads=1",
        # 3 steps: the first call, a turn continued from it, and one continued from a continued turn.
        f"+{ENV}_simple_agent.responses_api_agents.simple_agent.max_steps=3",
    ):
        result = cli(
            "ng_collect_rollouts",
            f"+head_server.port={head_port}",
            f"+agent_name={ENV}_simple_agent",
            f"+input_jsonl_fpath=resources_servers/{ENV}/data/example.jsonl",
            f"+output_jsonl_fpath={output}",
            "+num_repeats=4",
            "+num_samples_in_parallel=2",
            "+responses_create_params.max_output_tokens=48",
            # Every turn a tool call, so every episode reaches the third step: since forced calls are the
            # template's own text, SmolLM2 no longer loops on tools by itself, and a free second turn
            # mostly answers, which would leave the chain of continued prefixes untested.
            "+responses_create_params.tool_choice=required",
            timeout=1200,
        )
    collected = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 20

    calls_seen, continuations_checked = 0, 0
    with LocalChatEngine(n_ctx=64, n_parallel=1, n_threads=1) as engine:
        for row in rows:
            where = f"task {row['_ng_task_index']} rollout {row['_ng_rollout_index']}"
            assert row["token_prefix_invariant"] == "held", where
            tool_names = [tool["name"] for tool in row["responses_create_params"]["tools"]]
            previous: list[int] | None = None
            for number, call in enumerate(model_calls(row["response"]["output"]), start=1):
                turn = f"{where}, model call {number}"
                # Every call carries the three fields once, on its last item.
                assert all(key in call[-1] for key in TOKEN_ID_KEYS), turn
                assert not any(key in item for item in call[:-1] for key in TOKEN_ID_KEYS), turn
                prompt, generation, log_probs = (call[-1][key] for key in TOKEN_ID_KEYS)
                assert len(generation) == len(log_probs) > 0, turn
                # The previous call's prompt + generation is this prompt's beginning, token for token.
                if previous is not None:
                    assert prompt[: len(previous)] == previous, turn
                    assert len(prompt) > len(previous), turn  # the tool result was appended
                    continuations_checked += 1
                previous = prompt + generation
                # The sampled ids say exactly what the output items say.
                decoded = asyncio.run(engine.detokenize(generation))
                assert said_by_tokens(decoded, tool_names) == said(call), turn
                calls_seen += 1
    assert continuations_checked >= 20  # every rollout went past its first (constrained) call
    assert continuations_checked > 20  # and some continued a turn that was itself built on a prefix
    print(
        f"token-exact rollouts: 20 rows, {calls_seen} model calls, {continuations_checked} continuations "
        f"checked token by token, collected in {collected:.1f} s"
    )
