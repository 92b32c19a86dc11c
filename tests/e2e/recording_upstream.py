"""An OpenAI-compatible `/v1/responses` upstream for tests that need to see what a scripted one hides:
how many requests are still open (a client that disconnects cancels its request's handler) and
which Authorization header each request carried."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import orjson
from aiohttp import web

from nemo_gym.testing.inprocess import free_port


class RecordingUpstream:
    """Answers after `latency_s` (None = never): a `get_weather` call if `always_call_tool`, else the
    tool-then-answer dance (a call while no tool output is in the input, then a text answer)."""

    def __init__(self, *, always_call_tool: bool = False, latency_s: float | None = 0.0):
        self.always_call_tool = always_call_tool
        self.latency_s = latency_s
        self.received = 0
        self.open = 0
        self.authorizations: list[str] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _output(self, body: dict) -> list[dict]:
        answered = any(item.get("type") == "function_call_output" for item in body.get("input") or [])
        if self.always_call_tool or not answered:
            return [
                {
                    "type": "function_call",
                    "id": f"fc_{uuid.uuid4().hex}",
                    "call_id": f"call_{uuid.uuid4().hex}",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                    "status": "completed",
                }
            ]
        return [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Cold.", "annotations": []}],
            }
        ]

    async def _responses(self, request: web.Request) -> web.Response:
        self.received += 1
        self.open += 1
        self.authorizations.append(request.headers.get("Authorization", ""))
        try:
            body = orjson.loads(await request.read())
            if self.latency_s is None:
                await asyncio.Event().wait()
            await asyncio.sleep(self.latency_s)
            response = {
                "id": f"resp_{uuid.uuid4().hex}",
                "object": "response",
                "created_at": 0,
                "model": "m",
                "status": "completed",
                "output": self._output(body),
                "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
            }
            return web.Response(body=orjson.dumps(response), content_type="application/json")
        finally:
            self.open -= 1

    def start(self) -> RecordingUpstream:
        app = web.Application()
        app.router.add_post("/v1/responses", self._responses)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1)
        self._thread.start()

        async def serve() -> None:
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def wait_until(self, condition, within_s: float) -> bool:
        """Poll `condition()` until it holds or `within_s` passes (a bound, not a timing claim)."""
        deadline = time.monotonic() + within_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(condition())

    def wait_until_nothing_open(self, within_s: float) -> bool:
        return self.wait_until(lambda: self.open == 0, within_s)

    def __enter__(self) -> RecordingUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
