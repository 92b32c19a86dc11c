"""Each trainer's field means what that trainer means by it, checked against the trainer's released contract.

SkyRL (skyrl 0.3/0.4, `skyrl/train`): `validate_generator_output` wants every per-sample list as long as
`response_ids`, each loss mask and log-prob list as long as its response, flat float rewards;
`apply_overlong_filtering` zeroes a sample's whole loss mask and `zero_reward_on_non_stop` its reward unless
its stop reason is exactly "stop"; `TrajectoryID` is a dataclass (instance_id: str, repetition_id: int)
whose `.instance_id` the trainer reads as the GRPO group. SkyRL's own code does not import on our Python 3.11
(0.4 needs 3.12, 0.3 declares a `typing.TypedDict` that pydantic refuses before 3.12), so the rules are
restated here from that code, each in one line.
NeMo RL (`nemo_rl/environments/nemo_gym.py`, `experience/rollouts.py`): non-trained tokens are `user`
messages, one before each assistant turn, and `turn_count` counts the `user` messages.
veRL (`experimental/agent_loop`): `num_turns` counts user, assistant and tool turns, the prompt included.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nemo_gym.training import to_nemo_rl, to_skyrl, to_verl
from nemo_gym.training.turns import TokenDataError
from tests.training.rows import BOUNDARIES, FULL_SEQUENCE, log_prob, make_row

MODEL_TOKENS = sum(end - start for start, end in BOUNDARIES)


@dataclass
class TrajectoryID:
    """SkyRL's shape (skyrl/train/generators/base.py)."""

    instance_id: str
    repetition_id: int


def skyrl_batch(records: list[dict]) -> dict:
    """Per-sample records -> SkyRL's GeneratorOutput (one list per field), as a loader would build it."""
    keys = ("prompt_token_ids", "response_ids", "rewards", "loss_masks", "rollout_logprobs", "stop_reasons")
    batch = {key: [record[key] for record in records] for key in keys}
    batch["trajectory_ids"] = [TrajectoryID(**record["trajectory_ids"]) for record in records]
    return batch


def validate_like_skyrl(batch: dict, num_prompts: int) -> None:
    """validate_generator_output's checks (non-step-wise)."""
    responses = batch["response_ids"]
    assert responses and len(responses) == num_prompts == len(batch["prompt_token_ids"])
    for key in ("loss_masks", "rewards", "rollout_logprobs", "stop_reasons", "trajectory_ids"):
        assert len(batch[key]) == len(responses), key
    for response, mask, logprobs in zip(responses, batch["loss_masks"], batch["rollout_logprobs"], strict=True):
        assert len(response) == len(mask) == len(logprobs)
    assert sum(sum(mask) for mask in batch["loss_masks"]) > 0
    assert all(isinstance(reward, float) for reward in batch["rewards"])


def overlong_filtering(loss_masks: list[list[int]], stop_reasons: list[str]) -> list[list[int]]:
    """apply_overlong_filtering: a sample whose stop reason is not "stop" keeps no trainable token."""
    return [mask[:] if reason == "stop" else [0] * len(mask) for mask, reason in zip(loss_masks, stop_reasons)]


def zero_reward_on_non_stop(rewards: list[float], stop_reasons: list[str]) -> list[float]:
    return [reward if reason == "stop" else 0.0 for reward, reason in zip(rewards, stop_reasons, strict=True)]


ENDINGS = ["completed", "max_steps", "max_output_tokens", "context_limit", "deadline"]


def test_skyrl_records_pass_its_validation_and_its_filters_keep_a_clean_episode():
    # Before, stop_reasons held "completed", so SkyRL's filters emptied and zeroed even the clean episode.
    rows = [make_row(task=0, rollout=index, reward=0.75, episode_end=ending) for index, ending in enumerate(ENDINGS)]
    batch = skyrl_batch([to_skyrl(row) for row in rows])
    validate_like_skyrl(batch, num_prompts=len(rows))

    masks = overlong_filtering(batch["loss_masks"], batch["stop_reasons"])
    rewards = zero_reward_on_non_stop(batch["rewards"], batch["stop_reasons"])
    kept = dict(zip(ENDINGS, zip((sum(mask) for mask in masks), rewards, strict=True), strict=True))
    assert kept["completed"] == (MODEL_TOKENS, 0.75)
    # At max_steps every generation ended on its own: SkyRL's own loop says "stop" when its env ends at max_turns.
    assert kept["max_steps"] == (MODEL_TOKENS, 0.75)
    # A generation cut by a token limit, or abandoned at the deadline, is what SkyRL's filters exist for.
    assert kept["max_output_tokens"] == kept["context_limit"] == kept["deadline"] == (0, 0.0)
    assert batch["stop_reasons"] == ["stop", "stop", "length", "length", "abort"]


