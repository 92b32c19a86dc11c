"""Aggregate metrics of a rollout collection, computed from the output rows themselves.

Everything here is derived from the rows that were written to the output JSONL (and the
count of failures, which are not rows), so the printed numbers can always be recomputed
from the file and agree with it.

Conventions, chosen once and used everywhere in this module:

- Values are fractions in [0, 1], not the percentages NeMo Gym's pass@k helpers print.
- Success for pass@k is binary: a rollout succeeds when its `reward >= 1.0`
  (`SUCCESS_THRESHOLD`). A partial reward such as 0.5 is a failure for pass@k; continuous
  rewards are summarised by `max@k` and `mean@k` instead.
- A row without `reward` (or with `reward: null`) counts as reward 0.0, as in NeMo Gym.
  Failed rollouts never reach this module as rows; they are only counted (`failures=`).
- `std` is the sample standard deviation (divisor n - 1), and 0.0 for a single value.
- Keys starting with `_` (our `_ng_*` bookkeeping) are not fields, and neither are the task's own
  fields (`task_fields`, the input rows' keys): a row echoes its task, and the mean of
  `expected_answer` or `max_guesses` is no outcome. Only what verify adds is. Bools count as 0/1.
  Non-finite numbers (NaN, inf) are skipped, so one bad value cannot poison a mean.
- A multi-reward row's `reward_components` mapping gives one field per objective,
  `reward_components/<name>`; `reward` stays the scalar that pass@k reads.
- "First k rollouts" of a task means the k lowest `_ng_rollout_index` values.
- When tasks own groups of different sizes (NeMo Gym's collated data from data sets with different
  `num_repeats`, or a per-agent `num_repeats`), the largest k is the smallest group: every pass@k,
  max@k and mean@k then averages over every task, and a task with a larger group still counts all of
  its rollouts in pass@k's n and c (the estimate stays unbiased). `expected_rollouts` sums each task's
  own group size.

Memory is O(number of rollout rewards): rows are never kept, only each task's rewards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from nemo_gym.errors import InputDataError

__all__ = ["SUCCESS_THRESHOLD", "RunningStats", "aggregate_rollouts", "format_key_metrics", "pass_at_k"]

SUCCESS_THRESHOLD = 1.0
"""A rollout with `reward >= SUCCESS_THRESHOLD` is a success for pass@k."""

REWARD_COMPONENTS = "reward_components"
"""A multi-reward row's objectives by name (`BaseMultiRewardVerifyResponse`): each one's statistics are
`fields["reward_components/<name>"]` and its mean a key metric, `mean/reward_components/<name>`."""

_USAGE_HEADLINE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the chance that at least one of k draws (without replacement)
    from n rollouts, c of them successful, is a success: 1 - C(n-c, k) / C(n, k).

    Raises ValueError unless 1 <= k <= n and 0 <= c <= n.
    """
    if k < 1 or k > n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got n={n}, k={k}")
    if c < 0 or c > n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if n - c < k:
        # Fewer failures than draws: every k-subset contains a success.
        return 1.0
    # Exact integer binomials; Python's int / int division rounds correctly even when huge.
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


class RunningStats:
    """Streaming count, mean, sample std, min and max in O(1) memory (Welford's update).

    `mean`, `std`, `min` and `max` are None until the first value; `std` is 0.0 for one value.
    """

    __slots__ = ("count", "_mean", "_m2", "_min", "_max")

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the running mean
        self._min = math.inf
        self._max = -math.inf

    def add(self, x: float) -> None:
        x = float(x)
        self.count += 1
        delta = x - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (x - self._mean)
        if x < self._min:
            self._min = x
        if x > self._max:
            self._max = x

    @property
    def mean(self) -> float | None:
        return self._mean if self.count else None

    @property
    def std(self) -> float | None:
        if self.count == 0:
            return None
        if self.count == 1:
            return 0.0
        return math.sqrt(max(self._m2, 0.0) / (self.count - 1))

    @property
    def min(self) -> float | None:
        return self._min if self.count else None

    @property
    def max(self) -> float | None:
        return self._max if self.count else None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max, "count": self.count}

    def __repr__(self) -> str:
        return f"RunningStats(count={self.count}, mean={self.mean}, std={self.std}, min={self.min}, max={self.max})"


