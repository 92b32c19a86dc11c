"""The sandbox bounds a whole execution, not one process: each test runs the attack for real.

Memory and disk for the whole process tree, nothing outliving a call, no view of the project,
visible session loss, and nothing left behind by a SIGKILLed server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from nemo_gym.errors import SandboxError
from nemo_gym.sandbox import (
    ExecutionResult,
    Isolation,
    Sandbox,
    SandboxLimits,
    SessionPool,
)

T = TypeVar("T")
FAST = SandboxLimits(wall_timeout_s=10, cpu_time_s=10, memory_mb=256)
FALLBACK = Isolation(network_isolation="python-guard", namespaces=False, dedicated_uid=False)
DETECTED = Sandbox(allow_weaker_isolation=True).isolation
ISOLATIONS = pytest.mark.parametrize("isolation", [DETECTED, FALLBACK], ids=["detected", "fallback"])
needs_memory_cgroup = pytest.mark.skipif(
    DETECTED.cgroups is None or "memory" not in DETECTED.cgroups.controllers,
    reason="no writable memory cgroup on this machine",
)
needs_private_root = pytest.mark.skipif(not DETECTED.private_root, reason="no namespaces on this machine")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def run_once(code: str, limits: SandboxLimits = FAST, isolation: Isolation = DETECTED) -> ExecutionResult:
    sandbox = Sandbox(limits, isolation=isolation, allow_weaker_isolation=True)
    try:
        return await sandbox.run_python(code)
    finally:
        await sandbox.aclose()


def live_processes_mentioning(marker: str) -> list[psutil.Process]:
    """Every running process on the machine whose command line holds `marker`, escaped or not."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if marker in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


# ---- 12. memory and disk are bounded for the execution as a whole -------------------------------

FORKS_TOUCHING_MEMORY = """
import os, time
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        block = bytearray(160 * 2**20)            # under RLIMIT_AS (256 MB) in each process,
        block[::4096] = b"x" * (len(block) // 4096)  # touched so it is really resident
        time.sleep(0.5)
        os._exit(0)
    children.append(pid)
print(sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))
"""


@needs_memory_cgroup
def test_forks_touching_memory_share_one_memory_limit() -> None:
    """3 x 160 MB is 480 MB: each fork is under the 256 MB rlimit, the execution is not."""
    result = run(run_once(FORKS_TOUCHING_MEMORY))
    assert result.memory_exceeded, result
    assert result.describe_error() == "failed: memory limit 256 MB exceeded"
    survivors = result.stdout.count("0")  # children that held 160 MB until the end
    assert "-9" in result.stdout and survivors <= 1, result.stdout


def test_without_cgroups_memory_is_bounded_per_process() -> None:
    """The documented fallback: RLIMIT_AS still stops any one process at the limit."""
    result = run(run_once("block = bytearray(300 * 2**20)", isolation=FALLBACK))
    assert result.memory_exceeded
    assert result.describe_error() == "failed: memory limit 256 MB exceeded"


MANY_FILES = """
written = 0
try:
    for index in range(8):
        with open(f"part{index}.bin", "wb") as file:
            file.write(b"x" * (10 * 2**20))       # each under RLIMIT_FSIZE (16 MB)
        written += 10
except OSError as error:
    print("stopped:", error.strerror)
print("written MB:", written)
"""


@needs_private_root
def test_many_files_share_one_disk_limit() -> None:
    """8 x 10 MB is 80 MB: every file is under the file size limit, the work dir is not."""
    result = run(run_once(MANY_FILES, FAST.model_copy(update={"max_disk_mb": 32})))
    assert "stopped: No space left on device" in result.stdout, result
    written = int(result.stdout.split("written MB:")[1])
    assert written <= 30


def test_without_namespaces_one_file_is_still_bounded() -> None:
    """The documented fallback: RLIMIT_FSIZE still refuses a write past the file size limit."""
    code = "open('big.bin', 'wb').write(b'x' * (20 * 2**20))"
    result = run(run_once(code, isolation=FALLBACK))
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of the process being killed.
    assert result.describe_error() == "exited with code 1: OSError: [Errno 27] File too large"


# ---- 13. nothing outlives a call ----------------------------------------------------------------


