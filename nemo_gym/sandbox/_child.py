"""The child side of the sandbox: confine this process, then run model-written code.

Started by the parent as `python -I -B _child.py '<json plan>'` (behind `unshare` when namespaces
work, and behind `setpriv --pdeathsig KILL` so it dies with the server). It imports only the
standard library and nothing from nemo_gym: after step 3 the project is not even visible.

Order matters, because each step needs privileges the next one takes away:
1. join the execution's cgroups (root, while /sys/fs/cgroup is still visible): from here on
   every process of the execution is counted against one memory, pids and cpu budget;
2. read the program from the memfd the parent passed (there is no program file anywhere);
3. new root (root, in the new mount namespace): an empty tmpfs holding read-only binds of the
   system libraries and the Python installation, a few device nodes, a fresh /proc and a
   size-limited tmpfs at /tmp (the work dir); pivot_root into it and detach the old root, so the
   project, /home, /root and the host's temp dir no longer exist for the code;
4. resource limits (set as root so the hard limits cannot be raised back);
5. drop to the dedicated uid/gid and forbid regaining privileges (setuid binaries, file caps);
6. install the socket guard when no network namespace is available; arm the parent-death signal
   again (step 5 cleared it) and leave if the server died meanwhile;
7. fork: the worker runs the code; this process stays as init (pid 1 of the new pid namespace,
   or, without namespaces, a child subreaper that orphans are re-parented to), reaps, kills
   whatever the worker left behind, and reports the worker's exit status on the status fd. If the
   server dies first (parent-death signal, or the status pipe loses its reader), init kills
   everything and exits.
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
import platform
import resource
import select
import signal
import socket
import stat
import sys
import time
import traceback
import types
from typing import NoReturn

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
# pivot_root has no libc wrapper; its number differs per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# What the interpreter and the libraries it loads need from the host, read-only.
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
_ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "nsswitch.conf",
    "passwd",
    "group",
    "hosts",
    "services",
    "protocols",
    "mime.types",
)
_DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    def enc(value: str | None) -> bytes | None:
        return None if value is None else value.encode()

    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def _join_cgroups(procs_files: list[str]) -> None:
    for procs in procs_files:
        with open(procs, "w", encoding="ascii") as file:
            file.write("0")  # "0" is the writing process itself, whatever pid namespace it is in


def _read_program(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode("utf-8")


def _python_paths() -> set[str]:
    """The directories of this Python installation (never "/": that would expose everything)."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = set(prefixes)
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    # sys.path under -I holds only the installation, but a .pth file (an editable install) can add
    # a project checkout to it: keep only what lies inside the installation's prefixes.
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if real and os.path.isdir(real) and any(real == p or real.startswith(p + "/") for p in prefixes):
            paths.add(real)
    if "/" in paths:
        raise OSError("the Python installation is the whole file system; nothing could be hidden")
    return paths


def _outermost(paths: set[str]) -> list[str]:
    return sorted(p for p in paths if not any(p != o and p.startswith(o + "/") for o in paths))


