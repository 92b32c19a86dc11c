"""The sandbox, exercised with real child processes: limits, isolation, cleanup, sessions."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from nemo_gym.errors import SandboxError
from nemo_gym.sandbox import ExecutionResult, Isolation, Sandbox, SandboxLimits
from tests.conftest import PROJECT_ROOT

T = TypeVar("T")
FAST = SandboxLimits(wall_timeout_s=5, cpu_time_s=5, memory_mb=256)
# What a machine without namespaces, cgroups or a dedicated uid gets (not root, or a locked container).
FALLBACK = Isolation(network_isolation="python-guard", namespaces=False, dedicated_uid=False)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def run_once(code: str, limits: SandboxLimits = FAST, **kwargs: Any) -> ExecutionResult:
    sandbox = Sandbox(limits)
    try:
        return await sandbox.run_python(code, **kwargs)
    finally:
        await sandbox.aclose()


def our_children() -> list[psutil.Process]:
    # multiprocessing's resource tracker lives as long as the test run once any earlier test used a
    # spawn process pool (nemo_gym.compute's local backend does); it is not the sandbox's.
    return [child for child in psutil.Process().children(recursive=True) if not _is_resource_tracker(child)]


def _is_resource_tracker(process: psutil.Process) -> bool:
    try:
        return "multiprocessing.resource_tracker" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def assert_no_leftover_processes() -> None:
    deadline = time.monotonic() + 3
    while (left := our_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"sandbox processes left behind: {left}"


def test_prints_output_and_reports_success() -> None:
    result = run(run_once("import sys\nprint('hello', 6 * 7)\nprint('warn', file=sys.stderr)"))
    assert result.ok and result.exit_code == 0
    assert result.stdout == "hello 42\n"
    assert result.stderr == "warn\n"
    assert result.describe_error() is None


def test_reads_stdin() -> None:
    result = run(
        run_once(
            "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))",
            stdin="1 2 3\n4",
        )
    )
    assert result.stdout == "10\n"


def test_crash_is_a_result_with_the_user_traceback() -> None:
    result = run(run_once("def f():\n    return 1 / 0\nf()"))
    assert not result.ok and result.exit_code == 1
    assert 'File "main.py", line 2, in f' in result.stderr
    assert "_child.py" not in result.stderr  # the bootstrap's frames are hidden
    assert result.describe_error() == "exited with code 1: ZeroDivisionError: division by zero"


def test_sys_exit_code_is_kept() -> None:
    assert run(run_once("import sys; sys.exit(3)")).exit_code == 3


def test_infinite_loop_times_out_near_the_wall_limit() -> None:
    limits = FAST.model_copy(update={"wall_timeout_s": 1.5})
    started = time.monotonic()
    result = run(run_once("print('started', flush=True)\nwhile True:\n    pass", limits))
    assert time.monotonic() - started < 1.5 + 1.0
    assert result.timed_out and not result.ok and result.exit_code is None
    assert result.stdout == "started\n"  # output before the kill is kept
    assert result.describe_error().startswith("timed out after 1.5 s")
    assert_no_leftover_processes()


def test_cpu_limit_kills_a_busy_loop() -> None:
    # A generous wall limit: on a loaded machine one CPU second can take many wall seconds.
    limits = FAST.model_copy(update={"cpu_time_s": 1, "wall_timeout_s": 60})
    result = run(run_once("while True:\n    pass", limits))
    assert not result.timed_out
    assert result.describe_error() == "killed: CPU time limit 1 s exceeded"


def test_memory_bomb_fails_with_a_clear_error() -> None:
    result = run(run_once("hoard = []\nwhile True:\n    hoard.append(' ' * 10**7)"))
    assert not result.ok and not result.timed_out
    assert result.memory_exceeded
    assert result.describe_error() == "failed: memory limit 256 MB exceeded"


def test_fork_bomb_is_contained_and_leaves_nothing_behind() -> None:
    limits = FAST.model_copy(update={"wall_timeout_s": 2, "max_processes": 16})
    counting = (
        "import os, time\nforked = 0\n"
        "try:\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)\n            os._exit(0)\n"
        "        forked += 1\nexcept OSError as error:\n    print(forked, type(error).__name__)\n"
    )
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"

    async def scenario() -> tuple[ExecutionResult, ExecutionResult, ExecutionResult, float]:
        sandbox = Sandbox(limits)
        try:
            counted = await sandbox.run_python(counting)
            started = time.monotonic()
            bombed = await sandbox.run_python(bomb)
            elapsed = time.monotonic() - started
            after = await sandbox.run_python("print('still fine')")
            return counted, bombed, after, elapsed
        finally:
            await sandbox.aclose()

    counted, bombed, after, elapsed = run(scenario())
    forked, error = counted.stdout.split()
    assert error == "BlockingIOError" and int(forked) < 16  # the kernel refused the 16th process
    assert not bombed.ok and elapsed < 2 + 1.5
    assert after.stdout == "still fine\n"
    assert_no_leftover_processes()


def test_writing_outside_the_work_dir_fails() -> None:
    """Nothing the code writes lands on the host: the project and /work are read-only or absent,
    and /tmp and /dev/shm are the sandbox's own work dir (a private tmpfs)."""
    outside = Path("/tmp") / f"sandbox-escape-{uuid.uuid4().hex}"
    in_project = Path.cwd() / f"sandbox-escape-{uuid.uuid4().hex}"
    code = (
        "import sys\n"
        f"for target in [{str(in_project)!r}, '/work/escape', '/usr/escape', '/escape']:\n"
        "    try:\n        open(target, 'w').write('x')\n        print('WROTE', target)\n"
        "    except OSError as error:\n        print('refused', type(error).__name__)\n"
        f"for target in [{str(outside)!r}, '/dev/shm/escape']:\n"
        "    open(target, 'w').write('x')\n"
        "open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n"
    )
    result = run(run_once(code))
    assert "WROTE" not in result.stdout, result.stdout
    assert result.stdout.count("refused") == 4 and result.stdout.endswith("ok\n")
    assert not outside.exists() and not in_project.exists()
    assert not Path("/dev/shm/escape").exists() and not Path("/work/escape").exists()