def spinner_cell(marker: str) -> str:
    """Start a busy loop that lifts its own soft CPU limit, then return at once."""
    spin = (
        "import resource; soft, hard = resource.getrlimit(resource.RLIMIT_CPU); "
        f"resource.setrlimit(resource.RLIMIT_CPU, (hard, hard)); marker = {marker!r}\n"
        "while True: pass"
    )
    return f"import subprocess, sys\nspinner = subprocess.Popen([sys.executable, '-c', {spin!r}])\nspinner.pid > 0"


@ISOLATIONS
def test_a_popen_spinner_does_not_outlive_its_cell(isolation: Isolation) -> None:
    marker = f"spinner-{uuid.uuid4().hex}"

    async def scenario() -> tuple[ExecutionResult, list[psutil.Process], ExecutionResult]:
        sandbox = Sandbox(FAST, isolation=isolation, allow_weaker_isolation=True)
        session = await sandbox.open_session()
        try:
            await session.execute("kept = 41")
            started = await session.execute(spinner_cell(marker))
            left = live_processes_mentioning(marker)
            return started, left, await session.execute("kept + 1")
        finally:
            await sandbox.aclose()

    started, left, after = run(scenario())
    assert started.stdout == "True\n", started
    assert left == [], f"the spinner outlived its cell: {left}"
    assert after.stdout == "42\n" and not after.session_restarted  # the interpreter itself stays


@ISOLATIONS
def test_a_daemon_does_not_outlive_a_run(isolation: Isolation) -> None:
    """A double-forked child in its own session (setsid) is killed when the program ends."""
    marker = f"daemon-{uuid.uuid4().hex}"
    code = textwrap.dedent(f"""
        import os, subprocess, sys
        if os.fork() == 0:
            os.setsid()
            subprocess.Popen([sys.executable, "-c", "import time; marker = {marker!r}; time.sleep(60)"])
            os._exit(0)
        os.wait()
        print("started")
    """)
    result = run(run_once(code, isolation=isolation))
    assert result.stdout == "started\n", result
    deadline = time.monotonic() + 3
    while (left := live_processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"the daemon outlived the run: {left}"


def test_a_cancelled_cell_is_killed_and_the_next_cell_is_told() -> None:
    """A caller that gives up (its task is cancelled) stops the cell instead of leaving it running."""
    marker = f"cancelled-{uuid.uuid4().hex}"
    cell = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; marker = \"{marker}\"; time.sleep(300)'])\n"
        "time.sleep(60)"
    )

    async def scenario() -> tuple[list[psutil.Process], list[psutil.Process], ExecutionResult]:
        sandbox = Sandbox(FAST, allow_weaker_isolation=True)
        session = await sandbox.open_session()
        try:
            await session.execute("kept = 1")
            interpreter = psutil.Process().children(recursive=True)
            running = asyncio.create_task(session.execute(cell))
            deadline = time.monotonic() + 30
            while not live_processes_mentioning(marker) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert live_processes_mentioning(marker), "the cell should have started"
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            _gone, alive = psutil.wait_procs(interpreter, timeout=5)
            return alive, live_processes_mentioning(marker), await session.execute("kept")
        finally:
            await sandbox.aclose()

    alive, cell_children, after = run(scenario())
    assert alive == [] and cell_children == [], f"the cancelled cell left processes behind: {alive + cell_children}"
    assert after.session_restarted and "NameError" in after.stderr
    assert "its previous cell was cancelled before it finished" in (after.describe_error() or "")


# ---- 14. model code cannot read the project -----------------------------------------------------


