"""The Ray backend: each job is a Ray task that runs the local mechanism on the node Ray placed it.

Imported only by `open_executor` when NEMO_GYM_RAY_ADDRESS is set, so `import ray` happens only then.

A `submit` job runs, on its node, in a `BlockingKillablePool` (one warmed-up child process per Ray
worker, with the same RLIMIT_AS, deadline, kill-and-replace and single retry as locally), so a job
stuck in C code costs a killed child, never a wedged Ray worker. A `run_python` job calls the
sandbox there (`Sandbox.run_python`, a library call), so namespaces, cgroups and limits are those
of the node that runs the code. Errors come back as the same classes as locally: the task's own
exception is unwrapped from Ray's RayTaskError, and a lost worker or node becomes
ComputeWorkerDiedError once Ray's one retry of the task (max_retries=1) failed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import ray
import ray.exceptions
import ray.util

from nemo_gym.compute._executor import ComputeExecutor, ComputeSettings
from nemo_gym.compute._pool import BlockingKillablePool, Warmup
from nemo_gym.errors import ComputeError, ComputeTimeoutError, ComputeWorkerDiedError
from nemo_gym.sandbox import ExecutionResult, Sandbox, SandboxLimits

T = TypeVar("T")

# What Ray raises when the process or machine running a task went away (after its retries).
_LOST = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.OutOfMemoryError,  # Ray's memory monitor killed the worker: an OOM kill, as locally
)

# ---- what runs on the node ---------------------------------------------------------------------------

_node_pools: dict[tuple[int, Warmup | None], BlockingKillablePool] = {}


def _submit_on_node(
    fn: Callable[..., T], args: tuple[Any, ...], timeout_s: float, memory_mb: int, warmup: Warmup | None
) -> T:
    # A Ray worker runs one task at a time, so one child per (limit, warm-up) is all it needs; it
    # lives as long as the Ray worker, so heavy imports are paid once per worker, not per job.
    pool = _node_pools.get((memory_mb, warmup))
    if pool is None:
        pool = _node_pools[(memory_mb, warmup)] = BlockingKillablePool(memory_mb, warmup)
    return pool.run(fn, *args, timeout_s=timeout_s)


def _run_python_on_node(code: str, stdin: str, limits: SandboxLimits, allow_weaker_isolation: bool) -> ExecutionResult:
    async def run() -> ExecutionResult:
        sandbox = Sandbox(limits, max_concurrent=1, allow_weaker_isolation=allow_weaker_isolation)
        try:
            return await sandbox.run_python(code, stdin=stdin, limits=limits)
        finally:
            await sandbox.aclose()

    return asyncio.run(run())


def _check_sandbox_on_node(allow_weaker_isolation: bool) -> str:
    Sandbox(allow_weaker_isolation=allow_weaker_isolation)  # raises SandboxError where code cannot be confined
    return ray.util.get_node_ip_address()


# Typed Any: Ray builds these handles' `.options(...).remote(...)` at run time.
_submit_task: Any = ray.remote(_submit_on_node)
_run_python_task: Any = ray.remote(_run_python_on_node)
_check_sandbox_task: Any = ray.remote(_check_sandbox_on_node)

# ---- the executor, in the server process -------------------------------------------------------------


class RayExecutor(ComputeExecutor):
    """Ray tasks on the cluster at `address`; at most `settings.max_concurrent` of this server's in flight."""

    backend = "ray"

    def __init__(self, address: str, settings: ComputeSettings, warmup: Warmup | None = None):
        super().__init__(settings, warmup)
        self.address = address
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._connected_here = False

    async def start(self) -> None:
        if ray.is_initialized():  # this process already is a Ray driver or worker
            return
        try:
            # Ray's own log lines would interleave with the server's; its logs stay in /tmp/ray/session_*/logs.
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as error:
            raise ComputeError(
                f"cannot reach the Ray cluster at {self.address!r} (NEMO_GYM_RAY_ADDRESS): {error}"
            ) from None
        self._connected_here = True

    def _options(self) -> dict[str, Any]:
        # max_retries=1: a task whose worker or node died runs once more elsewhere, like the local
        # pool's single retry on a fresh pool; the task's own exceptions are never retried.
        # SPREAD: verification is CPU-bound, so use every node's cores rather than packing one node.
        return {
            "num_cpus": self.settings.ray_num_cpus,
            "max_retries": 1,
            "retry_exceptions": False,
            "scheduling_strategy": "SPREAD",
        }

    async def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        timeout_s = timeout_s or self.settings.timeout_s
        async with self._slots:
            ref = _submit_task.options(**self._options()).remote(
                fn, args, timeout_s, self.settings.memory_mb, self.warmup
            )
            return await self._result(ref, timeout_s)

    async def run_python(self, code: str, *, stdin: str = "", limits: SandboxLimits) -> ExecutionResult:
        async with self._slots:
            ref = _run_python_task.options(**self._options()).remote(
                code, stdin, limits, self.settings.allow_weaker_isolation
            )
            result: ExecutionResult = await self._result(ref, limits.wall_timeout_s)
        return result.with_limits(limits)  # the private limits that describe_error() quotes do not travel

    async def check_sandbox(self) -> None:
        ref = _check_sandbox_task.options(num_cpus=self.settings.ray_num_cpus).remote(
            self.settings.allow_weaker_isolation
        )
        await self._result(ref, 30.0)

    async def _result(self, ref: ray.ObjectRef, timeout_s: float) -> Any:
        # The deadline itself is enforced on the node; this backstop also covers time spent waiting
        # for a free CPU on the cluster, so a cluster without room cannot hang a verify forever.
        backstop = timeout_s + self.settings.ray_scheduling_grace_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), backstop)
        except TimeoutError:
            ray.cancel(ref, force=True)
            raise ComputeTimeoutError(
                f"the job did not finish within {backstop:g} s on the cluster (its {timeout_s:g} s deadline plus "
                f"{self.settings.ray_scheduling_grace_s:g} s waiting for a free CPU); it was cancelled"
            ) from None
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            raise
        except ray.exceptions.RayTaskError as error:
            raise _cause_of(error) from None
        except _LOST as error:
            raise ComputeWorkerDiedError(
                f"the Ray worker running the job was lost, and so was its retry ({type(error).__name__})"
            ) from None

    async def aclose(self) -> None:
        if self._connected_here and ray.is_initialized():
            ray.shutdown()
            self._connected_here = False


def _cause_of(error: ray.exceptions.RayTaskError) -> BaseException:
    """The exception the task itself raised, as it would have been raised locally."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else ComputeError(str(error))
