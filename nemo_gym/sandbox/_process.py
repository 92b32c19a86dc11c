"""The parent side of one confined child process: detect isolation, spawn, read, kill, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from nemo_gym.errors import SandboxError
from nemo_gym.sandbox._cgroups import (
    CgroupSupport,
    ExecutionCgroup,
    detect_cgroups,
    remove_stale_groups,
)
from nemo_gym.sandbox._models import SandboxLimits

_CHILD_SCRIPT = str(Path(__file__).with_name("_child.py"))
_UNSHARE_FLAGS = ("--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc")
# Dedicated uids, one per live child: RLIMIT_NPROC is counted per uid, so sharing `nobody` would let
# one fork bomb starve every other concurrent run (and let runs signal each other). The range sits far
# above regular and subordinate (container) uids; no passwd entry is needed to setuid to a number.
_UID_BASE = 1_500_000_000
_UID_SPAN = 1_000_000
_uids_in_use: set[int] = set()
_READ_CHUNK = 64 * 1024
# Host work dirs (fallback mode) are named after their owner's pid, so that a later start-up can
# remove those of a server that was SIGKILLed before it could.
# The dots keep them apart from the random names of older versions (mkdtemp never uses a dot).
_WORKDIR_PREFIX = "nemo_gym_sandbox."


@dataclass(frozen=True)
class Isolation:
    """What this machine lets the sandbox do; detected once per process."""

    network_isolation: Literal["namespace", "python-guard"]
    namespaces: bool
    """New net + mount + pid namespaces via `unshare` (needs root, or CAP_SYS_ADMIN)."""
    dedicated_uid: bool
    """The child drops to its own unprivileged uid (needs root)."""
    cgroups: CgroupSupport | None = None
    """Per-execution cgroups (memory, pids, cpu of the whole tree), where the machine lets us."""
    die_with_parent: bool = False
    """`setpriv --pdeathsig` is available: the child is killed when the server dies."""

    @property
    def private_root(self) -> bool:
        """The code sees only the Python installation, system libraries and its own tmpfs."""
        return self.namespaces


def _world_traversable(path: str) -> bool:
    current = Path(path).resolve()
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [current, *current.parents])


@functools.cache
def detect_isolation() -> Isolation:
    """Probe once what works here (a container may forbid namespaces even to root), and remove
    what sandboxes of dead processes left behind (host work dirs, cgroups): this is start-up."""
    is_root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    namespaces = False
    if is_root and unshare:
        try:
            probe = subprocess.run(
                [unshare, *_UNSHARE_FLAGS, "--", sys.executable, "-I", "-c", "pass"],
                env={"PATH": os.defpath},
                capture_output=True,
                timeout=30,
                check=False,
            )
            namespaces = probe.returncode == 0
        except (OSError, subprocess.SubprocessError):
            namespaces = False
    # Without a mount namespace the interpreter must be reachable by the unprivileged uid as it is.
    interpreter = (sys.executable, sys.prefix, sys.base_prefix)
    dedicated_uid = is_root and (namespaces or all(_world_traversable(p) for p in interpreter))
    cgroups = detect_cgroups()
    if cgroups is not None:
        remove_stale_groups(cgroups)
    remove_stale_workdirs(tempfile.gettempdir())
    return Isolation(
        "namespace" if namespaces else "python-guard",
        namespaces,
        dedicated_uid,
        cgroups,
        _setpriv_has_pdeathsig(),
    )


def _setpriv_has_pdeathsig() -> bool:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return False
    try:
        probe = subprocess.run(
            [setpriv, "--pdeathsig", "KILL", "--", sys.executable, "-I", "-c", "pass"],
            env={"PATH": os.defpath},
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_workdirs(temp_dir: str) -> list[str]:
    """Remove the host work dirs of owners that died without cleaning up (a SIGKILLed server)."""
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(temp_dir):
            owner = name.removeprefix(_WORKDIR_PREFIX).split(".", 1)[0]
            if not name.startswith(_WORKDIR_PREFIX) or not owner.isdigit():
                continue
            if _pid_alive(int(owner)):
                continue
            path = os.path.join(temp_dir, name)
            _remove_tree(path)
            removed.append(path)
    return removed


def _allocate_uid() -> int:
    while True:
        uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
        if uid not in _uids_in_use:
            _uids_in_use.add(uid)
            return uid


def _minimal_env(workdir: str) -> dict[str, str]:
    """Built from scratch: nothing of the parent's environment (API keys!) reaches the child."""
    bin_dir = os.path.dirname(sys.executable)
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        # One BLAS/OpenMP thread: threads count against RLIMIT_NPROC, and their stacks against RLIMIT_AS.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _make_workdir(uid: int | None) -> str:
    """Fallback mode only: the child's cwd on the host, owned by its uid."""
    workdir = tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}.")
    if uid is not None:
        os.chown(workdir, uid, uid)
    return workdir


