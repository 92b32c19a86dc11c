"""Run untrusted, model-written Python in confined child processes; never in a server process.

    sandbox = Sandbox(SandboxLimits(wall_timeout_s=5), max_concurrent=4)
    result = await sandbox.run_python("print(1 + 1)")          # one fresh program
    session = await sandbox.open_session()                       # or a persistent interpreter
    (await session.execute("x = 2")); (await session.execute("x * 21")).stdout == "42\\n"

A program that crashes, times out or hits a limit is a normal `ExecutionResult` (see
`describe_error()`); `SandboxError` means the sandbox itself failed.

How a child is confined (detected once per process; `Sandbox.isolation` reports what is in use):

- Always: `python -I -B` (isolated mode) from `asyncio.create_subprocess_exec`, never a shell; an
  environment built from scratch (PATH, LANG, HOME=TMPDIR=work dir, ...), so the parent's secrets
  such as OPENAI_API_KEY are not visible; a fresh work dir, removed afterwards even on timeout; a new
  session (process group) that is SIGKILLed as a whole on timeout; rlimits RLIMIT_CPU, RLIMIT_AS,
  RLIMIT_NPROC, RLIMIT_FSIZE and RLIMIT_CORE=0; stdout/stderr truncated while being read.
- As root with working namespaces (`unshare` from util-linux; `network_isolation == "namespace"`):
  new network namespace (only a down loopback: no connection anywhere, our own servers included),
  new pid namespace (a small init reaps orphans; when it exits the kernel kills every process
  left, even those that called setsid(), and /proc shows only the sandbox), new mount namespace
  in which /tmp, /var/tmp, /dev/shm, /run/lock are replaced by empty root-owned read-only-for-us
  tmpfs (the work dir is bound back in) and directories the sandbox uid could not traverse anyway
  (e.g. /root at 0700) are hidden except for the interpreter's own files.
  The code then runs as a dedicated unprivileged uid/gid (one per live child, from 1.5e9 upward,
  no passwd entry), without supplementary groups and with no_new_privs (setuid binaries cannot
  raise it back). One uid per child makes RLIMIT_NPROC a per-run limit: a fork bomb exhausts its
  own budget, not that of other runs.
- Without namespaces (not root, or a container that forbids them): `network_isolation ==
  "python-guard"`, i.e. socket.socket refuses AF_INET/AF_INET6 and getaddrinfo/create_connection
  raise. This is a guard against accidents, not a wall: ctypes, `os.system("curl ...")` or a
  subprocess bypass it. As root the code still drops to a dedicated uid if the interpreter is
  readable by other users; otherwise (and whenever we are not root) it runs as our own user, so
  RLIMIT_NPROC counts all of that user's processes (the servers' too) and the code can write
  wherever that user can. Cleanup is then only as good as the process group: a process that
  calls setsid() can escape it.

What is NOT prevented, even with namespaces:
- Reading world-readable files: the project source, /etc, installed packages. No secrets should
  live in world-readable files.
- Filling the disk with many files below RLIMIT_FSIZE each in the work dir (it lives on the
  host's temp dir); the wall and CPU limits bound how long it can try.
- Using CPU up to the limits, and kernel exploits: this is process isolation, not a VM.
- The memory limit is address space (RLIMIT_AS), not resident memory; `memory_exceeded` is
  inferred from a MemoryError in stderr and is best effort.
"""

from nemo_gym.sandbox._models import ExecutionResult, SandboxLimits
from nemo_gym.sandbox._pool import SessionPool
from nemo_gym.sandbox._process import Isolation
from nemo_gym.sandbox._sandbox import PythonSession, Sandbox

__all__ = [
    "ExecutionResult",
    "Isolation",
    "PythonSession",
    "Sandbox",
    "SandboxLimits",
    "SessionPool",
]
