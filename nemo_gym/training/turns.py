"""The model calls of one rollout row, as token ids, checked for the prefix invariant.

Each model call's last output item carries `prompt_token_ids` (the whole prompt of that call),
`generation_token_ids` and `generation_log_probs`, all three or none. Trainers learn from one token
sequence per rollout, so call i's prompt must begin with call i-1's prompt + generation: the tokens
in between are what the environment (tools, user) added, never trained on.

Every export format reads token fields through `read_turn` alone, which validates them as `Turn`:
token ids are lists of non-negative ints and log probs lists of finite numbers, strictly (a bool is
not an int, a string is not a list of ids), so a row that a trainer would choke on, or silently train
on (`"67"` read as `["6", "7"]`), is refused naming the exact field.

A call whose item says `generation_constrained: true` was sampled under a grammar: its log probs are
not those of the distribution its tokens were drawn from, so its tokens are masked (mask 0) like the
environment's, unless the export is asked to train on them (`train_constrained`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from pydantic_core import PydanticCustomError

from nemo_gym.token_prefix import GENERATION_CONSTRAINED_KEY

TOKEN_ID_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
_EXPECTED = {
    "prompt_token_ids": "a list of non-negative integers",
    "generation_token_ids": "a list of non-negative integers",
    "generation_log_probs": "a list of finite numbers",
    GENERATION_CONSTRAINED_KEY: "true or false",
}
_EXPECTED_ITEM = {
    "prompt_token_ids": "a non-negative integer",
    "generation_token_ids": "a non-negative integer",
    "generation_log_probs": "a finite number",
}

LogProb = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # strict: ints pass, bools and strings do not


def _non_negative(ids: list[int]) -> list[int]:
    # Same rule as `Annotated[int, Field(strict=True, ge=0)]` per item, which costs pydantic three times as much
    # per token as a bare StrictInt; min() over the already type-checked list is nearly free.
    if ids and min(ids) < 0:
        position = next(index for index, value in enumerate(ids) if value < 0)
        raise PydanticCustomError("negative_token_id", "negative token id", {"position": position})
    return ids


TokenIds = Annotated[list[StrictInt], AfterValidator(_non_negative)]


class TokenDataError(ValueError):
    """A row's token ids cannot make one training sequence; the message says what is missing or broken.

    `field` is the path of the offending value within the row when one value is to blame
    (`response.output[2].generation_token_ids[0]`); the message then starts with it."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


class Turn(BaseModel):
    """One model call's token bundle, validated (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    prompt_token_ids: TokenIds
    generation_token_ids: TokenIds
    generation_log_probs: list[LogProb]
    generation_constrained: StrictBool = False
    """Sampled under a grammar (see `nemo_gym.token_prefix.GENERATION_CONSTRAINED_KEY`)."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_turn(item: dict[str, Any], index: int) -> Turn | None:
    """Output item `index`'s token bundle as a validated Turn; None when the item carries none.
    TokenDataError naming `response.output[index].<field>[<i>]` for a partial bundle or a bad value."""
    present = [key for key in TOKEN_ID_KEYS if item.get(key) is not None]
    if not present:
        return None
    if len(present) != len(TOKEN_ID_KEYS):
        missing = ", ".join(key for key in TOKEN_ID_KEYS if key not in present)
        raise TokenDataError(
            f"response.output[{index}] has a partial token bundle: lacks {missing}", field=f"response.output[{index}]"
        )
    try:
        fields = {key: item[key] for key in TOKEN_ID_KEYS}
        if item.get(GENERATION_CONSTRAINED_KEY) is not None:
            fields[GENERATION_CONSTRAINED_KEY] = item[GENERATION_CONSTRAINED_KEY]
        return Turn.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        key, *position = first["loc"]
        value = first["input"]
        if first["type"] == "negative_token_id":  # raised on the whole list: name the item
            position = [first["ctx"]["position"]]
            value = value[position[0]]
        path = f"response.output[{index}].{key}" + "".join(f"[{part}]" for part in position)
        expected = _EXPECTED_ITEM[str(key)] if position else _EXPECTED[str(key)]
        raise TokenDataError(f"{path}: must be {expected}, got {_shown(value)}", field=path) from None


@dataclass
class Segment:
    """A run of tokens from one source: the model (`is_model`) or the environment. Model tokens are
    trained on (mask 1) unless `masked`: sampled under a grammar, with log probs of another distribution."""

    is_model: bool
    token_ids: list[int]
    log_probs: list[float] = field(default_factory=list)
    masked: bool = False

    @property
    def trained(self) -> bool:
        return self.is_model and not self.masked


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
        return [int(segment.trained) for segment in self.segments for _ in segment.token_ids]

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
    response = row.get("response")
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        raise TokenDataError(
            f"response.output: must be a list of output items, got {_shown(output)}", field="response.output"
        )
    turns = []
    for index, item in enumerate(output):
        if not isinstance(item, dict):
            continue
        turn = read_turn(item, index)
        if turn is None:
            continue
        if not turn.prompt_token_ids and not turn.generation_token_ids:
            continue  # the empty turn a model server stands in when the context is full: nothing to train on
        if len(turn.generation_token_ids) != len(turn.generation_log_probs):
            raise TokenDataError(
                f"response.output[{index}] has {len(turn.generation_token_ids)} generation_token_ids but "
                f"{len(turn.generation_log_probs)} generation_log_probs",
                field=f"response.output[{index}].generation_log_probs",
            )
        turns.append(turn)
    if not turns:
        raise TokenDataError(
            "no token ids in response.output (collect with return_token_id_information, or export +format=messages)"
        )
    return turns


def token_sequence(row: dict[str, Any], *, train_constrained: bool = False) -> TokenSequence:
    """The row as one sequence; TokenDataError naming the turn whose prompt does not extend the last one.

    Calls sampled under a grammar are masked unless `train_constrained` (see the module docstring)."""
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
        masked = turn.generation_constrained and not train_constrained
        segments.append(Segment(True, list(turn.generation_token_ids), list(turn.generation_log_probs), masked))
        seen = turn.prompt_token_ids + turn.generation_token_ids
    return TokenSequence(list(turns[0].prompt_token_ids), segments)
