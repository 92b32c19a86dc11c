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
_ARGUMENT_KEYS = ("arguments", "parameters", "args")


def parse_tool_calls(
    text: str | None,
    tool_names: Iterable[str],
    *,
    new_call_id: Callable[[], str] | None = None,
    strip_content: bool = True,
) -> tuple[str | None, list[ToolCall]]:
    """Split generated text into (remaining content or None, OpenAI tool calls).

    Accepts `<tool_call>` blocks holding one call object or a list of them, a
    final block whose closing tag is missing, `parameters`/`args` for
    `arguments`, arguments given as a JSON string, code fences inside the
    block, and, when the whole answer is nothing but such JSON, no tags at all.
    A block that does not parse or names an undeclared tool stays in the
    content, so nothing the model said is silently lost.

    With `strip_content=False` the content keeps the model's whitespace (a text-only
    answer comes back exactly as generated); it is None only when nothing but
    whitespace is left around the calls.
    """
    if not text:
        return None, []
    allowed = set(tool_names)
    make_id = new_call_id or _new_call_id
    calls: list[ToolCall] = []
    kept: list[str] = []
    position = 0
    for match in _TOOL_CALL_BLOCK.finditer(text):
        kept.append(text[position : match.start()])
        position = match.end()
        found = _calls_from_json_text(match.group("body"), allowed)
        if found is None:
            kept.append(match.group(0))
        else:
            calls.extend(_openai_tool_call(name, arguments, make_id()) for name, arguments in found)
    kept.append(text[position:])
    if not calls and TOOL_CALL_OPEN not in text:
        bare = _calls_from_json_text(text, allowed)
        if bare is not None:
            return None, [_openai_tool_call(name, arguments, make_id()) for name, arguments in bare]
    content = "".join(kept)
    if not content.strip():
        return None, calls
    return (content.strip() if strip_content else content), calls


def _calls_from_json_text(body: str, allowed: set[str]) -> list[tuple[str, str]] | None:
    """(name, arguments JSON) pairs if `body` is one call or a list of calls to allowed tools."""
    value = _first_json_value(_CODE_FENCE.sub("", body.strip()))
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call_of(item, allowed) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


def _first_json_value(text: str) -> Any:
    """The JSON object or array at the start of `text` (trailing chatter ignored), else None."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0 or text[:start].strip():
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, (dict, list)) else None


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
