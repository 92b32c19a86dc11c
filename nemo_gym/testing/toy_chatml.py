"""A toy tokenizer and ChatML chat template that drift the way real ones do, for the scripted vLLM.

Real engines break token-exact multi-turn rollouts in two ways, and this module reproduces both:

* **Re-tokenization.** `encode` is greedy longest-match over a small merge vocabulary, but the
  scripted model *samples* its answers one character per token (`sample_ids`). Rendering the answer's
  text again and encoding it merges `name`, `arguments`, `<tool_call>`... into single tokens: same
  text, different ids.
* **Template re-rendering.** The model writes tool calls as compact JSON; the template renders
  assistant tool calls back with `json.dumps` spacing (`{"name": "f", "arguments": {...}}`), as
  Qwen/Hermes templates do. Same call, different text.

Layout (Qwen2.5-style ChatML; tools in the system turn, tool results as `<tool_response>` blocks in
one user turn per run of results):

    <|im_start|>system\n{system}\n\n# Tools\n...<tools>\n{one JSON spec per line}\n</tools>...<|im_end|>\n
    <|im_start|>user\n{content}<|im_end|>\n
    <|im_start|>assistant\n{content}\n<tool_call>\n{json}\n</tool_call><|im_end|>\n
    <|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>\n
    <|im_start|>assistant\n                      <- the generation prompt

`parse_chatml` reads a rendered (or generated-into) conversation back into chat messages, so the
scripted model can answer a token-id prompt exactly as it answers a chat request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from nemo_gym.tool_call_text import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_tool_calls

JSONDict = dict[str, Any]

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = {END_OF_TEXT: 0, IM_START: 1, IM_END: 2}
EOS_ID = SPECIAL_TOKENS[IM_END]
"""The end-of-turn token the scripted model samples last, as Qwen-style models do (`<|im_end|>`)."""

# Multi-character tokens of the toy vocabulary; every other character is a token of its own.
_MERGES = (
    TOOL_CALL_OPEN,
    TOOL_CALL_CLOSE,
    "<tool_response>",
    "</tool_response>",
    "<tools>",
    "</tools>",
    "assistant",
    "system",
    "user",
    '{"name": "',
    '"arguments": ',
    "arguments",
    "name",
    "synonym",
    "value",
    "the ",
    "ing",
    "ed ",
    "\n\n",
    '": ',
    '", "',
)
_MERGE_BASE = 16
_CHAR_BASE = 1024
_MERGE_IDS = {piece: _MERGE_BASE + index for index, piece in enumerate(_MERGES)}
_VOCAB_PIECES = {**SPECIAL_TOKENS, **_MERGE_IDS}
_PIECE_OF_ID = {token_id: piece for piece, token_id in _VOCAB_PIECES.items()}
# Candidates for a position, longest first, indexed by their first character.
_CANDIDATES: dict[str, list[str]] = {}
for _piece in sorted(_VOCAB_PIECES, key=len, reverse=True):
    _CANDIDATES.setdefault(_piece[0], []).append(_piece)


def encode(text: str) -> list[int]:
    """Greedy longest-match tokenization (what `/tokenize` and chat rendering use)."""
    ids: list[int] = []
    position = 0
    while position < len(text):
        for piece in _CANDIDATES.get(text[position], ()):
            if text.startswith(piece, position):
                ids.append(_VOCAB_PIECES[piece])
                position += len(piece)
                break
        else:
            ids.append(_CHAR_BASE + ord(text[position]))
            position += 1
    return ids


def sample_ids(text: str) -> list[int]:
    """The ids the scripted model emits for `text`: one token per character (a valid spelling of the
    text that greedy `encode` would never produce when a merge applies)."""
    return [_CHAR_BASE + ord(char) for char in text]


def decode(ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
    pieces = []
    for token_id in ids:
        if token_id >= _CHAR_BASE:
            pieces.append(chr(token_id - _CHAR_BASE))
        elif token_id in _PIECE_OF_ID:
            piece = _PIECE_OF_ID[token_id]
            if not (skip_special_tokens and piece in SPECIAL_TOKENS):
                pieces.append(piece)
        else:
            raise ValueError(f"token id {token_id} is not in the toy vocabulary")
    return "".join(pieces)


def token_str(token_id: int) -> str:
    return decode([token_id])


# ---- the chat template ------------------------------------------------------------------------


def _function_spec(tool: JSONDict) -> JSONDict:
    return tool["function"] if isinstance(tool.get("function"), dict) else tool


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _rendered_call(call: JSONDict) -> str:
    function = call.get("function") or call
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass
    payload = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{payload}\n{TOOL_CALL_CLOSE}"


def render(
    messages: Sequence[JSONDict], tools: Sequence[JSONDict] | None = None, add_generation_prompt: bool = True
) -> str:
    """The conversation as the toy template writes it (see the module docstring)."""
    messages = list(messages)
    out: list[str] = []
    system = messages.pop(0) if messages and messages[0].get("role") in ("system", "developer") else None
    if tools:
        specs = "\n".join(json.dumps(_function_spec(tool), ensure_ascii=False) for tool in tools)
        head = f"{_text(system['content'])}\n\n" if system else ""
        out.append(
            f"{IM_START}system\n{head}# Tools\n\nYou may call one or more functions.\n<tools>\n{specs}\n</tools>\n\n"
            f"For each function call, return a json object within {TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} tags.{IM_END}\n"
        )
    elif system:
        out.append(f"{IM_START}system\n{_text(system['content'])}{IM_END}\n")
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if index == 0 or messages[index - 1].get("role") != "tool":
                out.append(f"{IM_START}user")
            out.append(f"\n<tool_response>\n{_text(message.get('content'))}\n</tool_response>")
            if index == len(messages) - 1 or messages[index + 1].get("role") != "tool":
                out.append(f"{IM_END}\n")
        elif role == "assistant":
            text = _text(message.get("content"))
            for number, call in enumerate(message.get("tool_calls") or []):
                separator = "\n" if text or number else ""
                text += separator + _rendered_call(call)
            out.append(f"{IM_START}assistant\n{text}{IM_END}\n")
        else:
            out.append(
                f"{IM_START}{'system' if role == 'developer' else role}\n{_text(message.get('content'))}{IM_END}\n"
            )
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def parse_chatml(text: str) -> tuple[list[JSONDict], list[JSONDict]]:
    """(chat messages, chat tools) of a rendered conversation; an open last turn (the generation
    prompt) is left out. Tool results come back as `tool` messages, assistant calls as `tool_calls`."""
    messages: list[JSONDict] = []
    tools: list[JSONDict] = []
    for chunk in text.split(IM_START)[1:]:
        if IM_END not in chunk:
            continue  # the open turn the model is asked to write
        head, _, body = chunk.split(IM_END, 1)[0].partition("\n")
        role = head.strip()
        if role == "system" and "<tools>\n" in body:
            specs = body.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
            tools = [{"type": "function", "function": json.loads(line)} for line in specs.splitlines() if line]
            body = body.split("# Tools\n", 1)[0].removesuffix("\n\n")
            if not body:
                continue
        if role == "user" and body.startswith("<tool_response>\n"):
            for block in body.split("<tool_response>\n")[1:]:
                messages.append({"role": "tool", "content": block.split("\n</tool_response>", 1)[0]})
            continue
        if role == "assistant":
            names = [tool["function"]["name"] for tool in tools]
            content, calls = parse_tool_calls(body, names, strip_content=False)
            message: JSONDict = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
            continue
        messages.append({"role": role, "content": body})
    return messages, tools