def test_parent_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    code = (
        "import os\nprint(os.environ.get('OPENAI_API_KEY'))\n"
        f"try:\n    print(open('/proc/{os.getpid()}/environ', 'rb').read())\n"
        "except OSError as error:\n    print('refused', type(error).__name__)\n"
    )
    result = run(run_once(code))
    assert "sk-test-secret-value" not in result.stdout
    assert result.stdout.startswith("None\nrefused")


def test_network_is_unreachable() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    code = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED')\n"
        "except OSError as error:\n    print('blocked', type(error).__name__)\n"
    )
    try:
        result = run(run_once(code))
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert result.stdout.startswith("blocked")
    assert Sandbox().network_isolation in ("namespace", "python-guard")


def sandbox_isolation() -> Isolation:
    return Sandbox(allow_weaker_isolation=True).isolation


def our_work_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(f"nemo_gym_sandbox.{os.getpid()}.*"))


@pytest.mark.parametrize("forced", [None, FALLBACK], ids=["detected", "fallback"])
def test_work_dir_is_removed_after_success_and_after_timeout(
    forced: Isolation | None,
) -> None:
    limits = FAST.model_copy(update={"wall_timeout_s": 1})
    before = our_work_dirs()

    async def scenario() -> tuple[ExecutionResult, ExecutionResult]:
        sandbox = Sandbox(limits, isolation=forced, allow_weaker_isolation=True)
        try:
            finished = await sandbox.run_python("import os\nopen('data.txt', 'w').write('x')\nprint(os.getcwd())")
            timed_out = await sandbox.run_python("import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    pass")
            return finished, timed_out
        finally:
            await sandbox.aclose()

    finished, timed_out = run(scenario())
    assert finished.ok and timed_out.timed_out
    for result in (finished, timed_out):
        work_dir = Path(result.stdout.strip())
        assert work_dir.is_absolute()
        if forced is None and sandbox_isolation().private_root:
            assert work_dir == Path("/tmp")  # a private tmpfs, gone with the mount namespace
        else:
            assert work_dir.name.startswith(f"nemo_gym_sandbox.{os.getpid()}.")
            assert not work_dir.exists()
    assert our_work_dirs() == before


def test_output_is_truncated_at_the_limit() -> None:
    limits = FAST.model_copy(update={"max_output_bytes": 1000})
    result = run(
        run_once(
            "import sys\nsys.stdout.write('x' * 3_000_000)\nprint('done', file=sys.stderr)",
            limits,
        )
    )
    assert result.ok and result.output_truncated
    assert result.stdout == "x" * 1000
    assert result.stderr == "done\n"


