"""One stored rollout row -> one record in a trainer's own field names (see README "Training").

Every function is pure: a row in, a JSON-ready dict out, TokenDataError when the row cannot be
expressed (no token ids, broken prefix, no reward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def to_trl(row: Row) -> Row:
    """TRL GRPOTrainer `rollout_func` fields: the completion is every token after the first prompt."""
    sequence = token_sequence(row)
    return {
        "prompt_ids": sequence.prompt_ids,
        "completion_ids": sequence.response_ids,
        "logprobs": sequence.response_log_probs,
        "env_mask": sequence.response_mask,
        "reward": reward_of(row),
        **group_fields(row),
    }


def to_verl(row: Row) -> Row:
    """veRL agent-loop output: tool tokens inside the response with mask 0."""
    sequence = token_sequence(row)
    return {
        "prompt_ids": sequence.prompt_ids,
        "response_ids": sequence.response_ids,
        "response_mask": sequence.response_mask,
        "response_logprobs": sequence.response_log_probs,
        "reward_score": reward_of(row),
        "num_turns": sequence.num_turns,
        # AgentLoopOutput.extra_fields become DataProto.non_tensor_batch columns: GRPO groups by its "uid".
        "extra_fields": {"uid": group_uid(row)},
        **group_fields(row),
    }


def to_nemo_rl(row: Row) -> Row:
    """NeMo RL message log: the first prompt as `user`, then assistant turns and the environment's
    tokens between them (`tool`); the role is the loss mask."""
    sequence = token_sequence(row)
    message_log: list[Row] = [{"role": "user", "token_ids": sequence.prompt_ids}]
    for segment in sequence.segments:
        if segment.is_model:
            message_log.append(
                {"role": "assistant", "token_ids": segment.token_ids, "generation_logprobs": segment.log_probs}
            )
        else:
            message_log.append({"role": "tool", "token_ids": segment.token_ids})
    # `idx` is NeMo RL's DatumSpec field for the dataset row a sample came from.
    return {"message_log": message_log, "reward": reward_of(row), "idx": row.get("_ng_task_index"), **group_fields(row)}


def to_skyrl(row: Row) -> Row:
    """One sample of SkyRL's GeneratorOutput: each key is that field's entry for this rollout."""
    sequence = token_sequence(row)
    return {
        "prompt_token_ids": sequence.prompt_ids,
        "response_ids": sequence.response_ids,
        "rewards": reward_of(row),
        "loss_masks": sequence.response_mask,
        "rollout_logprobs": sequence.response_log_probs,
        # Rows written before agents recorded `episode_end` get it inferred from the response, as the viewer does.
        "stop_reasons": episode_end(row),
        "trajectory_ids": f"{row.get('_ng_task_index')}_{row.get('_ng_rollout_index')}",
        **group_fields(row),
    }


def to_messages(row: Row) -> Row:
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


FORMATS: dict[str, Callable[[Row], Row]] = {
    "trl": to_trl,
    "verl": to_verl,
    "nemo_rl": to_nemo_rl,
    "skyrl": to_skyrl,
    "messages": to_messages,
}
