"""TRL's GRPOTrainer `rollout_func`, with the rollouts run by our stack (agent, environment, model).

    from nemo_gym.training import NemoGymRolloutFunc, environment_reward, trl_dataset

    rollout_func = NemoGymRolloutFunc(head_url, "my_env_simple_agent", tasks)
    trainer = GRPOTrainer(model=policy, reward_funcs=[environment_reward], train_dataset=Dataset.from_list(
                          trl_dataset(tasks)), rollout_func=rollout_func, args=GRPOConfig(num_generations=4, ...))

What TRL 1.16 hands over and expects (read from `GRPOTrainer._generate`, `_generate_and_score_completions`
and `_calculate_rewards`, trl/trainer/grpo_trainer.py):
  * `rollout_func(prompts, trainer)` gets this process's `inputs[i]["prompt"]`, deep-copied. Its sampler
    (`RepeatSampler`, mini_repeat_count=num_generations) has already repeated every dataset prompt
    `num_generations` times in a row, so `prompts` holds each prompt once per completion wanted. A chat
    prompt is a list of {"role", "content"} messages; a plain one a string.
  * It returns a dict of lists with one entry per entry of `prompts`, same order: `prompt_ids`,
    `completion_ids`, `logprobs` (one float per completion token) are required; `env_mask` (1 = model
    token, 0 = tool/environment token) is taken as the completion's tool mask; every other key is
    copied into `inputs[i][key]` and so reaches the reward functions as a keyword argument.
  * Rewards come from `reward_funcs` (at least one): `environment_reward` hands back the reward the
    environment's verify gave, carried under `env_reward`. Advantages are normalized over each run of
    `num_generations` consecutive completions, which is why a group must never lose a member.

A prompt is only messages, so the task behind it (tools, verify data) is found by its prompt: build the
dataset with `trl_dataset(tasks)` and give the same tasks to `NemoGymRolloutFunc`. Two different tasks
with the same prompt cannot be told apart and are refused when the function is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from nemo_gym.errors import IncompleteGroupsError, InputDataError
from nemo_gym.rollouts.collector import CollectionPolicy, RolloutCollector
from nemo_gym.training.collect import DEFAULT_POLICY, collect_group_runs, describe_incomplete

Row = dict[str, Any]
ENV_REWARD_KEY = "env_reward"
EPISODE_END_KEY = "episode_end"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Responses content parts: input_text / output_text
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


def prompt_messages(task: Row) -> list[dict[str, str]]:
    """The task's prompt as TRL's chat messages: its input's messages as {"role", "content"} text.
    Only these two keys: `datasets` stores rows as Arrow structs, which would add missing keys as None."""
    params = task.get("responses_create_params") or {}
    prompt = params.get("input")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = []
    for item in prompt or []:
        if isinstance(item, dict) and item.get("type", "message") == "message" and "role" in item:
            messages.append({"role": str(item["role"]), "content": _text(item.get("content"))})
    return messages


def prompt_key(prompt: Any) -> bytes:
    """What identifies a prompt however TRL carried it: role and text of each message, or the string."""
    if isinstance(prompt, str):
        return orjson.dumps(prompt)
    return orjson.dumps([[str(message.get("role")), _text(message.get("content"))] for message in prompt])


def trl_dataset(tasks: Sequence[Row]) -> list[Row]:
    """Rows for `datasets.Dataset.from_list`: `prompt` (chat messages) and `task_index`."""
    return [{"prompt": prompt_messages(task), "task_index": index} for index, task in enumerate(tasks)]


def environment_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """A TRL reward function: the reward the environment gave each completion (`env_reward`)."""
    rewards = kwargs.get(ENV_REWARD_KEY)
    if rewards is None or len(rewards) != len(completions):
        raise ValueError(
            f"environment_reward needs `{ENV_REWARD_KEY}` (one per completion) from NemoGymRolloutFunc; got "
            f"{None if rewards is None else len(rewards)} for {len(completions)} completions"
        )
    return [float(reward) for reward in rewards]


class NemoGymRolloutFunc:
    """`rollout_func(prompts, trainer) -> dict` for TRL's GRPOTrainer.

    Reads from the trainer only what TRL's own generation reads: `model.training` to tell a training
    batch from an evaluation one, and `num_generations` / `num_generations_eval` for the group size.
    Each run of equal consecutive prompts is cut into groups of that size (a shorter last group is a
    group split across processes); every group is collected whole or the call raises
    IncompleteGroupsError naming the tasks, since TRL cannot train on a batch with a missing completion.
    """

    def __init__(
        self,
        head_url: str,
        agent_name: str,
        tasks: Sequence[Row],
        *,
        policy: CollectionPolicy = DEFAULT_POLICY,
        overrides: Row | None = None,
        train_constrained_tokens: bool = False,
    ):
        self.head_url, self.agent_name, self.policy, self.overrides = head_url, agent_name, policy, overrides
        self.train_constrained_tokens = train_constrained_tokens  # else grammar-sampled tokens get env_mask 0
        self._tasks: dict[bytes, Row] = {}
        owner: dict[bytes, int] = {}
        for index, task in enumerate(tasks):
            key = prompt_key(prompt_messages(task))
            if key in self._tasks and self._tasks[key] != task:
                raise InputDataError(
                    f"tasks {owner[key]} and {index} have the same prompt but differ; the rollout function finds "
                    f"a task by its prompt, so make the prompts differ or drop one",
                    path="<tasks>",
                    line=index + 1,
                )
            self._tasks.setdefault(key, task)
            owner.setdefault(key, index)
        self.calls = 0

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        training = bool(trainer.model.training)
        size = trainer.num_generations if training else (trainer.num_generations_eval or trainer.num_generations)
        runs = self._groups_of(prompts, int(size))
        groups = asyncio.run(self._collect(runs))
        if not all(group.complete for group in groups):
            raise IncompleteGroupsError(describe_incomplete(groups, self.policy.max_attempts), groups=groups)
        self.calls += 1

        result: dict[str, list[Any]] = {
            key: [] for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask", ENV_REWARD_KEY, EPISODE_END_KEY)
        }
        for group in groups:
            for row, record in zip(group.rows, group.records, strict=True):
                for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask"):
                    result[key].append(record[key])
                result[ENV_REWARD_KEY].append(record["reward"])
                result[EPISODE_END_KEY].append(row.get("episode_end", "completed"))
        assert len(result["prompt_ids"]) == len(prompts)
        return result

    def _groups_of(self, prompts: list[Any], size: int) -> list[tuple[Row, int]]:
        runs: list[tuple[Row, int]] = []
        last_key: bytes | None = None
        for prompt in prompts:
            key = prompt_key(prompt)
            task = self._tasks.get(key)
            if task is None:
                preview = key.decode()[:120]
                raise InputDataError(
                    f"a prompt TRL passed is none of the {len(self._tasks)} tasks this rollout function was given "
                    f"({preview}); build the dataset with nemo_gym.training.trl_dataset(tasks) from the same tasks",
                    path="<prompts>",
                )
            if runs and key == last_key and runs[-1][1] < size:
                runs[-1] = (task, runs[-1][1] + 1)
            else:
                runs.append((task, 1))
            last_key = key
        return runs

    async def _collect(self, runs: list[tuple[Row, int]]) -> list[Any]:
        async with RolloutCollector.connect(self.head_url, self.agent_name, self.policy) as collector:
            return await collect_group_runs(
                collector,
                runs,
                format="trl",
                overrides=self.overrides,
                train_constrained_tokens=self.train_constrained_tokens,
            )
