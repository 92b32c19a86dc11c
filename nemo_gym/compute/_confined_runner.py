"""The program inside the sandbox that runs an environment's scoring functions on untrusted text.

This file is shipped into the sandbox as source text (the checkout is not visible there), so it
imports the standard library only. It is loaded in a sandboxed interpreter together with the
environment's scorer module; every call then runs in a fresh `fork()` of that warm interpreter:

- the scorer's imports (sympy, reasoning-gym, math-verify) are paid once, not per call;
- a call sees the interpreter as it was after warm-up, never what an earlier answer did to it
  (monkeypatching a scorer, filling a cache) since each call's changes die with its fork;
- a call that runs past its deadline, or past its CPU time, is SIGKILLed, whatever C code it is
  in; the interpreter that forked it lives on and answers the next call;
- the call's process keeps no way back into the interpreter's protocol pipe: it gets /dev/null for
  stdin/stdout/stderr and only the write end of its own result pipe, and the interpreter is made
  non-dumpable so that the same uid cannot open its descriptors through /proc.

Two ways in: `load()` then `call()` as session cells (a warm pool on this machine), or `main()` as
a one-shot program reading one call from stdin (on a Ray node).

Results travel back as JSON, never as pickle: what comes out of the sandbox is as untrusted as what
went in, and unpickling it would run code in the server.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import gc
import json
import math
import os
import resource
import select
import signal
import sys
import time
import types

_modules: dict[str, types.ModuleType] = {}

PR_SET_DUMPABLE = 4
REASON_LIMIT = 500
"""Characters of an exception message kept in a result (scorers can put the whole answer in one)."""


def _decode(payload: str) -> object:
    return json.loads(base64.b64decode(payload).decode("utf-8"))


def load(payload: str) -> str:
    """Execute a scorer module's source as the module `name`, then run its warm-up function."""
    spec = _decode(payload)
    assert isinstance(spec, dict)
    name, source, filename = spec["name"], spec["source"], spec["filename"]
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module  # pickle, dataclasses and typing look the module up by name
    exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - the environment's own scorer code
    if spec.get("warmup"):
        getattr(module, spec["warmup"])()
    _modules[name] = module
    _make_undumpable()
    # Objects that exist now are never collected, so a fork's garbage collector does not write to
    # (and so copy) every page of the warm interpreter.
    gc.freeze()
    return "ready"


def _make_undumpable() -> None:
    # A call runs as the same uid as this interpreter; without this it could open
    # /proc/<this pid>/fd/<protocol pipe> and write replies of its own.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def call(payload: str) -> str:
    """Run one call in a fork of this interpreter; the JSON outcome is returned as text."""
    request = _decode(payload)
    assert isinstance(request, dict)
    return json.dumps(_call_in_fork(request))


def _call_in_fork(request: dict) -> dict:
    function = getattr(_modules[request["module"]], request["function"])
    timeout_s = float(request["timeout_s"])
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the call's own process: never returns
        os.close(read_fd)
        _run_call(function, request["args"], write_fd, timeout_s)
    os.close(write_fd)
    try:
        return _collect(pid, read_fd, timeout_s, int(request["max_result_bytes"]))
    finally:
        os.close(read_fd)


