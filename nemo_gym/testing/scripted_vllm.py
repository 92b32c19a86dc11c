"""A scripted vLLM on loopback: vLLM's OpenAI server surface over a toy tokenizer that re-tokenizes
the way a real one does (see `nemo_gym.testing.toy_chatml`), for tests of token-exact rollouts.

Endpoints, shaped like vLLM's (>= 0.10.2):
  * `POST /tokenize`: `messages` (+ `tools`, `add_generation_prompt`, default true) rendered by the
    chat template, or a `prompt` string; returns `count`, `max_model_len`, `tokens`.
  * `POST /detokenize`: `tokens` -> `prompt` (special tokens included).
  * `POST /v1/chat/completions`: renders and re-tokenizes the whole conversation every call (what
    breaks the token prefix); tool calls come back parsed (as with `--tool-call-parser hermes`);
    `return_token_ids` adds `prompt_token_ids` (top level) and the choice's `token_ids`; `logprobs`
    gives `logprobs.content`, as `token_id:<n>` with `return_tokens_as_token_ids`.
  * `POST /v1/completions`: `prompt` as a list of token ids (token-in) or a string; raw generated
    text, tool calls included (no parser runs); `logprobs: <int>` gives `tokens`/`token_logprobs`;
    `return_token_ids` puts `prompt_token_ids` and `token_ids` on the choice; `max_tokens` defaults to 16.

The model samples its turn one character per token and then the end-of-turn token `<|im_end|>`,
which is in `token_ids` but not in `text` (vLLM skips special tokens in text). A prompt plus
`max_tokens` beyond `max_model_len` is a 400 worded like vLLM's; fewer `max_tokens` than the turn
needs cuts it with `finish_reason: length`. What the model says comes from the same scripts as
`ScriptedOpenAI` (a function of a chat-shaped body: `messages`, `tools`); a token-id prompt is read
back into messages first, so a script answers both endpoints alike.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from nemo_gym.testing import toy_chatml
from nemo_gym.testing.scripted_openai import Script, ScriptedOpenAI, Turn, tool_then_answer
from nemo_gym.tool_call_text import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_tool_calls

JSONDict = dict[str, Any]


def generated_text(turn: Turn) -> str:
    """What the model writes for a turn: its text, then each call as compact JSON in `<tool_call>` tags
    (the template renders calls back with spaces, one of the two drifts this server plays)."""
    parts = [turn.text] if turn.text else []
    for name, arguments in turn.tool_calls:
        payload = json.dumps({"name": name, "arguments": json.loads(arguments)}, separators=(",", ":"))
        parts.append(f"{TOOL_CALL_OPEN}\n{payload}\n{TOOL_CALL_CLOSE}")
    return "\n".join(parts)


def log_prob(position: int) -> float:
    """A deterministic, position-dependent log probability for each sampled token."""
    return -round(0.05 + 0.01 * (position % 7), 4)


def _tool_names(tools: list[JSONDict]) -> list[str]:
    return [(tool.get("function") or tool).get("name", "") for tool in tools]


class _Generation:
    """One sampled turn: ids (EOS included unless cut), log probs, text as vLLM returns it."""

    def __init__(self, turn: Turn, max_tokens: int):
        ids = [*toy_chatml.sample_ids(generated_text(turn)), toy_chatml.EOS_ID]
        self.finish_reason = "stop"
        if turn.finish_length or max_tokens < len(ids):
            ids = ids[: min(max_tokens, len(ids) - 1)]
            self.finish_reason = "length"
        self.ids = ids
        self.log_probs = [log_prob(position) for position in range(len(ids))]
        self.text = toy_chatml.decode(ids, skip_special_tokens=True)


class ScriptedVLLM(ScriptedOpenAI):
    """The server; `start()`, `stop()`, `url` (with /v1), `requests` and fault knobs as in `ScriptedOpenAI`.

    `root_url` is where `/tokenize` and `/detokenize` live (vLLM serves them outside `/v1`).
    `tokenize_requests` records every `/tokenize` body.
    """

    def __init__(self, script: Script = tool_then_answer, *, max_model_len: int = 8192, **options: Any):
        super().__init__(script, **options)
        self.max_model_len = max_model_len
        self.tokenize_requests: list[JSONDict] = []

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- tokenizer endpoints -----------------------------------------------------------------
    async def _tokenize(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.tokenize_requests.append(body)
        if "messages" in body:
            text = toy_chatml.render(body["messages"], body.get("tools"), body.get("add_generation_prompt", True))
        else:
            text = body.get("prompt", "")
        tokens = toy_chatml.encode(text)
        answer: JSONDict = {"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens}
        answer["token_strs"] = [toy_chatml.token_str(t) for t in tokens] if body.get("return_token_strs") else None
        return web.json_response(answer)

    async def _detokenize(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        return web.json_response({"prompt": toy_chatml.decode(body["tokens"])})

    # ---- generation endpoints ----------------------------------------------------------------
    def _too_long(self, prompt_ids: list[int], max_tokens: int) -> web.Response | None:
        if len(prompt_ids) + max_tokens <= self.max_model_len:
            return None
        message = (
            f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
            f"{len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion."
        )
        error = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
        return web.json_response(error, status=400)

    async def _chat(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if self.record_requests:
            self.requests.append(body)
        fault = await self._maybe_fault()
        if fault is not None:
            return fault
        tools = body.get("tools") if body.get("tool_choice") != "none" else None
        prompt_ids = toy_chatml.encode(toy_chatml.render(body["messages"], tools, True))
        requested = body.get("max_completion_tokens") or body.get("max_tokens")
        max_tokens = requested if requested is not None else self.max_model_len - len(prompt_ids)
        refusal = self._too_long(prompt_ids, max_tokens)
        if refusal is not None:
            return refusal
        generation = _Generation(self.script(body), max_tokens)
        content, calls = parse_tool_calls(generation.text, _tool_names(tools or []), strip_content=False)
        message: JSONDict = {"role": "assistant", "content": content, "tool_calls": calls}
        finish = "tool_calls" if calls and generation.finish_reason == "stop" else generation.finish_reason
        choice: JSONDict = {"index": 0, "message": message, "finish_reason": finish, "stop_reason": None}
        if body.get("logprobs"):
            as_ids = body.get("return_tokens_as_token_ids")
            choice["logprobs"] = {
                "content": [
                    {"token": f"token_id:{t}" if as_ids else toy_chatml.token_str(t), "logprob": lp, "top_logprobs": []}
                    for t, lp in zip(generation.ids, generation.log_probs)
                ]
            }
        completion: JSONDict = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [choice],
            "usage": self._usage(prompt_ids, generation),
        }
        if body.get("return_token_ids"):
            completion["prompt_token_ids"] = prompt_ids
            choice["token_ids"] = generation.ids
        return self._send(completion)

    async def _completions(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if self.record_requests:
            self.requests.append(body)
        fault = await self._maybe_fault()
        if fault is not None:
            return fault
        prompt = body.get("prompt")
        prompt_ids = list(prompt) if isinstance(prompt, list) else toy_chatml.encode(prompt or "")
        max_tokens = body.get("max_tokens")
        max_tokens = 16 if max_tokens is None else max_tokens  # vLLM's completions default
        refusal = self._too_long(prompt_ids, max_tokens)
        if refusal is not None:
            return refusal
        messages, tools = toy_chatml.parse_chatml(toy_chatml.decode(prompt_ids))
        generation = _Generation(self.script({"messages": messages, "tools": tools}), max_tokens)
        choice: JSONDict = {
            "index": 0,
            "text": generation.text,
            "logprobs": None,
            "finish_reason": generation.finish_reason,
            "stop_reason": None,
        }
        if body.get("logprobs") is not None:
            as_ids = body.get("return_tokens_as_token_ids")
            tokens = [f"token_id:{t}" if as_ids else toy_chatml.token_str(t) for t in generation.ids]
            choice["logprobs"] = {
                "tokens": tokens,
                "token_logprobs": generation.log_probs,
                "top_logprobs": [{token: lp} for token, lp in zip(tokens, generation.log_probs)],
                "text_offset": [],
            }
        if body.get("return_token_ids"):
            choice["prompt_token_ids"] = prompt_ids
            choice["token_ids"] = generation.ids
        completion = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [choice],
            "usage": self._usage(prompt_ids, generation),
        }
        return self._send(completion)

    def _send(self, answer: JSONDict) -> web.Response:
        if self.mangle is not None:
            answer = self.mangle(answer)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    @staticmethod
    def _usage(prompt_ids: list[int], generation: _Generation) -> JSONDict:
        prompt, completion = len(prompt_ids), len(generation.ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _app(self) -> web.Application:
        app = super()._app()
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/detokenize", self._detokenize)
        app.router.add_post("/v1/completions", self._completions)
        return app
