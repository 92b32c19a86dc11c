"""The collection engine: streaming input, bounded concurrency, resume, failures, metrics.

The Python API an RL trainer calls in-process::

    from nemo_gym.rollouts import CollectionPolicy, RolloutCollector, jobs_from_rows

    async with RolloutCollector.connect("http://127.0.0.1:11000", "my_env_simple_agent",
                                        CollectionPolicy(concurrency=64)) as collector:
        async for outcome in collector.stream(jobs_from_rows(rows, num_repeats=4)):
            if outcome.ok:
                batch.append(outcome.row)   # scored row: responses_create_params, response, reward, ...
"""

from nemo_gym.rollouts.collector import CollectionPolicy, RolloutCollector, RolloutFailure, RolloutOutcome
from nemo_gym.rollouts.metrics import RunningStats, aggregate_rollouts, format_key_metrics, pass_at_k
from nemo_gym.rollouts.store import RolloutStore
from nemo_gym.rollouts.tasks import RolloutJob, expand_jobs, iter_tasks, jobs_from_rows

__all__ = [
    "CollectionPolicy",
    "RolloutCollector",
    "RolloutFailure",
    "RolloutJob",
    "RolloutOutcome",
    "RolloutStore",
    "RunningStats",
    "aggregate_rollouts",
    "expand_jobs",
    "format_key_metrics",
    "iter_tasks",
    "jobs_from_rows",
    "pass_at_k",
]
