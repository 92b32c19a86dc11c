"""The sandbox's value objects: the limits a run is held to, and what a run produced."""

from __future__ import annotations

import signal

from pydantic import BaseModel, Field, PrivateAttr


class SandboxLimits(BaseModel, frozen=True):
    """Resource limits for one execution: a program run, or a session with all its cells, and in
    both cases every process the code starts. The package docs say how each one is enforced and
    what holds on a machine without cgroups or namespaces."""

    wall_timeout_s: float = Field(10.0, gt=0)
    """Default 10 s. Wall-clock deadline; the whole execution is SIGKILLed when it passes.
    The backstop for code that sleeps or blocks, which CPU limits do not catch."""

    cpu_time_s: int = Field(10, gt=0)
    """Default 10 s. RLIMIT_CPU per process (per cell in a session): stops busy loops even while
    the machine is so loaded that the wall clock alone would let them burn a core for longer."""

    memory_mb: int = Field(512, gt=0)
    """Default 512 MB. RLIMIT_AS per process (one allocation past it raises MemoryError), and the
    memory of the whole execution: all its processes and the files in its work dir together, held
    by a cgroup (with an eighth of headroom for kernel memory; the kernel kills a process beyond
    it). Enough for numpy/sympy, small enough that a few concurrent memory bombs cannot push the
    host into swap or the OOM killer."""

    max_processes: int = Field(64, gt=0)
    """Default 64. Processes and threads of the execution: cgroup pids limit, and RLIMIT_NPROC
    (counted per uid, so only a per-execution limit when the sandbox runs as its own uid)."""

    max_output_bytes: int = Field(1_000_000, gt=0)
    """Default 1 MB. stdout and stderr are each truncated beyond this while being read, so a
    print loop costs a bounded amount of parent memory and keeps rollout rows small."""

    max_file_size_mb: int = Field(16, gt=0)
    """Default 16 MB. RLIMIT_FSIZE: the largest file the code may write (all files together are
    bounded by `max_disk_mb`)."""

    max_disk_mb: int = Field(64, gt=0)
    """Default 64 MB. Size of the work dir (a private tmpfs), i.e. all files the code writes
    together; beyond it writes fail with ENOSPC. The files are memory too: they count against
    `memory_mb` where a memory cgroup is in use. Not enforced without namespaces (see the package docs)."""

    cpus: float = Field(1.0, gt=0)
    """Default 1. CPU bandwidth of the whole execution (cgroup cpu quota), so forked busy loops
    share one core's worth of time instead of taking the machine. Only where a cpu cgroup is usable."""

    network: bool = False
    """Default False. Model-written code gets no network: it must not reach our servers on
    loopback, the cloud metadata endpoint, or the internet."""


DEFAULT_LIMITS = SandboxLimits()


class ExecutionResult(BaseModel):
    """What one program run or one session cell produced. A crash or timeout is data, not an error."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    """The program's exit status; None when it was killed by a signal or timed out."""
    timed_out: bool = False
    memory_exceeded: bool = False
    """Best effort: the code raised MemoryError, or died of a signal while at the memory limit."""
    killed_by_signal: int | None = None
    duration_s: float = 0.0
    output_truncated: bool = False
    """stdout or stderr was longer than `max_output_bytes` and was cut."""
    session_restarted: bool = False
    """Sessions only: the interpreter died or was killed, and a fresh one (empty state) replaced it."""
    lost_state: str | None = None
    """Sessions only: why this cell ran in a fresh interpreter although earlier cells had state
    (evicted for other sessions, reaped while idle, its interpreter had exited); None otherwise."""
    session_closed: bool = False
    """Sessions only: the session was closed (`aclose()`) while this cell ran, which killed it."""

    _limits: SandboxLimits = PrivateAttr(default=DEFAULT_LIMITS)

    @property
    def ok(self) -> bool:
        """The code ran to a clean exit within its limits."""
        return self.exit_code == 0 and not self.timed_out and self.killed_by_signal is None and not self.memory_exceeded

    def with_limits(self, limits: SandboxLimits) -> ExecutionResult:
        self._limits = limits
        return self

    def describe_error(self) -> str | None:
        """One line saying why the run failed, fit to show a model; None when it succeeded.

        A cell that ran in a fresh interpreter because the earlier one was lost (`lost_state`) is
        described even when it succeeded: the model must know its variables are gone."""
        reason = self._reason()
        lost = "all earlier state (variables, imports) is lost"
        if self.lost_state is not None:
            notice = f"the session was restarted before this cell ran ({self.lost_state}); {lost}"
            return notice if reason is None else f"{reason}; {notice}"
        if reason is not None and self.session_restarted:
            reason += f"; the session was restarted and {lost}"
        return reason

    def _reason(self) -> str | None:
        limits = self._limits
        if self.session_closed:
            return "the session was closed while the cell was running"
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f} s (limit {limits.wall_timeout_s:g} s)"
        if self.memory_exceeded:
            verb = "killed" if self.killed_by_signal is not None else "failed"
            return f"{verb}: memory limit {limits.memory_mb} MB exceeded"
        if self.killed_by_signal is not None:
            if self.killed_by_signal == signal.SIGXCPU:
                return f"killed: CPU time limit {limits.cpu_time_s} s exceeded"
            if self.killed_by_signal == signal.SIGXFSZ:
                return f"killed: file size limit {limits.max_file_size_mb} MB exceeded"
            try:
                name = signal.Signals(self.killed_by_signal).name
            except ValueError:
                name = str(self.killed_by_signal)
            return f"killed by signal {name}"
        if self.exit_code not in (0, None):
            last = _last_line(self.stderr)
            if _looks_like_fork_refused(self.stderr):
                return f"failed: process limit {limits.max_processes} reached ({last})"
            return f"exited with code {self.exit_code}" + (f": {last}" if last else "")
        if self.exit_code is None:
            return "ended without an exit status"
        return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def looks_like_memory_error(stderr: str) -> bool:
    """Whether the program's last words were a MemoryError (raised when RLIMIT_AS refuses an allocation)."""
    tail = stderr.strip().splitlines()[-3:]
    return any(line.startswith("MemoryError") for line in tail)


def _looks_like_fork_refused(stderr: str) -> bool:
    """Whether the program died of a fork refused for RLIMIT_NPROC (EAGAIN from fork or Popen)."""
    tail = stderr.strip().splitlines()[-4:]
    return (
        bool(tail)
        and tail[-1].startswith("BlockingIOError: [Errno 11]")
        and any("fork" in line.lower() for line in tail)
    )
