"""math_with_code: solve a math problem with a persistent Python tool; the boxed answer must match.

Tool `execute_python{code}` runs a cell in this rollout's own interpreter (variables and imports
persist across calls, like a notebook) inside the sandbox: model-written code never runs in this
process. Sessions are keyed by the rollout's session id, opened on first use, closed at `verify`,
reaped after `session_idle_timeout_s` without a call (an abandoned rollout cannot leak a process),
capped at `max_sessions` (the least recently used is closed first) and all closed at shutdown.

`verify` reads the latest assistant message containing `\\boxed{...}`; the stripped content of its
first box must equal `expected_result` as a string, or as a number (`0.50` matches `0.5`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, PrivateAttr

from nemo_gym.openai_types import JSONDict, assistant_messages, output_text
from nemo_gym.sandbox import PythonSession, Sandbox, SandboxLimits
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.servers.session import SESSION_ID_KEY


class MathWithCodeConfig(BaseResourcesServerConfig):
    max_concurrent_executions: int = Field(4, ge=1)
    """Default 4. Cells running at once across all rollouts; more wait their turn."""
    execution_timeout_s: float = Field(10.0, gt=0)
    """Default 10 s. Wall-clock limit per cell; a cell past it restarts its session with empty state."""
    memory_mb: int = Field(512, gt=0)
    """Default 512 MB. Address-space limit of each session's interpreter."""
    max_output_bytes: int = Field(64_000, gt=0)
    """Default 64 kB. stdout and stderr of a cell are each cut beyond this: it all goes back into the
    model's context, and a print loop must not flood it."""
    session_idle_timeout_s: float = Field(300.0, gt=0)
    """Default 300 s. A session with no call for this long is closed (the rollout was abandoned)."""
    max_sessions: int = Field(256, ge=1)
    """Default 256. Live interpreters at most; opening one more closes the least recently used."""


class ExecutePythonRequest(BaseModel):
    code: str


class ExecutePythonResponse(BaseModel):
    stdout: str
    stderr: str
    error: str | None
    """Why the cell failed (exception, timeout, memory limit), or null when it ran cleanly."""


class MathCodeVerifyRequest(BaseVerifyRequest):
    expected_result: str


class MathCodeVerifyResponse(BaseVerifyResponse):
    expected_result: str
    extracted_result: str | None


@dataclass
class _LiveSession:
    opening: asyncio.Task[PythonSession]
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0


def extract_boxed(text: str) -> str | None:
    """Content of the first `\\boxed{...}` in `text`, braces balanced; None if there is none or it never closes."""
    start = text.find("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            if depth == 0:
                return text[begin:index]
            depth -= 1
    return None


def results_match(extracted: str, expected: str) -> bool:
    extracted, expected = extracted.strip(), expected.strip()
    if extracted == expected:
        return True
    try:
        a, b = float(extracted), float(expected)
    except ValueError:
        return False
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def final_boxed_answer(output: list[JSONDict]) -> str | None:
    for message in reversed(assistant_messages(output)):
        boxed = extract_boxed(output_text([message]))
        if boxed is not None:
            return boxed
    return None


class MathWithCodeServer(SimpleResourcesServer):
    config: MathWithCodeConfig
    _sandbox: Sandbox | None = PrivateAttr(None)
    _sessions: dict[str, _LiveSession] = PrivateAttr(default_factory=dict)
    _reaper: asyncio.Task[None] | None = PrivateAttr(None)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/execute_python")(self.execute_python)
        return app

    async def on_startup(self) -> None:
        limits = SandboxLimits(wall_timeout_s=self.config.execution_timeout_s,
                               cpu_time_s=max(1, math.ceil(self.config.execution_timeout_s)),
                               memory_mb=self.config.memory_mb, max_output_bytes=self.config.max_output_bytes)
        self._sandbox = Sandbox(limits, max_concurrent=self.config.max_concurrent_executions)
        self._reaper = asyncio.create_task(self._reap_idle_sessions())

    async def on_shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session_id in list(self._sessions):
            await self._close_session(session_id)
        if self._sandbox is not None:
            await self._sandbox.aclose()

    @property
    def live_sessions(self) -> int:
        return len(self._sessions)

    async def execute_python(self, request: Request, body: ExecutePythonRequest) -> ExecutePythonResponse:
        session_id = request.session[SESSION_ID_KEY]
        entry = self._sessions.get(session_id)
        if entry is None:
            await self._make_room()
            assert self._sandbox is not None
            entry = _LiveSession(asyncio.ensure_future(self._sandbox.open_session()))
            self._sessions[session_id] = entry
        entry.busy += 1
        try:
            session = await entry.opening
            result = await session.execute(body.code)
        finally:
            entry.busy -= 1
            entry.last_used = time.monotonic()
        error = result.describe_error()
        return ExecutePythonResponse(stdout=result.stdout, stderr=result.stderr, error=error)

    async def verify(self, request: Request, body: MathCodeVerifyRequest) -> MathCodeVerifyResponse:
        await self._close_session(request.session[SESSION_ID_KEY])
        extracted = final_boxed_answer(body.response.output)
        reward = 1.0 if extracted is not None and results_match(extracted, body.expected_result) else 0.0
        return MathCodeVerifyResponse(**body.model_dump(), reward=reward,
                                      extracted_result=None if extracted is None else extracted.strip())

    async def _close_session(self, session_id: str) -> None:
        entry = self._sessions.pop(session_id, None)
        if entry is None:
            return
        with contextlib.suppress(Exception):  # a session that failed to open has nothing to close
            session = await entry.opening
            await session.aclose()

    async def _make_room(self) -> None:
        while len(self._sessions) >= self.config.max_sessions:
            idle = [(entry.last_used, sid) for sid, entry in self._sessions.items() if not entry.busy]
            if not idle:
                return  # every session is mid-cell; let this one in rather than kill running work
            await self._close_session(min(idle)[1])

    async def _reap_idle_sessions(self) -> None:
        interval = min(30.0, self.config.session_idle_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self.config.session_idle_timeout_s
            for session_id, entry in list(self._sessions.items()):
                if not entry.busy and entry.last_used < deadline:
                    await self._close_session(session_id)


if __name__ == "__main__":
    MathWithCodeServer.run_webserver()
