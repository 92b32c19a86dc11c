"""A scripted model for training tests: it answers like `tool_then_answer`, attaches a token-id bundle
to every answer, and fails the requests of the tasks it is told to.

Tokens are the UTF-8 bytes of a rendering of the conversation: each item is one line of its role, type,
name, arguments and text, so turn n+1's prompt (the conversation plus turn n's items echoed back)
begins with turn n's prompt + generation, as a token-exact model server promises. A test can check
every id it gets back against `render`.
"""

from __future__ import annotations

from typing import Any

from nemo_gym.testing import ScriptedOpenAI, Turn, tool_then_answer

FAILURE_MARKER = "scripted failure"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return str(content or "")


def render(items: list[dict[str, Any]] | str) -> bytes:
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    lines = [
        f"{item.get('role', '')}|{item.get('type', 'message')}|{item.get('name', '')}|{item.get('arguments', '')}|"
        f"{_text(item.get('content')) or _text(item.get('output'))}\n"
        for item in items
    ]
    return "".join(lines).encode()


def user_text(body: dict[str, Any]) -> str:
    items = body.get("input")
    if isinstance(items, str):
        return items
    return " ".join(_text(item.get("content")) for item in items or [] if item.get("role") == "user")


class TokenUpstream:
    """`fail_next[word] = n` fails the next n model calls whose user text contains `word` (HTTP 500)."""

    def __init__(self) -> None:
        self.fail_next: dict[str, int] = {}
        self.context_full_after_tool: set[str] = set()
        """Words whose task's second call finds the context full: answered the way vllm_model answers a
        context-length 400 (an empty, incomplete turn with an empty bundle and reason context_limit)."""
        self.calls_by_word: dict[str, int] = {}
        self._body: dict[str, Any] | None = None
        self.server = ScriptedOpenAI(script=self._script, mangle=self.attach_tokens)

    @property
    def url(self) -> str:
        return self.server.url

    def _script(self, body: dict[str, Any]) -> Turn:
        text = user_text(body)
        for word, left in self.fail_next.items():
            if word in text:
                self.calls_by_word[word] = self.calls_by_word.get(word, 0) + 1
                if left > 0:
                    self.fail_next[word] = left - 1
                    raise RuntimeError(FAILURE_MARKER)  # aiohttp answers 500
        # `attach_tokens` runs right after this, in the same handler with no await between: it is this body's.
        self._body = body
        return tool_then_answer(body)

    def attach_tokens(self, answer: dict[str, Any]) -> dict[str, Any]:
        assert self._body is not None
        text = user_text(self._body)
        has_tool_result = any(item.get("type") == "function_call_output" for item in self._body.get("input") or [])
        if has_tool_result and any(word in text for word in self.context_full_after_tool):
            message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ""}]}
            message |= {"prompt_token_ids": [], "generation_token_ids": [], "generation_log_probs": []}
            answer |= {"output": [message], "status": "incomplete", "incomplete_details": {"reason": "context_limit"}}
            return answer
        prompt = list(render(self._body.get("input") or []))
        generation = list(render(answer["output"]))
        answer["output"][-1].update(
            prompt_token_ids=prompt,
            generation_token_ids=generation,
            generation_log_probs=[-0.5] * len(generation),
        )
        return answer

    def __enter__(self) -> TokenUpstream:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