@needs_private_root
def test_model_code_cannot_read_the_project_or_home(tmp_path: Path) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    planted = [
        Path.cwd() / f"env-{uuid.uuid4().hex}.yaml",  # an env.yaml in the checkout
        Path.home() / f"env-{uuid.uuid4().hex}.yaml",
    ]
    for path in planted:
        path.write_text(f"policy_api_key: {secret}\n")
        path.chmod(0o644)
    directories = [os.getcwd(), str(Path.home()), "/work"]
    code = textwrap.dedent(f"""
        import json, os
        for path in {[str(p) for p in planted]!r}:
            try:
                print(open(path).read())
            except OSError as error:
                print(type(error).__name__)
        for directory in {directories!r}:
            try:
                print(json.dumps(sorted(os.listdir(directory))))
            except OSError as error:
                print(json.dumps(type(error).__name__))
    """)
    try:
        result = run(run_once(code))
    finally:
        for path in planted:
            path.unlink()
    assert secret not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["FileNotFoundError", "FileNotFoundError"], result.stdout
    # The checkout, home and /work show nothing but the way down to the Python installation, which
    # may live under them (pyenv in home, CI's virtualenv inside the checkout).
    python_roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    for directory, listing in zip(directories, (json.loads(line) for line in lines[2:]), strict=True):
        if listing == "FileNotFoundError":
            continue
        for entry in listing:
            inside = os.path.realpath(os.path.join(directory, entry))
            assert any(root == inside or root.startswith(inside + os.sep) for root in python_roots), (
                f"{directory}/{entry} is visible to sandboxed code but holds no part of the Python installation"
            )


def test_without_namespaces_the_sandbox_fails_closed() -> None:
    with pytest.raises(SandboxError, match="allow_weaker_isolation"):
        Sandbox(FAST, isolation=FALLBACK)


# ---- 15. a session lost to eviction or idleness says so ----------------------------------------


def test_an_evicted_session_says_its_state_was_lost() -> None:
    async def scenario() -> list[ExecutionResult]:
        sandbox = Sandbox(FAST)
        pool = SessionPool(sandbox, max_sessions=1, idle_timeout_s=300)
        try:
            return [
                await pool.execute("first", "x = 1"),
                await pool.execute("second", "y = 2"),  # evicts "first"
                await pool.execute("first", "x"),
                await pool.execute("first", "x = 3\nx"),  # said once, not again
            ]
        finally:
            await pool.aclose()
            await sandbox.aclose()

    _, _, lost, again = run(scenario())
    assert "NameError" in lost.stderr and lost.session_restarted
    assert lost.describe_error() == (
        "exited with code 1: NameError: name 'x' is not defined; the session was restarted "
        "before this cell ran (it was closed to make room for other sessions (max_sessions)); "
        "all earlier state (variables, imports) is lost"
    )
    assert again.stdout == "3\n" and again.describe_error() is None


def test_an_idle_reaped_session_says_so_even_when_the_cell_succeeds() -> None:
    async def scenario() -> tuple[ExecutionResult, ExecutionResult, int]:
        sandbox = Sandbox(FAST)
        pool = SessionPool(sandbox, max_sessions=4, idle_timeout_s=0.2)
        try:
            await pool.execute("rollout", "x = 1")
            deadline = time.monotonic() + 10
            while pool.live_sessions and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            reaped = await pool.execute("rollout", "1 + 1")
            await pool.close("rollout")  # done with it: a later call just starts afresh
            fresh = await pool.execute("rollout", "2 + 2")
            return reaped, fresh, pool.live_sessions
        finally:
            await pool.aclose()
            await sandbox.aclose()

    reaped, fresh, live = run(scenario())
    assert reaped.ok and reaped.stdout == "2\n"
    assert reaped.describe_error() == (
        "the session was restarted before this cell ran (it was closed after 0.2 s without a "
        "call); all earlier state (variables, imports) is lost"
    )
    assert fresh.stdout == "4\n" and fresh.describe_error() is None and live == 1


def test_an_interpreter_that_died_while_idle_is_reported() -> None:
    async def scenario() -> ExecutionResult:
        sandbox = Sandbox(FAST)
        session = await sandbox.open_session()
        try:
            await session.execute(
                "import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), os._exit(0))).start()"
            )
            await asyncio.sleep(1)
            return await session.execute("1 + 1")
        finally:
            await sandbox.aclose()

    result = run(scenario())
    assert result.stdout == "2\n" and result.session_restarted
    assert "restarted before this cell ran (its interpreter had exited)" in (result.describe_error() or "")


# ---- 7. a SIGKILLed server leaves no sandbox behind ---------------------------------------------

