"""One stored rollout row -> one record in a trainer's own field names (see README "Training").

Every function is pure: a row in, a JSON-ready dict out, TokenDataError when the row cannot be
expressed (no token ids, broken prefix, no reward). Tokens a model call sampled under a grammar
(`generation_constrained`) get mask 0 in every token format unless `train_constrained=True`: their
recorded log probs are not those of the distribution they were drawn from.
"""

from __future__ import annotations

from typing import Any, Protocol

from nemo_gym.conversion import responses_to_chat_params
from nemo_gym.errors import InputError
from nemo_gym.rollouts.quality import episode_end
from nemo_gym.training.turns import TokenDataError, token_sequence

Row = dict[str, Any]


def reward_of(row: Row) -> float:
    reward = row.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        raise TokenDataError(f"reward: must be a number, got {reward!r}", field="reward")
    return float(reward)


def group_fields(row: Row) -> Row:
    """The row's group (its task) and place in it, under our own names, on every token record: a trainer
    that groups by position gets them to check the order by, one that groups by id (veRL) copies them."""
    return {"_ng_task_index": row.get("_ng_task_index"), "_ng_rollout_index": row.get("_ng_rollout_index")}


def group_uid(row: Row) -> str | None:
    """veRL's group id (`non_tensor_batch["uid"]`, compared by equality): the task index as a string."""
    task = row.get("_ng_task_index")
    return None if task is None else str(task)


def to_trl(row: Row, *, train_constrained: bool = False) -> Row:
    """TRL GRPOTrainer `rollout_func` fields: the completion is every token after the first prompt."""
    sequence = token_sequence(row, train_constrained=train_constrained)
    return {
        "prompt_ids": sequence.prompt_ids,
        "completion_ids": sequence.response_ids,
        "logprobs": sequence.response_log_probs,
        "env_mask": sequence.response_mask,
        "reward": reward_of(row),
        **group_fields(row),
    }


def to_verl(row: Row, *, train_constrained: bool = False) -> Row:
    """veRL agent-loop output: tool tokens inside the response with mask 0.

    `num_turns` is veRL's count of chat turns, user + assistant + tool: the first prompt, each model call and
    each run of environment tokens between calls (its tool agent loop's `user_turns + assistant_turns + 1`; a
    single-turn rollout is 2). Our count of model calls stays beside it as `num_model_calls`."""
    sequence = token_sequence(row, train_constrained=train_constrained)
    environment_turns = sum(1 for segment in sequence.segments if not segment.is_model)
    return {
        "prompt_ids": sequence.prompt_ids,
        "response_ids": sequence.response_ids,
        "response_mask": sequence.response_mask,
        "response_logprobs": sequence.response_log_probs,
        "reward_score": reward_of(row),
        "num_turns": 1 + environment_turns + sequence.num_turns,
        "num_model_calls": sequence.num_turns,
        # AgentLoopOutput.extra_fields become DataProto.non_tensor_batch columns: GRPO groups by its "uid".
        "extra_fields": {"uid": group_uid(row)},
        **group_fields(row),
    }


def to_nemo_rl(row: Row, *, train_constrained: bool = False) -> Row:
    """NeMo RL message log as its NeMo Gym environment builds one: before each assistant turn a `user` message
    holding the tokens the prompt gained since the last turn (the first prompt, then what the environment added:
    tool results, user turns; empty when nothing was added), so its `turn_count` (user messages) is the number
    of model calls. NeMo RL knows two roles, trained (`assistant`) and not (`user`); the role is the loss mask,
    so a masked (grammar-constrained) call's tokens join the `user` message after it, untrained."""
    sequence = token_sequence(row, train_constrained=train_constrained)
    message_log: list[Row] = []
    pending = list(sequence.prompt_ids)
    for segment in sequence.segments:
        if not segment.trained:
            pending += segment.token_ids
            continue
        message_log.append({"role": "user", "token_ids": pending})
        message_log.append(
            {"role": "assistant", "token_ids": segment.token_ids, "generation_logprobs": segment.log_probs}
        )
        pending = []
    if pending:  # the last call was masked: its tokens are context, not trained
        message_log.append({"role": "user", "token_ids": pending})
    # `idx` is NeMo RL's DatumSpec field for the dataset row a sample came from.
    return {"message_log": message_log, "reward": reward_of(row), "idx": row.get("_ng_task_index"), **group_fields(row)}


SKYRL_STOP_REASONS: dict[str, str] = {
    "completed": "stop",
    "max_steps": "stop",
    "max_output_tokens": "length",
    "context_limit": "length",
    "deadline": "abort",
}
"""Our `episode_end` -> SkyRL's `stop_reasons`, which is the inference engine's finish reason of the
episode's last generation ("stop", "length", "abort"), read by SkyRL's `apply_overlong_filtering` and
`zero_reward_on_non_stop` (both act on anything but "stop"). At `max_steps` the last generation ended on its
own, as in SkyRL's own loop when the environment ends the episode at `max_turns`; a full context is "length"
as in SkyRL's loop when the prompt outgrows `max_input_length`; a `deadline` abandoned the generation in
flight. Any other reason an incomplete response names is "abort": not a clean stop, not a token limit."""


def _index_of(row: Row, key: str) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TokenDataError(f"{key}: must be a non-negative integer, got {value!r}", field=key)
    return value


def to_skyrl(row: Row, *, train_constrained: bool = False) -> Row:
    """One sample of SkyRL's GeneratorOutput: each key is that field's entry for this rollout.

    `trajectory_ids` holds the fields of SkyRL's `TrajectoryID` dataclass (`instance_id`: str, the GRPO
    group; `repetition_id`: int), which JSON cannot carry as the object itself: build it with
    `TrajectoryID(**record["trajectory_ids"])`. Our own `episode_end` stays beside SkyRL's `stop_reasons`."""
    sequence = token_sequence(row, train_constrained=train_constrained)
    # Rows written before agents recorded `episode_end` get it inferred from the response, as the viewer does.
    ending = episode_end(row)
    return {
        "prompt_token_ids": sequence.prompt_ids,
        "response_ids": sequence.response_ids,
        "rewards": reward_of(row),
        "loss_masks": sequence.response_mask,
        "rollout_logprobs": sequence.response_log_probs,
        "stop_reasons": SKYRL_STOP_REASONS.get(ending, "abort"),
        "trajectory_ids": {
            "instance_id": str(_index_of(row, "_ng_task_index")),
            "repetition_id": _index_of(row, "_ng_rollout_index"),
        },
        "episode_end": ending,
        **group_fields(row),
    }


def to_messages(row: Row, *, train_constrained: bool = False) -> Row:
    """OpenAI chat messages of the whole episode (prompt, assistant turns, tool results) + reward, for SFT."""
    params = dict(row.get("responses_create_params") or {})
    prompt = params.get("input", "")
    items = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    output = [item for item in (row.get("response") or {}).get("output") or [] if isinstance(item, dict)]
    params["input"] = items + output
    try:
        chat = responses_to_chat_params(params)
    except InputError as error:
        raise TokenDataError(f"cannot be written as chat messages: {error}") from None
    return {"messages": chat["messages"], "reward": reward_of(row)}


class Converter(Protocol):
    def __call__(self, row: Row, *, train_constrained: bool = False) -> Row: ...


FORMATS: dict[str, Converter] = {
    "trl": to_trl,
    "verl": to_verl,
    "nemo_rl": to_nemo_rl,
    "skyrl": to_skyrl,
    "messages": to_messages,
}
