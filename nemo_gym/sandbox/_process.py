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

from nemo_gym.errors import SandboxError
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


@dataclass(frozen=True)
class Isolation:
    """What this machine lets the sandbox do; detected once per process."""

    network_isolation: Literal["namespace", "python-guard"]
    namespaces: bool
    """New net + mount + pid namespaces via `unshare` (needs root, or CAP_SYS_ADMIN)."""
    dedicated_uid: bool
    """The child drops to its own unprivileged uid (needs root)."""


def _world_traversable(path: str) -> bool:
    current = Path(path).resolve()
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [current, *current.parents])


@functools.cache
def detect_isolation() -> Isolation:
    """Probe once whether namespaces work here (a container may forbid them even to root)."""
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
    dedicated_uid = is_root and (
        namespaces or all(_world_traversable(p) for p in interpreter)
    )
    return Isolation(
        "namespace" if namespaces else "python-guard", namespaces, dedicated_uid
    )


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


def _make_dirs(uid: int | None, source: str | None) -> tuple[str, str, str | None]:
    """base/ (root only, traversable) holding work/ (the child's cwd, owned by its uid) and program.py."""
    base = tempfile.mkdtemp(prefix="nemo_gym_sandbox_")
    os.chmod(base, 0o711)
    workdir = os.path.join(base, "work")
    os.mkdir(workdir, 0o700)
    if uid is not None:
        os.chown(workdir, uid, uid)
    program = None
    if source is not None:
        program = os.path.join(base, "program.py")
        fd = os.open(program, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(source)
    return base, workdir, program


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
        base: str,
        workdir: str,
        uid: int | None,
        status_r: int,
    ):
        self.proc = proc
        self.base_dir = base
        self.workdir = workdir
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
            base, workdir, program = await asyncio.to_thread(_make_dirs, uid, source)
        except OSError as error:
            _uids_in_use.discard(uid)  # type: ignore[arg-type]
            raise SandboxError(
                f"could not create the sandbox working directory: {error}"
            ) from error
        status_r, status_w = os.pipe()
        os.set_blocking(status_r, False)
        plan = {
            "mode": mode,
            "program": program,
            "workdir": workdir,
            "uid": uid,
            "gid": uid,
            "limits": limits.model_dump(),
            "private_mounts": isolation.namespaces,
            "socket_guard": not limits.network and not isolation.namespaces,
            "init": isolation.namespaces,
            "status_fd": status_w,
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
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env=_minimal_env(workdir),
                start_new_session=True,
                pass_fds=(status_w,),
                # A session reply is one JSON line holding up to two outputs, escaped.
                limit=16 * limits.max_output_bytes + (1 << 20),
            )
        except OSError as error:
            os.close(status_r)
            await asyncio.to_thread(_remove_tree, base)
            _uids_in_use.discard(uid)  # type: ignore[arg-type]
            raise SandboxError(
                f"could not start the sandbox interpreter: {error}"
            ) from error
        finally:
            os.close(status_w)
        return cls(proc, base, workdir, uid, status_r)

    def kill(self) -> None:
        """SIGKILL the whole process group (with namespaces, killing pid 1 takes the rest down too)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def status(self) -> ChildStatus:
        """How the child ended; call after the process has exited. Raises SandboxError on setup failure."""
        self._collect_status()
        report = json.loads(self._status_raw) if self._status_raw else {}
        if "setup_error" in report:
            raise SandboxError(
                f"the sandbox could not confine the child: {report['setup_error']}"
            )
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
        """Kill what is left, reap, and remove the working directory. Idempotent."""
        if self._disposed:
            return
        self._disposed = True
        self.kill()
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()
        self._collect_status()
        status_r, self._status_r = self._status_r, None
        if status_r is not None:
            os.close(status_r)
        await asyncio.to_thread(_remove_tree, self.base_dir)
        if self._uid is not None:
            _uids_in_use.discard(self._uid)
