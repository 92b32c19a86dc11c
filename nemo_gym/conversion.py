"""Convert between the OpenAI Responses API and Chat Completions, on plain JSON-shaped dicts.

Model servers whose backend speaks only Chat Completions (vLLM, llama.cpp, most providers) call
`responses_to_chat_params` on the way in and `chat_completion_to_response` on the way out. These
functions sit on the hot path of every model turn, so they work on dicts and never validate with
pydantic; the servers validate once at their boundary.

Promises, each covered by a test:
- Text is never stripped, joined with separators or otherwise rewritten, so a turn survives
  responses -> chat -> response -> chat byte for byte (reasoning is carried as `<think>` blocks).
- Every request key is handled on purpose: mapped (`max_output_tokens` -> `max_tokens`, tools,
  `tool_choice`, `reasoning.effort`, `text.format`), passed through (chat-valid keys and keys we
  do not know, which the boundary let through on purpose), or dropped because Chat has no
  equivalent. `instructions` becomes a leading system message instead of vanishing.
- Training token ids travel as one bundle (`prompt_token_ids`, `generation_token_ids`,
  `generation_log_probs`): asked for and missing or partial is an error, never a silent gap.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from nemo_gym.errors import InputError, InvalidResponseError
from nemo_gym.token_prefix import GENERATION_CONSTRAINED_KEY

JSONDict = dict[str, Any]

TOKEN_ID_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
CONTEXT_LIMIT_REASON = "context_limit"
"""`incomplete_details.reason` of a turn that could not generate because the prompt filled the context."""

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)

# Responses create params that Chat Completions has no place for. Dropped on purpose; anything
# not named here or handled below is passed through unchanged.
_RESPONSES_ONLY_KEYS = frozenset(
    {
        "background",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "previous_response_id",
        "prompt",
        "reasoning",
        "service_tier",
        "store",
        "stream",
        "text",
        "tool_choice",
        "tools",
        "parallel_tool_calls",
        "top_logprobs",
        "truncation",
        "conversation",
        "stream_options",
    }
)

_ASSISTANT_SIDE_TYPES = frozenset({"reasoning", "function_call"})

_SIMPLE_TOOL_CHOICES = frozenset({"auto", "none", "required"})


def new_id(prefix: str) -> str:
    """A fresh OpenAI-style id such as `msg_<32 hex digits>`."""
    return f"{prefix}_{secrets.token_hex(16)}"


def think_split(text: str) -> tuple[list[str], str]:
    """Split `<think>...</think>` blocks out of `text`: (block contents in order, the rest).

    Neither part is stripped: whitespace around and inside the blocks is the model's output.
    """
    return _THINK_BLOCK.findall(text), _THINK_BLOCK.sub("", text)


# ---------------------------------------------------------------------------------------------
# Responses -> Chat Completions
# ---------------------------------------------------------------------------------------------


class _AssistantTurn:
    """Consecutive assistant-side items (messages, reasoning, function calls) that become one
    assistant chat message."""

    def __init__(self) -> None:
        self.started = False
        self.thinking: list[str] = []
        self.texts: list[str] = []
        self.refusals: list[str] = []
        self.tool_calls: list[JSONDict] = []
        self.token_ids: JSONDict | None = None

    def to_message(self, include_token_ids: bool) -> JSONDict:
        text = "".join(f"<think>{r}</think>" for r in self.thinking) + "".join(self.texts)
        message: JSONDict = {"role": "assistant", "content": text if text or not self.tool_calls else None}
        if self.refusals:
            message["refusal"] = "".join(self.refusals)
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if include_token_ids and self.token_ids is not None:
            message.update(self.token_ids)
        return message


def responses_to_chat_params(
    params: dict,
    *,
    replace_developer_role_with_system: bool = False,
    include_token_ids: bool = False,
) -> dict:
    """Responses create params -> Chat Completions create params.

    Raises `InputError` for input the Chat API cannot express (non-text content parts, built-in
    tools, unknown item types) rather than guessing.
    """
    messages: list[JSONDict] = []
    instructions = params.get("instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages.extend(
        _input_to_messages(
            params.get("input", ""),
            replace_developer_role_with_system=replace_developer_role_with_system,
            include_token_ids=include_token_ids,
        )
    )

    chat: JSONDict = {"messages": messages}
    for key, value in params.items():
        if key not in _RESPONSES_ONLY_KEYS and value is not None:
            chat[key] = value

    if params.get("max_output_tokens") is not None:
        chat["max_tokens"] = params["max_output_tokens"]

    # Chat backends reject `tools: []` (vLLM >= 0.20), and `tool_choice` or `parallel_tool_calls`
    # without tools (OpenAI), so the tool keys are sent only together with at least one tool.
    tools = [_tool_to_chat(tool) for tool in params.get("tools") or []]
    if tools:
        chat["tools"] = tools
        if params.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice_to_chat(params["tool_choice"])
        if params.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = params["parallel_tool_calls"]

    effort = (params.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    response_format = _text_format_to_chat((params.get("text") or {}).get("format"))
    if response_format is not None:
        chat["response_format"] = response_format
    return chat


def _input_to_messages(
    input_: str | list[JSONDict],
    *,
    replace_developer_role_with_system: bool,
    include_token_ids: bool,
) -> list[JSONDict]:
    if isinstance(input_, str):
        return [{"role": "user", "content": input_}]

    messages: list[JSONDict] = []
    turn = _AssistantTurn()

    def flush() -> None:
        nonlocal turn
        if turn.started:
            messages.append(turn.to_message(include_token_ids))
        turn = _AssistantTurn()

    for index, item in enumerate(input_):
        item_type = item.get("type") or ("message" if "role" in item else None)
        role = item.get("role")
        if (item_type == "message" and role == "assistant") or item_type in _ASSISTANT_SIDE_TYPES:
            _add_to_turn(turn, item, item_type, index)
            if include_token_ids:
                bundle = _item_token_ids(item, index)
                if bundle is not None:
                    turn.token_ids = bundle
        elif item_type == "message" and role in ("user", "system", "developer"):
            flush()
            if role == "developer" and replace_developer_role_with_system:
                role = "system"
            messages.append({"role": role, "content": _content_to_chat(item.get("content"), index)})
        elif item_type == "function_call_output" or (item_type == "message" and role == "tool"):
            flush()
            call_id = item.get("call_id", item.get("tool_call_id"))
            output = item.get("output", item.get("content"))
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _content_to_chat(output, index)})
        else:
            raise InputError(f"input[{index}]: item type {item_type!r} (role {role!r}) has no Chat Completions form")
    flush()
    return messages


def _add_to_turn(turn: _AssistantTurn, item: JSONDict, item_type: str, index: int) -> None:
    turn.started = turn.started or item_type != "reasoning"
    if item_type == "reasoning":
        for text in _reasoning_texts(item):
            turn.thinking.append(text)
            turn.started = True
    elif item_type == "function_call":
        turn.tool_calls.append(
            {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
        )
    else:
        content = item.get("content")
        if isinstance(content, str):
            turn.texts.append(content)
        for part in content if isinstance(content, list) else []:
            part_type = part.get("type")
            if part_type in ("output_text", "input_text", "text"):
                turn.texts.append(part["text"])
            elif part_type == "refusal":
                turn.refusals.append(part["refusal"])
            else:
                raise InputError(f"input[{index}]: assistant content part {part_type!r} has no Chat Completions form")
        # Chat-shaped assistant turns (`tool_calls` on the message) are accepted as written.
        for call in item.get("tool_calls") or []:
            turn.tool_calls.append(call)


def _reasoning_texts(item: JSONDict) -> list[str]:
    """Non-empty summary texts; the raw `reasoning_text` content when there is no summary."""
    texts = [part.get("text") for part in item.get("summary") or []]
    if not any(texts):
        texts = [part.get("text") for part in item.get("content") or [] if part.get("type") == "reasoning_text"]
    return [text for text in texts if text]


def _item_token_ids(item: JSONDict, index: int) -> JSONDict | None:
    present = [key for key in TOKEN_ID_KEYS if item.get(key) is not None]
    if not present:
        return None
    if len(present) != len(TOKEN_ID_KEYS):
        missing = [key for key in TOKEN_ID_KEYS if key not in present]
        raise InputError(f"input[{index}]: token ids travel as a bundle, but it lacks {', '.join(missing)}")
    return {key: item[key] for key in TOKEN_ID_KEYS}


def _content_to_chat(content: Any, index: int) -> Any:
    """A Responses message content (string or parts) as Chat content; text parts keep their text."""
    if content is None or isinstance(content, str):
        return content if content is not None else ""
    if not isinstance(content, list):
        raise InputError(f"input[{index}]: content of type {type(content).__name__} has no Chat Completions form")
    parts = []
    for part in content:
        part_type = part.get("type")
        if part_type not in ("input_text", "output_text", "text"):
            raise InputError(f"input[{index}]: content part {part_type!r} is not supported (text only)")
        parts.append({"type": "text", "text": part["text"]})
    return parts


def _tool_to_chat(tool: JSONDict) -> JSONDict:
    if tool.get("type") != "function":
        raise InputError(f"tool {tool.get('type')!r} is not supported; only function tools convert to Chat")
    if "function" in tool:  # already Chat-shaped
        return tool
    function = {"name": tool["name"]}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice_to_chat(choice: str | JSONDict) -> str | JSONDict:
    if isinstance(choice, str) and choice in _SIMPLE_TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice["function"]["name"] if "function" in choice else choice["name"]
        return {"type": "function", "function": {"name": name}}
    raise InputError(f"tool_choice {choice!r} is not supported; use auto, none, required or a function")


def _text_format_to_chat(text_format: JSONDict | None) -> JSONDict | None:
    if not text_format or text_format.get("type") == "text":
        return None
    if text_format.get("type") == "json_object":
        return {"type": "json_object"}
    if text_format.get("type") == "json_schema":
        schema = {key: value for key, value in text_format.items() if key != "type" and value is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise InputError(f"text.format {text_format.get('type')!r} is not supported")


# ---------------------------------------------------------------------------------------------
# Chat Completions -> Responses
# ---------------------------------------------------------------------------------------------


def chat_completion_to_response(
    completion: dict,
    *,
    request_params: dict,
    model: str,
    include_token_ids: bool = False,
    generated_pieces: list[str | JSONDict] | None = None,
) -> dict:
    """A Chat Completion (its first choice) -> a Responses API `response` object.

    Output order is reasoning, message, function calls. A server that parsed the calls out of the
    generated text itself passes `generated_pieces` (`nemo_gym.tool_call_text.split_tool_calls`):
    then the output follows the generation's order, text between and after calls included, which a
    chat message (one content, then calls) cannot say. With `include_token_ids`, the turn's
    token-id bundle is attached to the last output item; `InvalidResponseError` if the upstream
    did not return a complete one.
    """
    choices = completion.get("choices") or []
    if not choices or not isinstance(choices[0].get("message"), dict):
        raise InvalidResponseError("chat completion has no choices[0].message")
    choice = choices[0]
    message = choice["message"]

    if generated_pieces is not None and any(not isinstance(piece, str) for piece in generated_pieces):
        output = generated_pieces_to_output(generated_pieces)
    else:
        output = assistant_message_to_output(message)
    if include_token_ids:
        output[-1].update(_completion_token_ids(completion, choice))

    incomplete_reason = incomplete_reason_of(choice.get("finish_reason"), completion.get("usage"))
    return {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "output": output,
        "usage": _usage_to_responses(completion.get("usage")),
        "status": "incomplete" if incomplete_reason else "completed",
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "error": None,
        "tools": list(request_params.get("tools") or []),
        "tool_choice": _default(request_params.get("tool_choice"), "auto"),
        "parallel_tool_calls": _default(request_params.get("parallel_tool_calls"), True),
        "temperature": request_params.get("temperature"),
        "top_p": request_params.get("top_p"),
        "max_output_tokens": request_params.get("max_output_tokens"),
        "instructions": request_params.get("instructions"),
        "metadata": request_params.get("metadata"),
    }


def incomplete_reason_of(finish_reason: Any, usage: Any) -> str | None:
    """The Responses `incomplete_details.reason` for a chat finish reason.

    "length" with zero completion tokens is the context limit, not the output-token limit: no server
    accepts max_tokens < 1, so nothing generated means the prompt left no room (llama.cpp's
    exceed_context_size_error and `empty_incomplete_completion` both end up here). Trainers treat
    the two differently, so they get different names ("context_limit" is ours; OpenAI has none).
    """
    if finish_reason == "length":
        generated = usage.get("completion_tokens") if isinstance(usage, dict) else None
        return CONTEXT_LIMIT_REASON if generated == 0 else "max_output_tokens"
    return "content_filter" if finish_reason == "content_filter" else None


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def assistant_message_to_output(message: JSONDict, parse_think: bool = True) -> list[JSONDict]:
    """A chat assistant message as Responses output items; `parse_think=False` leaves `<think>` in the text."""
    content = message.get("content")
    if isinstance(content, list):  # some servers return text parts; concatenation adds nothing
        content = "".join(part.get("text", "") for part in content)
    summaries: list[str] = []
    parsed_reasoning = message.get("reasoning_content") or message.get("reasoning")
    if parsed_reasoning:
        summaries.append(parsed_reasoning)
    if parse_think:
        thoughts, content = think_split(content or "")
        summaries.extend(thoughts)

    output: list[JSONDict] = []
    if summaries:
        output.append(
            {
                "id": new_id("rs"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": text} for text in summaries],
            }
        )
    parts: list[JSONDict] = []
    if content:
        parts.append({"type": "output_text", "text": content, "annotations": []})
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    tool_calls = message.get("tool_calls") or []
    if parts or not (output or tool_calls):
        output.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": parts or [{"type": "output_text", "text": "", "annotations": []}],
            }
        )
    output.extend(_function_call_item(call) for call in tool_calls)
    return output


def generated_pieces_to_output(pieces: list[str | JSONDict], parse_think: bool = True) -> list[JSONDict]:
    """Generated text pieces (str) and chat tool calls, in the order generated, as Responses output items:
    each piece of text that says something becomes its own assistant message (its `<think>` parts a
    reasoning item before it), each call a function call. Whitespace-only text is dropped."""
    output: list[JSONDict] = []
    for piece in pieces:
        if not isinstance(piece, str):
            output.append(_function_call_item(piece))
            continue
        thoughts, text = think_split(piece) if parse_think else ([], piece)
        if thoughts:
            output.append(
                {
                    "id": new_id("rs"),
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": thought} for thought in thoughts],
                }
            )
        if text.strip():
            output.append(
                {
                    "id": new_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            )
    return output


def _function_call_item(call: JSONDict) -> JSONDict:
    call_id = call.get("id") or new_id("call")
    function = call.get("function") or {}
    arguments = function.get("arguments", "")
    return {
        "type": "function_call",
        "id": call_id,
        "call_id": call_id,
        "name": function.get("name", ""),
        # Malformed JSON is kept as written: the agent returns it to the model as an error.
        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        "status": "completed",
    }


def _completion_token_ids(completion: JSONDict, choice: JSONDict) -> JSONDict:
    """The token-id bundle of one turn, wherever the backend put it.

    Message-level keys (a server that already attached them) win; then vLLM's `prompt_token_ids`
    (choice or top level) and `token_ids` (choice); then ids parsed from `token_id:<n>` logprob
    tokens (vLLM's `return_tokens_as_token_ids`).
    """
    message = choice["message"]
    logprob_entries = (choice.get("logprobs") or {}).get("content")
    logprobs = [entry["logprob"] for entry in logprob_entries] if logprob_entries is not None else None
    bundle = {
        "prompt_token_ids": _first_present(
            message.get("prompt_token_ids"), choice.get("prompt_token_ids"), completion.get("prompt_token_ids")
        ),
        "generation_token_ids": _first_present(
            message.get("generation_token_ids"), choice.get("token_ids"), _ids_from_logprob_tokens(logprob_entries)
        ),
        "generation_log_probs": _first_present(message.get("generation_log_probs"), logprobs),
    }
    missing = [key for key, value in bundle.items() if value is None]
    if missing:
        raise InvalidResponseError(
            f"token ids were requested but the completion lacks {', '.join(missing)}"
            " (does the backend return prompt/generation token ids and logprobs, without top_logprobs?)"
        )
    n_ids, n_log_probs = len(bundle["generation_token_ids"]), len(bundle["generation_log_probs"])
    if n_ids != n_log_probs:
        raise InvalidResponseError(f"completion has {n_ids} generation token ids but {n_log_probs} log probs")
    if message.get(GENERATION_CONSTRAINED_KEY) or choice.get(GENERATION_CONSTRAINED_KEY):
        bundle[GENERATION_CONSTRAINED_KEY] = True  # sampled under a grammar: exports mask these tokens
    return bundle


def _first_present(*candidates: Any) -> Any:
    return next((candidate for candidate in candidates if candidate is not None), None)


def _ids_from_logprob_tokens(entries: list[JSONDict] | None) -> list[int] | None:
    if not entries:
        return [] if entries is not None else None
    ids = []
    for entry in entries:
        token = entry.get("token", "")
        if not token.startswith("token_id:"):
            return None
        ids.append(int(token.removeprefix("token_id:")))
    return ids


def _usage_to_responses(usage: JSONDict | None) -> JSONDict:
    usage = usage or {}
    input_tokens = usage.get("prompt_tokens") or 0
    output_tokens = usage.get("completion_tokens") or 0
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": usage.get("total_tokens") or input_tokens + output_tokens,
        "input_tokens_details": {"cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0},
        "output_tokens_details": {
            "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        },
    }


# ---------------------------------------------------------------------------------------------
# Context overflow
# ---------------------------------------------------------------------------------------------

# Phrases backends use when the prompt plus max_tokens do not fit: OpenAI and vLLM ("maximum
# context length", "context_length_exceeded", "maximum model length"), llama.cpp ("context size").
_CONTEXT_OVERFLOW = re.compile(
    r"context[ _]length|maximum context|maximum model length|context size|max_tokens\W.{0,80}too large",
    re.IGNORECASE | re.DOTALL,
)


def context_length_exceeded(status_code: int, body: str) -> bool:
    """Whether an upstream error means the conversation no longer fits the model's context."""
    return status_code == 400 and bool(_CONTEXT_OVERFLOW.search(body or ""))


def empty_incomplete_completion() -> dict:
    """A synthetic chat completion that ends an episode cleanly when the context is full.

    It converts to an incomplete response with one empty assistant message. It carries an empty
    token-id bundle, so a training run that asks for token ids gets a valid (empty) turn too.
    """
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "",
        "prompt_token_ids": [],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "length",
                "logprobs": {"content": []},
                "token_ids": [],
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
