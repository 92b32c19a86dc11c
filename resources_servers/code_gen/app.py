"""code_gen: write a Python program or function; it must pass the task's unit tests, run in the sandbox.

No tools. `verify` takes the last ```python fence (else the last fence of any language) from the
final assistant message and runs all of the task's tests in ONE sandbox run: `harness.py` runs
there, starts a fresh interpreter per test and prints a JSON report. Two test styles, as in
LiveCodeBench (`verifier_metadata.unit_tests`):
  * no `fn_name`: each input is fed as stdin; stripped stdout lines must equal the expected output's;
  * `fn_name`: the function (or `Solution().<fn_name>`) is called with the JSON-decoded arguments
    (an input string holds one JSON value per line, or give a list) and its return value must
    equal the JSON-decoded expected output.
Reward 1.0 iff every test passes.

The sandbox run is a job of the server's `nemo_gym.compute` executor: in this process's sandbox by
default, or as a Ray task that runs the same sandbox on a cluster node when the server runs on Ray
(`ng_run +ray_address=...`). A run whose worker or node was lost is not evidence against the code:
`/verify` then fails (HTTP 500) and the collector retries the rollout, instead of scoring it 0.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from nemo_gym.compute import ComputeExecutor, ComputeSettings, open_executor
from nemo_gym.openai_types import last_assistant_text
from nemo_gym.sandbox import SandboxLimits
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)

HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text()
REPORT_MARKER = "@@code_gen_report@@ "
FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.DOTALL)
PYTHON_TAGS = {"python", "py", "python3"}


class CodeGenConfig(BaseResourcesServerConfig):
    max_concurrent_executions: int = Field(4, ge=1)
    """Default 4. Tasks whose tests run at once (in this machine's sandbox, or as Ray tasks in flight
    when the server runs on Ray); each holds one slot for all its tests."""
    unit_test_timeout_s: float = Field(6.0, gt=0)
    """Default 6 s. Wall-clock limit per test (and CPU-time limit per test process)."""
    max_total_timeout_s: float = Field(120.0, gt=0)
    """Default 120 s. Upper bound on one task's whole run, however many tests it has."""
    memory_mb: int = Field(512, gt=0)
    """Default 512 MB. Address-space limit per process (the harness and each test), and where the
    machine has a memory cgroup, the limit of the task's whole run."""
    allow_weaker_isolation: bool = False
    """Default false: on a machine without namespaces (not root) the server refuses to start rather
    than run model code that could read the project. True runs it with process-level limits only."""


class UnitTests(BaseModel):
    inputs: list[Any]
    outputs: list[Any]
    fn_name: str | None = None

    @model_validator(mode="after")
    def _paired(self) -> UnitTests:
        if len(self.inputs) != len(self.outputs):
            raise ValueError(f"unit_tests has {len(self.inputs)} inputs but {len(self.outputs)} outputs")
        return self


class VerifierMetadata(BaseModel):
    unit_tests: UnitTests


class CodeGenVerifyRequest(BaseVerifyRequest):
    verifier_metadata: VerifierMetadata


class CodeGenVerifyResponse(BaseVerifyResponse):
    extracted_code: str | None
    num_tests: int
    num_passed: int
    error: str | None
    """The first failure (or why nothing ran), short; null when every test passed."""


def extract_code(text: str) -> str | None:
    """The last ```python fenced block, else the last fenced block of any language; None without a fence."""
    fences = FENCE.findall(text)
    if not fences:
        return None
    python = [body for tag, body in fences if tag.strip().lower() in PYTHON_TAGS]
    return (python or [body for _, body in fences])[-1]


class CodeGenServer(SimpleResourcesServer):
    config: CodeGenConfig
    _executor: ComputeExecutor | None = PrivateAttr(None)

    async def on_startup(self) -> None:
        settings = ComputeSettings(
            max_concurrent=self.config.max_concurrent_executions,
            allow_weaker_isolation=self.config.allow_weaker_isolation,
        )
        self._executor = open_executor(settings)
        await self._executor.start()
        await self._executor.check_sandbox()  # a machine that cannot confine code refuses to start

    async def on_shutdown(self) -> None:
        if self._executor is not None:
            await self._executor.aclose()

    def _limits(self, wall_timeout_s: float) -> SandboxLimits:
        return SandboxLimits(
            wall_timeout_s=wall_timeout_s,
            cpu_time_s=math.ceil(self.config.unit_test_timeout_s),
            memory_mb=self.config.memory_mb,
        )

    async def verify(self, body: CodeGenVerifyRequest) -> CodeGenVerifyResponse:
        tests = body.verifier_metadata.unit_tests
        code = extract_code(last_assistant_text(body.response.output))
        num_passed, error = 0, None
        if code is None:
            error = "no code block (```python ... ```) in the final answer"
        elif not tests.inputs:
            error = "the task has no unit tests"
        else:
            num_passed, error = await self._run_tests(code, tests)
        reward = 1.0 if tests.inputs and num_passed == len(tests.inputs) and error is None else 0.0
        return CodeGenVerifyResponse(
            **body.model_dump(),
            reward=reward,
            extracted_code=code,
            num_tests=len(tests.inputs),
            num_passed=num_passed,
            error=error,
        )

    async def _run_tests(self, code: str, tests: UnitTests) -> tuple[int, str | None]:
        assert self._executor is not None
        per_test = self.config.unit_test_timeout_s
        wall = min(self.config.max_total_timeout_s, per_test * len(tests.inputs) + 5)
        job = {
            "code": code,
            "inputs": tests.inputs,
            "outputs": tests.outputs,
            "fn_name": tests.fn_name,
            "timeout_s": per_test,
        }
        result = await self._executor.run_python(HARNESS_SOURCE, stdin=json.dumps(job), limits=self._limits(wall))
        for line in reversed(result.stdout.splitlines()):
            if line.startswith(REPORT_MARKER):
                report = json.loads(line[len(REPORT_MARKER) :])
                return int(report["num_passed"]), report["error"]
        # No report: the harness was killed (the whole run hit its wall limit, or the code killed it).
        return 0, f"the test run ended without a report: {result.describe_error() or 'no output'}"


if __name__ == "__main__":
    CodeGenServer.run_webserver()
