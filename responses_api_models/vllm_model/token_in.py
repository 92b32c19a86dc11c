"""Token-exact turns: each prompt is built from token ids and generated through vLLM's token-in input.

A turn that continues a rollout (the request carries `required_prefix_token_ids`, see
`nemo_gym.token_prefix`) is prompted with exactly

    required_prefix_token_ids + suffix

where the suffix is the chat template's continuation after an assistant turn: the end of that turn
(`<|im_end|>\\n` in ChatML), the new input items (tool results, user messages), and the generation
prompt. The model's own tokens are never rendered or re-tokenized, so they cannot drift.

The suffix comes from vLLM's `/tokenize` on a short *anchored* conversation: a fixed user message,
a fixed one-letter assistant message, then the new items, rendered with the same tools. Its tokens
up to and including the anchor's letter (the *head*) do not depend on the new items, so they are
learnt once per tool set (by tokenizing the anchored conversation with two different letters and
taking the common tail) and cached; after that a turn costs one `/tokenize` of a few items, whatever
the history's length, and the same new items always give the same suffix.

Where the model's sampled ids already end the turn (its last ids are the template's end-of-turn
ids, e.g. `<|im_end|>` sampled as EOS), those ids are not repeated; where they do not (cut by the
token limit, or a different stop token), the template's end-of-turn ids follow them.

Generation goes to `/v1/completions` with the ids as `prompt`, `logprobs: 0` and `return_token_ids`.
No tool-call parser runs on that path, so the raw text is parsed here (`tool_call_format`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NotRequired

import orjson
from pydantic import TypeAdapter
from typing_extensions import TypedDict

from nemo_gym.conversion import new_id
from nemo_gym.errors import InvalidResponseError
from nemo_gym.servers.upstream_shapes import AnswerShape
from nemo_gym.tool_call_text import parse_tool_calls

JSONDict = dict[str, Any]
ToolCallFormat = Literal["hermes", "none"]
Tokenize = Callable[[JSONDict], Awaitable[JSONDict]]
"""Posts one `/tokenize` body to vLLM and returns its checked answer."""

ANCHOR_USER = "."
ANCHOR_LETTERS = ("A", "B")
MAX_CACHED_HEADS = 64
MAX_TURN_END_OVERLAP = 16
"""Longest run of sampled ids that may count as the end of the turn (in practice one: the EOS)."""

# Chat params that mean nothing to a completion (the prompt is already tokens) or are set here.
# Sampling keys and `response_format` (structured output, which vLLM completions enforce too) pass.
_CHAT_ONLY_KEYS = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "logprobs",
        "top_logprobs",
        "max_tokens",
        "max_completion_tokens",
        "chat_template_kwargs",
        "stream",
        "stream_options",
    }
)


class _TokenizeAnswer(TypedDict):
    tokens: list[int]
    max_model_len: NotRequired[int | None]


class _CompletionLogprobs(TypedDict, total=False):
    tokens: list[str] | None
    token_logprobs: list[float | None] | None


class _CompletionChoice(TypedDict):
    text: str
    finish_reason: NotRequired[str | None]
    logprobs: NotRequired[_CompletionLogprobs | None]
    token_ids: NotRequired[list[int] | None]
    prompt_token_ids: NotRequired[list[int] | None]


def _completion_problem(answer: Any) -> str | None:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return "field `choices`: a completion needs at least one choice"
    problem = _COMPLETION_CHOICE.problem_in(choices[0])
    return f"in choices.0, {problem}" if problem else None


_COMPLETION_CHOICE = AnswerShape("completion choice", TypeAdapter(_CompletionChoice))
TOKENIZE_ANSWER = AnswerShape("tokenize answer", TypeAdapter(_TokenizeAnswer))
TEXT_COMPLETION = AnswerShape("completion", TypeAdapter(dict[str, Any]), _completion_problem)


def continue_ids(prefix: Sequence[int], suffix: Sequence[int]) -> list[int]:
    """`prefix + suffix`, without repeating end-of-turn ids the prefix already ends with.

    The overlap is the longest k with prefix[-k:] == suffix[:k] (k <= MAX_TURN_END_OVERLAP): the
    suffix opens with the template's end of the assistant turn, which the model may have sampled.
    """
    for k in range(min(len(prefix), len(suffix), MAX_TURN_END_OVERLAP), 0, -1):
        if list(prefix[-k:]) == list(suffix[:k]):
            return [*prefix, *suffix[k:]]
    return [*prefix, *suffix]


def _common_tail(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    while length < min(len(a), len(b)) and a[-1 - length] == b[-1 - length]:
        length += 1
    return length


class TurnPrompts:
    """Builds token-id prompts with vLLM's tokenizer; holds the learnt heads (see the module docstring)."""

    def __init__(self) -> None:
        self._heads: OrderedDict[bytes, list[int]] = OrderedDict()
        self.max_model_len: int | None = None
        """As the last `/tokenize` answer said (vLLM's `--max-model-len`)."""

    async def first(self, tokenize: Tokenize, messages: list[JSONDict], template: JSONDict) -> list[int]:
        """The prompt of a call with no prefix to keep: the whole conversation, rendered once."""
        return await self._tokens(tokenize, messages, template)

    async def continued(
        self, tokenize: Tokenize, prefix: Sequence[int], new_messages: list[JSONDict], template: JSONDict
    ) -> list[int]:
        """`prefix` followed by the template's continuation with `new_messages`."""
        return continue_ids(prefix, await self.suffix(tokenize, new_messages, template))

    async def suffix(self, tokenize: Tokenize, new_messages: list[JSONDict], template: JSONDict) -> list[int]:
        """The template's tokens after an assistant turn: its end, `new_messages`, the generation prompt."""
        key = orjson.dumps([template, bool(new_messages)], option=orjson.OPT_SORT_KEYS)
        head = self._heads.get(key)
        first = self._anchored(ANCHOR_LETTERS[0], new_messages)
        second = self._anchored(ANCHOR_LETTERS[1], new_messages)
        if head is None:
            tokens, other = await asyncio.gather(
                self._tokens(tokenize, first, template), self._tokens(tokenize, second, template)
            )
        else:
            tokens = await self._tokens(tokenize, first, template)
            if tokens[: len(head)] == head:
                self._heads.move_to_end(key)
                return tokens[len(head) :]
            # The template rendered the anchor differently (a date in the system prompt, a new
            # template after a restart): learn the head again.
            other = await self._tokens(tokenize, second, template)
        head_length = len(tokens) - _common_tail(tokens, other)
        if head_length <= 0:
            raise InvalidResponseError(
                "vLLM's chat template renders assistant text nowhere in the prompt; the turn's continuation "
                "cannot be located (token-exact turns need a template that writes assistant content)"
            )
        self._heads[key] = tokens[:head_length]
        while len(self._heads) > MAX_CACHED_HEADS:
            self._heads.popitem(last=False)
        return tokens[head_length:]

    @staticmethod
    def _anchored(letter: str, new_messages: list[JSONDict]) -> list[JSONDict]:
        return [{"role": "user", "content": ANCHOR_USER}, {"role": "assistant", "content": letter}, *new_messages]

    async def _tokens(self, tokenize: Tokenize, messages: list[JSONDict], template: JSONDict) -> list[int]:
        answer = await tokenize({"messages": messages, "add_generation_prompt": True, **template})
        if isinstance(answer.get("max_model_len"), int):
            self.max_model_len = answer["max_model_len"]
        return list(answer["tokens"])


