"""Run untrusted, model-written Python in confined child processes; never in a server process.

    sandbox = Sandbox(SandboxLimits(wall_timeout_s=5), max_concurrent=4)
    result = await sandbox.run_python("print(1 + 1)")          # one fresh program
    session = await sandbox.open_session()                       # or a persistent interpreter
    (await session.execute("x = 2")); (await session.execute("x * 21")).stdout == "42\\n"
    pool = SessionPool(sandbox, max_sessions=256, idle_timeout_s=300)   # sessions keyed by rollout
    await pool.execute(rollout_id, "x = 2")

A program that crashes, times out or hits a limit is a normal `ExecutionResult` (see
`describe_error()`); `SandboxError` means the sandbox itself failed.

An *execution* is one `run_python` call, or one session with all its cells: the interpreter and
every process it starts. The limits bound the execution as a whole wherever the machine allows.
What the machine allows is detected once per process; `Sandbox.isolation` reports it. "Full" below
means root with working namespaces (`unshare` from util-linux) and writable cgroups, as on this
project's CI; the fallback column is what holds without them.

| limit (SandboxLimits)  | full: how it is enforced                        | where the mechanism is missing           |
|------------------------|-------------------------------------------------|------------------------------------------|
| wall_timeout_s         | the parent SIGKILLs the execution at deadline   | same                                     |
| cpu_time_s             | RLIMIT_CPU per process (per cell in a session)  | same                                     |
| cpus                   | cgroup cpu.max / cpu.cfs_quota_us: the whole    | no cpu cgroup: each process may use a    |
|                        | tree shares one core's worth of CPU time        | core, up to cpu_time_s each              |
| memory_mb              | cgroup memory.max / memory.limit_in_bytes (and  | no memory cgroup: RLIMIT_AS per process  |
|                        | memsw) at memory_mb + 1/8 (kernel memory): all  | only, so N processes may use N times the |
|                        | processes and tmpfs files together; an OOM kill | limit (N <= max_processes)               |
|                        | sets memory_exceeded. RLIMIT_AS per process     |                                          |
|                        | too: one process gets a clean MemoryError       |                                          |
| max_processes          | cgroup pids.max, and RLIMIT_NPROC of the        | not root: RLIMIT_NPROC counts all of our |
|                        | dedicated uid                                   | user's processes (the servers' too)      |
| max_disk_mb            | the work dir is a tmpfs of that size (ENOSPC)   | no namespaces: not enforced; the work    |
|                        |                                                 | dir is on the host's temp dir and only   |
|                        |                                                 | max_file_size_mb bounds each file        |
| max_file_size_mb       | RLIMIT_FSIZE (Python ignores SIGXFSZ: EFBIG)    | same                                     |
| max_output_bytes       | stdout/stderr truncated while being read        | same                                     |
| network=False          | new network namespace with only a down loopback | socket guard in Python: refuses AF_INET  |
|                        |                                                 | sockets; a guard against accidents, not  |
|                        |                                                 | a wall (ctypes or a subprocess bypass it)|

What else holds, and what happens without the mechanism:

- Environment: always built from scratch (PATH, LANG, HOME=TMPDIR=work dir, ...), so the
  parent's secrets such as OPENAI_API_KEY are not visible. `python -I -B`, never a shell. The
  program reaches the child as an anonymous memfd, never as a file.
- File system: with namespaces the child builds a new root and pivot_root()s into it: an empty
  tmpfs with read-only binds of the system libraries (/usr, /lib*, a few files of /etc), the
  Python installation (its prefixes and the sys.path entries inside them; a project a .pth file
  points at is left out), /dev/{null,zero,full,random,urandom}, a fresh /proc and the work dir,
  a size-limited tmpfs at /tmp (/dev/shm points to it). The checkout, env.yaml, /home, /root and
  the host's /tmp do not exist for the code. Without namespaces this cannot be done, so
  `Sandbox()` FAILS CLOSED with a SandboxError; `allow_weaker_isolation=True` runs the code
  anyway, able to read (and, as our user, write) every file that user can.
- Identity: as root the code runs as a dedicated unprivileged uid/gid (one per live execution,
  from 1.5e9 upward, no passwd entry, no supplementary groups, no_new_privs). Not root: as our
  own user.
- Nothing outlives a call: the child's init process (pid 1 of a new pid namespace, or without
  namespaces a child subreaper, so orphans are re-parented to it and cannot escape with setsid())
  kills every process the program left when it ends. In a session the interpreter kills every
  process a cell started (a Popen'd busy loop, a daemon) before it replies; only the interpreter
  itself survives between cells. The parent then kills the process tree, the cgroup and the
  process group. Without namespaces the same holds through the subreaper.
- Nothing outlives the server: the child is started under `setpriv --pdeathsig KILL` (and
  `unshare --kill-child`), and the child's init arms its parent-death signal again after it has
  dropped to the dedicated uid (the kernel clears it on every change of credentials, which left
  whole executions running after a SIGKILLed server). Init also leaves as soon as the status pipe
  it shares with the server loses its reader, which only the server's death does (this holds
  without setpriv too). With a pid namespace init's exit takes every process in it along; without
  one init is a subreaper told by SIGTERM, and kills its subtree and the members of the
  execution's cgroup before it exits. So a SIGKILLed server takes its executions with it within a
  moment, even mid-call and with daemons the code started; with namespaces the work dir is a tmpfs
  that disappears with its mount namespace and no file is left on the host. Host work dirs
  (fallback) and cgroups are named after the owning pid, and the first Sandbox of a process removes
  those whose owner is dead (killing what is left in such a cgroup). Without a pid namespace, code
  running as init's own uid can SIGKILL init first and leave orphans behind: these are killed with
  their cgroup at the next start-up, and without cgroups (not root) only RLIMIT_CPU ends them.
- A caller that gives up stops its work: cancelling `run_python` or `PythonSession.execute` (a
  server cancels a handler whose client disconnected) kills the program or the cell with its
  interpreter; the session's next cell starts a fresh one and is told (`lost_state`).
  `SessionPool` closes the session of a cancelled call at once instead of after `idle_timeout_s`.
- Sessions: a session whose interpreter died, was evicted (`SessionPool.max_sessions`) or was
  reaped while idle is replaced by a fresh one, and the next cell's result says so
  (`lost_state`, and in `describe_error()` even when the cell itself succeeded).

What is NOT prevented, even with everything available:
- Reading what is bound in read-only: system libraries, the Python installation and its
  site-packages, /etc/passwd. No secrets belong there.
- Using CPU and memory up to the limits, and kernel exploits: this is process isolation, not a VM.
- Without a memory cgroup, `memory_exceeded` is inferred from a MemoryError in stderr (best effort).

NeMo Gym's container-sandbox API (`AsyncSandbox`, `SandboxSpec`, providers by name) is here too, with its
names and call shapes, for environments written against it; see `nemo_gym.sandbox._containers`. Its
`Sandbox` is NeMo Gym's synchronous facade over that API and is NOT provided: `Sandbox` here is ours.
"""

