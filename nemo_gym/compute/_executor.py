"""The executor interface, its settings, and the local backend (the killable pool and the sandbox in this process)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, Field

from nemo_gym.compute._pool import KillableProcessPool, Warmup
from nemo_gym.sandbox import ExecutionResult, Sandbox, SandboxLimits

T = TypeVar("T")


class ComputeSettings(BaseModel, frozen=True):
    """How much CPU-heavy work one server may run at once, and the bounds of each job."""

    max_concurrent: int = Field(4, ge=1)
    """Default 4. Jobs running at once for this server: local worker processes (and sandbox runs),
    or Ray tasks in flight on the cluster. Further jobs wait in this process, where the wait does
    not count against their deadline."""

    timeout_s: float = Field(10.0, gt=0)
    """Default 10 s. Deadline of one `submit` job from the moment it starts running; past it the
    worker is killed and replaced and the call raises ComputeTimeoutError. (Sandbox runs have their
    own `SandboxLimits.wall_timeout_s`.)"""

    memory_mb: int = Field(2048, gt=0)
    """Default 2 GB. Address-space limit (RLIMIT_AS) of each `submit` worker process."""

    allow_weaker_isolation: bool = False
    """Default False: `run_python` refuses to run where the sandbox cannot hide the file system
    (see nemo_gym.sandbox); on Ray this is decided on the node that runs the code."""

    ray_num_cpus: float = Field(1.0, gt=0)
    """Default 1. CPUs each Ray task reserves on the cluster (a sandbox run uses one core's worth)."""

    ray_scheduling_grace_s: float = Field(300.0, gt=0)
    """Default 300 s. On Ray, how long a job may wait for a free CPU on the cluster on top of its
    own deadline before it is cancelled as timed out (a cluster with no room must not hang verify)."""


class ComputeExecutor(ABC):
    """Runs CPU-heavy verification off the event loop: `submit` for a picklable function, `run_python`
    for model-written code in the sandbox (one-shot, stateless). Both raise the same errors on
    every backend: ComputeTimeoutError, ComputeWorkerDiedError, and the function's own exceptions."""

    backend: ClassVar[str]

    def __init__(self, settings: ComputeSettings, warmup: Warmup | None = None):
        self.settings = settings
        self.warmup = warmup
        """Runs once in each new worker process before its first job (heavy imports), off the deadline."""

    @abstractmethod
    async def start(self) -> None:
        """Acquire the backend (workers warmed up, or the cluster connection); call it in on_startup."""

    @abstractmethod
    async def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """`fn(*args)` in a worker process, within `timeout_s` (default `settings.timeout_s`)."""

    @abstractmethod
    async def run_python(self, code: str, *, stdin: str = "", limits: SandboxLimits) -> ExecutionResult:
        """`Sandbox.run_python` on a machine of this backend, with exactly these limits."""

    @abstractmethod
    async def check_sandbox(self) -> None:
        """Raise SandboxError now if `run_python` cannot run here (fail at startup, not per rollout)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Kill what is running and release the backend."""


class LocalExecutor(ComputeExecutor):
    """This machine: a `KillableProcessPool` for functions, a `Sandbox` (child processes) for code."""

    backend = "local"

    def __init__(self, settings: ComputeSettings, warmup: Warmup | None = None):
        super().__init__(settings, warmup)
        self.pool = KillableProcessPool(settings.max_concurrent, settings.memory_mb, warmup)
        self._sandbox: Sandbox | None = None

    async def start(self) -> None:
        if self.warmup is not None:
            self.pool.start()  # a caller with heavy imports wants its workers warm before the first job

    async def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        return await self.pool.submit(fn, *args, timeout_s=timeout_s or self.settings.timeout_s)

    def _ensure_sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(
                max_concurrent=self.settings.max_concurrent,
                allow_weaker_isolation=self.settings.allow_weaker_isolation,
            )
        return self._sandbox

    async def run_python(self, code: str, *, stdin: str = "", limits: SandboxLimits) -> ExecutionResult:
        return await self._ensure_sandbox().run_python(code, stdin=stdin, limits=limits)

    async def check_sandbox(self) -> None:
        # Detecting the isolation runs one short probe subprocess; keep it off the event loop.
        await asyncio.to_thread(self._ensure_sandbox)

    async def aclose(self) -> None:
        await self.pool.aclose()
        if self._sandbox is not None:
            await self._sandbox.aclose()
