"""Sandbox (a bounded pool of one-shot runs) and PythonSession (a persistent interpreter)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any

from nemo_gym.errors import SandboxError
from nemo_gym.sandbox._models import (
    DEFAULT_LIMITS,
    ExecutionResult,
    SandboxLimits,
    looks_like_memory_error,
)
from nemo_gym.sandbox._process import (
    BoundedBuffer,
    ConfinedProcess,
    Isolation,
    detect_isolation,
)

# After the program exits, how long its pipes may stay open (fallback mode only: without a pid
# namespace a process that escaped the group can hold them) before we stop reading.
_PIPE_GRACE_S = 2.0
_CANCELLED = "its previous cell was cancelled before it finished"
# Clean-ups that must finish even if the task that started them is cancelled again.
_background: set[asyncio.Future[None]] = set()


async def _feed(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            stream.write(data)
            await stream.drain()
        stream.close()


class Sandbox:
    """Runs untrusted Python in confined child processes, at most `max_concurrent` at a time.

    The isolation this machine allows is detected once per process (the first Sandbox blocks for
    one short probe subprocess, ~50 ms); `network_isolation` says which
    network barrier is in use ("namespace" or the weaker "python-guard"), `isolation` tells the rest.
    """

    def __init__(
        self,
        limits: SandboxLimits = DEFAULT_LIMITS,
        max_concurrent: int = 4,
        *,
        allow_weaker_isolation: bool = False,
        isolation: Isolation | None = None,
    ):
        """`allow_weaker_isolation`: run even where the code's view of the file system cannot be
        confined (no namespaces: not root, or a container forbids them). Off by default, so such a
        machine fails closed with a SandboxError instead of letting model code read the project.
        `isolation` overrides what was detected (tests use it to force the fallback)."""
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.limits = limits
        self.max_concurrent = max_concurrent
        self.isolation: Isolation = isolation or detect_isolation()
        if not self.isolation.private_root and not allow_weaker_isolation:
            raise SandboxError(
                "this machine cannot hide the file system from sandboxed code (it needs root and "
                "working namespaces); allow_weaker_isolation=True runs it anyway, able to read "
                "every file this user can"
            )
        self.network_isolation = self.isolation.network_isolation
        self._slots = asyncio.Semaphore(max_concurrent)
        self._live: set[ConfinedProcess] = set()
        self._sessions: set[PythonSession] = set()
        self._closed = False

    async def run_python(self, code: str, *, stdin: str = "", limits: SandboxLimits | None = None) -> ExecutionResult:
        """Run `code` as a fresh program; its crash or timeout is reported in the result, not raised."""
        limits = limits or self.limits
        async with self._slots:
            self._check_open()
            child = await ConfinedProcess.start(self.isolation, "run", limits, code)
            self._live.add(child)
            try:
                return await self._drive(child, stdin.encode(), limits)
            finally:
                self._live.discard(child)
                await child.dispose()

    async def _drive(self, child: ConfinedProcess, stdin: bytes, limits: SandboxLimits) -> ExecutionResult:
        proc = child.proc
        started = time.monotonic()
        out, err = (
            BoundedBuffer(limits.max_output_bytes),
            BoundedBuffer(limits.max_output_bytes),
        )
        io_tasks = [
            asyncio.create_task(_feed(proc.stdin, stdin)),
            asyncio.create_task(out.drain(proc.stdout)),  # type: ignore[arg-type]
            asyncio.create_task(err.drain(proc.stderr)),  # type: ignore[arg-type]
        ]
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), limits.wall_timeout_s)
        except TimeoutError:
            timed_out = True
        duration = time.monotonic() - started
        if timed_out:
            await child.kill()
            await proc.wait()
        await child.kill()  # init has killed the rest already; this covers a killed init
        _done, pending = await asyncio.wait(io_tasks, timeout=_PIPE_GRACE_S)
        for task in pending:
            task.cancel()
        status = child.status()
        stderr = err.take()
        return ExecutionResult(
            stdout=out.take(),
            stderr=stderr,
            exit_code=None if timed_out else status.exit_code,
            timed_out=timed_out,
            memory_exceeded=not timed_out and (looks_like_memory_error(stderr) or child.oom_kills() > 0),
            killed_by_signal=status.signal,
            duration_s=duration,
            output_truncated=out.truncated or err.truncated,
        ).with_limits(limits)

    async def open_session(self, limits: SandboxLimits | None = None) -> PythonSession:
        """A persistent interpreter for `execute_python`-style tools. Close it with `aclose()`."""
        self._check_open()
        session = PythonSession(self, limits or self.limits)
        await session._start()
        if self._closed:  # aclose() ran while the interpreter was starting
            await session.aclose()
            raise SandboxError("the sandbox is closed")
        self._sessions.add(session)
        return session

    async def aclose(self) -> None:
        """Kill every child (runs in flight and sessions); the sandbox refuses work afterwards."""
        self._closed = True
        for session in list(self._sessions):
            await session.aclose()
        await asyncio.gather(*(child.dispose() for child in list(self._live)))

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox is closed")


class PythonSession:
    """One interpreter whose globals persist across `execute` calls, like a notebook kernel.

    Each cell holds one of the sandbox's concurrency slots while it runs; an idle session holds none.
    A cell that times out or kills the interpreter restarts the session with empty state, and its
    result says so (`session_restarted`). Closing the session while a cell runs kills the cell,
    which then returns a result with `session_closed` set. Cancelling `execute` while its cell runs
    kills the interpreter with the cell (nothing keeps running for a caller that is gone); the next
    cell starts a fresh one and its result says so (`lost_state`).
    """

    def __init__(self, sandbox: Sandbox, limits: SandboxLimits):
        self._sandbox = sandbox
        self.limits = limits
        self._child: ConfinedProcess | None = None
        self._side_output = BoundedBuffer(limits.max_output_bytes)
        self._side_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._lost_state: str | None = None
        """Why the next cell runs in a fresh interpreter, when that is news to the caller."""

    def mark_state_lost(self, why: str) -> None:
        """The next cell's result will say that earlier state was lost, and why (e.g. eviction)."""
        self._lost_state = why

    async def _start(self) -> None:
        child = await ConfinedProcess.start(self._sandbox.isolation, "session", self.limits, None)
        if self._closed:  # aclose() ran while the interpreter was starting
            await child.dispose()
            return
        self._child = child
        self._side_output = BoundedBuffer(self.limits.max_output_bytes)
        # fd-level output (subprocesses, C code) arrives on the child's stderr pipe; keep it drained.
        self._side_task = asyncio.create_task(
            self._side_output.drain(child.proc.stderr)  # type: ignore[arg-type]
        )

    async def _stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            await child.dispose()
        if self._side_task is not None:
            self._side_task.cancel()
            self._side_task = None

    async def _restart(self) -> None:
        await self._stop()
        await self._start()

    async def execute(self, code: str, timeout_s: float | None = None) -> ExecutionResult:
        """Run one cell; a trailing expression's value is echoed to stdout like the Python REPL."""
        limits = self.limits if timeout_s is None else self.limits.model_copy(update={"wall_timeout_s": timeout_s})
        async with self._lock, self._sandbox._slots:
            if self._closed:
                raise SandboxError("the session is closed")
            lost_state, self._lost_state = self._lost_state, None
            if self._child is None or self._child.proc.returncode is not None:
                # the interpreter died while idle (e.g. a background thread crashed it)
                await self._restart()
                lost_state = lost_state or "its interpreter had exited"
            child = self._child
            started = time.monotonic()
            if child is None:  # closed while restarting
                return self._closed_result(started, limits)
            oom_kills_before = child.oom_kills()
            try:
                reply = await asyncio.wait_for(self._ask(child, code), limits.wall_timeout_s)
            except asyncio.CancelledError:
                # The caller gave up (a cancelled request, an abandoned rollout): the cell must not
                # run on unseen, and its late reply must not be taken for the next cell's. The next
                # cell starts a fresh interpreter and is told why.
                self._lost_state = _CANCELLED
                stopping = asyncio.ensure_future(self._stop())
                _background.add(stopping)
                stopping.add_done_callback(_background.discard)
                await asyncio.shield(stopping)
                raise
            except TimeoutError:
                if self._closed:
                    return self._closed_result(started, limits)
                duration = time.monotonic() - started
                partial = self._side_output.take()
                await self._restart()
                return ExecutionResult(
                    stderr=partial,
                    timed_out=True,
                    duration_s=duration,
                    session_restarted=True,
                ).with_limits(limits)
            duration = time.monotonic() - started
            if self._closed:
                return self._closed_result(started, limits)
            if reply is None:
                died = await self._died(child, duration, oom_kills_before)
                died.lost_state = lost_state
                return died.with_limits(limits)
            await asyncio.sleep(0)  # let fd-level output that raced the reply be collected
            side = self._side_output.take()
            return ExecutionResult(
                stdout=reply["stdout"],
                stderr=reply["stderr"] + side,
                exit_code=reply["exit_code"],
                memory_exceeded=looks_like_memory_error(reply["stderr"]) or child.oom_kills() > oom_kills_before,
                duration_s=duration,
                output_truncated=reply["truncated"] or self._side_output.truncated,
                session_restarted=lost_state is not None,
                lost_state=lost_state,
            ).with_limits(limits)

    @staticmethod
    async def _ask(child: ConfinedProcess, code: str) -> dict[str, Any] | None:
        """Send one cell and wait for the reply bearing its id; None if the interpreter ended.

        Lines that are not that reply (garbage, or an old reply written by a stray process) are
        skipped, so nothing but the interpreter's answer to this request can become the result.
        """
        request_id = secrets.token_hex(8)
        proc = child.proc
        try:
            proc.stdin.write(  # type: ignore[union-attr]
                json.dumps({"id": request_id, "code": code}).encode() + b"\n"
            )
            await proc.stdin.drain()  # type: ignore[union-attr]
        except (BrokenPipeError, ConnectionResetError):
            return None
        while True:
            try:
                line = await proc.stdout.readline()  # type: ignore[union-attr]
            except ValueError:
                continue  # a line longer than any reply: not ours, and already dropped
            if not line:
                return None
            with contextlib.suppress(ValueError):
                reply = json.loads(line)
                if isinstance(reply, dict) and reply.get("id") == request_id:
                    return reply

    async def _died(self, child: ConfinedProcess, duration: float, oom_kills_before: int) -> ExecutionResult:
        """The interpreter ended mid-cell (os._exit, a signal, the CPU limit): report it and restart."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.proc.wait(), _PIPE_GRACE_S)
        await child.kill()
        await child.proc.wait()
        await asyncio.sleep(0)
        status = child.status()
        oom_killed = child.oom_kills() > oom_kills_before
        stderr = self._side_output.take()
        if self._closed:
            return ExecutionResult(stderr=stderr, duration_s=duration, session_closed=True)
        await self._restart()
        return ExecutionResult(
            stderr=stderr,
            exit_code=status.exit_code,
            killed_by_signal=status.signal,
            memory_exceeded=looks_like_memory_error(stderr) or oom_killed,
            duration_s=duration,
            session_restarted=True,
        )

    def _closed_result(self, started: float, limits: SandboxLimits) -> ExecutionResult:
        return ExecutionResult(
            stderr=self._side_output.take(),
            duration_s=time.monotonic() - started,
            session_closed=True,
        ).with_limits(limits)

    async def aclose(self) -> None:
        """Kill the interpreter (a cell in flight returns a `session_closed` result) and remove
        its working directory. Idempotent."""
        self._closed = True
        await self._stop()
        self._sandbox._sessions.discard(self)
