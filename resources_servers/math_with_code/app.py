"""math_with_code: solve a math problem with a persistent Python tool; the boxed answer must match.

Tool `execute_python{code}` runs a cell in this rollout's own interpreter (variables and imports
persist across calls, like a notebook) inside the sandbox: model-written code never runs in this
process. Sessions are keyed by the rollout's session id (a `SessionPool`), opened on first use,
closed at `verify`, closed at once when a call is given up mid-cell (its client disconnected: the
cell is killed), reaped after `session_idle_timeout_s` without a call (an abandoned rollout
cannot leak a process), capped at `max_sessions` (the least recently used is closed first) and
all closed at shutdown. A rollout whose session was reaped or evicted is told so in `error` on its
next call: its variables are gone.

`verify` reads the latest assistant message containing `\\boxed{...}`; the content of its first box
must equal `expected_result` as a string, or as a number (`0.50` matches `0.5`). Both sides are
first unwrapped of the math delimiters NeMo Gym's rows put around `expected_result` (`\\(...\\)`,
`$...$`, `\\text{...}`) and have their whitespace runs collapsed.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, PrivateAttr

from nemo_gym.openai_types import JSONDict, assistant_messages, output_text
from nemo_gym.sandbox import Sandbox, SandboxLimits, SessionPool
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
    allow_weaker_isolation: bool = False
    """Default false: on a machine without namespaces (not root) the server refuses to start rather
    than run model code that could read the project. True runs it with process-level limits only."""


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


def unwrap_math(text: str) -> str:
    """`text` without one outer `\\(...\\)`, then `$...$`, then `\\text{...}`, whitespace runs collapsed."""
    text = text.strip()
    for opening, closing in (("\\(", "\\)"), ("$", "$"), ("\\text{", "}")):
        if len(text) > len(opening) and text.startswith(opening) and text.endswith(closing):
            text = text[len(opening) : -len(closing)].strip()
    return " ".join(text.split())


def results_match(extracted: str, expected: str) -> bool:
    extracted, expected = unwrap_math(extracted), unwrap_math(expected)
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
    _sessions: SessionPool | None = PrivateAttr(None)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/execute_python")(self.execute_python)
        return app

    async def on_startup(self) -> None:
        limits = SandboxLimits(
            wall_timeout_s=self.config.execution_timeout_s,
            cpu_time_s=max(1, math.ceil(self.config.execution_timeout_s)),
            memory_mb=self.config.memory_mb,
            max_output_bytes=self.config.max_output_bytes,
        )
        self._sandbox = Sandbox(
            limits,
            max_concurrent=self.config.max_concurrent_executions,
            allow_weaker_isolation=self.config.allow_weaker_isolation,
        )
        self._sessions = SessionPool(
            self._sandbox, max_sessions=self.config.max_sessions, idle_timeout_s=self.config.session_idle_timeout_s
        )

    async def on_shutdown(self) -> None:
        if self._sessions is not None:
            await self._sessions.aclose()
        if self._sandbox is not None:
            await self._sandbox.aclose()

    @property
    def live_sessions(self) -> int:
        return self._sessions.live_sessions if self._sessions is not None else 0

    async def execute_python(self, request: Request, body: ExecutePythonRequest) -> ExecutePythonResponse:
        assert self._sessions is not None
        result = await self._sessions.execute(request.session[SESSION_ID_KEY], body.code)
        error = result.describe_error()
        return ExecutePythonResponse(stdout=result.stdout, stderr=result.stderr, error=error)

    async def verify(self, request: Request, body: MathCodeVerifyRequest) -> MathCodeVerifyResponse:
        if self._sessions is not None:
            await self._sessions.close(request.session[SESSION_ID_KEY])
        extracted = final_boxed_answer(body.response.output)
        reward = 1.0 if extracted is not None and results_match(extracted, body.expected_result) else 0.0
        return MathCodeVerifyResponse(
            **body.model_dump(), reward=reward, extracted_result=None if extracted is None else extracted.strip()
        )


if __name__ == "__main__":
    MathWithCodeServer.run_webserver()
