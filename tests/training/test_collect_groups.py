"""`collect_groups` and TRL's `rollout_func` against a real stack: whole groups in the batch's order,
token-exact records, a failed member retried, a group that stays broken named."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from nemo_gym.errors import IncompleteGroupsError, InputDataError, TrainingDataError
from nemo_gym.rollouts import CollectionPolicy
from nemo_gym.rollouts.quality import is_cut_off
from nemo_gym.training import (
    NemoGymRolloutFunc,
    collect_groups,
    collect_groups_sync,
    environment_reward,
    prompt_messages,
    trl_dataset,
)
from tests.training.conftest import weather_task
from tests.training.token_upstream import render

pytestmark = pytest.mark.slow
FAST_RETRY = CollectionPolicy(concurrency=4, max_attempts=2, backoff_initial_s=0.0, backoff_max_s=0.0)


def assert_token_exact(record: dict, row: dict) -> None:
    """The record is the whole episode as one sequence: prompt, then model and tool tokens, masked."""
    params = row["responses_create_params"]
    everything = render(params["input"]) + render(row["response"]["output"])
    assert bytes(record["prompt_ids"]) == render(params["input"])
    assert bytes(record["prompt_ids"] + record["completion_ids"]) == everything
    assert len(record["completion_ids"]) == len(record["logprobs"]) == len(record["env_mask"])
    model_bytes = bytes(t for t, m in zip(record["completion_ids"], record["env_mask"], strict=True) if m)
    assert model_bytes == b"".join(
        render([item]) for item in row["response"]["output"] if item["type"] != "function_call_output"
    )
    assert record["reward"] == row["reward"]


def test_groups_come_back_whole_in_the_batch_order_as_trl_records(stack):
    cities = ["Paris", "Oslo", "Lima"]
    groups = collect_groups_sync(
        stack.head_url, stack.agent, [weather_task(c) for c in cities], 3, format="trl", policy=FAST_RETRY
    )
    assert [group.position for group in groups] == [0, 1, 2]
    for group, city in zip(groups, cities, strict=True):
        assert group.complete and len(group.records) == 3 and not group.failures
        assert [row["_ng_rollout_index"] for row in group.rows] == [0, 1, 2]
        assert all(city in row["responses_create_params"]["input"][-1]["content"] for row in group.rows)
        for record, row in zip(group.records, group.rows, strict=True):
            assert_token_exact(record, row)


def test_a_member_that_fails_once_is_retried_and_its_group_is_whole(stack):
    stack.upstream.fail_next["Quito"] = 1
    [group] = collect_groups_sync(stack.head_url, stack.agent, [weather_task("Quito")], 2, policy=FAST_RETRY)
    assert group.complete and len(group.records) == 2
    assert stack.upstream.fail_next["Quito"] == 0  # the failure happened, and the retry covered it


def test_a_group_still_broken_after_every_attempt_is_named_with_its_error(stack):
    stack.upstream.fail_next["Hanoi"] = 10**6
    tasks = [weather_task("Cairo"), weather_task("Hanoi")]
    with pytest.raises(IncompleteGroupsError) as caught:
        collect_groups_sync(stack.head_url, stack.agent, tasks, 2, format="messages", policy=FAST_RETRY)
    message = str(caught.value)
    assert message.startswith("1 of 2 groups are incomplete after 2 attempt(s) per rollout")
    assert 'task 1 ("what\'s it like in Hanoi?")' in message and "rollout 0: HTTPStatusError" in message
    complete, broken = caught.value.groups
    assert complete.complete and len(complete.records) == 2 and complete.records[0]["messages"]
    assert not broken.complete and sorted(broken.failures) == [0, 1] and broken.records == []

    # Asked to, it returns the incomplete group marked instead.
    groups = asyncio.run(
        collect_groups(
            stack.head_url, stack.agent, tasks, 2, format="messages", policy=FAST_RETRY, allow_incomplete=True
        )
    )
    assert [group.complete for group in groups] == [True, False]


def test_rows_without_token_ids_are_refused_for_a_token_format_naming_the_task(stack):
    stack.upstream.server.mangle = None  # the model server gives no token ids now
    try:
        with pytest.raises(TrainingDataError, match=r"task 0 rollout \d cannot be written as verl: no token ids"):
            collect_groups_sync(stack.head_url, stack.agent, [weather_task("Lima")], 2, format="verl")
    finally:
        stack.upstream.server.mangle = stack.upstream.attach_tokens


class StandInTrainer:
    """Only what GRPOTrainer exposes and the rollout function reads: `model.training`, `num_generations`,
    `num_generations_eval` (TRL's own `_generate` reads the same three to size a batch)."""

    def __init__(self, num_generations: int, training: bool = True, num_generations_eval: int | None = None):
        self.model = SimpleNamespace(training=training)
        self.num_generations = num_generations
        self.num_generations_eval = num_generations_eval or num_generations


def test_trl_rollout_func_returns_one_completion_per_prompt_in_order_with_rewards_for_the_reward_func(stack):
    tasks = [weather_task(city) for city in ("Paris", "Oslo", "Lima")]
    dataset = trl_dataset(tasks)
    rollout_func = NemoGymRolloutFunc(stack.head_url, stack.agent, tasks, policy=FAST_RETRY)
    # What RepeatSampler hands over with num_generations=2: each prompt twice in a row (Lima, Paris here).
    prompts = [dataset[2]["prompt"]] * 2 + [dataset[0]["prompt"]] * 2

    output = rollout_func(prompts, StandInTrainer(num_generations=2))

    assert {"prompt_ids", "completion_ids", "logprobs", "env_mask", "env_reward"} <= output.keys()
    assert all(len(values) == 4 for values in output.values())
    decoded = [bytes(ids).decode() for ids in output["prompt_ids"]]
    assert ["Lima" in text for text in decoded] == [True, True, False, False]
    assert ["Paris" in text for text in decoded] == [False, False, True, True]
    for ids, mask, logprobs in zip(output["completion_ids"], output["env_mask"], output["logprobs"], strict=True):
        assert len(ids) == len(mask) == len(logprobs) and 0 in mask and 1 in mask
    assert output["episode_end"] == ["completed"] * 4
    # TRL copies extra keys into each input and calls reward funcs with them as keyword arguments.
    assert environment_reward(completions=[None] * 4, env_reward=output["env_reward"]) == output["env_reward"]


def test_trl_rollout_func_sizes_groups_by_the_trainers_mode(stack):
    tasks = [weather_task("Paris")]
    prompt = trl_dataset(tasks)[0]["prompt"]
    rollout_func = NemoGymRolloutFunc(stack.head_url, stack.agent, tasks, policy=FAST_RETRY)
    # Evaluation uses num_generations_eval: 3 prompts are one group of 3, not a group of 2 and a stray one.
    output = rollout_func([prompt] * 3, StandInTrainer(num_generations=2, training=False, num_generations_eval=3))
    assert len(output["prompt_ids"]) == 3


def test_trl_rollout_func_refuses_a_prompt_it_has_no_task_for_and_ambiguous_tasks(stack):
    rollout_func = NemoGymRolloutFunc(stack.head_url, stack.agent, [weather_task("Paris")])
    with pytest.raises(InputDataError, match="none of the 1 tasks"):
        rollout_func([prompt_messages(weather_task("Oslo"))], StandInTrainer(num_generations=1))
    twin = weather_task("Paris") | {"expected": "different verify data"}
    with pytest.raises(InputDataError, match="tasks 0 and 1 have the same prompt"):
        NemoGymRolloutFunc(stack.head_url, stack.agent, [weather_task("Paris"), twin])


def test_trl_rollout_func_raises_when_a_group_cannot_be_completed(stack):
    stack.upstream.fail_next["Hanoi"] = 10**6
    tasks = [weather_task("Hanoi")]
    rollout_func = NemoGymRolloutFunc(stack.head_url, stack.agent, tasks, policy=FAST_RETRY)
    with pytest.raises(IncompleteGroupsError, match="Hanoi"):
        rollout_func([trl_dataset(tasks)[0]["prompt"]] * 2, StandInTrainer(num_generations=2))


def test_a_full_context_reaches_the_row_as_context_limit_and_is_cut_off(stack):
    stack.upstream.context_full_after_tool.add("Lima")
    [group] = collect_groups_sync(stack.head_url, stack.agent, [weather_task("Lima")], 1, format="trl")
    [row] = group.rows
    assert row["episode_end"] == "context_limit"
    assert row["response"]["incomplete_details"] == {"reason": "context_limit"}
    [record] = group.records  # the empty last turn adds nothing: the sequence ends after the tool call
    assert bytes(record["prompt_ids"] + record["completion_ids"]) == render(
        row["responses_create_params"]["input"]
    ) + render(row["response"]["output"][:1])
    assert is_cut_off(row)
