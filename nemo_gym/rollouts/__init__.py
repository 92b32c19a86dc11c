"""The collection engine: streaming input, bounded concurrency, resume, failures, metrics, GRPO groups.

Durable collection into a file (what `ng_collect_rollouts` calls: lock, job identity, resume, side files)::

    from nemo_gym.rollouts import CollectionSpec, collect_to_file

    report = await collect_to_file("http://127.0.0.1:11000", CollectionSpec(agent_name="my_env_simple_agent",
                                   input_jsonl_fpath="tasks.jsonl", num_repeats=4), "results/run.jsonl", mode="resume")

Rows in memory, for an RL trainer calling in-process::

    from nemo_gym.rollouts import CollectionPolicy, RolloutCollector, jobs_from_rows

    async with RolloutCollector.connect("http://127.0.0.1:11000", "my_env_simple_agent",
                                        CollectionPolicy(concurrency=64)) as collector:
        async for outcome in collector.stream(jobs_from_rows(rows, num_repeats=4)):
            if outcome.ok:
                batch.append(outcome.row)   # scored row: responses_create_params, response, reward, ...

Names are imported on first use (PEP 562): `ng_collect_rollouts` loads the modules its first rollout needs,
and the end-of-run ones (quality report, GRPO groups, the environments' aggregate metrics) after the last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nemo_gym.lazy_names import lazy_names

if TYPE_CHECKING:
    from nemo_gym.rollouts.circuit_breaker import CircuitBreaker
    from nemo_gym.rollouts.collector import CollectionPolicy, RolloutCollector, RolloutFailure, RolloutOutcome
    from nemo_gym.rollouts.file_collection import (
        CollectionProgress,
        CollectionReport,
        CollectionSpec,
        FileCollection,
        OpenedOutput,
        collect_to_file,
    )
    from nemo_gym.rollouts.groups import GroupStatus, GroupSummary, GroupTally, read_groups
    from nemo_gym.rollouts.job_identity import InputFingerprint, JobIdentity
    from nemo_gym.rollouts.metrics import RunningStats, aggregate_rollouts, format_key_metrics, pass_at_k
    from nemo_gym.rollouts.output_lock import OutputLock
    from nemo_gym.rollouts.redaction import SecretRedactor
    from nemo_gym.rollouts.store import RolloutStore, groups_path
    from nemo_gym.rollouts.task_plan import TaskPlan
    from nemo_gym.rollouts.tasks import RolloutJob, TaskScan, expand_jobs, iter_tasks, jobs_from_rows, scan_tasks

_SUBMODULE_OF = {
    "CircuitBreaker": "circuit_breaker",
    **dict.fromkeys(("CollectionPolicy", "RolloutCollector", "RolloutFailure", "RolloutOutcome"), "collector"),
    **dict.fromkeys(
        (
            "CollectionProgress",
            "CollectionReport",
            "CollectionSpec",
            "FileCollection",
            "OpenedOutput",
            "collect_to_file",
        ),
        "file_collection",
    ),
    **dict.fromkeys(("GroupStatus", "GroupSummary", "GroupTally", "read_groups"), "groups"),
    **dict.fromkeys(("InputFingerprint", "JobIdentity"), "job_identity"),
    **dict.fromkeys(("RunningStats", "aggregate_rollouts", "format_key_metrics", "pass_at_k"), "metrics"),
    "OutputLock": "output_lock",
    "SecretRedactor": "redaction",
    **dict.fromkeys(("RolloutStore", "groups_path"), "store"),
    "TaskPlan": "task_plan",
    **dict.fromkeys(("RolloutJob", "TaskScan", "expand_jobs", "iter_tasks", "jobs_from_rows", "scan_tasks"), "tasks"),
}


__getattr__, __dir__ = lazy_names(__name__, _SUBMODULE_OF, globals())

__all__ = [
    "CircuitBreaker",
    "CollectionPolicy",
    "CollectionProgress",
    "CollectionReport",
    "CollectionSpec",
    "FileCollection",
    "GroupStatus",
    "GroupSummary",
    "GroupTally",
    "InputFingerprint",
    "JobIdentity",
    "OpenedOutput",
    "OutputLock",
    "RolloutCollector",
    "RolloutFailure",
    "RolloutJob",
    "RolloutOutcome",
    "RolloutStore",
    "RunningStats",
    "SecretRedactor",
    "TaskPlan",
    "TaskScan",
    "aggregate_rollouts",
    "collect_to_file",
    "expand_jobs",
    "format_key_metrics",
    "groups_path",
    "iter_tasks",
    "jobs_from_rows",
    "pass_at_k",
    "read_groups",
    "scan_tasks",
]