from nemo_gym.sandbox._containers import (
    AsyncSandbox,
    ExecResult,
    SandboxCreateError,
    SandboxCreateVerificationError,
    SandboxEndpoint,
    SandboxExecResult,
    SandboxHandle,
    SandboxProvider,
    SandboxResources,
    SandboxSpec,
    SandboxStatus,
    SupportsSandboxEndpoint,
    create_provider,
    get_provider_class,
    list_providers,
    register_provider,
)
from nemo_gym.sandbox._models import ExecutionResult, SandboxLimits
from nemo_gym.sandbox._pool import SessionPool
from nemo_gym.sandbox._process import Isolation
from nemo_gym.sandbox._sandbox import PythonSession, Sandbox
from nemo_gym.sandbox.config import resolve_provider_config, resolve_provider_metadata

__all__ = [
    "ExecutionResult",
    "Isolation",
    "PythonSession",
    "Sandbox",
    "SandboxLimits",
    "SessionPool",
    # NeMo Gym's container-sandbox API
    "AsyncSandbox",
    "ExecResult",
    "SandboxCreateError",
    "SandboxCreateVerificationError",
    "SandboxEndpoint",
    "SandboxExecResult",
    "SandboxHandle",
    "SandboxProvider",
    "SandboxResources",
    "SandboxSpec",
    "SandboxStatus",
    "SupportsSandboxEndpoint",
    "create_provider",
    "get_provider_class",
    "list_providers",
    "register_provider",
    "resolve_provider_config",
    "resolve_provider_metadata",
]