def _build_private_root(uid: int, disk_mb: int) -> None:
    """Steps 3 of the module docstring: a root holding only what the interpreter needs, then pivot."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    binds: list[tuple[str, str]] = []  # (host path, path in the new root)
    links: list[tuple[str, str]] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            links.append((os.readlink(path), path))
        elif os.path.isdir(path):
            binds.append((path, path))
    for path in _outermost(_python_paths()):
        if not any(path == d or path.startswith(d + "/") for d, _ in binds):
            binds.append((path, path))
    binds += [(f"/etc/{name}", f"/etc/{name}") for name in _ETC_FILES if os.path.exists(f"/etc/{name}")]
    devices = [(f"/dev/{name}", f"/dev/{name}") for name in _DEVICES if os.path.exists(f"/dev/{name}")]
    # Open every source first: the new root is mounted over /tmp, which may hold one of them (a venv).
    fds = [(os.open(src, os.O_PATH), dst) for src, dst in binds + devices]
    new_root = "/tmp"
    _mount("tmpfs", new_root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=2m")
    # The work dir: all the code may write, size-limited, gone with the mount namespace. Mounted before
    # the binds: an interpreter installed under /tmp (a venv in a checkout there, as CI may have) is then
    # bound inside it, read-only, instead of being hidden by it.
    os.makedirs(new_root + "/tmp")
    _mount("tmpfs", new_root + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=700,uid={uid},gid={uid},size={disk_mb}m")
    for fd, dst in fds:
        target = new_root + dst
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
        os.close(fd)
        is_device = dst.startswith("/dev/")
        # Devices must stay usable (no MS_NODEV on them); everything else is read-only.
        flags = _MS_BIND | _MS_REMOUNT | _MS_NOSUID | (0 if is_device else _MS_RDONLY | _MS_NODEV)
        _mount(None, target, None, flags)
    for link_target, path in links:
        os.symlink(link_target, new_root + path)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("shm", "/tmp"),
    ):
        os.makedirs(new_root + "/dev", mode=0o755, exist_ok=True)
        os.symlink(target, f"{new_root}/dev/{name}")
    os.makedirs(new_root + "/proc", mode=0o555)
    _mount("proc", new_root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root is not known on {platform.machine()}")
    os.chdir(new_root)
    # pivot_root(".", "."): the old root ends up stacked on the new one, and is then detached.
    _check(_libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "umount old root")
    os.chdir("/")
    # The new root's own directories are root-owned 0755: the sandbox uid can read but not write
    # them (PermissionError), and everything bound into them is read-only.


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

    class _GuardedSocket(socket.socket):
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
            with contextlib.suppress(Exception):  # a stream the code closed must not mask its result
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

    def __init__(self, cpu_time_s: int, max_output_bytes: int, init_pid: int):
        self._owner = os.getpid()
        self._init_pid = init_pid
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
            # Nothing a cell started outlives it (a Popen'd busy loop, a daemon that called
            # setsid()): everything below init but this interpreter is killed before the reply.
            kill_descendants(self._init_pid, spare={self._owner, self._init_pid})
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
            self._unreaped.update(int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4))
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
    def _split(code: str, filename: str) -> tuple[types.CodeType, types.CodeType | None]:
        tree = ast.parse(code, filename)
        last = None
        final = tree.body[-1] if tree.body else None
        if isinstance(final, ast.Expr):
            tree.body.pop()
            last = compile(
                ast.Expression(final.value),
                filename,
                "eval",
                dont_inherit=True,
            )
        return compile(tree, filename, "exec", dont_inherit=True), last

    def _renew_cpu_budget(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = int(usage.ru_utime + usage.ru_stime) + 1
        _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (min(used + self._cpu_time_s, hard), hard))


def _run_session(plan: dict, init_pid: int) -> int:
    # The protocol keeps the original stdin/stdout pipes; fd-level output of the user's code
    # (subprocesses, C extensions) is sent to the stderr pipe so it cannot corrupt the protocol.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    _Repl(
        int(plan["limits"]["cpu_time_s"]),
        int(plan["limits"]["max_output_bytes"]),
        init_pid,
    ).serve(requests, replies)
    return 0


def _process_table() -> dict[int, tuple[int, bool]]:
    """pid -> (parent pid, still running) for every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                data = file.read()
        except OSError:
            continue  # it ended while we looked
        # The command name (in parentheses) may itself contain spaces and parentheses.
        fields = data.rsplit(b")", 1)[1].split()
        table[int(name)] = (int(fields[1]), fields[0] not in (b"Z", b"X"))
    return table


def _descendants(root: int, table: dict[int, tuple[int, bool]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _running) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def kill_descendants(root: int, spare: set[int]) -> None:
    """SIGKILL every running descendant of `root` except `spare`, until none is left.

    Works without a pid namespace too, because init is then a child subreaper: a process whose
    parent died is re-parented to init, never out of its subtree. Our own killed children are
    reaped here (they would count against the process limits); init reaps the rest.
    """
    me = os.getpid()
    mine: set[int] = set()
    for _ in range(1000):
        table = _process_table()
        victims = {p for p in _descendants(root, table) - spare if table[p][1]}
        if not victims:
            break
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        mine |= {p for p in victims if table[p][0] == me}
        time.sleep(0.001)
    for pid in mine:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _server_gone(status_fd: int, parent: int) -> bool:
    """Whether the server that started us has died: nobody holds the status pipe's read end any
    more (only the server ever does), or, outside a pid namespace, we were re-parented."""
    poller = select.poll()
    poller.register(status_fd, 0)  # POLLERR is always reported: a pipe's writer gets it without readers
    if any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poller.poll(0)):
        return True
    return parent != 0 and os.getppid() != parent


_told_to_stop: list[int] = []
"""Init, as a subreaper, got SIGTERM (its parent-death signal): kill everything and exit."""


