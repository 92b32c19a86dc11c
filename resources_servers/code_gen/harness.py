"""The unit-test harness: runs INSIDE the sandbox, as one program per task; standard library only.

It reads a job from stdin ({"code", "inputs", "outputs", "fn_name", "timeout_s"}), runs every test
in a fresh child interpreter and prints one JSON report line prefixed with REPORT_MARKER.

Why a child per test instead of exec-ing the code in this process: the tested code must never
share memory with the expected outputs, or it could look them up and print them. The harness also
makes itself non-dumpable, so a child (same uid) cannot read its memory or its pipes through
/proc; the worst a hostile child can do is kill the harness, and a missing report scores 0.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys

REPORT_MARKER = "@@code_gen_report@@ "

# Runs in each child: no network (again: this interpreter does not inherit the sandbox's Python-level
# guard), then the solution, either as a script on stdin/stdout or as a function called with JSON args.
DRIVER = r"""
import json, runpy, socket, sys

class _NoNetwork(socket.socket):
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
            raise OSError("network access is disabled in the sandbox")
        super().__init__(family, type, proto, fileno)

def _refuse(*args, **kwargs):
    raise OSError("network access is disabled in the sandbox")

socket.socket = _NoNetwork
socket.create_connection = socket.getaddrinfo = _refuse

mode, fn_name = sys.argv[1], sys.argv[2]
sys.argv = ["solution.py"]
if mode == "stdio":
    runpy.run_path("solution.py", run_name="__main__")
else:
    with open("args.json") as handle:
        args = json.load(handle)
    namespace = runpy.run_path("solution.py", run_name="solution")
    holder = namespace.get("Solution")
    if holder is not None and hasattr(holder, fn_name):
        function = getattr(holder(), fn_name)
    elif fn_name in namespace:
        function = namespace[fn_name]
    else:
        raise NameError(f"the code defines neither a function {fn_name!r} nor a Solution class with that method")
    result = function(*args)
    try:
        encoded = json.dumps(result)
    except (TypeError, ValueError):
        encoded = json.dumps({"__unserializable__": repr(result)[:200]})
    with open("result.json", "w") as handle:
        handle.write(encoded)
"""


def _make_undumpable() -> None:
    # Best effort: without ctypes the other barriers (no shared memory, no inherited pipes) still hold.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines()]


def _decode(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _call_args(test_input) -> list:
    if isinstance(test_input, list):
        return test_input
    if isinstance(test_input, str):  # LiveCodeBench style: one JSON value per line
        return [json.loads(line) for line in test_input.splitlines() if line.strip()]
    return [test_input]


def _same(got, expected) -> bool:
    if isinstance(got, bool) or isinstance(expected, bool):
        return got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(_same(a, b) for a, b in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(_same(got[k], expected[k]) for k in got)
    return got == expected


def _short(value, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _read(path: str, limit: int = 4_000_000) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def run_test(index: int, test_input, expected, fn_name: str | None, timeout_s: float) -> tuple[bool, str | None, bool]:
    """(passed, failure description, fatal: stop running further tests)."""
    for leftover in ("result.json", "stdout.txt", "stderr.txt"):
        if os.path.exists(leftover):
            os.remove(leftover)
    if fn_name:
        try:
            args = _call_args(test_input)
        except ValueError as error:
            return False, f"test {index}: its input is not JSON ({error})", False
        with open("args.json", "w") as handle:
            json.dump(args, handle)
        stdin_text = ""
    else:
        stdin_text = test_input if isinstance(test_input, str) else json.dumps(test_input)
    with open("stdin.txt", "w") as handle:
        handle.write(stdin_text)

    command = [sys.executable, "-I", "-B", "driver.py", "call" if fn_name else "stdio", fn_name or ""]
    with open("stdin.txt", "rb") as stdin, open("stdout.txt", "wb") as stdout, open("stderr.txt", "wb") as stderr:
        child = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            status = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return False, f"test {index}: timed out after {timeout_s:g} s", True
        finally:
            try:
                os.killpg(child.pid, signal.SIGKILL)  # anything it left running
            except ProcessLookupError:
                pass

    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else str(-status)
        reason = {"SIGXCPU": "CPU time limit exceeded", "SIGXFSZ": "output or file size limit exceeded"}.get(name, name)
        return False, f"test {index}: killed ({reason})", True
    if status != 0:
        last = _last_line(_read("stderr.txt"))
        fatal = "MemoryError" in last or "BlockingIOError" in last
        return False, f"test {index}: exited with code {status}" + (f": {last}" if last else ""), fatal

    if fn_name:
        raw = _read("result.json")
        if not raw:
            return False, f"test {index}: the function returned nothing readable", False
        got, want = json.loads(raw), _decode(expected)
        if _same(got, want):
            return True, None, False
        return False, f"test {index}: expected {_short(want)}, got {_short(got)}", False
    got_text = _read("stdout.txt")
    want_text = expected if isinstance(expected, str) else json.dumps(expected)
    if _lines(got_text) == _lines(want_text):
        return True, None, False
    return False, f"test {index}: expected {_short(want_text.strip())!r}, got {_short(got_text.strip())!r}", False


def main() -> None:
    job = json.loads(sys.stdin.read())
    _make_undumpable()
    with open("solution.py", "w") as handle:
        handle.write(job["code"])
    with open("driver.py", "w") as handle:
        handle.write(DRIVER)
    inputs, outputs, fn_name = job["inputs"], job["outputs"], job.get("fn_name")
    passed, first_error = 0, None
    for index, (test_input, expected) in enumerate(zip(inputs, outputs), start=1):
        ok, error, fatal = run_test(index, test_input, expected, fn_name, job["timeout_s"])
        passed += ok
        if error and first_error is None:
            first_error = error
        if fatal:
            break
    report = {"num_passed": passed, "error": first_error}
    print(REPORT_MARKER + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
