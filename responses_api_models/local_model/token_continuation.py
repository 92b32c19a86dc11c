"""Token-exact turns: the next prompt is built on the ids the model already produced.

With `required_prefix_token_ids` (the previous call's prompt + generation ids, sent by the agent;
see `nemo_gym.token_prefix`) the prompt is exactly those ids followed by the tokens of the messages
that are new since that call (tool results, user turns), rendered the way the chat template
continues a conversation. The model's own tokens are never re-tokenized: only the new text is.

Finding the new text: the conversation (tools already rendered into it by `tool_prompt`) goes
through the engine's own chat template once, with the content of the last assistant turn replaced
by a marker. The text after the marker is that turn's closing (`<|im_end|>\\n` in ChatML) followed
by the new turns and the generation prompt. If the sampled ids already end with the closing's first
token (the model ended its turn itself), that token is not added twice. Rendering the conversation
with and without the new messages and taking the difference does not work here: llama.cpp renders a
conversation that ends with an assistant turn as a prefill, left open.

Pure functions over chat messages and token ids; the engine renders and tokenizes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from nemo_gym.errors import InputError
from nemo_gym.token_prefix import GENERATION_IDS_KEY, PROMPT_IDS_KEY, REQUIRED_PREFIX_KEY

Message = dict[str, Any]


class RequiredPrefixError(InputError):
    """`required_prefix_token_ids` cannot start this request's prompt (the server answers 400)."""

    status_code = 400


def validated_prefix(value: Any, vocabulary_size: int) -> list[int]:
    """The prefix as a list of token ids of this model's vocabulary, or `RequiredPrefixError`."""
    if not isinstance(value, list) or not value:
        raise RequiredPrefixError(f"{REQUIRED_PREFIX_KEY} must be a non-empty list of token ids")
    for position, token in enumerate(value):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocabulary_size:
            raise RequiredPrefixError(
                f"{REQUIRED_PREFIX_KEY}[{position}] = {token!r} is not a token id of this model "
                f"(its vocabulary is 0..{vocabulary_size - 1})"
            )
    return value


def last_model_turn(messages: Sequence[Message]) -> int:
    """Index of the last assistant message, the turn the prefix must end at.

    Everything after it is new context to append; there must be some, or there is nothing to
    continue with (a prefix ending at the last turn is a complete conversation already).
    """
    index = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"), None)
    if index is None:
        raise RequiredPrefixError(
            f"{REQUIRED_PREFIX_KEY} was sent but the input holds no model turn for it to end at "
            "(send it only after a model call that returned token ids)"
        )
    if index == len(messages) - 1:
        raise RequiredPrefixError(
            f"{REQUIRED_PREFIX_KEY} was sent but nothing follows the last model turn in the input "
            "(expected tool outputs or a user message after it)"
        )
    return index


def check_prefix_ends_turn(prefix: Sequence[int], turn: Message) -> None:
    """The prefix must be the full token sequence of the turn it continues, when that turn carries its ids."""
    prompt, generation = turn.get(PROMPT_IDS_KEY), turn.get(GENERATION_IDS_KEY)
    if not isinstance(prompt, list) or not isinstance(generation, list):
        return  # the caller dropped the ids from the history: nothing to compare with
    expected = [*prompt, *generation]
    if list(prefix) == expected:
        return
    differs_at = next(
        (i for i, (sent, kept) in enumerate(zip(prefix, expected)) if sent != kept), min(len(prefix), len(expected))
    )
    raise RequiredPrefixError(
        f"{REQUIRED_PREFIX_KEY} does not end at the last model turn: it differs from that turn's "
        f"{PROMPT_IDS_KEY} + {GENERATION_IDS_KEY} at position {differs_at} "
        f"(sent {len(prefix)} ids, the turn has {len(expected)})"
    )


def with_marker(rendered: Sequence[Message], turn_index: int) -> tuple[list[Message], str]:
    """A copy of the rendered conversation whose turn `turn_index` says only a unique marker."""
    marker = f"NGPREFIXEND{uuid.uuid4().hex}"
    copy = [dict(message) for message in rendered]
    copy[turn_index]["content"] = marker
    return copy, marker


def text_after_marker(template_text: str, marker: str) -> str:
    """What the template puts after the marked turn's content: its closing, the new turns, the generation prompt."""
    if template_text.count(marker) != 1:
        raise RequiredPrefixError(
            "the chat template does not render the last model turn's content as given, so the new "
            f"messages cannot be placed after {REQUIRED_PREFIX_KEY}"
        )
    return template_text.split(marker, 1)[1]


def continued_prompt(prefix: Sequence[int], continuation_ids: Sequence[int]) -> list[int]:
    """The prefix, then the continuation ids, without repeating an end-of-turn token the model already sampled."""
    continuation = list(continuation_ids)
    if continuation and prefix and continuation[0] == prefix[-1]:
        continuation = continuation[1:]
    return [*prefix, *continuation]
