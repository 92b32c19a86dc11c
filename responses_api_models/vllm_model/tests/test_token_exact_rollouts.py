"""Token-exact multi-step rollouts end to end: `ng_run` (a real subprocess) serving example_multi_step
with vllm_model (`vllm_model_for_training.yaml`, `return_token_id_information: true`) in front of the
scripted vLLM, and `ng_collect_rollouts` (the CLI) collecting 20 rollouts.

The scripted vLLM re-tokenizes the way a real one does (its model samples one character per token,
its tokenizer merges; tool calls are re-rendered with other whitespace), so a server that re-renders
the conversation each turn breaks the token prefix, as the second test shows with the same stack
and `token_exact_turns: false`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import Turn
from nemo_gym.testing.scripted_vllm import ScriptedVLLM
from nemo_gym.tool_call_text import parse_tool_calls
from tests.conftest import PROJECT_ROOT, cli

pytestmark = pytest.mark.slow

ENV = "example_multi_step"
ENV_CONFIG = f"resources_servers/{ENV}/configs/{ENV}.yaml"
DATA = PROJECT_ROOT / "resources_servers" / ENV / "data" / "example.jsonl"
MODEL_CONFIG = "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml"
TASKS = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
SYNONYMS = {task["responses_create_params"]["input"][-1]["content"]: task["expected_synonyms"] for task in TASKS}
TOKEN_ID_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
TOOL_NAMES = ["get_synonym_value", "extract_synonym_values"]
END_OF_TURN = "<|im_end|>"


def multi_step(body: dict[str, Any]) -> Turn:
    """Look up each expected synonym, one call per turn, then extract the values the tool returned."""
    messages = body["messages"]
    question = next(message["content"] for message in messages if message["role"] == "user")
    synonyms = SYNONYMS[question]
    values = [
        json.loads(message["content"])["synonym_value"]
        for message in messages
        if message["role"] == "tool" and "synonym_value" in message["content"]
    ]
    called = [
        call["function"]["name"] for m in messages if m["role"] == "assistant" for call in m.get("tool_calls") or []
    ]
    if len(values) < len(synonyms):
        return Turn(tool_calls=[("get_synonym_value", json.dumps({"synonym": synonyms[len(values)]}))])
    if "extract_synonym_values" not in called:
        return Turn(tool_calls=[("extract_synonym_values", json.dumps({"synonym_values": values}))])
    return Turn(text=f"Extracted {len(synonyms)} values, in word order.")


@contextmanager
def collected(tmp_path: Path, *overrides: str, num_repeats: int) -> Iterator[tuple[list[dict[str, Any]], ScriptedVLLM]]:
    head_port = free_port()
    output = tmp_path / "rollouts.jsonl"
    with ScriptedVLLM(multi_step) as vllm:
        stack = NgRunProcess(
            [ENV_CONFIG, MODEL_CONFIG],
            f"+head_server.port={head_port}",
            f"+policy_base_url={vllm.url}",
            "+policy_api_key=unused",
            "+policy_model_name=toy",
            *overrides,
            cwd=PROJECT_ROOT,
        )
        try:
            stack.wait_ready()
            result = cli(
                "ng_collect_rollouts",
                f"+agent_name={ENV}_simple_agent",
                f"+input_jsonl_fpath={DATA}",
                f"+output_jsonl_fpath={output}",
                f"+num_repeats={num_repeats}",
                "+num_samples_in_parallel=5",
                f"+head_server.port={head_port}",
                timeout=180,
            )
        finally:
            stack.stop()
        assert result.returncode == 0, result.stdout + result.stderr
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        yield rows, vllm


def model_calls(row: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The row's output split into model calls: each call's items end with the one carrying its ids."""
    calls: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for item in row["response"]["output"]:
        if item["type"] == "function_call_output":
            continue
        current.append(item)
        if "prompt_token_ids" in item:
            calls.append(current)
            current = []
    assert not current, f"items after the last call's token ids: {current}"
    return calls


def turns_keeping_the_prefix(calls: list[list[dict[str, Any]]]) -> tuple[int, int]:
    """(turns after the first whose prompt begins with the previous prompt + generation, turns checked)."""
    kept = 0
    for previous, current in zip(calls, calls[1:]):
        prefix = previous[-1]["prompt_token_ids"] + previous[-1]["generation_token_ids"]
        kept += current[-1]["prompt_token_ids"][: len(prefix)] == prefix
    return kept, len(calls) - 1


def test_twenty_multi_step_rollouts_keep_the_token_prefix_on_every_turn(tmp_path):
    with collected(tmp_path, num_repeats=4) as (rows, vllm):
        detokenize = httpx.Client(base_url=vllm.root_url, timeout=30)
        assert len(rows) == 20
        checked = kept = 0
        for row in rows:
            assert row["reward"] == 1.0
            assert row["token_prefix_invariant"] == "held"
            calls = model_calls(row)
            synonyms = SYNONYMS[row["responses_create_params"]["input"][-1]["content"]]
            assert len(calls) == len(synonyms) + 2  # one lookup per synonym, the extraction, the summary
            row_kept, row_checked = turns_keeping_the_prefix(calls)
            kept, checked = kept + row_kept, checked + row_checked
            for call in calls:
                bundle = call[-1]
                assert all(key in bundle for key in TOKEN_ID_KEYS)
                assert not any(key in item for item in call[:-1] for key in TOKEN_ID_KEYS)
                assert len(bundle["generation_token_ids"]) == len(bundle["generation_log_probs"]) > 0
                # Detokenized (by vLLM's /detokenize) the sampled ids are the turn, to the character.
                text = detokenize.post("/detokenize", json={"tokens": bundle["generation_token_ids"]}).json()["prompt"]
                content, parsed = parse_tool_calls(text.removesuffix(END_OF_TURN), TOOL_NAMES, strip_content=False)
                functions = [item for item in call if item["type"] == "function_call"]
                assert [(c["function"]["name"], c["function"]["arguments"]) for c in parsed] == [
                    (item["name"], item["arguments"]) for item in functions
                ]
                said = "".join(part["text"] for item in call if item["type"] == "message" for part in item["content"])
                assert (content or "") == said
        assert (
            checked == sum(len(SYNONYMS[t["responses_create_params"]["input"][-1]["content"]]) + 1 for t in TASKS) * 4
        )
        assert kept == checked  # 100% of turns
        # Every generation went through the token-in input.
        generations = [request for request in vllm.requests if "prompt" in request]
        assert generations and len(generations) == len(vllm.requests)
        assert all(isinstance(request["prompt"], list) for request in generations)


def test_the_same_stack_re_rendering_each_turn_breaks_the_prefix(tmp_path):
    with collected(
        tmp_path, "+policy_model.responses_api_models.vllm_model.token_exact_turns=false", num_repeats=1
    ) as (
        rows,
        vllm,
    ):
        assert len(rows) == 5
        for row in rows:
            assert row["reward"] == 1.0  # the episodes are fine; only their tokens drifted
            assert row["token_prefix_invariant"] == "broken"
            kept, checked = turns_keeping_the_prefix(model_calls(row))
            assert checked >= 2 and kept == 0
        assert all("messages" in request for request in vllm.requests)
