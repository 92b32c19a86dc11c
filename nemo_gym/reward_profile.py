"""NeMo Gym's `nemo_gym.reward_profile` import path: pass@k / majority@k metrics for an
environment's `compute_metrics(tasks)` and the pick of headline entries for `get_key_metrics`.

    def compute_metrics(self, tasks):
        metrics, *_ = compute_pass_majority_metrics(tasks, answer_key="extracted_answer")
        return metrics

    def get_key_metrics(self, agent_metrics):
        return highest_k_metrics(agent_metrics, "pass@1[avg-of-{k}]", exclude_names=["no_answer"])

`tasks[i]` is the list of rollout rows of task i. Keys are `<aggregation>/<score name>` and the
values percentages (0-100), as NeMo Gym writes them, so dashboards keyed on them keep working.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from nemo_gym.servers.aggregate_metrics import compute_aggregate_metrics, default_key_metrics

ScoreFn = Callable[[dict[str, Any]], dict[str, Any]]

_SPREAD_SUFFIXES = ("std_dev_across_runs", "std_err_across_runs", "avg_sample_std_dev")


def _mean(values: list[float]) -> float:
    # Plain float arithmetic (not statistics.mean's exact fractions), so figures match NeMo Gym's.
    return sum(values) / len(values)


def _sample_std(values: list[float]) -> float:
    centre = _mean(values)
    return math.sqrt(sum((value - centre) ** 2 for value in values) / (len(values) - 1))


def _default_scores(row: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": row["reward"]}


def _is_binary(values: list[float]) -> bool:
    return all(value in (0, 1) for value in values)


def _pass_at_k(values: list[float], k: int) -> float:
    """Chance that k of the rollouts (drawn without replacement) hold a pass; for scores that are
    not 0/1, the best of the first k."""
    if not _is_binary(values):
        return max(values[:k])
    failures = sum(1 for value in values if not value)
    if failures < k:
        return 1.0
    return 1.0 - math.comb(failures, k) / math.comb(len(values), k)


def _majority_at_k(answers: list[Any], scores: list[float | None]) -> float:
    """Score of the most frequent (answer, score) pair among rollouts that gave an answer; ties
    are averaged. 0 when no rollout answered."""
    votes = Counter(
        (answer, score) for answer, score in zip(answers, scores) if answer is not None and score is not None
    )
    if not votes:
        return 0.0
    top = max(votes.values())
    winners = [score for (_, score), count in votes.items() if count == top]
    return sum(winners) / len(winners)


def compute_pass_majority_metrics(
    tasks: list[list[dict[str, Any]]],
    score_fn: ScoreFn | None = None,
    answer_key: str | None = None,
) -> tuple[dict[str, Any], list[list[dict[str, float]]], list[str], int]:
    """pass@k, pass@1[avg-of-k], majority@k (with `answer_key`) and run-to-run spread, per score.

    `score_fn(row)` names the scores of one rollout (default `{"accuracy": row["reward"]}`; booleans
    count as 0/1). With `answer_key`, a `no_answer` score (1 when the row's answer is None) is added
    and majority@k votes over the answers. Returns `(metrics, score dicts per task, score names,
    largest k)`; `metrics["per_sample_aggregate"][name]` is the pass@1 of each rollout index.
    """
    if not tasks:
        return {}, [], [], 0
    scorer = score_fn or _default_scores
    largest_k = max(len(rollouts) for rollouts in tasks)

    task_scores: list[list[dict[str, float]]] = []
    task_answers: list[list[Any]] = []
    for rollouts in tasks:
        scores_of_task, answers_of_task = [], []
        for row in rollouts:
            scores = {name: int(value) if isinstance(value, bool) else value for name, value in scorer(row).items()}
            if answer_key is not None:
                answer = row.get(answer_key)
                answers_of_task.append(answer)
                scores["no_answer"] = 1 if answer is None else 0
            scores_of_task.append(scores)
        task_scores.append(scores_of_task)
        task_answers.append(answers_of_task)
    names = sorted({name for scores_of_task in task_scores for scores in scores_of_task for name in scores})

    metrics: dict[str, Any] = {}
    for k in range(1, largest_k + 1):
        for name in names:
            passes, averages, majorities = [], [], []
            for scores_of_task, answers_of_task in zip(task_scores, task_answers):
                values = [scores[name] for scores in scores_of_task if name in scores]
                if values and k <= len(values):
                    passes.append(_pass_at_k(values, k))
                first_k = [scores[name] for scores in scores_of_task[:k] if name in scores]
                if first_k:
                    averages.append(sum(first_k) / len(first_k))
                if answer_key is not None:
                    majorities.append(
                        _majority_at_k(answers_of_task[:k], [scores.get(name) for scores in scores_of_task[:k]])
                    )
            if passes:
                metrics[f"pass@{k}/{name}"] = 100.0 * _mean(passes)
            if averages:
                metrics[f"pass@1[avg-of-{k}]/{name}"] = 100.0 * _mean(averages)
            if majorities:
                metrics[f"majority@{k}/{name}"] = 100.0 * _mean(majorities)

    per_run: dict[str, list[float]] = {}
    for run in range(largest_k):
        for name in names:
            run_values = [
                scores_of_task[run][name]
                for scores_of_task in task_scores
                if run < len(scores_of_task) and name in scores_of_task[run]
            ]
            if run_values:
                per_run.setdefault(name, []).append(100.0 * _mean(run_values))
    metrics["per_sample_aggregate"] = per_run

    for k in range(2, largest_k + 1):
        for name in names:
            runs = per_run.get(name, [])[:k]
            if len(runs) >= 2:
                spread = _sample_std(runs)
                metrics[f"pass@1[avg-of-{k}]/{name}/std_dev_across_runs"] = spread
                metrics[f"pass@1[avg-of-{k}]/{name}/std_err_across_runs"] = spread / math.sqrt(len(runs))
    return metrics, task_scores, names, largest_k


def add_avg_sample_std_dev(
    metrics: dict[str, Any], all_score_dicts: list[list[dict[str, float]]], score_names: list[str], max_k: int
) -> None:
    """Add `pass@1[avg-of-k]/<name>/avg_sample_std_dev`: the mean over tasks of the spread of a
    task's first k rollouts (the within-task variance). Changes `metrics` in place."""
    for k in range(2, max_k + 1):
        for name in score_names:
            spreads = [
                _sample_std(values)
                for scores_of_task in all_score_dicts
                if len(values := [scores[name] for scores in scores_of_task[:k] if name in scores]) >= 2
            ]
            if spreads:
                metrics[f"pass@1[avg-of-{k}]/{name}/avg_sample_std_dev"] = _mean(spreads)


def compute_subset_metrics(
    tasks: list[list[dict[str, Any]]],
    subset_key: str,
    score_fn: ScoreFn | None = None,
    answer_key: str | None = None,
) -> dict[str, Any]:
    """`compute_pass_majority_metrics` per value of the field `subset_key` (read from a task's first
    rollout; tasks without a value are left out), keys prefixed `<value>/`."""
    subsets: dict[Any, list[list[dict[str, Any]]]] = {}
    for rollouts in tasks:
        value = rollouts[0].get(subset_key) if rollouts else None
        if value:
            subsets.setdefault(value, []).append(rollouts)
    metrics: dict[str, Any] = {}
    for value, subset in subsets.items():
        subset_metrics = compute_pass_majority_metrics(subset, score_fn=score_fn, answer_key=answer_key)[0]
        metrics.update(
            {f"{value}/{key}": item for key, item in subset_metrics.items() if key != "per_sample_aggregate"}
        )
    return metrics


def highest_k_metrics(
    agent_metrics: dict[str, Any],
    pattern: str,
    score_names: list[str] | None = None,
    exclude_names: list[str] | None = None,
) -> dict[str, Any]:
    """The entries `<pattern with {k}>/<score name>` at the largest k present, spread statistics left
    out; `score_names` keeps only those names, `exclude_names` drops some.

    `highest_k_metrics(m, "pass@{k}", score_names=["accuracy"])` -> `{"pass@32/accuracy": 95.0}`.
    """
    matcher = re.compile("^" + re.escape(pattern).replace(re.escape("{k}"), r"(\d+)") + "/(.+)$")
    found: list[tuple[int, str]] = []
    for key in agent_metrics:
        match = matcher.match(key)
        if match is None:
            continue
        name = match.group(2)
        if name.endswith(_SPREAD_SUFFIXES):
            continue
        if score_names is not None and name not in score_names:
            continue
        if exclude_names is not None and name in exclude_names:
            continue
        found.append((int(match.group(1)), key))
    if not found:
        return {}
    top = max(k for k, _ in found)
    return {key: agent_metrics[key] for k, key in found if k == top}


class AggregateMetricsMixin:
    """The `compute_metrics` / `get_key_metrics` hooks of `/aggregate_metrics`, with their defaults
    (our resources servers already have them; this is for a class of one's own)."""

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        return {}

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        return default_key_metrics(agent_metrics)


__all__ = [
    "AggregateMetricsMixin",
    "compute_aggregate_metrics",
    "add_avg_sample_std_dev",
    "compute_pass_majority_metrics",
    "compute_subset_metrics",
    "highest_k_metrics",
]
