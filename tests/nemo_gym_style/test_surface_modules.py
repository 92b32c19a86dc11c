"""NeMo Gym's smaller import paths that environments' code and tests use: `nemo_gym.responses_converter`,
`nemo_gym.path_utils`, and the names they import from `nemo_gym.server_utils`."""

from pathlib import Path

import pytest
from openai.types.responses.response import IncompleteDetails

from nemo_gym.openai_utils import NeMoGymChatCompletion, NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.path_utils import failures_path_for
from nemo_gym.prompt import apply_prompt_to_row, load_prompt_config
from nemo_gym.responses_converter import ResponsesConverter, VLLMConverter, split_responses_input_output_items
from nemo_gym.rollouts.store import RolloutStore
from nemo_gym.server_utils import apply_rollout_prefix, rollout_path_prefix

# A row as an instruction-hierarchy environment stores it: instructions, a system turn, history with a tool
# call and its result, and the scored user turn last.
TOOL_ROW = {
    "instructions": "Follow the system prompt.",
    "input": [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "What's the weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "rain"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "It rains.", "annotations": []}]},
        {"role": "user", "content": "Answer in French."},
    ],
    "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": True}],
    "max_output_tokens": 64,
}


def test_responses_request_converts_to_chat_messages_with_calls_paired_to_results() -> None:
    converter = ResponsesConverter(return_token_id_information=False)
    params = converter.responses_to_chat_completion_create_params(
        NeMoGymResponseCreateParamsNonStreaming(**TOOL_ROW, model="test-model")
    )
    roles = [message["role"] for message in params.messages]
    # instructions and the leading system turn are one system message, as chat backends want.
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert params.messages[0]["content"] == "Follow the system prompt.\n\nYou are a careful assistant."
    call_ids = [call["id"] for m in params.messages if m["role"] == "assistant" for call in m.get("tool_calls") or []]
    assert call_ids == [m["tool_call_id"] for m in params.messages if m["role"] == "tool"] == ["call_1"]
    # A plain assistant history turn carries no `tool_calls: []` (OpenAI rejects it).
    assert "tool_calls" not in params.messages[4]
    assert params.max_tokens == 64 and params.model == "test-model"
    assert params.tools == [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "strict": True}}
    ]


def test_required_tool_choice_without_tools_is_refused() -> None:
    converter = VLLMConverter(return_token_id_information=False)
    with pytest.raises(ValueError, match="requires at least one tool"):
        converter.responses_to_chat_completion_create_params({"input": "hi", "tool_choice": "required"})


def test_chat_completion_becomes_a_typed_response_with_reasoning_split_out() -> None:
    completion = NeMoGymChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": "<think>check the weather</think>Let me look.",
                        "tool_calls": [
                            {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
    )
    params = NeMoGymResponseCreateParamsNonStreaming(input="hi", model="policy")
    response = ResponsesConverter(return_token_id_information=False).chat_completion_to_response(params, completion)
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output[0].summary[0].text == "check the weather"
    assert response.output_text == "Let me look."
    assert response.output[2].call_id == "call_9"
    assert response.model == "policy" and response.created_at == 1700000000
    assert response.usage.total_tokens == 12

    # Without the reasoning parser the model's text is kept as written.
    raw = ResponsesConverter(return_token_id_information=False, uses_reasoning_parser=False)
    items = raw.postprocess_assistant_message_dict({"role": "assistant", "content": "<think>a</think>b"})
    assert [item.type for item in items] == ["message"] and items[0].content[0].text == "<think>a</think>b"


def test_chat_messages_back_to_responses_items() -> None:
    converter = ResponsesConverter(return_token_id_information=False)
    items = converter.chat_completions_messages_to_responses_items(
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "out"},
        ]
    )
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]
    prompt, generated = split_responses_input_output_items(items)
    assert [item.type for item in prompt] == ["message"] and len(generated) == 2
    assert split_responses_input_output_items([]) == ([], [])


def test_failures_path_is_the_one_our_collector_writes(tmp_path: Path) -> None:
    output = tmp_path / "run.jsonl"
    assert failures_path_for(output) == tmp_path / "run_failures.jsonl"
    assert failures_path_for(output) == RolloutStore(output).failures_path


