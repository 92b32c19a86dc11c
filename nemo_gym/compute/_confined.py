"""Scoring of untrusted text in the sandbox: warm confined interpreters, one fork per call.

Model output is hostile input, and so is task data written by others: a scorer that parses an
answer with `sympy.parse_expr`, `sympify`, math-verify or `eval` runs whatever the answer says.
Such scoring never runs in a server process. It runs here:

    scorer = open_confined_scorer(Path(__file__).with_name("scoring.py"), settings, warmup="warm_up")
    await scorer.start()                                   # on_startup: interpreters warmed up
    reward = await scorer.call("score", answer, task)      # JSON in, JSON out
    await scorer.aclose()                                  # on_shutdown

The scorer module is a file of the environment that imports only installed packages and the
standard library (the sandbox sees the Python installation, not the checkout), and whose functions
take and return JSON values. Each call gets:

- no view of the checkout, env.yaml, /root or the host's /tmp; no network; an environment
  built from scratch (no API keys); a dedicated unprivileged uid where the machine allows;
- `settings.timeout_s` of wall and CPU time, after which its process is SIGKILLed, and
  `settings.memory_mb` of memory for the interpreter and the call together;
- a fresh fork of an interpreter that imported the scorer once, so it neither pays the imports
  again nor sees what an earlier call did.

A call that fails raises a ComputeError whose text is the reason to put in the row:
ComputeTimeoutError (wall or CPU limit), ConfinedCallError (the scorer raised, MemoryError
included), ComputeWorkerDiedError (its process died: a signal, the memory cgroup's OOM kill).

On this machine the interpreters are `max_concurrent` sandboxed sessions kept warm; on a Ray
cluster (NEMO_GYM_RAY_ADDRESS) each call is a one-shot sandboxed program run as a Ray task, which
imports the module every time: slower per call, but spread over the cluster.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from nemo_gym.compute._executor import ComputeExecutor, ComputeSettings
from nemo_gym.errors import (
    ComputeError,
    ComputeTimeoutError,
    ComputeWorkerDiedError,
    ConfinedCallError,
    SandboxError,
)
from nemo_gym.sandbox import ExecutionResult, PythonSession, Sandbox, SandboxLimits

logger = logging.getLogger(__name__)

_RUNNER_PATH = Path(__file__).with_name("_confined_runner.py")
_RUNNER_MODULE = "_nemo_gym_confined_runner"

WARMUP_TIMEOUT_S = 120.0
"""How long loading a scorer module (its imports and warm-up function) may take in the sandbox."""

_CELL_GRACE_S = 5.0
"""A call's cell may take this much longer than the call's own deadline (which the interpreter
enforces on its fork) before the whole interpreter is presumed stuck and killed."""

MAX_RESULT_BYTES = 1_000_000


def _payload(value: object) -> str:
    # base64 of JSON: whatever the answer holds, the cell's source stays a plain string literal.
    return base64.b64encode(json.dumps(value).encode("utf-8")).decode("ascii")


class ConfinedScorer(ABC):
    """Runs functions of one scorer module on untrusted input, confined (see the module docs)."""

    backend: str
    """"local" (warm sandboxed interpreters here) or "ray" (one-shot sandboxed Ray tasks)."""

    def __init__(self, module_path: Path, settings: ComputeSettings, warmup: str | None = None):
        self.module_path = Path(module_path)
        self.settings = settings
        self.warmup = warmup
        self.module_name = f"nemo_gym_scorer_{self.module_path.stem}"
        try:
            source = self.module_path.read_text(encoding="utf-8")
        except OSError as error:
            raise SandboxError(f"scorer module {self.module_path}: {error.strerror or error}") from None
        self._load_payload = _payload(
            {"name": self.module_name, "source": source, "filename": self.module_path.name, "warmup": warmup}
        )

    def _call_payload(self, function: str, args: tuple[Any, ...], timeout_s: float) -> str:
        return _payload(
            {
                "module": self.module_name,
                "function": function,
                "args": list(args),
                "timeout_s": timeout_s,
                "max_result_bytes": MAX_RESULT_BYTES,
            }
        )

    def _session_limits(self, wall_timeout_s: float) -> SandboxLimits:
        return SandboxLimits(
            wall_timeout_s=wall_timeout_s,
            # per cell for the interpreter; each call's fork sets its own from timeout_s
            cpu_time_s=max(math.ceil(WARMUP_TIMEOUT_S), math.ceil(self.settings.timeout_s) + 1),
            memory_mb=self.settings.memory_mb,
            max_output_bytes=MAX_RESULT_BYTES + 4096,
            max_disk_mb=16,
            network=False,
        )

    @abstractmethod
    async def start(self) -> None:
        """Load the module (and run its warm-up) now; raises SandboxError if it cannot be loaded."""

    @abstractmethod
    async def call(self, function: str, *args: Any, timeout_s: float | None = None) -> Any:
        """`function(*args)` of the scorer module, confined; returns its JSON result."""

    @abstractmethod
    async def aclose(self) -> None:
        """Kill every interpreter and call in flight."""


def _outcome(reply: ExecutionResult, timeout_s: float) -> Any:
    """The call's result from its cell's reply, or the ComputeError that says why there is none."""
    if reply.timed_out:
        raise ComputeTimeoutError(f"the scoring ran past its {timeout_s:g} s limit and was killed")
    if not reply.ok:
        reason = reply.describe_error() or "the scoring interpreter failed"
        raise ComputeWorkerDiedError(f"the scoring interpreter died: {reason}")
    try:
        outcome = json.loads(reply.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ComputeWorkerDiedError("the scoring interpreter gave no readable result") from None
    if not isinstance(outcome, dict):
        raise ComputeWorkerDiedError("the scoring interpreter gave no readable result")
    if outcome.get("ok") is True:
        return outcome.get("value")
    error = str(outcome.get("error") or "the scoring failed")
    kind = outcome.get("kind")
    if kind == "timeout":
        raise ComputeTimeoutError(error)
    if kind == "crash":
        raise ComputeWorkerDiedError(error)
    raise ConfinedCallError(error)


class WarmConfinedScorer(ConfinedScorer):
    """This machine: `max_concurrent` sandboxed interpreters with the module loaded, forking per call."""

    backend = "local"

    def __init__(self, module_path: Path, settings: ComputeSettings, warmup: str | None = None):
        super().__init__(module_path, settings, warmup)
        self._sandbox: Sandbox | None = None
        self._idle: asyncio.Queue[PythonSession] = asyncio.Queue()
        self._replacing: set[asyncio.Task[None]] = set()
        self._broken: str | None = None
        self._started: asyncio.Future[None] | None = None
        self._closed = False
        self.restarts = 0
        """Interpreters replaced after one died or hung (a call's own timeout does not count)."""

    async def start(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        # Detecting the isolation runs one short probe subprocess; keep it off the event loop.
        self._sandbox = await asyncio.to_thread(
            Sandbox,
            self._session_limits(WARMUP_TIMEOUT_S),
            self.settings.max_concurrent,
            allow_weaker_isolation=self.settings.allow_weaker_isolation,
        )
        # One interpreter proves the module loads (a broken scorer fails the server's start-up);
        # the others warm up in the background while the first one already scores.
        try:
            self._idle.put_nowait(await self._warm_session())
        except BaseException:
            await self.aclose()
            raise
        for _ in range(self.settings.max_concurrent - 1):
            self._add_fresh()

    async def _warm_session(self) -> PythonSession:
        assert self._sandbox is not None
        session = await self._sandbox.open_session()
        runner = _RUNNER_PATH.read_text(encoding="utf-8")
        program = (
            "import sys, types\n"
            f"_runner = types.ModuleType({_RUNNER_MODULE!r})\n"
            f"sys.modules[{_RUNNER_MODULE!r}] = _runner\n"
            f"exec(compile({runner!r}, 'confined_runner.py', 'exec'), _runner.__dict__)\n"
            f"print(_runner.load({self._load_payload!r}))\n"
        )
        reply = await session.execute(program, timeout_s=WARMUP_TIMEOUT_S)
        if not reply.ok or reply.stdout.strip() != "ready":
            await session.aclose()
            why = reply.describe_error() or "it did not finish loading"
            detail = reply.stderr.strip().splitlines()[-1:] if reply.stderr.strip() else []
            raise SandboxError(
                f"scorer module {self.module_path} could not be loaded in the sandbox: {why}"
                + (f" ({detail[0][:300]})" if detail and detail[0] not in why else "")
            )
        return session

    async def call(self, function: str, *args: Any, timeout_s: float | None = None) -> Any:
        await self.start()
        timeout = timeout_s or self.settings.timeout_s
        cell = f"print({_RUNNER_MODULE}.call({self._call_payload(function, args, timeout)!r}))"
        cell = f"import {_RUNNER_MODULE}\n{cell}"
        session = await self._take()
        healthy = False
        try:
            reply = await session.execute(cell, timeout_s=timeout + _CELL_GRACE_S)
            # An interpreter that died or hung (its state now gone) is replaced, warmed up again.
            healthy = reply.ok and not reply.session_restarted
            return _outcome(reply, timeout)
        finally:
            if healthy and not self._closed:
                self._idle.put_nowait(session)
            else:
                self._replace(session)

    async def _take(self) -> PythonSession:
        while True:
            if self._closed:
                raise ComputeError("the confined scorer is closed")
            if self._broken is not None:
                raise ComputeWorkerDiedError(self._broken)
            try:
                return await asyncio.wait_for(self._idle.get(), 1.0)
            except TimeoutError:
                continue  # look again whether a replacement failed for good

    def _replace(self, session: PythonSession) -> None:
        self.restarts += 1
        self._add_fresh(retiring=session)

    def _add_fresh(self, retiring: PythonSession | None = None) -> None:
        """Warm up one more interpreter in the background (after closing `retiring`, if given)."""

        async def add() -> None:
            if retiring is not None:
                await retiring.aclose()
            for attempt in range(3):
                if self._closed:
                    return
                try:
                    fresh = await self._warm_session()
                except (SandboxError, OSError) as error:
                    logger.warning("confined scorer %s: starting an interpreter failed: %s", self.module_path, error)
                    if attempt == 2:
                        self._broken = f"the scoring interpreters cannot be started: {error}"
                    continue
                if self._closed:
                    await fresh.aclose()
                else:
                    self._idle.put_nowait(fresh)
                return

        task = asyncio.ensure_future(add())
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def aclose(self) -> None:
        self._closed = True
        pending = list(self._replacing)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        while not self._idle.empty():
            await self._idle.get_nowait().aclose()
        if self._sandbox is not None:
            await self._sandbox.aclose()


class OneShotConfinedScorer(ConfinedScorer):
    """A cluster: each call is one sandboxed program (module loaded, then the call) run by `executor`."""

    def __init__(
        self, module_path: Path, settings: ComputeSettings, executor: ComputeExecutor, warmup: str | None = None
    ):
        super().__init__(module_path, settings, warmup)
        self.executor = executor
        self.backend = executor.backend
        self._runner = _RUNNER_PATH.read_text(encoding="utf-8")

    async def start(self) -> None:
        await self.executor.start()
        await self.executor.check_sandbox()

    async def call(self, function: str, *args: Any, timeout_s: float | None = None) -> Any:
        timeout = timeout_s or self.settings.timeout_s
        job = json.dumps({"load": self._load_payload, "call": self._call_payload(function, args, timeout)})
        # The wall limit covers loading the module too; the call's own deadline starts after it.
        limits = self._session_limits(WARMUP_TIMEOUT_S + timeout + _CELL_GRACE_S)
        reply = await self.executor.run_python(self._runner, stdin=job, limits=limits)
        return _outcome(reply, timeout)

    async def aclose(self) -> None:
        await self.executor.aclose()
