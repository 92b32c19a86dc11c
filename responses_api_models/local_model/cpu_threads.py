"""How many CPU threads llama.cpp gets: the cores this process may really use, shared between the
model's instances, with one left for the rest of the rollout stack.

llama.cpp's threads meet at a barrier after every operation of every token, so one thread that the
OS takes off its core stalls all of them. During collection the agent, resources servers, head and
collector run on the same cores: on 2 cores with such work beside it, 2 threads took about 220 s per
rollout and 1 thread 27 s. So the count comes from what the process is granted (CPU affinity, the
cgroup's CPU quota: a container's `--cpus` limits it without hiding any core from `os.cpu_count()`),
divided by the model's instances (`num_replicas`: each is a process with its own threads), minus one
core for everything else. Parallel slots (`n_parallel`) do not count: llama.cpp decodes all slots in
one batch on the same threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def affinity_cores() -> int:
    """Cores the scheduler lets this process run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in cores (the tightest along its ancestors), or None
    when there is none or it cannot be read. cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`)."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            limits += _limits_along(cgroup_root, path, _v2_limit)
        elif "cpu" in controllers.split(","):
            mount = cgroup_root / controllers if (cgroup_root / controllers).is_dir() else cgroup_root / "cpu"
            limits += _limits_along(mount, path, _v1_limit)
    return min(limits, default=None)


def _limits_along(base: Path, path: str, read_limit: Callable[[Path], float | None]) -> list[float]:
    """The limits of the cgroup at `path` under `base` and of each of its ancestors."""
    directory = base / path.strip("/")
    found = []
    while True:
        limit = read_limit(directory)
        if limit is not None:
            found.append(limit)
        if directory == base or base not in directory.parents:
            return found
        directory = directory.parent


def _v2_limit(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else _ratio(quota, period)


def _v1_limit(directory: Path) -> float | None:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        value, length = int(quota), int(period)
    except ValueError:
        return None
    return value / length if value > 0 and length > 0 else None  # v1 writes -1 for "no limit"


def available_cores(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Whole cores this process can use: its affinity, capped by its cgroup quota (at least 1)."""
    cores = affinity_cores()
    quota = cgroup_cpu_limit(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return cores


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    """Threads for each instance's llama.cpp."""
    warning: str | None = None
    """One line to show when configured threads oversubscribe the available cores."""


def plan_threads(configured: int | None, *, cores: int, instances: int = 1) -> ThreadPlan:
    """The threads per instance: `configured` as given (with a warning when instances x threads
    exceed the cores), or, when None, the cores minus one for the rest of the stack, split evenly
    between the instances (at least 1)."""
    instances = max(1, instances)
    if configured is None:
        return ThreadPlan(max(1, (cores - 1) // instances))
    total = configured * instances
    if total <= cores:
        return ThreadPlan(configured)
    suggested = max(1, (cores - 1) // instances)
    return ThreadPlan(
        configured,
        f"warning: local_model n_threads={configured} x {instances} instance(s) = {total} threads on "
        f"{cores} available core(s) oversubscribes the CPU and slows generation sharply under load; "
        f"n_threads=null picks {suggested}",
    )