def test_rollout_path_prefix_names_the_rollout_only_when_there_is_one() -> None:
    # An environment that calls a model as f"{rollout_path_prefix(rollout_id)}/v1/responses" posts to the
    # plain path when the agent sent no rollout id (ours do not), and to the prefixed one when it did.
    assert rollout_path_prefix(None) == "" and rollout_path_prefix("") == ""
    assert rollout_path_prefix("r7") == "/ng-rollout/r7"
    assert rollout_path_prefix("r7", token_capture=True) == "/ng-rollout/r7/training-token-capture"
    assert apply_rollout_prefix("http://127.0.0.1:9/", "r7") == "http://127.0.0.1:9/ng-rollout/r7"
    assert apply_rollout_prefix("http://127.0.0.1:9", None) == "http://127.0.0.1:9"


def test_incomplete_details_reads_as_an_attribute_and_serialises_unchanged() -> None:
    # indirect_prompt_injection scores a truncated answer 0 through
    # `getattr(body.response.incomplete_details, "reason", None)`, as on the OpenAI SDK's object.
    row = {"id": "r", "output": [], "incomplete_details": {"reason": "max_output_tokens"}}
    response = NeMoGymResponse.model_validate(row)
    assert getattr(response.incomplete_details, "reason", None) == "max_output_tokens"
    assert response.model_dump(mode="json")["incomplete_details"] == {"reason": "max_output_tokens"}
    assert NeMoGymResponse.model_validate({"id": "r"}).incomplete_details is None
    from_sdk = NeMoGymResponse(id="r", incomplete_details=IncompleteDetails(reason="content_filter"))
    assert from_sdk.incomplete_details.reason == "content_filter"


def test_apply_prompt_to_row_fills_the_input_and_keeps_the_rest(tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompt.yaml"
    prompt_file.write_text('system: "Chemistry."\nuser: "Q: {question}"\n')
    row = {"question": "pH of water?", "responses_create_params": {"temperature": 0.2, "input": "old"}}
    prompted = apply_prompt_to_row(row, load_prompt_config(str(prompt_file)))
    assert prompted["responses_create_params"] == {
        "temperature": 0.2,
        "input": [{"role": "system", "content": "Chemistry."}, {"role": "user", "content": "Q: pH of water?"}],
    }
    assert row["responses_create_params"]["input"] == "old" and prompted["question"] == row["question"]


def test_nemo_gyms_prompt_names_and_the_collectors_prompt_files_are_one_thing(tmp_path: Path, monkeypatch) -> None:
    """`nemo_gym.prompt` is a thin entry point onto `nemo_gym.prompt_templates`, which the collector,
    ng_materialize_prompts and data preparation use: one file format, one loader, one way to fill it."""
    import subprocess
    import sys

    from nemo_gym import PARENT_DIR
    from nemo_gym.prompt import PromptConfig, fill_prompt, validate_prompt_compatibility
    from nemo_gym.prompt_templates import PromptTemplate
    from nemo_gym.rollouts.tasks import iter_tasks

    assert PromptConfig is PromptTemplate
    prompt_file = tmp_path / "prompt.yaml"
    prompt_file.write_text('system: "Chemistry."\nuser: "Q: {question}"\n')
    loaded = load_prompt_config(str(prompt_file))
    assert loaded == PromptTemplate.load(prompt_file)[0]
    # What an environment's code gets from fill_prompt is what the collector sends for the same row.
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"question": "pH?", "responses_create_params": {"temperature": 0.1}}\n')
    ((_, row),) = list(iter_tasks(tasks, prompt=loaded))
    assert row["responses_create_params"]["input"] == fill_prompt(loaded, {"question": "pH?"})
    with pytest.raises(KeyError, match="question"):
        fill_prompt(loaded, {"other": 1})
    # NeMo Gym's whole-data-set check before a prompt is applied.
    validate_prompt_compatibility([{"responses_create_params": {}}, {"question": "x"}], loaded)
    with pytest.raises(ValueError, match=r"rows \[1\] already have responses_create_params.input"):
        validate_prompt_compatibility([{"q": 1}, {"responses_create_params": {"input": "hi"}}], loaded)
    # A relative path is found from the project root too (as NeMo Gym finds it), by both names.
    inside = PARENT_DIR / "results" / f"prompt-{tmp_path.name}.yaml"
    inside.parent.mkdir(exist_ok=True)
    inside.write_text('user: "{question}"\n')
    try:
        monkeypatch.chdir(tmp_path)
        relative = str(inside.relative_to(PARENT_DIR))
        assert PromptTemplate.load(relative)[0].user == "{question}" == load_prompt_config(relative).user
    finally:
        inside.unlink()
    # The NeMo Gym entry point stays light for an environment: it does not pull in the collector.
    probe = "import sys, nemo_gym.prompt; print('nemo_gym.rollouts' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