def test_concurrent_runs_are_bounded_and_do_not_block_the_loop() -> None:
    code = "import time\nstart = time.time()\ntime.sleep(0.3)\nprint(start, time.time())"

    async def scenario() -> tuple[list[ExecutionResult], int]:
        sandbox = Sandbox(FAST, max_concurrent=2)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        try:
            return await asyncio.gather(*(sandbox.run_python(code) for _ in range(8))), ticks
        finally:
            ticking.cancel()
            await sandbox.aclose()

    results, ticks = run(scenario())
    assert all(r.ok for r in results)
    spans = [tuple(map(float, r.stdout.split())) for r in results]
    most_at_once = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most_at_once <= 2
    assert ticks > 50  # 8 runs x 0.3 s / 2 slots >= 1.2 s: the loop kept ticking throughout


def test_session_keeps_state_and_echoes_trailing_expression() -> None:
    async def scenario() -> list[ExecutionResult]:
        sandbox = Sandbox(FAST)
        session = await sandbox.open_session()
        try:
            return [
                await session.execute("import math\nx = 20"),
                await session.execute("x += 1\nmath.factorial(3) * x"),
                await session.execute("print('side'); None"),
                await session.execute("undefined_name"),
                await session.execute("x"),
            ]
        finally:
            await sandbox.aclose()

    define, echo, print_only, error, after_error = run(scenario())
    assert define.ok and define.stdout == ""
    assert echo.stdout == "126\n"
    assert print_only.stdout == "side\n"  # None is not echoed, as in the REPL
    assert error.exit_code == 1 and "NameError: name 'undefined_name' is not defined" in error.stderr
    assert after_error.stdout == "21\n" and not after_error.session_restarted


def test_session_restarts_after_timeout_and_says_so() -> None:
    async def scenario() -> tuple[ExecutionResult, ExecutionResult, ExecutionResult]:
        sandbox = Sandbox(FAST)
        session = await sandbox.open_session()
        try:
            await session.execute("kept = 1")
            stuck = await session.execute("while True:\n    pass", timeout_s=1)
            lost = await session.execute("kept")
            fresh = await session.execute("kept = 2\nkept")
            return stuck, lost, fresh
        finally:
            await sandbox.aclose()

    stuck, lost, fresh = run(scenario())
    assert stuck.timed_out and stuck.session_restarted
    assert "session was restarted" in stuck.describe_error()
    assert "NameError" in lost.stderr
    assert fresh.stdout == "2\n"
    assert_no_leftover_processes()


def test_session_survives_its_interpreter_dying() -> None:
    async def scenario() -> tuple[ExecutionResult, ExecutionResult]:
        sandbox = Sandbox(FAST)
        session = await sandbox.open_session()
        try:
            died = await session.execute("import os\nos._exit(7)")
            return died, await session.execute("1 + 1")
        finally:
            await sandbox.aclose()

    died, next_cell = run(scenario())
    assert died.exit_code == 7 and died.session_restarted
    assert next_cell.stdout == "2\n"


def test_aclose_kills_runs_in_flight_and_refuses_new_work() -> None:
    async def scenario() -> ExecutionResult:
        sandbox = Sandbox(FAST)
        running = asyncio.create_task(sandbox.run_python("import time\ntime.sleep(30)"))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await sandbox.aclose()
        result = await running
        assert time.monotonic() - started < 2
        with pytest.raises(SandboxError):
            await sandbox.run_python("print(1)")
        return result

    result = run(scenario())
    assert not result.ok
    assert_no_leftover_processes()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(memory_mb=0)
    with pytest.raises(ValueError):
        SandboxLimits(wall_timeout_s=-1)


def test_fallback_without_namespaces_still_guards_network_and_limits() -> None:
    """What a machine without namespaces gets: the socket guard, rlimits and the process group."""
    limits = FAST.model_copy(update={"wall_timeout_s": 1})
    code = (
        "import socket\ntry:\n    socket.socket()\n    print('SOCKET')\n"
        "except OSError as error:\n    print('blocked', error)\n"
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20, 'MB')\n"
    )

    async def scenario() -> tuple[ExecutionResult, ExecutionResult]:
        sandbox = Sandbox(limits, isolation=FALLBACK, allow_weaker_isolation=True)
        try:
            return await sandbox.run_python(code), await sandbox.run_python("while True:\n    pass")
        finally:
            await sandbox.aclose()

    guarded, looping = run(scenario())
    assert guarded.stdout == "blocked [Errno 1] network access is disabled in this sandbox\n256 MB\n"
    assert looping.timed_out
    assert_no_leftover_processes()