def test_skyrl_keeps_our_episode_end_beside_its_stop_reason():
    record = to_skyrl(make_row(episode_end="max_steps"))
    assert (record["stop_reasons"], record["episode_end"]) == ("stop", "max_steps")


def test_skyrl_trajectory_id_builds_its_dataclass_whose_instance_id_is_the_group():
    # Before, "3_1": SkyRL's trainer reads `.instance_id` off each trajectory id (AttributeError on a str).
    records = [to_skyrl(make_row(task=3, rollout=rollout)) for rollout in (1, 0)]
    ids = skyrl_batch(records)["trajectory_ids"]
    assert ids == [TrajectoryID("3", 1), TrajectoryID("3", 0)]
    assert {tid.instance_id for tid in ids} == {"3"}
    assert f"{ids[0].instance_id}_{ids[0].repetition_id}" == "3_1"  # TrajectoryID.to_string()


@pytest.mark.parametrize("missing", ["_ng_task_index", "_ng_rollout_index"])
def test_skyrl_refuses_a_row_without_the_index_its_trajectory_id_needs(missing):
    row = make_row()
    del row[missing]
    with pytest.raises(TokenDataError, match=f"{missing}: must be a non-negative integer"):
        to_skyrl(row)


def test_nemo_rl_labels_environment_tokens_user_so_its_turn_count_is_the_model_calls():
    # Before, environment tokens were `tool`, so NeMo RL's turn_count (user messages) read 1 for every row.
    log = to_nemo_rl(make_row())["message_log"]
    assert [message["role"] for message in log] == ["user", "assistant"] * 3
    assert sum(1 for message in log if message["role"] == "user") == len(BOUNDARIES)
    assert [token for message in log for token in message["token_ids"]] == FULL_SEQUENCE
    assert [message["token_ids"] for message in log if message["role"] == "user"] == [
        FULL_SEQUENCE[:22],
        FULL_SEQUENCE[29:43],
        FULL_SEQUENCE[50:63],
    ]


def back_to_back_row() -> dict:
    """Model call 2 follows call 1 with no environment tokens between them (call 1's tokens run to 43)."""
    row = make_row()
    output = row["response"]["output"]
    output[0].update(
        generation_token_ids=FULL_SEQUENCE[22:43], generation_log_probs=[log_prob(p) for p in range(22, 43)]
    )
    output[2].update(prompt_token_ids=FULL_SEQUENCE[:43])
    return row


def test_nemo_rl_puts_an_empty_user_message_between_back_to_back_model_calls():
    log = to_nemo_rl(back_to_back_row())["message_log"]
    assert [message["role"] for message in log] == ["user", "assistant"] * 3
    assert log[2]["token_ids"] == []
    assert [token for message in log for token in message["token_ids"]] == FULL_SEQUENCE


def test_verl_num_turns_counts_prompt_tool_and_assistant_turns_and_keeps_model_calls_beside():
    # Before, num_turns was 3 (model calls only); veRL's tool agent loop counts user + assistant + 1.
    record = to_verl(make_row())
    assert (record["num_turns"], record["num_model_calls"]) == (6, 3)
    assert to_verl(back_to_back_row())["num_turns"] == 5


def test_verl_single_turn_rollout_is_two_turns_as_in_verl():
    row = make_row()
    row["response"]["output"] = row["response"]["output"][4:]  # the final answer alone, its prompt = bundle(2)'s
    assert (to_verl(row)["num_turns"], to_verl(row)["num_model_calls"]) == (2, 1)
