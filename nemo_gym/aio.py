"""Running coroutines: from synchronous entry points, and under a deadline without a task of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when it is installed (it is, with uvicorn[standard]), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def raise_open_file_limit(target: int = 1 << 20) -> int:
    """Raise this process's open-file limit as far as allowed; returns the soft limit in force.

    Thousands of rollouts in flight need thousands of sockets per process (one in, one or more
    out), and the usual soft limit is 1024. Root may also lift the hard limit.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_hard in (max(hard, target) if hard != resource.RLIM_INFINITY else hard, hard):
        new_soft = target if new_hard == resource.RLIM_INFINITY else min(target, new_hard)
        if new_soft <= soft:
            return soft
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
            return new_soft
        except (ValueError, OSError):
            continue
    return soft


class TaskDeadline:
    """Cancels the current task at `deadline` (loop time): one timer handle, no extra task, none of
    `asyncio.timeout`'s bookkeeping (~3% of a rollout's CPU on a hot path). Use as

        deadline = TaskDeadline(at, loop)
        try:
            return await work
        except asyncio.CancelledError:
            if deadline.fired():
                raise <this call's timeout error> from None
            raise
        finally:
            deadline.cancel()
    """

    __slots__ = ("_task", "_expired", "_timer")

    def __init__(self, deadline: float, loop: asyncio.AbstractEventLoop):
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._expired = False
        self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def fired(self) -> bool:
        """After a CancelledError: whether it came from this deadline alone (the cancellation is then taken
        back), not from someone else cancelling the task too."""
        return self._expired and self._task.uncancel() == 0

    def cancel(self) -> None:
        self._timer.cancel()