def aggregate_rollouts(
    rows: Iterable[Mapping[str, Any]],
    *,
    num_repeats: int | None = None,
    failures: int = 0,
    wall_time_s: float | None = None,
    task_fields: Collection[str] = (),
    group_size: Callable[[int], int] | None = None,
) -> dict[str, Any]:
    """Aggregate rollout rows (one pass over `rows`) into a JSON-serializable dict.

    `num_repeats` fixes the largest k of pass@k / mean@k / max@k and the expected rollout
    count; when None, the largest k is the fewest rollouts any task has. `failures` is the
    number of rollouts that failed and were written elsewhere. `wall_time_s` gives the rate.
    `task_fields`: the input rows' field names, left out of `fields` (they are the task's, not outcomes).
    `group_size`: each task's own group size when they differ (`TaskPlan.size_of`; pass the smallest as
    `num_repeats`): `expected_rollouts` is then the sum of the sizes of the tasks with a row.

    Keys: counts, fields, pass_at_k, max_at_k, mean_at_k, num_tasks_at_k, per_task, usage,
    wall_time_s, rollouts_per_s, key_metrics (see the module docstring for conventions).
    Raises InputDataError for a row without an integer `_ng_task_index` or with a
    non-numeric reward.
    """
    if num_repeats is not None and num_repeats < 1:
        raise ValueError(f"num_repeats must be >= 1 or None, got {num_repeats}")
    if failures < 0:
        raise ValueError(f"failures must be >= 0, got {failures}")

    field_stats: dict[str, RunningStats] = {}
    task_rewards: dict[int, list[tuple[int, float]]] = {}
    usage: dict[str, int | float] = dict.fromkeys(_USAGE_HEADLINE_KEYS, 0)
    num_rows = 0
    not_outcomes = frozenset(task_fields) - {"reward"}

    for row_number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise InputDataError(f"rollout row {row_number} is not a JSON object")
        num_rows += 1
        task_index = _int_field(row, "_ng_task_index", row_number)
        reward = _reward(row, row_number)
        field_stats.setdefault("reward", RunningStats()).add(reward)
        for key, value in row.items():
            if key.startswith("_") or key == "reward" or key in not_outcomes:
                continue
            number = _as_number(value)
            if number is not None:
                field_stats.setdefault(key, RunningStats()).add(number)
        components = row.get("reward_components")
        if isinstance(components, Mapping):
            for name, value in components.items():
                if (number := _as_number(value)) is not None:
                    field_stats.setdefault(f"{REWARD_COMPONENTS}/{name}", RunningStats()).add(number)
        pairs = task_rewards.setdefault(task_index, [])
        rollout_index = _int_field(row, "_ng_rollout_index", row_number) if "_ng_rollout_index" in row else len(pairs)
        pairs.append((rollout_index, reward))
        response = row.get("response")
        if isinstance(response, Mapping):
            _add_usage(usage, response.get("usage"), prefix="")

    # Each task's rewards ordered by rollout index; the sort is stable for equal indices.
    tasks = {t: [r for _, r in sorted(pairs, key=lambda p: p[0])] for t, pairs in sorted(task_rewards.items())}
    max_k = num_repeats if num_repeats is not None else min((len(r) for r in tasks.values()), default=0)
    at_k = _at_k_metrics(tasks, max_k)
    rollouts_per_s = num_rows / wall_time_s if wall_time_s is not None and wall_time_s > 0 else None

    per_task = []
    for task_index, rewards in tasks.items():
        n = len(rewards)
        per_task.append(
            {
                "_ng_task_index": task_index,
                "num_rollouts": n,
                "mean_reward": math.fsum(rewards) / n,
                "rewards": rewards,
                f"pass@{max_k}": pass_at_k(n, _num_successes(rewards), max_k) if 1 <= max_k <= n else None,
            }
        )

    fields = {name: stats.to_dict() for name, stats in sorted(field_stats.items())}
    key_metrics: dict[str, Any] = {
        "mean/reward": fields["reward"]["mean"] if "reward" in fields else None,
        "pass@1": at_k["pass_at_k"].get("pass@1"),
    }
    if max_k >= 1:
        key_metrics[f"pass@{max_k}"] = at_k["pass_at_k"][f"pass@{max_k}"]
        key_metrics[f"mean@{max_k}"] = at_k["mean_at_k"][f"mean@{max_k}"]
    key_metrics.update(
        {f"mean/{name}": stats["mean"] for name, stats in fields.items() if name.startswith(f"{REWARD_COMPONENTS}/")}
    )
    key_metrics.update({"rollouts": num_rows, "failed": failures, "rollouts_per_s": rollouts_per_s})

    return {
        "counts": {
            "tasks": len(tasks),
            "rollouts": num_rows,
            "succeeded": num_rows,
            "failed": failures,
            # Tasks whose every rollout failed produced no row, so they are not counted here.
            "expected_rollouts": sum(map(group_size, tasks))
            if group_size is not None
            else len(tasks) * num_repeats
            if num_repeats is not None
            else None,
        },
        "fields": fields,
        **at_k,
        "per_task": per_task,
        "usage": usage,
        "wall_time_s": wall_time_s,
        "rollouts_per_s": rollouts_per_s,
        "key_metrics": key_metrics,
    }


