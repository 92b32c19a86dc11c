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
from collections.abc import Iterable, Sequence
from typing import Any

# The parser moved to nemo_gym so vllm_model's token-in path reads calls the same way; re-exported here.
from nemo_gym.tool_call_text import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolCall, parse_tool_calls
from responses_api_models.local_model.canonical_json_grammar import CanonicalJsonGrammar, canonical_json, gbnf_literal

Message = dict[str, Any]

__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ToolCall",
    "declared_tool_names",
    "parse_tool_calls",
    "render_tools_into_messages",
    "tool_call_grammar",
]

# No phrasing tried made SmolLM2-135M call a tool unprompted (README.md of this
# folder has the counts); this one is Hermes-like, which larger models were trained
# on, with a worked example built from the first declared tool. For the smallest
# models the engine constrains decoding instead (see `tool_call_grammar`).
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


def tool_call_grammar(tools: Sequence[dict[str, Any]] | None, tool_choice: Any = "required") -> str | None:
    """A llama.cpp grammar admitting exactly one call, written as this module renders a past call.

    `<tool_call>{"name": <declared tool>, "arguments": {...}}</tool_call>`, the JSON spelled as
    `json.dumps` spells it (see `canonical_json_grammar`), so the sampled text is the text the
    conversation shows for the call on the next turn whether it is re-rendered (`_tool_call_text`)
    or continued from the sampled token ids: the model sees its call in the form its prompt teaches.
    None when there is no tool to call.
    """
    specs = [spec for spec in (_function_spec(tool) for tool in tools or ()) if spec.get("name")]
    forced = _forced_tool_name(tool_choice)
    if forced is not None:
        specs = [spec for spec in specs if spec["name"] == forced] or specs
    if not specs:
        return None
    grammar = CanonicalJsonGrammar()
    calls = []
    for spec in specs:
        opening = gbnf_literal('{"name": ' + canonical_json(spec["name"]) + ', "arguments": ')
        arguments = grammar.value_rule(spec.get("parameters") or {"type": "object"})
        calls.append(grammar.add(f'{opening} {arguments} "}}"', "call"))
    return grammar.text(f"{gbnf_literal(TOOL_CALL_OPEN)} ( {' | '.join(calls)} ) {gbnf_literal(TOOL_CALL_CLOSE)}")


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
    nested = call.get("function")
    function: dict[str, Any] = nested if isinstance(nested, dict) else call
    arguments: Any = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # shown to the model as the string it was
    payload = {"name": function.get("name"), "arguments": arguments if arguments is not None else {}}
    return f"{TOOL_CALL_OPEN}{canonical_json(payload)}{TOOL_CALL_CLOSE}"
