"""A process pool whose stuck jobs can be killed: the deadline of a job takes its pool down with it.

Work such as math-verify can hang in C code that no signal interrupts (sympy on a huge power
tower), and `ProcessPoolExecutor` cannot stop a running job before Python 3.14. So a job that
misses its deadline gets its pool's processes killed, and a fresh, warmed-up pool replaces them.
A pool that broke (a worker crashed, or another job's deadline killed it) is replaced too, and the
job is tried once more on the fresh pool.

Two front ends share the mechanics: `KillableProcessPool` (async, inside a server) and
`BlockingKillablePool` (blocking, inside a Ray task on whichever node Ray placed it).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from nemo_gym.errors import ComputeTimeoutError, ComputeWorkerDiedError

T = TypeVar("T")
Warmup = Callable[[], object]


def _init_worker(memory_mb: int, warmup: Warmup | None) -> None:
    # A blow-up (sympy expanding a huge expression) becomes a MemoryError in this worker instead
    # of a host-wide OOM.
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if warmup is not None:
        warmup()  # heavy imports happen here, before any job's deadline starts


def _ready() -> None:
    return None


def new_process_pool(workers: int, memory_mb: int, warmup: Warmup | None) -> ProcessPoolExecutor:
    # spawn, not fork: a server process runs threads (uvicorn, aiohttp, Ray's) that fork would copy mid-lock.
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(memory_mb, warmup),
    )


def kill_process_pool(pool: ProcessPoolExecutor) -> None:
    # Killing the processes is the only way to free a worker stuck in C code. `_processes` is the
    # executor's own table of its workers; there is no public accessor for them before Python 3.14.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def timeout_error(timeout_s: float) -> ComputeTimeoutError:
    return ComputeTimeoutError(f"the job ran past its {timeout_s:g} s deadline and its worker was killed")


def died_error() -> ComputeWorkerDiedError:
    return ComputeWorkerDiedError("the worker process running the job died (twice: once more on a fresh worker)")


class KillableProcessPool:
    """At most `workers` jobs at once, each with its own deadline (time spent queueing is not counted)."""

    def __init__(self, workers: int, memory_mb: int, warmup: Warmup | None = None):
        self.workers, self.memory_mb, self.warmup = workers, memory_mb, warmup
        self._slots = asyncio.Semaphore(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._ready: asyncio.Future[ProcessPoolExecutor] | None = None
        self._every_pool: list[ProcessPoolExecutor] = []  # so aclose() also kills a pool still warming up
        self.recycled = 0
        """How many times the pool was killed and replaced (a hung or crashed job)."""

    def start(self) -> None:
        """Start (and warm up) the workers now rather than on the first job."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._new_pool())

    async def _new_pool(self) -> ProcessPoolExecutor:
        pool = new_process_pool(self.workers, self.memory_mb, self.warmup)
        self._every_pool.append(pool)
        loop = asyncio.get_running_loop()
        # One no-op per worker makes the pool start (and warm up) every worker before real work arrives.
        await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.workers)))
        self._pool = pool
        return pool

    async def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        """`fn(*args)` in a worker. Its own exceptions (MemoryError included) are raised here as they
        are; a missed deadline raises ComputeTimeoutError, a worker death ComputeWorkerDiedError."""
        self.start()
        for attempt in range(2):
            async with self._slots:
                assert self._ready is not None
                pool = await self._ready
                future = pool.submit(fn, *args)
                try:
                    return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
                except TimeoutError:
                    self._recycle(pool)
                    raise timeout_error(timeout_s) from None
                except BrokenProcessPool:
                    # Another job's deadline killed this pool, or a worker died: once more on a fresh one.
                    self._recycle(pool)
                    if attempt == 0:
                        continue
                    raise died_error() from None
        raise AssertionError("unreachable")

    def _recycle(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is not pool:
            return  # someone already replaced it
        self._pool = None
        self.recycled += 1
        self._ready = asyncio.ensure_future(self._new_pool())
        self._every_pool.remove(pool)
        kill_process_pool(pool)

    async def aclose(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        for pool in self._every_pool:
            kill_process_pool(pool)
        self._every_pool.clear()
        self._pool = None


class BlockingKillablePool:
    """One worker process, blocking calls: what a Ray task uses on its node (one task per Ray worker
    at a time, so one child suffices). Same deadline, recycling and errors as `KillableProcessPool`."""

    def __init__(self, memory_mb: int, warmup: Warmup | None = None):
        self.memory_mb, self.warmup = memory_mb, warmup
        self._pool: ProcessPoolExecutor | None = None

    def _ready_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            pool = new_process_pool(1, self.memory_mb, self.warmup)
            pool.submit(_ready).result()  # warm-up is not part of any job's deadline
            self._pool = pool
        return self._pool

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        for attempt in range(2):
            pool = self._ready_pool()
            future: Future[T] = pool.submit(fn, *args)
            try:
                return future.result(timeout=timeout_s)
            except FutureTimeoutError:
                self._discard()
                raise timeout_error(timeout_s) from None
            except BrokenProcessPool:
                self._discard()
                if attempt == 0:
                    continue
                raise died_error() from None
        raise AssertionError("unreachable")

    def _discard(self) -> None:
        if self._pool is not None:
            kill_process_pool(self._pool)
            self._pool = None