# What a scoring has no business doing, by audit event (PEP 578), and how the row will say it.
_REFUSED_EVENTS = {
    "os.system": "run a shell command",
    "os.exec": "run a program",
    "os.posix_spawn": "run a program",
    "os.spawn": "run a program",
    "subprocess.Popen": "run a program",
    "os.fork": "start a process",
    "os.forkpty": "start a process",
    "os.kill": "send a signal",
    "os.killpg": "send a signal",
    "signal.pthread_kill": "send a signal",
    "socket.connect": "open a network connection",
    "socket.bind": "open a network socket",
    "socket.sendto": "send network traffic",
    "ctypes.dlopen": "load native code",
    "ctypes.dlsym": "load native code",
    "ctypes.call_function": "call native code",
    "os.remove": "delete a file",
    "os.rmdir": "delete a file",
    "os.rename": "move a file",
    "os.truncate": "change a file",
    "os.chmod": "change a file",
    "shutil.rmtree": "delete files",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_refused: list[str] = []


def _refuse_side_effects(event: str, args: tuple) -> None:
    """Audit hook of a call's fork. The sandbox is the wall; this makes an answer that *tries* to act
    (run a command, open a socket, write a file) fail visibly, with reward 0 and the reason in the
    row, instead of earning whatever the scorer makes of the attempt's return value."""
    what = _REFUSED_EVENTS.get(event)
    if what is None and event == "open" and len(args) >= 3:
        mode, flags = args[1], args[2]
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
        what = "write a file" if writes else None
    if what is not None:
        if not _refused:
            _refused.append(f"{what} ({event})")
        raise PermissionError(f"not allowed while scoring: {event}")


def _run_call(function: object, args: list, write_fd: int, timeout_s: float) -> None:
    try:
        _cut_ties(write_fd)
        cpu_s = max(1, math.ceil(timeout_s))
        # Counted from zero in this fork: a busy loop dies of SIGXCPU even if the wall clock is slow.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        sys.addaudithook(_refuse_side_effects)  # for this fork only, and for good
        value = function(*args)  # type: ignore[operator]
        if _refused:
            outcome: dict = {
                "ok": False,
                "kind": "refused",
                "error": f"the scoring tried to {_refused[0]} and was stopped",
            }
        else:
            outcome = {"ok": True, "value": value}
        data = json.dumps(outcome, allow_nan=False)
    except MemoryError:
        data = json.dumps({"ok": False, "kind": "memory", "error": "MemoryError: the scoring ran out of memory"})
    except BaseException as error:  # noqa: BLE001 - whatever the scorer raised is that call's result
        message = f"{type(error).__name__}: {error}"
        if isinstance(error, (TypeError, ValueError)) and "JSON" in str(error):
            message = f"the scorer returned a value that is not JSON: {error}"
        if _refused:
            message = f"the scoring tried to {_refused[0]} and was stopped"
        data = json.dumps({"ok": False, "kind": "exception", "error": message[:REASON_LIMIT]})
    with contextlib.suppress(OSError):
        view = memoryview(data.encode("utf-8"))
        while view:
            view = view[os.write(write_fd, view) :]
    os._exit(0)


def _cut_ties(write_fd: int) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    # Every other descriptor (the session's protocol pipes among them) is closed.
    keep = sorted({0, 1, 2, write_fd})
    for low, high in zip(keep, [*keep[1:], resource.getrlimit(resource.RLIMIT_NOFILE)[0]]):
        os.closerange(low + 1, high)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as this process


def _collect(pid: int, read_fd: int, timeout_s: float, max_result_bytes: int) -> dict:
    deadline = time.monotonic() + timeout_s
    os.set_blocking(read_fd, False)
    exited = _exit_watch(pid)
    chunks: list[bytes] = []
    size, eof = 0, False
    status: int | None = None
    try:
        while status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill(pid)
                return {
                    "ok": False,
                    "kind": "timeout",
                    "error": f"the scoring ran past its {timeout_s:g} s limit and was killed",
                }
            watched = ([] if eof else [read_fd]) + ([] if exited is None else [exited])
            # Without a pidfd (old kernels) the exit is noticed by polling.
            select.select(watched, [], [], min(remaining, 1.0 if exited is not None else 0.005))
            got, eof = _drain(read_fd, chunks)
            size += got
            if size > max_result_bytes:
                _kill(pid)
                return {
                    "ok": False,
                    "kind": "exception",
                    "error": f"the result is larger than {max_result_bytes} bytes",
                }
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                status = raw
    finally:
        if exited is not None:
            os.close(exited)
    _drain(read_fd, chunks)  # what was written just before it exited
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return {
                "ok": False,
                "kind": "timeout",
                "error": f"the scoring used more than {timeout_s:g} s of CPU and was killed",
            }
        return {
            "ok": False,
            "kind": "crash",
            "error": f"the scoring process was killed by signal {_signal_name(number)}",
        }
    try:
        outcome = json.loads(b"".join(chunks)[:max_result_bytes])
    except ValueError:
        outcome = None
    if not isinstance(outcome, dict) or "ok" not in outcome:
        code = os.WEXITSTATUS(status)
        return {"ok": False, "kind": "crash", "error": f"the scoring process exited with code {code} and no result"}
    return outcome


def _exit_watch(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits (a pidfd), or None where there is none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _drain(read_fd: int, chunks: list[bytes]) -> tuple[int, bool]:
    """Read what is there now: (bytes read, whether the pipe reached its end)."""
    got = 0
    while True:
        try:
            data = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            return got, False
        if not data:
            return got, True
        chunks.append(data)
        got += len(data)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def main() -> None:
    """One-shot mode: stdin holds {"load": <payload>, "call": <payload>}; the outcome goes to stdout."""
    job = json.loads(sys.stdin.read())
    load(job["load"])
    print(call(job["call"]))


if __name__ == "__main__":
    main()