SERVER = """
import asyncio, sys
from nemo_gym.sandbox import Isolation, Sandbox, SandboxLimits

async def main():
    isolation = None
    if sys.argv[1] == "fallback":
        isolation = Isolation(network_isolation="python-guard", namespaces=False, dedicated_uid=False)
    sandbox = Sandbox(SandboxLimits(wall_timeout_s=30), isolation=isolation, allow_weaker_isolation=True)
    session = await sandbox.open_session()
    result = await session.execute("open('scratch.txt', 'w').write('x')")
    print("ready", result.ok, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def work_dirs_of(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"nemo_gym_sandbox.{pid}.*"))


def cgroups_of(pid: int) -> list[Path]:
    found: list[Path] = []
    if DETECTED.cgroups is not None:
        for base in set(DETECTED.cgroups.bases.values()):
            found += Path(base).glob(f"nemo_gym_sandbox-{pid}-*")
    return found


@ISOLATIONS
def test_a_killed_server_leaves_no_sandbox_behind(isolation: Isolation) -> None:
    mode = "fallback" if isolation is FALLBACK else "detected"
    server = subprocess.Popen([sys.executable, "-c", SERVER, mode], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "ready True\n"
        sandboxed = psutil.Process(server.pid).children(recursive=True)
        assert sandboxed, "the session's interpreter should be running"
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    gone, alive = psutil.wait_procs(sandboxed, timeout=5)
    assert alive == [], f"sandbox processes outlived their server: {alive}"
    if isolation.private_root:
        assert work_dirs_of(server.pid) == []  # a tmpfs: it went with the mount namespace
    else:
        assert len(work_dirs_of(server.pid)) == 1  # on the host: left for the next start-up
    if isolation.cgroups is not None:
        assert cgroups_of(server.pid) != []  # nobody was left to remove them
    # The next start-up of a sandbox removes what the dead server could not.
    subprocess.run(
        [sys.executable, "-c", "from nemo_gym.sandbox import Sandbox; Sandbox(allow_weaker_isolation=True)"],
        check=True,
    )
    assert work_dirs_of(server.pid) == [] and cgroups_of(server.pid) == []


# ---- 16. nothing the code started outlives a SIGKILLed server, even mid-call ---------------------

BUSY_OWNER = """
import asyncio, sys
from nemo_gym.sandbox import Isolation, Sandbox, SandboxLimits

CODE = '''
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; marker = 'popen-MARK'; time.sleep(300)"])
if os.fork() == 0:  # a daemon: double fork, in its own session
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; marker = 'daemon-MARK'; time.sleep(300)"])
    os._exit(0)
time.sleep(300)
'''

async def main():
    mode, isolation_name, marker = sys.argv[1:]
    isolation = None
    if isolation_name == "fallback":
        isolation = Isolation(network_isolation="python-guard", namespaces=False, dedicated_uid=False)
    limits = SandboxLimits(wall_timeout_s=400, cpu_time_s=400)
    sandbox = Sandbox(limits, isolation=isolation, allow_weaker_isolation=True)
    code = CODE.replace("MARK", marker)
    if mode == "run":
        await sandbox.run_python(code)
    else:
        session = await sandbox.open_session()
        await session.execute(code)

asyncio.run(main())
"""


@ISOLATIONS
@pytest.mark.parametrize("mode", ["run", "session"])
def test_a_killed_server_takes_its_busy_execution_with_it(isolation: Isolation, mode: str) -> None:
    """The server is SIGKILLed while the code sleeps 300 s beside a Popen'd child and a daemon."""
    marker = uuid.uuid4().hex
    name = "fallback" if isolation is FALLBACK else "detected"

    def children_of_the_code() -> list[psutil.Process]:
        return live_processes_mentioning(f"popen-{marker}") + live_processes_mentioning(f"daemon-{marker}")

    server = subprocess.Popen([sys.executable, "-c", BUSY_OWNER, mode, name, marker])
    try:
        deadline = time.monotonic() + 60
        while len(children_of_the_code()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(children_of_the_code()) == 2, "the code's Popen'd child and its daemon should be running"
        sandboxed = psutil.Process(server.pid).children(recursive=True)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    _gone, alive = psutil.wait_procs(sandboxed, timeout=5)
    alive = [p for p in alive if _running(p)]
    escaped = children_of_the_code()
    for process in alive + escaped:  # so that a failure leaves nothing running for 300 s
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert alive == [], f"sandbox processes outlived their server: {alive}"
    assert escaped == []


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
