"""Tool calling for a model whose chat template knows nothing about tools.

SmolLM2's template drops `tools`, drops assistant `tool_calls` and has no
special handling for tool results. So tool use is done in plain text: the
tool list and a calling convention go into the system prompt, past calls and
results are rewritten as ordinary turns, and `<tool_call>{...}</tool_call>`
blocks are parsed back out of the generated text.

Everything here is a pure function over OpenAI Chat Completions dicts, so it
is tested without loading any weights.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Message = dict[str, Any]
ToolCall = dict[str, Any]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# No phrasing tried made SmolLM2-135M call a tool unprompted (README.md of this
# folder has the counts); this one is Hermes-like, which larger models were trained
# on, with a worked example built from the first declared tool. For the smallest
# models the engine constrains decoding instead (see `tool_call_json_schema`).
_TOOLS_INSTRUCTION = """You are a function calling AI model. You may call one or more of these functions:
<tools>
{tool_lines}
</tools>
To call a function, answer with a JSON object inside <tool_call></tool_call> tags, exactly like this:
<tool_call>{example}</tool_call>
{choice_rule}"""

_CHOICE_RULES = {
    "auto": "If no function is needed, answer the user directly.",
    "required": "You must call a function; do not answer directly.",
}


def declared_tool_names(tools: Iterable[dict[str, Any]] | None) -> list[str]:
    """Names of the function tools in an OpenAI `tools` list (Chat or Responses shape)."""
    return [spec["name"] for spec in (_function_spec(tool) for tool in tools or ()) if spec.get("name")]


def render_tools_into_messages(
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None,
    tool_choice: Any = "auto",
) -> list[Message]:
    """Rewrite a conversation into plain turns any ChatML template accepts.

    - `tools` (unless `tool_choice` is "none") become a system-prompt section,
      placed before the text of an existing leading system/developer message
      or in a new system message.
    - assistant `tool_calls` become `<tool_call>` text in the assistant turn.
    - `tool` results become user turns wrapped in `<tool_response>` (runs of
      consecutive results are merged into one turn).
    - `developer` is treated as `system`; list-of-parts content is flattened to text.
    The input is not modified.
    """
    rendered = _render_history(messages)
    specs = [_function_spec(tool) for tool in tools or ()]
    specs = [spec for spec in specs if spec.get("name")]
    instruction = _tools_instruction(specs, tool_choice)
    if instruction is None:
        return rendered
    if rendered and rendered[0]["role"] == "system":
        existing = rendered[0]["content"]
        rendered[0] = {"role": "system", "content": f"{instruction}\n\n{existing}" if existing else instruction}
    else:
        rendered.insert(0, {"role": "system", "content": instruction})
    return rendered


def parse_tool_calls(
    text: str | None,
    tool_names: Iterable[str],
    *,
    new_call_id: Callable[[], str] | None = None,
) -> tuple[str | None, list[ToolCall]]:
    """Split generated text into (remaining content or None, OpenAI tool calls).

    Accepts `<tool_call>` blocks holding one call object or a list of them, a
    final block whose closing tag is missing, `parameters`/`args` for
    `arguments`, arguments given as a JSON string, code fences inside the
    block, and, when the whole answer is nothing but such JSON, no tags at all.
    A block that does not parse or names an undeclared tool stays in the
    content, so nothing the model said is silently lost.
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
    content = "".join(kept).strip()
    return (content or None), calls


def tool_call_json_schema(
    tools: Sequence[dict[str, Any]] | None, tool_choice: Any = "required"
) -> dict[str, Any] | None:
    """A JSON schema that only admits `{"name": <declared tool>, "arguments": {...}}`.

    Used to constrain decoding when a call is mandatory: the smallest models
    follow the `<tool_call>` instruction rarely, but fill a constrained call well.
    None when there is no tool to call.
    """
    specs = [spec for spec in (_function_spec(tool) for tool in tools or ()) if spec.get("name")]
    forced = _forced_tool_name(tool_choice)
    if forced is not None:
        specs = [spec for spec in specs if spec["name"] == forced] or specs
    if not specs:
        return None
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": spec["name"]},
                "arguments": spec.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for spec in specs
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


