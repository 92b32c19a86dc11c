"""Asking for token ids does not change what the model sees (issue 18 part 7), on real rollouts.

`ng_run` (example_single_tool_call + local_model with `return_token_id_information: true`) and
`ng_collect_rollouts`; then, in every row, the forced first call's sampled tokens are the `<tool_call>`
text the server renders for that call, and the second call's prompt, continued from the first call's
ids, reads exactly as the chat template renders the same conversation without ids. Before, it held
the bare JSON the grammar admitted, which the model kept copying until max_steps.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from nemo_gym.conversion import responses_to_chat_params
from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.training import FORMATS
from responses_api_models.local_model.engine import LocalChatEngine
from responses_api_models.local_model.tests.test_token_exact_rollouts import TOKEN_ID_KEYS, model_calls
from responses_api_models.local_model.tool_prompt import render_tools_into_messages
from tests.conftest import cli

pytest.importorskip("xllamacpp", reason="the local model needs `pip install -e .[local]`")

ENV = "example_single_tool_call"
END_OF_TURN = "<|im_end|>"


def without_ids(items: list[dict]) -> list[dict]:
    return [
        {key: value for key, value in item.items() if key not in (*TOKEN_ID_KEYS, "generation_constrained")}
        for item in items
    ]


def re_rendered_prompt(engine: LocalChatEngine, row: dict, history: list[dict]) -> str:
    """The prompt text the server builds for `history` without token ids (template rendering)."""
    params = {**row["responses_create_params"], "input": list(row["responses_create_params"]["input"]) + history}
    chat = responses_to_chat_params(params)
    rendered = render_tools_into_messages(chat["messages"], chat.get("tools") or [], chat.get("tool_choice", "auto"))
    return asyncio.run(engine.detokenize(asyncio.run(engine.tokenize_chat(rendered))))


@pytest.mark.slow
@pytest.mark.local_model
def test_the_second_prompt_continued_from_ids_is_the_template_rendering_of_the_conversation(tmp_path):
    head_port = free_port()
    output = tmp_path / "rollouts.jsonl"
    with NgRunProcess(
        [f"resources_servers/{ENV}/configs/{ENV}.yaml", "responses_api_models/local_model/configs/local_model.yaml"],
        f"+head_server.port={head_port}",
        "+policy_model.responses_api_models.local_model.return_token_id_information=true",
        "+policy_model.responses_api_models.local_model.n_ctx=2048",
        "+policy_model.responses_api_models.local_model.n_threads=1",
        f"+{ENV}_simple_agent.responses_api_agents.simple_agent.max_steps=2",  # the forced call and one more
    ):
        result = cli(
            "ng_collect_rollouts",
            f"+head_server.port={head_port}",
            f"+agent_name={ENV}_simple_agent",
            f"+input_jsonl_fpath=resources_servers/{ENV}/data/example.jsonl",
            f"+output_jsonl_fpath={output}",
            "+num_samples_in_parallel=2",
            "+responses_create_params.max_output_tokens=96",
            timeout=900,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 5

    with LocalChatEngine(n_ctx=64, n_parallel=1, n_threads=1) as engine:
        for row in rows:
            where = f"task {row['_ng_task_index']}"
            outputs = row["response"]["output"]
            first, second = model_calls(outputs)[:2]
            [call] = first
            assert call["type"] == "function_call" and call["generation_constrained"] is True, where
            # The forced call's tokens are the call as the conversation shows it afterwards.
            history = without_ids(outputs[: outputs.index(second[0])])
            shown = re_rendered_prompt(engine, row, history)
            sampled = asyncio.run(engine.detokenize(call["generation_token_ids"]))
            assert sampled.endswith(END_OF_TURN) and sampled.startswith("<tool_call>{"), where
            assert f"<|im_start|>assistant\n{sampled}\n" in shown, where
            # The second prompt, built on the first call's ids, is that same text.
            continued = asyncio.run(engine.detokenize(second[-1]["prompt_token_ids"]))
            assert continued == shown, where
            # Sampled under the grammar, the forced call's tokens are not trained on (issue 18 part 5): mask 0
            # in every token export; the free second call's tokens keep mask 1.
            generated = len(call["generation_token_ids"])
            for name, mask_key in (("trl", "env_mask"), ("verl", "response_mask"), ("skyrl", "loss_masks")):
                mask = FORMATS[name](row)[mask_key]
                assert mask[:generated] == [0] * generated and mask[-1] == 1, (where, name)