def test_session_survives_a_fork_bomb() -> None:
    """Forked copies of the interpreter must not keep answering cells with stale replies."""
    limits = FAST.model_copy(update={"max_processes": 16})

    async def scenario() -> list[ExecutionResult]:
        sandbox = Sandbox(limits)
        session = await sandbox.open_session()
        try:
            bombed = await session.execute("import os\nwhile True:\n    os.fork()")
            return [bombed] + [
                await session.execute(code) for code in ("x = 41\nx + 1", "x * 2", "import os\nos.getpid() > 0")
            ]
        finally:
            await sandbox.aclose()

    bombed, answer, state, flag = run(scenario())
    assert not bombed.ok and not bombed.session_restarted
    assert bombed.describe_error().startswith("failed: process limit 16 reached")
    assert "BlockingIOError" in bombed.describe_error()
    assert answer.stdout == "42\n" and answer.stderr == "" and not answer.session_restarted
    assert state.stdout == "82\n" and flag.stdout == "True\n"
    assert_no_leftover_processes()


def test_session_child_that_returns_to_the_loop_is_ended_and_reaped() -> None:
    async def scenario() -> list[ExecutionResult]:
        sandbox = Sandbox(FAST)
        session = await sandbox.open_session()
        try:
            return [
                await session.execute(code)
                for code in (
                    "import os\nowner = os.getpid()\npid = os.fork()\n'parent' if pid else 'child'",
                    "x = 41\nx + 1",
                    "import time\ntime.sleep(0.2)\nos.getpid() == owner",
                    # the returned copy was reaped: no zombie child is left to count against the limit
                    "os.waitpid(-1, os.WNOHANG)",
                )
            ]
        finally:
            await sandbox.aclose()

    forked, answer, same, reaped = run(scenario())
    assert forked.stdout == "'parent'\n" and forked.ok
    assert answer.stdout == "42\n" and not answer.session_restarted
    assert same.stdout == "True\n"
    assert "ChildProcessError" in reaped.stderr
    assert_no_leftover_processes()


def test_session_closed_mid_cell_returns_a_closed_result() -> None:
    async def scenario() -> tuple[ExecutionResult, float]:
        sandbox = Sandbox(FAST.model_copy(update={"wall_timeout_s": 30}))
        session = await sandbox.open_session()
        try:
            running = asyncio.create_task(session.execute("import time\ntime.sleep(20)"))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await session.aclose()
            result = await running
            with pytest.raises(SandboxError):
                await session.execute("1")
            return result, time.monotonic() - started
        finally:
            await sandbox.aclose()

    result, elapsed = run(scenario())
    assert elapsed < 2
    assert not result.ok and not result.session_restarted
    assert result.describe_error() == "the session was closed while the cell was running"
    assert_no_leftover_processes()


def test_an_interpreter_installed_under_tmp_runs_inside_the_sandbox(tmp_path):
    # A checkout (and its venv) under /tmp, as a CI runner may have it: the sandbox's own work dir is
    # mounted on /tmp inside the private root, and must not hide (or collide with) the interpreter.
    if not Sandbox(FAST, allow_weaker_isolation=True).isolation.private_root:
        pytest.skip("this machine cannot build the sandbox's private root")
    venv = Path(tempfile.mkdtemp(dir="/tmp")) / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        site_packages = [p for p in sys.path if p.endswith("site-packages")]
        script = (
            "import asyncio\n"
            "from nemo_gym.sandbox import Sandbox, SandboxLimits\n"
            "async def main():\n"
            "    sandbox = Sandbox(SandboxLimits(wall_timeout_s=10, cpu_time_s=5, memory_mb=256))\n"
            "    try:\n"
            '        result = await sandbox.run_python("import sys; print(sys.prefix)")\n'
            "    finally:\n"
            "        await sandbox.aclose()\n"
            "    print(result.stdout.strip(), result.exit_code, result.stderr.strip()[-300:])\n"
            "asyncio.run(main())\n"
        )
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), *site_packages]))
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(venv), "0"], done.stdout + done.stderr
    finally:
        shutil.rmtree(venv.parent, ignore_errors=True)