def format_key_metrics(metrics: Mapping[str, Any]) -> str:
    """A few human lines for the end of a run, from `aggregate_rollouts` output (or just its
    `key_metrics`)."""
    key = metrics.get("key_metrics", metrics)
    counts = metrics.get("counts", {})
    summary = f"Rollouts: {key.get('rollouts', 0)} succeeded, {key.get('failed', 0)} failed"
    if "tasks" in counts:
        summary += f", {counts['tasks']} tasks"
    wall_time_s = metrics.get("wall_time_s")
    if wall_time_s is not None:
        summary += f", {wall_time_s:.1f} s"
    if key.get("rollouts_per_s") is not None:
        summary += f" ({key['rollouts_per_s']:.2f} rollouts/s)"
    lines = [summary]

    usage = metrics.get("usage")
    if usage and usage.get("total_tokens"):
        lines.append(
            f"Tokens: {usage.get('input_tokens', 0):,} in, {usage.get('output_tokens', 0):,} out, "
            f"{usage['total_tokens']:,} total"
        )

    scores = [(name, value) for name, value in key.items() if name not in ("rollouts", "failed", "rollouts_per_s")]
    if scores:
        lines.append("  ".join(f"{name} {_format_score(value)}" for name, value in scores))
    # Every other numeric field of the rows (an environment's extras such as accuracy), as means.
    extras = [
        (name, stats.get("mean"))
        for name, stats in (metrics.get("fields") or {}).items()
        if name != "reward" and f"mean/{name}" not in key
    ]
    if extras:
        lines.append("  ".join(f"mean/{name} {_format_score(value)}" for name, value in extras))
    return "\n".join(lines)


def _at_k_metrics(tasks: Mapping[int, list[float]], max_k: int) -> dict[str, dict[str, Any]]:
    """pass@k, max@k and mean@k for k = 1..max_k, averaged over the tasks with >= k rollouts.

    Running sums make this O(tasks x max_k) rather than re-slicing each prefix.
    """
    pass_sums = [0.0] * (max_k + 1)
    max_sums = [0.0] * (max_k + 1)
    mean_sums = [0.0] * (max_k + 1)
    num_tasks = [0] * (max_k + 1)
    for rewards in tasks.values():
        n, c = len(rewards), _num_successes(rewards)
        running_sum, running_max = 0.0, -math.inf
        for k, reward in enumerate(rewards[:max_k], start=1):
            running_sum += reward
            running_max = max(running_max, reward)
            num_tasks[k] += 1
            pass_sums[k] += pass_at_k(n, c, k)
            max_sums[k] += running_max
            mean_sums[k] += running_sum / k

    def averaged(name: str, sums: list[float]) -> dict[str, float | None]:
        return {f"{name}@{k}": sums[k] / num_tasks[k] if num_tasks[k] else None for k in range(1, max_k + 1)}

    return {
        "pass_at_k": averaged("pass", pass_sums),
        "max_at_k": averaged("max", max_sums),
        "mean_at_k": averaged("mean", mean_sums),
        "num_tasks_at_k": {str(k): num_tasks[k] for k in range(1, max_k + 1)},
    }


def _num_successes(rewards: list[float]) -> int:
    return sum(1 for r in rewards if r >= SUCCESS_THRESHOLD)


def _as_number(value: Any) -> float | None:
    """The value as a finite float if it is a bool, int or float; otherwise None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _int_field(row: Mapping[str, Any], name: str, row_number: int) -> int:
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputDataError(f"rollout row {row_number} has no integer {name} (got {value!r})", field=name)
    return value


def _reward(row: Mapping[str, Any], row_number: int) -> float:
    value = row.get("reward")
    if value is None:
        return 0.0
    number = _as_number(value)
    if number is None:
        raise InputDataError(
            f"rollout row {row_number} has a reward that is not a finite number: {value!r}", field="reward"
        )
    return number


def _add_usage(totals: dict[str, int | float], usage: Any, *, prefix: str) -> None:
    """Add every numeric leaf of a `response.usage` object; nested keys are dotted
    (`output_tokens_details.reasoning_tokens`)."""
    if not isinstance(usage, Mapping):
        return
    for key, value in usage.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _add_usage(totals, value, prefix=f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            totals[name] = totals.get(name, 0) + value


def _format_score(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