def _arm_parent_death(status_fd: int, parent: int, subreaper: bool) -> None:
    """Die with the server, armed again here because the kernel clears the parent-death signal on
    every change of credentials: the setuid() of step 5 dropped what `unshare --kill-child` (or
    `setpriv --pdeathsig`) had set, so a SIGKILLed server used to leave init and all the code running.

    In a pid namespace init's death takes the whole namespace down, so SIGKILL does; as a subreaper
    init must first kill what was re-parented to it, so it is told with SIGTERM (see `_wait_for_worker`).
    The parent may have died before this call, while nothing was armed: checked right after it.
    """
    if subreaper:
        signal.signal(signal.SIGTERM, lambda _signum, _frame: _told_to_stop.append(signal.SIGTERM))
    _check(
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM if subreaper else signal.SIGKILL, 0, 0, 0),
        "prctl(PR_SET_PDEATHSIG)",
    )
    if _server_gone(status_fd, parent):
        os._exit(122)


def _wait_for_worker(worker: int, status_fd: int) -> int | None:
    """Reap every child (orphans are re-parented to init) until the worker ends; return its wait
    status, or None as soon as the server is gone (status pipe without reader, or SIGTERM, which is
    init's parent-death signal as a subreaper). Single-threaded: a thread would count against the
    execution's process limits."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    poller.register(status_fd, 0)
    while True:
        while True:  # a SIGCHLD that arrives from here on leaves a byte in wake_r: poll() returns at once
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None  # cannot happen while the worker is unreaped; stop rather than spin
            if pid == 0:
                break
            if pid == worker:
                return status
        if _told_to_stop:
            return None
        ready = poller.poll()
        if any(fd == status_fd for fd, _events in ready):
            return None
        with contextlib.suppress(BlockingIOError):
            os.read(wake_r, 1 << 12)


def _kill_cgroup_members(procs_files: list[str]) -> None:
    """Without a pid namespace, the execution's cgroup holds whatever escaped init's subtree."""
    me = os.getpid()
    for procs in procs_files:
        with contextlib.suppress(OSError), open(procs, encoding="ascii") as file:
            for pid in {int(p) for p in file.read().split()} - {me}:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def _become_init(status_fd: int, subreaper: bool, cgroup_procs: list[str]) -> int:
    """Fork the worker and return init's pid in it; in init, reap, clean up, report, exit.

    Init outlives the worker to report how it ended (the kernel shields a namespace's pid 1 from
    signals, so the worker's death by signal cannot be passed on as init's own) and to kill what
    the worker left behind before the call counts as finished. If the server dies first, init
    kills everything and exits without a report (nobody is left to read one).
    """
    if subreaper:
        _check(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
    init_pid = os.getpid()
    worker = os.fork()
    if worker == 0:
        os.close(status_fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # init's handler is not the code's
        if subreaper:
            # Without a pid namespace nothing kills the worker when init is killed: ask for it.
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != init_pid:
                os._exit(125)
        return init_pid
    status = _wait_for_worker(worker, status_fd)
    if status is None and not subreaper:
        os._exit(124)  # pid 1 of the namespace: its exit kills every process in it
    kill_descendants(init_pid, spare={init_pid})
    if subreaper:
        _kill_cgroup_members(cgroup_procs)
    if status is None:
        os._exit(124)
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()
    report: dict[str, int | None] = {"exit_code": None, "signal": None}
    if os.WIFSIGNALED(status):
        report["signal"] = os.WTERMSIG(status)
    else:
        report["exit_code"] = os.WEXITSTATUS(status)
    os.write(status_fd, json.dumps(report).encode())
    os._exit(0)


def _set_up(plan: dict) -> str | None:
    """Steps 1-6 of the module docstring; returns the program source (None for a session)."""
    _join_cgroups(plan["cgroup_procs"])
    source = None
    if plan["program_fd"] is not None:
        source = _read_program(plan["program_fd"])
    if plan["private_root"]:
        _build_private_root(plan["uid"], int(plan["limits"]["max_disk_mb"]))
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
    parent = os.getppid()  # 0 in a new pid namespace: its pid 1 cannot see its parent
    try:
        source = _set_up(plan)
        subreaper = not plan["private_root"]
        _arm_parent_death(status_fd, parent, subreaper)
    except BaseException as error:  # noqa: BLE001 - a sandbox failure, reported apart from user errors
        os.write(
            status_fd,
            json.dumps({"setup_error": f"{type(error).__name__}: {error}"}).encode(),
        )
        os._exit(121)
    init_pid = _become_init(status_fd, subreaper, plan["cgroup_procs"])
    sys.exit(_run_program(source) if source is not None else _run_session(plan, init_pid))


if __name__ == "__main__":
    main()
