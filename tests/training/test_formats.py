"""Each trainer format, checked against the token sequence the rows were cut from."""

from __future__ import annotations

import pytest

from nemo_gym.training import FORMATS, to_messages, to_nemo_rl, to_skyrl, to_trl, to_verl
from nemo_gym.training.turns import TokenDataError
from tests.training.rows import BOUNDARIES, FULL_SEQUENCE, MODEL_POSITIONS, log_prob, make_row, without_token_ids

PROMPT_LENGTH = BOUNDARIES[0][0]
RESPONSE_POSITIONS = range(PROMPT_LENGTH, len(FULL_SEQUENCE))
EXPECTED_MASK = [int(position in MODEL_POSITIONS) for position in RESPONSE_POSITIONS]
EXPECTED_LOG_PROBS = [log_prob(p) if p in MODEL_POSITIONS else 0.0 for p in RESPONSE_POSITIONS]


def test_trl_completion_is_everything_after_the_first_prompt_with_env_tokens_masked():
    record = to_trl(make_row(reward=0.75))

    assert record["prompt_ids"] + record["completion_ids"] == FULL_SEQUENCE
    assert record["prompt_ids"] == FULL_SEQUENCE[:PROMPT_LENGTH]
    assert len(record["completion_ids"]) == len(record["env_mask"]) == len(record["logprobs"])
    assert record["env_mask"] == EXPECTED_MASK
    assert record["logprobs"] == pytest.approx(EXPECTED_LOG_PROBS)
    assert record["reward"] == 0.75


def test_verl_response_interleaves_tool_tokens_with_mask_zero_and_counts_turns():
    record = to_verl(make_row(reward=0.5))

    assert record["prompt_ids"] + record["response_ids"] == FULL_SEQUENCE
    assert len(record["response_ids"]) == len(record["response_mask"]) == len(record["response_logprobs"])
    assert record["response_mask"] == EXPECTED_MASK
    assert record["response_logprobs"] == pytest.approx(EXPECTED_LOG_PROBS)
    assert record["reward_score"] == 0.5
    assert record["num_turns"] == 6  # veRL's count: the prompt, 2 tool turns, 3 assistant turns


def test_nemo_rl_message_log_alternates_and_only_assistant_messages_carry_log_probs():
    record = to_nemo_rl(make_row(reward=1.0))
    log = record["message_log"]

    assert [message["role"] for message in log] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert [token for message in log for token in message["token_ids"]] == FULL_SEQUENCE
    for message, (start, end) in zip([m for m in log if m["role"] == "assistant"], BOUNDARIES, strict=True):
        assert message["token_ids"] == FULL_SEQUENCE[start:end]
        assert message["generation_logprobs"] == pytest.approx([log_prob(p) for p in range(start, end)])
    assert all("generation_logprobs" not in message for message in log if message["role"] != "assistant")
    assert record["reward"] == 1.0


def test_skyrl_sample_carries_stop_reason_and_trajectory_id():
    record = to_skyrl(make_row(task=3, rollout=1, reward=0.25, episode_end="max_steps"))

    assert record["prompt_token_ids"] + record["response_ids"] == FULL_SEQUENCE
    assert len(record["response_ids"]) == len(record["loss_masks"]) == len(record["rollout_logprobs"])
    assert record["loss_masks"] == EXPECTED_MASK
    assert record["rollout_logprobs"] == pytest.approx(EXPECTED_LOG_PROBS)
    assert record["rewards"] == 0.25
    assert record["stop_reasons"] == "stop" and record["episode_end"] == "max_steps"
    assert record["trajectory_ids"] == {"instance_id": "3", "repetition_id": 1}


def test_messages_are_plain_chat_with_tool_results_and_need_no_token_ids():
    record = to_messages(without_token_ids(make_row(reward=1.0)))
    messages = record["messages"]

    assert [message["role"] for message in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert messages[2]["tool_calls"][0]["function"]["name"] == "weather"
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "20"}
    assert messages[-1]["content"] == "It is 20."
    assert not any("prompt_token_ids" in message for message in messages)
    assert record["reward"] == 1.0


@pytest.mark.parametrize("name", ["trl", "verl", "nemo_rl", "skyrl"])
def test_token_formats_refuse_a_row_without_token_ids(name):
    with pytest.raises(TokenDataError, match="no token ids"):
        FORMATS[name](without_token_ids(make_row()))


