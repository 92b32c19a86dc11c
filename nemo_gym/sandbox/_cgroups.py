"""One control group per sandbox execution: memory, process count and CPU of the whole process tree.

Rlimits bound each process; a cgroup bounds the execution as a whole (six forks each touching
450 MB are six processes under RLIMIT_AS, but one cgroup under memory.max). Groups are made below
our own cgroup (so every limit of the machine above us still applies), named
`nemo_gym_sandbox-<owner pid>-<token>`, and removed when the execution ends, so nothing of ours is
left in a group we do not own; the owner pid lets a later start-up remove the groups of a server
that was SIGKILLed before it could clean up.

cgroup v2 is used when our own group can delegate the memory controller to children; otherwise
each cgroup v1 controller (memory, pids, cpu) that is mounted and writable is used on its own.
Without any (not root, or a container with read-only cgroups) `detect_cgroups()` returns None.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import Literal

from nemo_gym.sandbox._models import SandboxLimits

_GROUP_PREFIX = "nemo_gym_sandbox-"
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class CgroupSupport:
    """Where execution groups are made, per controller (v2: one directory for all of them)."""

    version: Literal["v1", "v2"]
    bases: dict[str, str] = field(default_factory=dict)

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(sorted(self.bases))


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount, from /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as file:
        for line in file:
            left, _, right = line.partition(" - ")
            fs_type, _source, options = (right.split() + ["", "", ""])[:3]
            if fs_type in ("cgroup", "cgroup2"):
                found.append((left.split()[4], fs_type, set(options.split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Our cgroup path per v1 controller, and under key "" the v2 path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8") as file:
        for line in file:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(value)


def _read(path: str) -> str:
    with open(path, encoding="ascii") as file:
        return file.read()


def _probe(base: str, limit_file: str, value: str) -> bool:
    """Whether we can make a group under `base`, set a limit in it, and remove it again."""
    try:
        probe = os.path.join(base, f"{_GROUP_PREFIX}probe-{secrets.token_hex(4)}")
        os.mkdir(probe)
    except OSError:
        return False
    try:
        _write(os.path.join(probe, limit_file), value)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)


def _detect_v2(mounts: list[tuple[str, str, set[str]]], own: dict[str, str]) -> CgroupSupport | None:
    mount = next((point for point, kind, _ in mounts if kind == "cgroup2"), None)
    if mount is None or "" not in own:
        return None
    mine = os.path.join(mount, own[""].lstrip("/"))
    try:
        available = set(_read(os.path.join(mine, "cgroup.controllers")).split())
        enabled = set(_read(os.path.join(mine, "cgroup.subtree_control")).split())
    except OSError:
        return None
    if "memory" not in available:
        return None
    wanted = [c for c in ("memory", "pids", "cpu") if c in available]
    if "memory" not in enabled:
        # Only possible when our group holds no process itself (v2's no-internal-process rule);
        # a service manager that delegates a group to us (systemd's Delegate=) has done it already.
        try:
            _write(os.path.join(mine, "cgroup.subtree_control"), " ".join(f"+{c}" for c in wanted))
            enabled = set(_read(os.path.join(mine, "cgroup.subtree_control")).split())
        except OSError:
            return None
    if not _probe(mine, "memory.max", str(64 << 20)):
        return None
    return CgroupSupport("v2", {controller: mine for controller in wanted if controller in enabled})


def _detect_v1(mounts: list[tuple[str, str, set[str]]], own: dict[str, str]) -> CgroupSupport | None:
    limit_files = {"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpu": "cpu.cfs_quota_us"}
    bases = {}
    for controller in _V1_CONTROLLERS:
        mount = next((p for p, kind, opts in mounts if kind == "cgroup" and controller in opts), None)
        if mount is None or controller not in own:
            continue
        base = os.path.join(mount, own[controller].lstrip("/"))
        probe_values = {"memory": str(64 << 20), "pids": "64", "cpu": "-1"}
        if _probe(base, limit_files[controller], probe_values[controller]):
            bases[controller] = base
    return CgroupSupport("v1", bases) if bases else None


@functools.cache
def detect_cgroups() -> CgroupSupport | None:
    """What this machine lets us use (probed once per process); None when no controller is writable."""
    if os.geteuid() != 0:
        return None
    try:
        mounts, own = _mounts(), _own_paths()
    except OSError:
        return None
    return _detect_v2(mounts, own) or _detect_v1(mounts, own)


def cgroup_memory_mb(limits: SandboxLimits) -> int:
    """The execution's memory limit: `memory_mb` plus an eighth (at least 16 MB) of headroom.

    The group is also charged for kernel memory (page tables, the work dir's files), which
    RLIMIT_AS does not count: without headroom a single process growing towards RLIMIT_AS would
    often be SIGKILLed by the OOM killer instead of getting a clean MemoryError it can report."""
    return limits.memory_mb + max(16, limits.memory_mb // 8)


class ExecutionCgroup:
    """The group(s) of one execution. The child joins them itself, before it starts any code."""

    def __init__(self, support: CgroupSupport, dirs: dict[str, str]):
        self.support = support
        self.dirs = dirs

    @classmethod
    def create(cls, support: CgroupSupport, limits: SandboxLimits) -> ExecutionCgroup:
        """Make the groups and set their limits; raises OSError when the machine refuses."""
        name = f"{_GROUP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        dirs = {c: os.path.join(base, name) for c, base in support.bases.items()}
        group = cls(support, dirs)
        try:
            for directory in set(dirs.values()):
                os.mkdir(directory)
            group._set_limits(limits)
        except BaseException:
            group.remove()
            raise
        return group

    def _set_limits(self, limits: SandboxLimits) -> None:
        memory = str(cgroup_memory_mb(limits) << 20)
        # +1: the sandbox's own init process lives in the group too.
        pids = str(limits.max_processes + 1)
        quota = str(max(1000, int(limits.cpus * _CPU_PERIOD_US)))
        d = self.dirs
        if self.support.version == "v2":
            if "memory" in d:
                _write(os.path.join(d["memory"], "memory.max"), memory)
                with contextlib.suppress(OSError):  # no swap accounting: nothing to forbid
                    _write(os.path.join(d["memory"], "memory.swap.max"), "0")
            if "pids" in d:
                _write(os.path.join(d["pids"], "pids.max"), pids)
            if "cpu" in d:
                _write(os.path.join(d["cpu"], "cpu.max"), f"{quota} {_CPU_PERIOD_US}")
            return
        if "memory" in d:
            _write(os.path.join(d["memory"], "memory.limit_in_bytes"), memory)
            with contextlib.suppress(OSError):  # memory+swap, so the limit cannot be dodged into swap
                _write(os.path.join(d["memory"], "memory.memsw.limit_in_bytes"), memory)
        if "pids" in d:
            _write(os.path.join(d["pids"], "pids.max"), pids)
        if "cpu" in d:
            _write(os.path.join(d["cpu"], "cpu.cfs_period_us"), str(_CPU_PERIOD_US))
            _write(os.path.join(d["cpu"], "cpu.cfs_quota_us"), quota)

    @property
    def procs_files(self) -> list[str]:
        """The files the child writes "0" (itself) into to join."""
        return [os.path.join(d, "cgroup.procs") for d in sorted(set(self.dirs.values()))]

    def oom_kills(self) -> int:
        """How many processes of this execution the kernel's OOM killer has killed so far."""
        directory = self.dirs.get("memory")
        if directory is None:
            return 0
        name = "memory.events" if self.support.version == "v2" else "memory.oom_control"
        try:
            lines = _read(os.path.join(directory, name)).splitlines()
        except OSError:
            return 0
        counts = dict(line.split() for line in lines if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0"))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                found.update(int(pid) for pid in _read(procs).split())
        return found

    def kill_all(self, spare: frozenset[int] = frozenset()) -> None:
        """SIGKILL every process in the group but `spare` (host pids), until none is left."""
        for _ in range(200):
            victims = self.pids() - spare
            if not victims:
                return
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def remove(self) -> None:
        """Kill what is left and remove the group. Blocking (it waits for the kernel); idempotent."""
        self.kill_all()
        for directory in set(self.dirs.values()):
            _remove_group(directory)


def _remove_group(directory: str) -> None:
    # A group is busy until its last (killed) process has been reaped by its parent.
    for _ in range(400):
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY:
                return
            time.sleep(0.005)


def _owner_alive(name: str) -> bool:
    owner, _, _token = name.removeprefix(_GROUP_PREFIX).partition("-")
    if not name.startswith(_GROUP_PREFIX) or not owner.isdigit():
        return True  # not one of ours: leave it
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_groups(support: CgroupSupport) -> list[str]:
    """Remove the groups of owners that died without cleaning up (e.g. a SIGKILLed server)."""
    removed = []
    for base in set(support.bases.values()):
        with contextlib.suppress(OSError):
            for name in os.listdir(base):
                path = os.path.join(base, name)
                if not os.path.isdir(path) or _owner_alive(name):
                    continue
                stale = ExecutionCgroup(support, {"any": path})
                stale.kill_all()
                _remove_group(path)
                removed.append(path)
    return removed