def _program_memfd(source: str) -> int:
    """The program as an anonymous in-memory file: nothing on disk to leak or to clean up."""
    fd = os.memfd_create("program.py", 0)  # no MFD_CLOEXEC: it is passed to the child
    os.write(fd, source.encode("utf-8"))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _remove_tree(path: str) -> None:
    def make_writable_and_retry(func, failed_path, _exc_info) -> None:  # type: ignore[no-untyped-def]
        # Code running as our own user (no dedicated uid) may have chmod-ed its files read-only.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed_path), 0o700)
            os.chmod(failed_path, 0o700)
            func(failed_path)

    shutil.rmtree(path, onerror=make_writable_and_retry)


class BoundedBuffer:
    """Keeps the first `limit` bytes of a stream and drops the rest while still draining it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > room:
            self.truncated = True

    def take(self) -> str:
        text = self.data.decode("utf-8", "replace")
        self.data.clear()
        return text

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            self.add(chunk)


@dataclass
class ChildStatus:
    exit_code: int | None
    signal: int | None


class ConfinedProcess:
    """One child interpreter under the detected isolation. Always `dispose()` it."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        workdir: str | None,
        uid: int | None,
        status_r: int,
        cgroup: ExecutionCgroup | None,
        namespaces: bool,
    ):
        self.proc = proc
        self._namespaces = namespaces
        self.host_workdir = workdir
        """The work dir on the host (fallback mode only; with namespaces it is a private tmpfs)."""
        self.cgroup = cgroup
        self._uid = uid
        self._status_r: int | None = status_r
        self._status_raw = b""
        self._disposed = False

    @classmethod
    async def start(
        cls,
        isolation: Isolation,
        mode: Literal["run", "session"],
        limits: SandboxLimits,
        source: str | None,
    ) -> ConfinedProcess:
        uid = _allocate_uid() if isolation.dedicated_uid else None
        try:
            return await cls._start(isolation, mode, limits, source, uid)
        except BaseException:
            _uids_in_use.discard(uid)  # type: ignore[arg-type]
            raise

    @classmethod
    async def _start(
        cls,
        isolation: Isolation,
        mode: Literal["run", "session"],
        limits: SandboxLimits,
        source: str | None,
        uid: int | None,
    ) -> ConfinedProcess:
        cgroup = None
        if isolation.cgroups is not None:
            try:
                cgroup = await asyncio.to_thread(ExecutionCgroup.create, isolation.cgroups, limits)
            except OSError as error:
                raise SandboxError(f"could not create the execution's cgroup: {error}") from error
        host_workdir = None
        if not isolation.namespaces:
            try:
                host_workdir = await asyncio.to_thread(_make_workdir, uid)
            except OSError as error:
                await cls._undo(cgroup, None)
                raise SandboxError(f"could not create the sandbox working directory: {error}") from error
        workdir = host_workdir or "/tmp"
        program_fd = _program_memfd(source) if source is not None else None
        status_r, status_w = os.pipe()
        os.set_blocking(status_r, False)
        plan = {
            "mode": mode,
            "program_fd": program_fd,
            "workdir": workdir,
            "uid": uid,
            "gid": uid,
            "limits": limits.model_dump(),
            "private_root": isolation.namespaces,
            "socket_guard": not limits.network and not isolation.namespaces,
            "status_fd": status_w,
            "cgroup_procs": cgroup.procs_files if cgroup is not None else [],
        }
        command = [sys.executable, "-I", "-B", _CHILD_SCRIPT, json.dumps(plan)]
        if isolation.namespaces:
            net = ("--net",) if not limits.network else ()
            command = [
                "unshare",
                *net,
                *(f for f in _UNSHARE_FLAGS if f != "--net"),
                "--",
                *command,
            ]
        if isolation.die_with_parent:
            # pdeathsig survives the exec of unshare, whose --kill-child passes it on: a SIGKILLed
            # server takes its sandboxed code with it.
            command = ["setpriv", "--pdeathsig", "KILL", "--", *command]
        pass_fds = (status_w,) if program_fd is None else (status_w, program_fd)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=host_workdir or "/",
                env=_minimal_env(workdir),
                start_new_session=True,
                pass_fds=pass_fds,
                # A session reply is one JSON line holding up to two outputs, escaped.
                limit=16 * limits.max_output_bytes + (1 << 20),
            )
        except OSError as error:
            os.close(status_r)
            await cls._undo(cgroup, host_workdir)
            raise SandboxError(f"could not start the sandbox interpreter: {error}") from error
        except BaseException:  # cancelled: asyncio has killed what it started, and init follows it
            os.close(status_r)
            await asyncio.shield(cls._undo(cgroup, host_workdir))
            raise
        finally:
            os.close(status_w)
            if program_fd is not None:
                os.close(program_fd)
        return cls(proc, host_workdir, uid, status_r, cgroup, isolation.namespaces)

    @staticmethod
    async def _undo(cgroup: ExecutionCgroup | None, host_workdir: str | None) -> None:
        if cgroup is not None:
            await asyncio.to_thread(cgroup.remove)
        if host_workdir is not None:
            await asyncio.to_thread(_remove_tree, host_workdir)

    async def kill(self) -> None:
        """SIGKILL every process of the execution: its cgroup, its process tree, its group."""
        await asyncio.to_thread(self._kill_everything)

    def _kill_everything(self) -> None:
        if self._namespaces:
            # unshare's --kill-child takes pid 1 down, and with it the whole pid namespace.
            self._kill_group()
        # Without namespaces, descendants go first, while init (a subreaper) still holds on to them.
        for _ in range(50):
            try:
                tree = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                break
            alive = [p for p in tree if _running(p)]
            if not alive:
                break
            for process in alive:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        if self.cgroup is not None:
            self.cgroup.kill_all()
        self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def oom_kills(self) -> int:
        """Processes of this execution killed by the kernel at the cgroup memory limit, so far."""
        return self.cgroup.oom_kills() if self.cgroup is not None else 0

    def status(self) -> ChildStatus:
        """How the child ended; call after the process has exited. Raises SandboxError on setup failure."""
        self._collect_status()
        report = json.loads(self._status_raw) if self._status_raw else {}
        if "setup_error" in report:
            raise SandboxError(f"the sandbox could not confine the child: {report['setup_error']}")
        if "exit_code" in report:
            return ChildStatus(report["exit_code"], report["signal"])
        code = self.proc.returncode
        if code is None or code >= 0:
            return ChildStatus(code, None)
        return ChildStatus(None, -code)

    def _collect_status(self) -> None:
        if self._status_r is None:
            return
        with contextlib.suppress(BlockingIOError):
            self._status_raw += os.read(self._status_r, 1 << 16)

    async def dispose(self) -> None:
        """Kill what is left, reap, remove the cgroup and the working directory. Idempotent."""
        if self._disposed:
            return
        self._disposed = True
        await self.kill()
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()
        self._collect_status()
        status_r, self._status_r = self._status_r, None
        if status_r is not None:
            os.close(status_r)
        await self._undo(self.cgroup, self.host_workdir)
        if self._uid is not None:
            _uids_in_use.discard(self._uid)


def _running(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return process.status() != psutil.STATUS_ZOMBIE
    return False
