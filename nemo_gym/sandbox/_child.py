"""The child side of the sandbox: confine this process, then run model-written code.

Started by the parent as `python -I -B _child.py '<json plan>'` (behind `unshare` when namespaces
work). It imports only the standard library and nothing from nemo_gym, because it runs with an
empty environment and, after the privilege drop, possibly without read access to the project.

Order matters, because each step needs privileges the next one takes away:
1. read the program (the file is root-only and sits in a directory the mount step hides);
2. private mounts (root, in the new mount namespace): hide world-writable directories and any
   directory the unprivileged uid cannot traverse, re-exposing only the work dir and the
   interpreter's own files;
3. resource limits (set as root so the hard limits cannot be raised back);
4. drop to the dedicated uid/gid and forbid regaining privileges (setuid binaries, file caps);
5. install the socket guard when no network namespace is available;
6. as pid 1 of a new pid namespace, fork: the child runs the code, pid 1 reaps and reports the
   child's exit status on the status fd. When pid 1 exits the kernel kills everything left in the
   namespace, which is what makes cleanup complete even for processes that called setsid().
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import ctypes
import io
import json
import linecache
import os
import resource
import socket
import stat
import sys
import traceback
import types
from typing import NoReturn

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    def enc(value: str | None) -> bytes | None:
        return None if value is None else value.encode()

    if (
        _libc.mount(
            enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _closed_ancestor(path: str) -> str | None:
    """The outermost ancestor of `path` that other users cannot traverse (e.g. /root at 0700)."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        ancestor = "/" + "/".join(parts[:i])
        try:
            mode = os.stat(ancestor).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return ancestor
    return None


def _cover(directory: str, keep: list[str]) -> None:
    """Mount an empty root-owned tmpfs over `directory`, then bind the `keep` paths back in place.

    The tmpfs is 0755 and owned by root, so the sandbox uid can read through it but cannot write.
    Kept paths are opened before they disappear under the tmpfs and re-attached via /proc/self/fd.
    """
    keep = sorted(
        {k for k in keep if not any(k != o and k.startswith(o + "/") for o in keep)}
    )
    fds = [os.open(k, os.O_PATH | os.O_DIRECTORY) for k in keep]
    _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=1m")
    for path, fd in zip(keep, fds):
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        os.close(fd)


def _isolate_filesystem(workdir: str) -> None:
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    needed = {
        os.path.realpath(p)
        for p in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable))
    }
    needed |= {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    needed.add(os.path.dirname(os.path.realpath(sys.executable)))
    covers: dict[str, list[str]] = {}
    for path in needed:
        ancestor = _closed_ancestor(path)
        if ancestor and ancestor != "/":
            covers.setdefault(ancestor, []).append(path)
    for candidate in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue"):
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode) and mode & stat.S_IWOTH:
            covers.setdefault(candidate, [])
    for directory, keep in covers.items():
        # The interpreter may itself live under a covered directory (a virtualenv in /tmp, as in a
        # CI checkout): keep what it needs visible, read-only for the sandbox uid as before.
        keep.extend(path for path in needed if path.startswith(directory + "/"))
        if workdir.startswith(directory + "/"):
            keep.append(workdir)
        _cover(directory, keep)


def _set_limits(limits: dict, session: bool) -> None:
    def cap(which: int, soft: int, hard: int | None = None) -> None:
        resource.setrlimit(which, (soft, soft if hard is None else hard))

    cpu = int(limits["cpu_time_s"])
    # A session resets its soft CPU limit before every cell (see _Repl), so its hard limit is roomy.
    cap(resource.RLIMIT_CPU, cpu, cpu * 1000 if session else cpu + 1)
    cap(resource.RLIMIT_AS, int(limits["memory_mb"]) * 1024 * 1024)
    cap(resource.RLIMIT_NPROC, int(limits["max_processes"]))
    cap(resource.RLIMIT_FSIZE, int(limits["max_file_size_mb"]) * 1024 * 1024)
    cap(resource.RLIMIT_CORE, 0)


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def _install_socket_guard() -> None:
    """Refuse to create Internet sockets from Python code. A guard, not a wall: see the package docs."""
    real_socket = socket.socket

    class _GuardedSocket(real_socket):
        def __init__(
            self,
            family: int = -1,
            type: int = -1,
            proto: int = -1,
            fileno: int | None = None,
        ):
            if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
                raise PermissionError(1, "network access is disabled in this sandbox")
            super().__init__(family, type, proto, fileno)

    socket.socket = _GuardedSocket  # type: ignore[misc]

    def _refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(1, "network access is disabled in this sandbox")

    socket.create_connection = _refuse  # type: ignore[assignment]
    socket.getaddrinfo = _refuse  # type: ignore[assignment]


