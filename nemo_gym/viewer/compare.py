"""Two runs of the same tasks side by side: per-task mean reward in each, and the change."""

from __future__ import annotations

import math
from typing import Any

from nemo_gym.viewer.index import RolloutIndex


def compare_runs(a: RolloutIndex, b: RolloutIndex) -> dict[str, Any]:
    """Per task (in either run): rollouts and mean reward in A and B, and `delta` = B - A
    (None when the task is missing from one run). Tasks are ordered by task index."""
    means_a, means_b = a.task_rewards(), b.task_rewards()
    tasks: list[dict[str, Any]] = []
    for task in sorted(set(means_a) | set(means_b)):
        n_a, mean_a = means_a.get(task, (0, None))
        n_b, mean_b = means_b.get(task, (0, None))
        delta = mean_b - mean_a if mean_a is not None and mean_b is not None else None
        tasks.append(
            {"task": task, "a_rollouts": n_a, "a_mean": mean_a, "b_rollouts": n_b, "b_mean": mean_b, "delta": delta}
        )
    shared = [t for t in tasks if t["delta"] is not None]
    deltas: list[float] = [t["delta"] for t in shared]
    tolerance = 1e-9
    return {
        "a": str(a.path),
        "b": str(b.path),
        "complete": a.complete and b.complete,
        "tasks": tasks,
        "summary": {
            "shared_tasks": len(shared),
            "only_in_a": sum(1 for t in tasks if t["b_mean"] is None),
            "only_in_b": sum(1 for t in tasks if t["a_mean"] is None),
            "improved": sum(1 for delta in deltas if delta > tolerance),
            "worse": sum(1 for delta in deltas if delta < -tolerance),
            "unchanged": sum(1 for delta in deltas if abs(delta) <= tolerance),
            "a_mean": _mean([t["a_mean"] for t in shared]),
            "b_mean": _mean([t["b_mean"] for t in shared]),
        },
    }


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None
