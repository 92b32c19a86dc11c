"""Symbolic answer checking with math-verify, run inside worker processes of a deadline-bound pool.

math-verify's parse/verify is CPU-heavy (sympy) and can hang in C code that no signal interrupts
(e.g. a huge power tower), so it never runs on a server's event loop. `GradingPool` owns a process
pool: a job that misses its deadline takes its pool down with it (the workers are killed and a
fresh, warmed-up pool replaces them), so one pathological answer cannot wedge the server.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass


@dataclass(frozen=True)
class GradeResult:
    reward: float
    extracted_answer: str | None
    error: str | None = None


def _boxed_gold(expected_answer: str) -> str:
    return expected_answer if "\\boxed" in expected_answer else f"\\boxed{{{expected_answer}}}"


def grade_answer(expected_answer: str, generated_text: str, timeout_s: int) -> GradeResult:
    """Runs in a worker: 1.0 iff the generated text's answer is symbolically equal to the gold one."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold = parse(_boxed_gold(expected_answer), extraction_config=[LatexExtractionConfig()], parsing_timeout=timeout_s)
    predicted = parse(
        generated_text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=timeout_s
    )
    extracted = str(predicted[0]) if predicted else None
    if not gold:
        return GradeResult(0.0, extracted, f"the expected answer {expected_answer!r} could not be parsed")
    if not predicted:
        return GradeResult(0.0, None)
    return GradeResult(1.0 if verify(gold, predicted, timeout_seconds=timeout_s) else 0.0, extracted)


def _init_worker(memory_mb: int) -> None:
    # A sympy blow-up becomes a MemoryError in this worker instead of a host-wide OOM.
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    grade_answer("1", "\\boxed{1}", 5)  # import sympy and math-verify before the first deadline starts


def _warm() -> None:
    return None


class GradingPool:
    """At most `workers` gradings at once, each with its own deadline (queueing time not counted)."""

    def __init__(self, workers: int, timeout_s: float, memory_mb: int):
        self.workers, self.timeout_s, self.memory_mb = workers, timeout_s, memory_mb
        self._slots = asyncio.Semaphore(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._ready: asyncio.Task[ProcessPoolExecutor] | None = None
        self._every_pool: list[ProcessPoolExecutor] = []  # so aclose() also kills a pool still warming up
        self.recycled = 0
        """How many times a pool was killed and replaced (a hung or crashed job)."""

    def start(self) -> None:
        self._ready = asyncio.ensure_future(self._new_pool())

    async def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the server process runs threads (uvicorn, aiohttp) that fork would copy mid-lock.
        pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.memory_mb,),
        )
        self._every_pool.append(pool)
        loop = asyncio.get_running_loop()
        # One job per worker makes the pool start (and warm up) every worker before real work arrives.
        await asyncio.gather(*(loop.run_in_executor(pool, _warm) for _ in range(self.workers)))
        self._pool = pool
        return pool

    async def grade(self, expected_answer: str, generated_text: str) -> GradeResult:
        for attempt in range(2):
            async with self._slots:
                assert self._ready is not None, "GradingPool.start() was not called"
                pool = await self._ready
                future = pool.submit(grade_answer, expected_answer, generated_text, max(1, int(self.timeout_s)))
                try:
                    return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
                except TimeoutError:
                    self._recycle(pool)
                    return GradeResult(0.0, None, f"math-verify timed out after {self.timeout_s:g} s")
                except BrokenProcessPool:
                    # Another job's deadline killed this pool, or a worker died: try once on a fresh one.
                    self._recycle(pool)
                    if attempt == 0:
                        continue
                    return GradeResult(0.0, None, "math-verify worker crashed")
                except MemoryError:
                    return GradeResult(0.0, None, f"math-verify ran out of memory ({self.memory_mb} MB)")
        raise AssertionError("unreachable")

    def _recycle(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is not pool:
            return  # someone already replaced it
        self._pool = None
        self.recycled += 1
        self._ready = asyncio.ensure_future(self._new_pool())
        self._every_pool.remove(pool)
        _kill(pool)

    async def aclose(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        for pool in self._every_pool:
            _kill(pool)
        self._every_pool.clear()
        self._pool = None


def _kill(pool: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor cannot stop a running job before Python 3.14 (kill_workers); killing its
    # processes is the only way to free a worker stuck in C code.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
