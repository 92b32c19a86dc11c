"""The model calls of one rollout row, as token ids, checked for the prefix invariant.

Each model call's last output item carries `prompt_token_ids` (the whole prompt of that call),
`generation_token_ids` and `generation_log_probs`, all three or none. Trainers learn from one token
sequence per rollout, so call i's prompt must begin with call i-1's prompt + generation: the tokens
in between are what the environment (tools, user) added, never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOKEN_ID_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")


class TokenDataError(ValueError):
    """A row's token ids cannot make one training sequence; the message says what is missing or broken."""


@dataclass(frozen=True)
class Turn:
    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]


@dataclass
class Segment:
    """A run of tokens from one source: the model (`is_model`) or the environment."""

    is_model: bool
    token_ids: list[int]
    log_probs: list[float] = field(default_factory=list)


@dataclass
class TokenSequence:
    """One rollout as a single sequence: the first prompt, then alternating env / model segments."""

    prompt_ids: list[int]
    segments: list[Segment]

    @property
    def response_ids(self) -> list[int]:
        return [token for segment in self.segments for token in segment.token_ids]

    @property
    def response_mask(self) -> list[int]:
        return [int(segment.is_model) for segment in self.segments for _ in segment.token_ids]

    @property
    def response_log_probs(self) -> list[float]:
        # Environment tokens were not sampled, so they have no log prob; 0.0 is the placeholder trainers mask out.
        return [
            value
            for segment in self.segments
            for value in (segment.log_probs if segment.is_model else [0.0] * len(segment.token_ids))
        ]

    @property
    def num_turns(self) -> int:
        return sum(1 for segment in self.segments if segment.is_model)


def turns_of(row: dict[str, Any]) -> list[Turn]:
    """Every model call in the row's output, in order; TokenDataError if none or a partial bundle."""
    output = (row.get("response") or {}).get("output") or []
    turns = []
    for index, item in enumerate(output):
        if not isinstance(item, dict):
            continue
        present = [key for key in TOKEN_ID_KEYS if item.get(key) is not None]
        if not present:
            continue
        if len(present) != len(TOKEN_ID_KEYS):
            missing = ", ".join(key for key in TOKEN_ID_KEYS if key not in present)
            raise TokenDataError(f"response.output[{index}] has a partial token bundle: lacks {missing}")
        turn = Turn(
            list(item["prompt_token_ids"]), list(item["generation_token_ids"]), list(item["generation_log_probs"])
        )
        if not turn.prompt_token_ids and not turn.generation_token_ids:
            continue  # the empty turn a model server stands in when the context is full: nothing to train on
        if len(turn.generation_token_ids) != len(turn.generation_log_probs):
            raise TokenDataError(
                f"response.output[{index}] has {len(turn.generation_token_ids)} generation_token_ids but "
                f"{len(turn.generation_log_probs)} generation_log_probs"
            )
        turns.append(turn)
    if not turns:
        raise TokenDataError(
            "no token ids in response.output (collect with return_token_id_information, or export +format=messages)"
        )
    return turns


def token_sequence(row: dict[str, Any]) -> TokenSequence:
    """The row as one sequence; TokenDataError naming the turn whose prompt does not extend the last one."""
    turns = turns_of(row)
    segments: list[Segment] = []
    seen = list(turns[0].prompt_token_ids)
    for number, turn in enumerate(turns, start=1):
        if turn.prompt_token_ids[: len(seen)] != seen:
            raise TokenDataError(
                f"turn {number}'s prompt_token_ids do not start with turn {number - 1}'s prompt + generation "
                f"(the chat template re-tokenized earlier turns); this rollout cannot be one training sequence"
            )
        added = turn.prompt_token_ids[len(seen) :]
        if added:
            segments.append(Segment(False, added))
        segments.append(Segment(True, list(turn.generation_token_ids), list(turn.generation_log_probs)))
        seen = turn.prompt_token_ids + turn.generation_token_ids
    return TokenSequence(list(turns[0].prompt_token_ids), segments)
