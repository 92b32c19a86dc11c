"""A scripted OpenAI-compatible upstream on loopback, for tests and benchmarks (never a paid API).

It answers `/v1/responses` and `/v1/chat/completions` from a *script*: a function from the request
body to the assistant's turn. The default script is the tool-calling dance every example
environment needs: if tools are offered and no tool result is in the conversation yet, call the
first tool with arguments filled from its schema; once a tool result is present, answer in text.

Knobs for fault tests and benchmarks: fixed latency per request, a fault injected on every Nth
request (e.g. HTTP 500 or 429 with Retry-After, or a 401 with a body of your choosing), and
`mangle`, a function that rewrites every answer before it is sent (to play an upstream that answers
`output: [1, 2, 3]`), and `answer_with`, which sends the rendered answer its own way (see
`huge_answer`, `trickled_answer`, `answer_after_keepalives`). Built on aiohttp's server: it is
cheap, so a benchmark measures our stack and not the stand-in.

Run standalone: `python -m nemo_gym.testing.scripted_openai --port 8000 --latency-ms 200`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

JSONDict = dict[str, Any]


@dataclass
class Turn:
    """What the scripted model says in one turn: text, tool calls, or both."""

    text: str | None = None
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, JSON arguments)
    finish_length: bool = False


Script = Callable[[JSONDict], Turn]
AnswerSender = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]
"""Sends (request, the rendered answer's bytes) its own way: huge, slow, preceded by keepalives."""


def huge_answer(size_bytes: int, *, with_content_length: bool = True) -> AnswerSender:
    """An answer of `size_bytes` bytes (JSON-looking padding), generated as it is sent and never held,
    so a test can play a 300 MB upstream for free. Stops quietly when the reader hangs up."""

    async def send(request: web.Request, answer: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if with_content_length:
            response.content_length = size_bytes
        await response.prepare(request)
        piece = b" " * 65536
        sent = 0
        try:
            while sent < size_bytes:
                part = piece[: min(len(piece), size_bytes - sent)]
                await response.write(part)
                sent += len(part)
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    return send


def trickled_answer(interval_s: float) -> AnswerSender:
    """Headers at once, then one byte (a space) every `interval_s`, without end: an upstream that never
    goes silent long enough for a plain read timeout and never finishes. Stops when the reader hangs up."""

    async def send(request: web.Request, answer: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while True:
                await response.write(b" ")
                await asyncio.sleep(interval_s)
        except ConnectionError:
            pass
        return response

    return send


def answer_after_keepalives(count: int, interval_s: float) -> AnswerSender:
    """Headers at once, `count` keepalive bytes (whitespace, as proxies send while a model generates)
    `interval_s` apart, then the real answer: a slow but healthy upstream."""

    async def send(request: web.Request, answer: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(count):
            await response.write(b"\n")
            await asyncio.sleep(interval_s)
        await response.write(answer)
        await response.write_eof()
        return response

    return send


def _example_value(name: str, schema: JSONDict) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "San Francisco" if name == "city" else name


def _tool_spec(tool: JSONDict) -> tuple[str, JSONDict]:
    if "function" in tool:  # chat format
        return tool["function"]["name"], tool["function"].get("parameters") or {}
    return tool["name"], tool.get("parameters") or {}


def _has_tool_result(body: JSONDict) -> bool:
    items = body.get("input") if "input" in body else body.get("messages")
    if not isinstance(items, list):
        return False
    return any(item.get("type") == "function_call_output" or item.get("role") == "tool" for item in items)


def tool_then_answer(body: JSONDict) -> Turn:
    """Call the first offered tool once, then answer with text that quotes the tool result."""
    tools = body.get("tools") or []
    if tools and not _has_tool_result(body):
        name, parameters = _tool_spec(tools[0])
        properties = parameters.get("properties") or {}
        arguments = {key: _example_value(key, spec) for key, spec in properties.items()}
        return Turn(tool_calls=[(name, orjson.dumps(arguments).decode())])
    return Turn(text="Here is what I found: it is cold, so bring a jacket.")


class ScriptedOpenAI:
    """The server. `start()` runs it on a background thread; `url` is the base URL including /v1."""

    def __init__(
        self,
        script: Script = tool_then_answer,
        *,
        latency_s: float = 0.0,
        fault_every: int = 0,
        fault_status: int = 500,
        retry_after_s: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "scripted-model",
        fault_body: bytes = b'{"error": {"message": "injected fault"}}',
        mangle: Callable[[JSONDict], JSONDict] | None = None,
    ):
        self.script, self.latency_s, self.model = script, latency_s, model
        self.fault_every, self.fault_status, self.retry_after_s = fault_every, fault_status, retry_after_s
        self.fault_body = fault_body
        self.mangle = mangle
        """Rewrites each rendered answer (Responses or Chat Completions) before it is sent."""
        self.answer_with: AnswerSender | None = None
        """Sends each rendered answer its own way (`huge_answer`, `trickled_answer`, ...)."""
        self.host, self.port = host, port
        self.requests: list[JSONDict] = []
        self.record_requests = True
        self._counter = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ---- HTTP handlers -------------------------------------------------------------------
    async def _maybe_fault(self) -> web.Response | None:
        number = next(self._counter)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.fault_every and number % self.fault_every == 0:
            headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else None
            return web.Response(
                status=self.fault_status, body=self.fault_body, content_type="application/json", headers=headers
            )
        return None

    async def _answer(self, request: web.Request, render: Callable[[JSONDict, Turn], JSONDict]) -> web.StreamResponse:
        """Record the request, maybe inject a fault, else render the script's turn."""
        body = orjson.loads(await request.read())
        if self.record_requests:
            self.requests.append(body)
        fault = await self._maybe_fault()
        if fault is not None:
            return fault
        answer = render(body, self.script(body))
        if self.mangle is not None:
            answer = self.mangle(answer)
        if self.answer_with is not None:
            return await self.answer_with(request, orjson.dumps(answer))
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, self._render_response)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, self._render_chat)

    def _render_response(self, body: JSONDict, turn: Turn) -> JSONDict:
        output: list[JSONDict] = []
        if turn.text is not None:
            output.append(
                {
                    "id": f"msg_{uuid.uuid4().hex}",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": turn.text, "annotations": []}],
                }
            )
        for name, arguments in turn.tool_calls:
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            output.append(
                {
                    "id": f"fc_{uuid.uuid4().hex}",
                    "type": "function_call",
                    "call_id": call_id,
                    "name": name,
                    "arguments": arguments,
                    "status": "completed",
                }
            )
        response = {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "model": body.get("model") or self.model,
            "output": output,
            "status": "incomplete" if turn.finish_length else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if turn.finish_length else None,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "usage": {
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 120,
            },
        }
        return response

    def _render_chat(self, body: JSONDict, turn: Turn) -> JSONDict:
        message: JSONDict = {"role": "assistant", "content": turn.text}
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
                for name, arguments in turn.tool_calls
            ]
        finish = "length" if turn.finish_length else ("tool_calls" if turn.tool_calls else "stop")
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
        return completion

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    # ---- lifecycle -------------------------------------------------------------------------
    async def serve(self) -> None:
        """Start listening on the current loop (blocks only until bound)."""
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=16384)
        await site.start()
        if self._runner.addresses:  # the bound address tells us the port when 0 was asked
            self.port = self._runner.addresses[0][1]

    def start(self) -> ScriptedOpenAI:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="scripted-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("scripted OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop = None

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible server for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-every", type=int, default=0)
    parser.add_argument("--fault-status", type=int, default=500)
    parser.add_argument("--retry-after-s", type=float, default=None)
    args = parser.parse_args()

    server = ScriptedOpenAI(
        latency_s=args.latency_ms / 1000,
        fault_every=args.fault_every,
        fault_status=args.fault_status,
        retry_after_s=args.retry_after_s,
        host=args.host,
        port=args.port,
    )
    server.record_requests = False

    async def run() -> None:
        await server.serve()
        print(f"scripted OpenAI server listening on {server.url}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