def test_a_partial_bundle_names_the_item_and_what_it_lacks():
    row = make_row()
    del row["response"]["output"][2]["generation_log_probs"]
    with pytest.raises(TokenDataError, match=r"output\[2\].*lacks generation_log_probs"):
        to_verl(row)


def test_a_retokenized_turn_breaks_the_prefix_and_is_named():
    row = make_row()
    # The chat template rendered the first tool call differently when it built the second prompt.
    row["response"]["output"][2]["prompt_token_ids"][PROMPT_LENGTH + 1] = 99999
    with pytest.raises(TokenDataError, match="turn 2's prompt_token_ids do not start with turn 1's"):
        to_trl(row)


def test_the_empty_turn_of_a_full_context_is_skipped_not_a_broken_prefix():
    # vllm_model answers a context overflow with an empty turn whose token bundle is empty on both sides.
    row = make_row(episode_end="context_limit")
    row["response"]["output"].append(
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "", "annotations": []}],
            "prompt_token_ids": [],
            "generation_token_ids": [],
            "generation_log_probs": [],
        }
    )
    record = to_trl(row)
    assert record["prompt_ids"] + record["completion_ids"] == FULL_SEQUENCE
    assert to_skyrl(row)["stop_reasons"] == "length" and to_skyrl(row)["episode_end"] == "context_limit"


def with_last_turn(**fields) -> dict:
    """A good row whose final model call (output item 4) has `fields` replaced."""
    row = make_row()
    row["response"]["output"][4].update(fields)
    return row


GENERATION = FULL_SEQUENCE[BOUNDARIES[2][0] : BOUNDARIES[2][1]]
BAD_TOKEN_FIELDS = [
    # (fields of output item 4, the path named, the value shown)
    ({"generation_token_ids": ["<script>", None, *GENERATION[2:]]}, "generation_token_ids[0]", "'<script>'"),
    ({"generation_token_ids": [True, False, *GENERATION[2:]]}, "generation_token_ids[0]", "True"),
    ({"generation_token_ids": "67", "generation_log_probs": [-0.1, -0.2]}, "generation_token_ids", "'67'"),
    ({"generation_token_ids": [*GENERATION[:3], -5, *GENERATION[4:]]}, "generation_token_ids[3]", "-5"),
    ({"generation_token_ids": [*GENERATION[:-1], 7.0]}, "generation_token_ids[7]", "7.0"),
    ({"prompt_token_ids": [*FULL_SEQUENCE[:10], "11"]}, "prompt_token_ids[10]", "'11'"),
    ({"generation_log_probs": ["x", {"y": 1}, *[-0.1] * 6]}, "generation_log_probs[0]", "'x'"),
    ({"generation_log_probs": [-0.1, float("nan"), *[-0.1] * 6]}, "generation_log_probs[1]", "nan"),
    ({"generation_log_probs": [False, *[-0.1] * 7]}, "generation_log_probs[0]", "False"),
    ({"generation_log_probs": {"0": -0.1}}, "generation_log_probs", "{'0': -0.1}"),
]


@pytest.mark.parametrize("name", ["trl", "verl", "nemo_rl", "skyrl"])
@pytest.mark.parametrize(("fields", "path", "shown"), BAD_TOKEN_FIELDS)
def test_every_token_format_refuses_ids_and_log_probs_of_the_wrong_type_naming_the_field(name, fields, path, shown):
    # Before, `"67"` became ["6", "7"], strings and nulls were written as token ids and booleans passed as ints.
    with pytest.raises(TokenDataError) as refused:
        FORMATS[name](with_last_turn(**fields))
    assert refused.value.field == f"response.output[4].{path}"
    assert str(refused.value).startswith(f"response.output[4].{path}: must be ")
    assert str(refused.value).endswith(f"got {shown}")


def test_integer_log_probs_are_numbers_and_come_out_as_floats():
    record = to_trl(with_last_turn(generation_log_probs=[0, -1, 0, 0, 0, 0, 0, 0]))
    assert record["logprobs"][-8:] == [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert all(type(value) is float for value in record["logprobs"])
    assert all(type(value) is int for value in record["prompt_ids"] + record["completion_ids"])


def test_an_output_that_is_not_a_list_is_named():
    row = make_row()
    row["response"]["output"] = {"0": row["response"]["output"][0]}
    with pytest.raises(TokenDataError, match=r"^response\.output: must be a list"):
        to_skyrl(row)
