"""Tool calls a model writes as text (`<tool_call>{json}</tool_call>`, the Hermes convention), parsed
back into OpenAI Chat tool calls.

Model servers that see raw generated text need this: `local_model` (llama.cpp, no tool parser) and
`vllm_model` when it generates through vLLM's token-in completions, where vLLM's tool-call parser
does not run. One parser for both, so a model's calls mean the same thing whichever server ran it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

ToolCall = dict[str, Any]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# A block ends at its closing tag, at the next opening tag, or at the end of the text.
_TOOL_CALL_BLOCK = re.compile(
    r"<tool_call>(?P<body>.*?)(?:</tool_call>|(?=<tool_call>)|\Z)",
    re.DOTALL,
)
_CODE_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_FENCE_ONLY = re.compile(r"\s*```[a-zA-Z]*\s*")
_ARGUMENT_KEYS = ("arguments", "parameters", "args")


def parse_tool_calls(
    text: str | None,
    tool_names: Iterable[str],
    *,
    new_call_id: Callable[[], str] | None = None,
    strip_content: bool = True,
) -> tuple[str | None, list[ToolCall]]:
    """Split generated text into (remaining content or None, OpenAI tool calls).

    The Chat Completions shape of `split_tool_calls`: every call, and every piece of text around
    and between them joined into one content string (Chat has no place for their order; Responses
    output does, see `split_tool_calls`).

    With `strip_content=False` the content keeps the model's whitespace (a text-only
    answer comes back exactly as generated); it is None only when nothing but
    whitespace is left around the calls.
    """
    pieces = split_tool_calls(text, tool_names, new_call_id=new_call_id)
    calls = [piece for piece in pieces if not isinstance(piece, str)]
    content = "".join(piece for piece in pieces if isinstance(piece, str))
    if not content.strip():
        return None, calls
    return (content.strip() if strip_content else content), calls


def split_tool_calls(
    text: str | None,
    tool_names: Iterable[str],
    *,
    new_call_id: Callable[[], str] | None = None,
) -> list[str | ToolCall]:
    """Generated text as its pieces in the order generated: text (str, as written) and OpenAI tool calls.

    Accepts `<tool_call>` blocks holding one call object or a list of them, a
    final block whose closing tag is missing, `parameters`/`args` for
    `arguments`, arguments given as a JSON string, code fences inside the
    block, and, when the answer starts with such JSON, no tags at all (then
    every further call object outside blocks is a call too). Nothing is dropped:
    text after a call, inside its block or after a bare call, is a text piece;
    a block that does not parse or names an undeclared tool stays text, and
    joining the text pieces gives back everything that is not a call.
    """
    if not text:
        return []
    allowed = set(tool_names)
    make_id = new_call_id or _new_call_id
    pieces: list[str | ToolCall] = []
    # A model that starts with an untagged call writes its calls that way: then JSON calls outside
    # `<tool_call>` blocks count as calls too (text that merely mentions JSON later does not start so).
    bare = _leading_calls(_CODE_FENCE.sub("", text.strip()), allowed) is not None

    def outside(segment: str) -> None:
        if bare:
            _split_bare_calls(segment, allowed, make_id, pieces)
        else:
            pieces.append(segment)

    position = 0
    for match in _TOOL_CALL_BLOCK.finditer(text):
        outside(text[position : match.start()])
        position = match.end()
        body = match.group("body")
        leading = _leading_calls(_CODE_FENCE.sub("", body.strip()), allowed)
        if leading is None:
            pieces.append(match.group(0))
            continue
        found, rest = leading
        pieces.extend(_openai_tool_call(name, arguments, make_id()) for name, arguments in found)
        pieces.append(rest)  # chatter after the call inside its block: said, so kept
    outside(text[position:])
    return _merged(pieces)


def _split_bare_calls(text: str, allowed: set[str], make_id: Callable[[], str], pieces: list[str | ToolCall]) -> None:
    """Untagged calls: each JSON call object (or list of them) found in `text` is a call, the rest text."""
    position = 0
    scan = 0
    while True:
        start = _next_json_start(text, scan)
        if start < 0:
            break
        leading = _leading_calls(text[start:], allowed)
        if leading is None:
            scan = start + 1
            continue
        found, rest = leading
        if not _FENCE_ONLY.fullmatch(text[position:start]):  # a fence around a call is formatting, not text
            pieces.append(text[position:start])
        pieces.extend(_openai_tool_call(name, arguments, make_id()) for name, arguments in found)
        position = scan = len(text) - len(rest)
    if not _FENCE_ONLY.fullmatch(text[position:]):
        pieces.append(text[position:])


def _next_json_start(text: str, scan: int) -> int:
    starts = [i for i in (text.find("{", scan), text.find("[", scan)) if i >= 0]
    return min(starts, default=-1)


def _merged(pieces: list[str | ToolCall]) -> list[str | ToolCall]:
    """Adjacent text pieces joined, empty ones dropped."""
    merged: list[str | ToolCall] = []
    for piece in pieces:
        if isinstance(piece, str):
            if not piece:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] += piece
                continue
        merged.append(piece)
    return merged


def _leading_calls(text: str, allowed: set[str]) -> tuple[list[tuple[str, str]], str] | None:
    """(name, arguments JSON) pairs and the text after them, if `text` starts (after whitespace) with
    one call or a list of calls to allowed tools; else None."""
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, (dict, list)):
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call_of(item, allowed) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return calls, stripped[end:]  # type: ignore[return-value]


def _call_of(item: Any, allowed: set[str]) -> tuple[str, str] | None:
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):  # an OpenAI-shaped call echoed back
        item = item["function"]
    name = item.get("name")
    if not isinstance(name, str) or name not in allowed:
        return None
    arguments: Any = next((item[key] for key in _ARGUMENT_KEYS if key in item), {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return name, json.dumps(arguments, ensure_ascii=False)


def _openai_tool_call(name: str, arguments: str, call_id: str) -> ToolCall:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"
