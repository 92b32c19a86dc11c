"""Where CPU-heavy verification runs: worker processes on this machine, or Ray tasks on a cluster.

    executor = open_executor(ComputeSettings(max_concurrent=4, timeout_s=10), warmup=import_sympy)
    await executor.start()                                        # in the server's on_startup
    reward = await executor.submit(grade_answer, gold, text)      # a picklable module-level function
    result = await executor.run_python(code, stdin=job, limits=SandboxLimits(wall_timeout_s=20))
    await executor.aclose()                                       # in on_shutdown

`open_executor` picks the backend from the process environment, so a server's code is the same
on a laptop and on a cluster:

| NEMO_GYM_RAY_ADDRESS | backend        | `submit(fn, ...)`                         | `run_python(code, ...)`              |
|----------------------|----------------|-------------------------------------------|--------------------------------------|
| unset (the default)  | LocalExecutor  | a killable process pool in this machine   | the sandbox, child processes here    |
| set (by ng_run when  | RayExecutor    | a Ray task: the same killable pool, on    | a Ray task: the sandbox, on the node |
| the server runs on   |                | the node Ray places it                    | Ray places it                        |
| Ray)                 |                |                                           |                                      |

Both backends hold a job to the same bounds and fail the same way: a missed deadline kills the
process running the job and raises ComputeTimeoutError; a worker that dies (a crash in C code, an
OOM kill, a lost node) is retried once on a fresh one, then raises ComputeWorkerDiedError; the
function's own exceptions (MemoryError included) are raised as they are. On Ray the sandbox's
isolation is whatever the node running the code allows (`check_sandbox` probes one node at startup).

Only one-shot, stateless work belongs here. A persistent interpreter (`SessionPool`, e.g.
math_with_code's `execute_python` tool) keeps state between a rollout's calls, so it stays in the
server process that owns the rollout, on the local sandbox, whichever backend is chosen.

`submit` is for trusted code on trusted data. Scoring that hands model-written text (or task data
from others) to anything that may evaluate it (sympy's parse_expr/sympify, math-verify, eval)
goes through `open_confined_scorer` instead: the scorer module runs in the sandbox, with no view
of the checkout or env.yaml, no network, no secrets, and a killed process past its limits:

    scorer = open_confined_scorer(Path(__file__).with_name("scoring.py"), settings, warmup="warm_up")
    await scorer.start()
    reward = await scorer.call("score", answer, task)   # ComputeError (its text is the reason) on failure

Ray is imported only by the Ray backend, and only when NEMO_GYM_RAY_ADDRESS is set.
"""

from __future__ import annotations

import os
from pathlib import Path as _Path

from nemo_gym.compute import _confined
from nemo_gym.compute._confined import ConfinedScorer
from nemo_gym.compute._executor import ComputeExecutor, ComputeSettings, LocalExecutor
from nemo_gym.compute._pool import Warmup

RAY_ADDRESS_ENV = "NEMO_GYM_RAY_ADDRESS"
"""Set in a server's environment by `ng_run +ray_address=...` when the server runs on Ray."""


def open_executor(settings: ComputeSettings, *, warmup: Warmup | None = None) -> ComputeExecutor:
    """The executor for this process: Ray tasks when NEMO_GYM_RAY_ADDRESS is set, local workers otherwise.
    Call `await executor.start()` before the first job."""
    address = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    if not address:
        return LocalExecutor(settings, warmup)
    if _is_loopback(address):
        # With Ray 2.60 a driver cannot reach a cluster whose nodes are pinned to 127.0.0.1 unless
        # this is off (Ray then takes loopback as this machine's node address; ray-project/ray#59110).
        # Only for a loopback cluster: on a real one it would make the driver miss its node. Ray
        # reads it when imported, hence before the import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from nemo_gym.compute._ray import RayExecutor

    return RayExecutor(address, settings, warmup)


def open_confined_scorer(
    module_path: _Path | str, settings: ComputeSettings, *, warmup: str | None = None
) -> ConfinedScorer:
    """Untrusted scoring for this process: warm sandboxed interpreters here, or one-shot sandboxed Ray
    tasks when NEMO_GYM_RAY_ADDRESS is set. `warmup` names a function of the module run once per
    interpreter (heavy imports) before any call's deadline starts. Call `await scorer.start()` first."""
    if os.environ.get(RAY_ADDRESS_ENV, "").strip():
        return _confined.OneShotConfinedScorer(_Path(module_path), settings, open_executor(settings), warmup)
    return _confined.WarmConfinedScorer(_Path(module_path), settings, warmup)


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


__all__ = [
    "RAY_ADDRESS_ENV",
    "ComputeExecutor",
    "ComputeSettings",
    "ConfinedScorer",
    "LocalExecutor",
    "open_confined_scorer",
    "open_executor",
]