def _print_user_traceback(error: BaseException) -> None:
    """Print a traceback the way the interpreter would, minus this bootstrap's own frames."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)


def _register_source(filename: str, source: str) -> None:
    # Tracebacks then show the offending source line, which helps a model fix its code.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def _run_program(source: str) -> int:
    """Run `source` as __main__; return the process exit code."""
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    main.__file__ = "main.py"
    sys.modules["__main__"] = main
    sys.argv = ["main.py"]
    _register_source("main.py", source)
    try:
        exec(compile(source, "main.py", "exec", dont_inherit=True), main.__dict__)  # noqa: S102 - running it is our job
    except SystemExit as stop:
        return _exit_code_of(stop)
    except BaseException as error:  # noqa: BLE001 - any user error ends the program like the interpreter would
        _print_user_traceback(error)
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(
                Exception
            ):  # a stream the code closed must not mask its result
                stream.flush()
    return 0


def _exit_code_of(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


class _BoundedText(io.TextIOBase):
    """A text sink that keeps the first `limit` bytes and counts the rest, so a print loop cannot OOM us."""

    def __init__(self, limit: int):
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.truncated = False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "backslashreplace")
        room = self._limit - self._size
        if room > 0:
            self._parts.append(data[:room])
            self._size += min(room, len(data))
        if len(data) > room:
            self.truncated = True
        return len(text)

    def getvalue(self) -> str:
        return b"".join(self._parts).decode("utf-8", "replace")


class _Repl:
    """Persistent-namespace execution of cells, with REPL-style echo of a trailing expression.

    Only the process that created the _Repl (the owner) reads commands and writes replies. A cell
    that forks leaves copies of this interpreter that return here when the cell's code ends in
    them; such a copy exits at once, silently (its output is discarded), after telling the owner
    its pid so the owner can reap it: left as a zombie, it would count against RLIMIT_NPROC.
    The owner reaps only those copies, so user code keeps the exit status of children it waits
    for itself (except for a forked child that ended by returning from the cell).
    """

    def __init__(self, cpu_time_s: int, max_output_bytes: int):
        self._owner = os.getpid()
        self._strays_r, self._strays_w = os.pipe()
        os.set_blocking(self._strays_r, False)
        os.set_blocking(self._strays_w, False)
        self._unreaped: set[int] = set()
        self._cpu_time_s = cpu_time_s
        self._max_output = max_output_bytes
        self._namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
        main = types.ModuleType("__main__")
        main.__dict__.update(self._namespace)
        self._namespace = main.__dict__
        sys.modules["__main__"] = main
        self._cells = 0

    def serve(self, requests: io.BufferedReader, replies: io.BufferedWriter) -> None:
        """Answer each request line with one reply line carrying the request's id.

        The id lets the parent tell the reply to its request from anything else on the pipe.
        """
        for line in requests:
            request = json.loads(line)
            self._reap_strays()
            try:
                reply = self._run_cell(request["code"])
            finally:
                if os.getpid() != self._owner:
                    self._end_stray()
            reply["id"] = request["id"]
            replies.write(json.dumps(reply).encode() + b"\n")
            replies.flush()

    def _end_stray(self) -> NoReturn:
        if os.getppid() == self._owner:
            with contextlib.suppress(OSError):  # a full pipe only costs a zombie
                os.write(self._strays_w, os.getpid().to_bytes(4, "little"))
        os._exit(0)

    def _reap_strays(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: nothing new
            data = os.read(self._strays_r, 1 << 16)
            self._unreaped.update(
                int.from_bytes(data[i : i + 4], "little")
                for i in range(0, len(data), 4)
            )
        for pid in list(self._unreaped):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done == pid:
                self._unreaped.discard(pid)

    def _run_cell(self, code: str) -> dict:
        self._cells += 1
        filename = f"<cell {self._cells}>"
        _register_source(filename, code)
        out, err = _BoundedText(self._max_output), _BoundedText(self._max_output)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        self._renew_cpu_budget()
        exit_code = 0
        try:
            body, last = self._split(code, filename)
            exec(body, self._namespace)  # noqa: S102 - running it is our job
            if last is not None:
                sys.displayhook(eval(last, self._namespace))
        except SystemExit as stop:
            exit_code = _exit_code_of(stop)
        except BaseException as error:  # noqa: BLE001 - the cell failed; the session lives on
            _print_user_traceback(error)
            exit_code = 1
        finally:
            sys.stdout, sys.stderr = saved
        return {
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "exit_code": exit_code,
            "truncated": out.truncated or err.truncated,
        }

    @staticmethod
    def _split(
        code: str, filename: str
    ) -> tuple[types.CodeType, types.CodeType | None]:
        tree = ast.parse(code, filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(
                ast.Expression(tree.body.pop().value),
                filename,
                "eval",
                dont_inherit=True,
            )
        return compile(tree, filename, "exec", dont_inherit=True), last

    def _renew_cpu_budget(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = int(usage.ru_utime + usage.ru_stime) + 1
        _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(
            resource.RLIMIT_CPU, (min(used + self._cpu_time_s, hard), hard)
        )


def _run_session(plan: dict) -> int:
    # The protocol keeps the original stdin/stdout pipes; fd-level output of the user's code
    # (subprocesses, C extensions) is sent to the stderr pipe so it cannot corrupt the protocol.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    _Repl(
        int(plan["limits"]["cpu_time_s"]), int(plan["limits"]["max_output_bytes"])
    ).serve(requests, replies)
    return 0


def _become_init(status_fd: int) -> None:
    """Be pid 1: fork the worker and return in it; in pid 1, reap every orphan, report, exit.

    pid 1 outlives the worker only to report how it ended: the worker's death by signal cannot
    be passed on as pid 1's own (the kernel shields a namespace's init from such signals).
    """
    worker = os.fork()
    if worker == 0:
        os.close(status_fd)
        return
    while True:
        pid, status = os.wait()
        if pid == worker:
            break
    report = {"exit_code": None, "signal": None}
    if os.WIFSIGNALED(status):
        report["signal"] = os.WTERMSIG(status)
    else:
        report["exit_code"] = os.WEXITSTATUS(status)
    os.write(status_fd, json.dumps(report).encode())
    os._exit(0)


def _set_up(plan: dict) -> str | None:
    """Steps 1-5 of the module docstring; returns the program source (None for a session)."""
    source = None
    if plan["mode"] == "run":
        with open(plan["program"], encoding="utf-8") as file:
            source = file.read()
    if plan["private_mounts"]:
        _isolate_filesystem(plan["workdir"])
    _set_limits(plan["limits"], session=plan["mode"] == "session")
    if plan["uid"] is not None:
        _drop_privileges(plan["uid"], plan["gid"])
    if plan["socket_guard"]:
        _install_socket_guard()
    os.chdir(plan["workdir"])
    return source


def main() -> None:
    plan = json.loads(sys.argv[1])
    status_fd = plan["status_fd"]
    try:
        source = _set_up(plan)
    except BaseException as error:  # noqa: BLE001 - a sandbox failure, reported apart from user errors
        os.write(
            status_fd,
            json.dumps({"setup_error": f"{type(error).__name__}: {error}"}).encode(),
        )
        os._exit(121)
    if plan["init"]:
        _become_init(status_fd)
    else:
        os.close(status_fd)
    sys.exit(_run_program(source) if source is not None else _run_session(plan))


if __name__ == "__main__":
    main()