# --- rendering ---------------------------------------------------------------------------


def _function_spec(tool: dict[str, Any]) -> dict[str, Any]:
    """The `{name, description, parameters}` of a tool, whichever OpenAI shape it comes in."""
    if not isinstance(tool, dict):
        return {}
    function = tool.get("function")
    if isinstance(function, dict):
        return function
    if tool.get("type", "function") == "function":
        return tool
    return {}


def _tools_instruction(specs: list[dict[str, Any]], tool_choice: Any) -> str | None:
    if not specs or tool_choice == "none":
        return None
    forced = _forced_tool_name(tool_choice)
    if forced is not None:
        specs = [spec for spec in specs if spec["name"] == forced] or specs
        choice_rule = f"You must call the function {forced}; do not answer directly."
    else:
        choice_rule = _CHOICE_RULES["required" if tool_choice == "required" else "auto"]
    tool_lines = "\n".join(
        json.dumps(
            {
                "name": spec["name"],
                "description": spec.get("description") or "",
                "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
            },
            ensure_ascii=False,
        )
        for spec in specs
    )
    example = json.dumps({"name": specs[0]["name"], "arguments": _example_arguments(specs[0])}, ensure_ascii=False)
    return _TOOLS_INSTRUCTION.format(tool_lines=tool_lines, example=example, choice_rule=choice_rule)


def _forced_tool_name(tool_choice: Any) -> str | None:
    if not isinstance(tool_choice, dict):
        return None
    function = tool_choice.get("function")
    if isinstance(function, dict) and function.get("name"):
        return str(function["name"])
    name = tool_choice.get("name")
    return str(name) if name else None


def _example_arguments(spec: dict[str, Any]) -> dict[str, str]:
    """Placeholder arguments naming each property, so the model sees the exact keys to fill.

    The placeholder is "..." rather than "<key>": the model copies "<city>" verbatim
    more often than it copies "...".
    """
    properties = (spec.get("parameters") or {}).get("properties") or {}
    return {key: "..." for key in properties}


def _render_history(messages: Sequence[Message]) -> list[Message]:
    rendered: list[Message] = []
    pending_results: list[str] = []

    def flush_results() -> None:
        if pending_results:
            rendered.append({"role": "user", "content": "\n".join(pending_results)})
            pending_results.clear()

    for message in messages:
        role = message.get("role")
        content = _text_of(message.get("content"))
        if role == "tool":
            pending_results.append(f"<tool_response>\n{content}\n</tool_response>")
            continue
        flush_results()
        if role == "developer":
            role = "system"
        if role == "assistant" and message.get("tool_calls"):
            call_text = "\n".join(_tool_call_text(call) for call in message["tool_calls"])
            content = f"{content}\n{call_text}" if content else call_text
        rendered.append({"role": role, "content": content})
    flush_results()
    return rendered


def _text_of(content: Any) -> str:
    """Content as plain text: strings pass through, text parts are joined, None is empty."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return str(content)


def _tool_call_text(call: dict[str, Any]) -> str:
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments: Any = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # shown to the model as the string it was
    payload = {"name": function.get("name"), "arguments": arguments if arguments is not None else {}}
    return f"{TOOL_CALL_OPEN}{json.dumps(payload, ensure_ascii=False)}{TOOL_CALL_CLOSE}"


# --- parsing -----------------------------------------------------------------------------

# A block ends at its closing tag, at the next opening tag, or at the end of the text.
_TOOL_CALL_BLOCK = re.compile(
    r"<tool_call>(?P<body>.*?)(?:</tool_call>|(?=<tool_call>)|\Z)",
    re.DOTALL,
)
_CODE_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_ARGUMENT_KEYS = ("arguments", "parameters", "args")


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
