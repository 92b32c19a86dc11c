"""A rollout the collector gives up on stops its work: the agent's episode, its model and tool calls,
and the model server's upstream request (issue 8, item 5). Real `ng_run` and `ng_collect_rollouts`
processes; the upstream counts the requests it receives and those still open."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import orjson
import pytest
from aiohttp import web

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from tests.conftest import TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, cli

pytestmark = pytest.mark.slow
AGENT_KEY = f"{TUTORIAL_AGENT}.responses_api_agents.simple_agent"


class ToolLoopingUpstream:
    """An OpenAI-compatible upstream whose model always calls `get_weather`, after `latency_s`
    (None = never answers). A client that disconnects cancels the request's handler, so `open`
    counts requests somebody is still waiting for."""

    def __init__(self) -> None:
        self.latency_s: float | None = 0.2
        self.received = 0
        self.open = 0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _responses(self, request: web.Request) -> web.Response:
        self.received += 1
        self.open += 1
        try:
            await request.read()
            if self.latency_s is None:
                await asyncio.Event().wait()
            await asyncio.sleep(self.latency_s)
            call = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": f"call_{uuid.uuid4().hex}",
                    "name": "get_weather", "arguments": '{"city": "Paris"}', "status": "completed"}
            body = {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": 0, "model": "m",
                    "status": "completed", "output": [call], "usage": {"input_tokens": 1, "output_tokens": 1,
                                                                       "total_tokens": 2}}
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        finally:
            self.open -= 1

    def start(self) -> ToolLoopingUpstream:
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

    def wait_until_nothing_open(self, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while self.open and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.open == 0


@pytest.fixture(scope="module")
def looping_stack():
    upstream = ToolLoopingUpstream().start()
    head_port = free_port()
    # No step cap worth the name and a long episode deadline: only the caller giving up can stop the loop.
    stack = NgRunProcess(TUTORIAL_CONFIGS, f"+head_server.port={head_port}", f"+policy_base_url={upstream.url}",
                         "+policy_api_key=sk-unused", "+policy_model_name=m", f"+{AGENT_KEY}.max_steps=100000",
                         f"+{AGENT_KEY}.episode_timeout_s=3600")
    try:
        stack.wait_ready()
        yield upstream, head_port
    finally:
        stack.stop()
        upstream.stop()


def give_up_after(seconds: float, head_port: int, output) -> None:
    result = cli("ng_collect_rollouts", f"+agent_name={TUTORIAL_AGENT}", f"+input_jsonl_fpath={TUTORIAL_DATA}",
                 f"+output_jsonl_fpath={output}", "+limit=1", f"+rollout_timeout_s={seconds}", "+max_attempts=1",
                 f"+head_server.port={head_port}")
    assert result.returncode == 1, result.stderr  # the one rollout failed: it ran out of time
    assert not output.exists() or output.read_text() == ""


def test_the_agent_stops_calling_the_model_once_the_collector_gave_up(looping_stack, tmp_path):
    upstream, head_port = looping_stack
    upstream.latency_s = 0.2
    before = upstream.received
    give_up_after(2, head_port, tmp_path / "rows.jsonl")
    assert upstream.received - before >= 3  # the episode was looping while the collector waited

    assert upstream.wait_until_nothing_open(within_s=10), "the model server kept its upstream request open"
    settled = upstream.received
    time.sleep(1.5)  # today the agent keeps looping here, ~5 model calls a second at this latency
    assert upstream.received == settled, f"{upstream.received - settled} model calls after the collector gave up"


def test_a_hanging_upstream_request_is_closed_once_the_collector_gave_up(looping_stack, tmp_path):
    upstream, head_port = looping_stack
    upstream.latency_s = None
    before = upstream.received
    give_up_after(1.5, head_port, tmp_path / "rows.jsonl")
    assert upstream.received == before + 1
    assert upstream.wait_until_nothing_open(within_s=10), "the connection to the hanging upstream stayed open"