def template_options(chat_params: JSONDict) -> JSONDict:
    """What the chat template sees besides messages: tools (unless `tool_choice` is none) and
    `chat_template_kwargs`. Part of the head cache key."""
    options: JSONDict = {}
    if chat_params.get("tools") and chat_params.get("tool_choice") != "none":
        options["tools"] = chat_params["tools"]
    if chat_params.get("chat_template_kwargs"):
        options["chat_template_kwargs"] = chat_params["chat_template_kwargs"]
    return options


def completion_request(chat_params: JSONDict, prompt_ids: list[int], max_tokens: int, model: str) -> JSONDict:
    """A `/v1/completions` body generating from `prompt_ids`, asking for ids and sampled log probs.

    `logprobs: 0` is the sampled token's log probability and no alternatives; `return_token_ids`
    (vLLM >= 0.10.2) returns the ids, `return_tokens_as_token_ids` spells them in the logprob
    tokens too (the fallback for builds without it)."""
    body = {key: value for key, value in chat_params.items() if key not in _CHAT_ONLY_KEYS}
    return body | {
        "model": model,
        "prompt": prompt_ids,
        "max_tokens": max_tokens,
        "logprobs": 0,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }


def completion_as_chat(
    completion: JSONDict, prompt_ids: list[int], tool_names: list[str], tool_call_format: ToolCallFormat
) -> JSONDict:
    """A checked `/v1/completions` answer as the chat completion vLLM's chat endpoint would have sent,
    for `nemo_gym.conversion.chat_completion_to_response` (reasoning, usage, status, token ids)."""
    choice = completion["choices"][0]
    text = choice.get("text") or ""
    if tool_call_format == "hermes":
        content, calls = parse_tool_calls(text, tool_names, strip_content=False)
    else:
        content, calls = text, []
    message: JSONDict = {"role": "assistant", "content": content, "tool_calls": calls}
    logprobs = choice.get("logprobs") or {}
    token_logprobs = logprobs.get("token_logprobs")
    entries = None
    if token_logprobs is not None:
        tokens = logprobs.get("tokens") or [""] * len(token_logprobs)
        entries = [
            {"token": token, "logprob": value if value is not None else 0.0}
            for token, value in zip(tokens, token_logprobs)
        ]
    chat_choice: JSONDict = {
        "index": 0,
        "message": message,
        "finish_reason": choice.get("finish_reason"),
        "logprobs": {"content": entries} if entries is not None else None,
        "token_ids": choice.get("token_ids"),
    }
    return {
        "id": completion.get("id") or new_id("cmpl"),
        "object": "chat.completion",
        "created": completion.get("created") or int(time.time()),
        # What the engine consumed, when it says; else what was sent (the same ids).
        "prompt_token_ids": choice.get("prompt_token_ids") or prompt_ids,
        "choices": [chat_choice],
        "usage": completion.get("usage"),
    }


def context_full_completion(prompt_ids: list[int]) -> JSONDict:
    """An empty, cut-off turn for a prompt that leaves no room to generate: the episode ends cleanly,
    and the turn still carries its prompt ids, so the rollout's token prefix holds to the end."""
    return {
        "id": new_id("cmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "prompt_token_ids": prompt_ids,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "length",
                "logprobs": {"content": []},
                "token_ids": [],
            }
        ],
        "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": 0, "total_tokens": len(prompt_ids)},
    }
