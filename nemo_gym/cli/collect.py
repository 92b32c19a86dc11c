"""`ng_collect_rollouts`: stream JSONL tasks through an agent and write one scored rollout per line.

A thin shell over `nemo_gym.rollouts`: it validates the input, opens the output files, optionally
starts the servers (`+config_paths=[...]` with nothing running: the one-command main job), runs
the collector with a progress bar, and prints the aggregate metrics computed from the output file.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from pydantic import BaseModel, Field
from tqdm import tqdm

from nemo_gym.aio import raise_open_file_limit, run_async
from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import GlobalConfig, load_global_config
from nemo_gym.errors import ConfigError, OutputExistsError, ServerUnreachableError
from nemo_gym.rollouts.collector import CollectionPolicy, RolloutCollector
from nemo_gym.rollouts.metrics import RunningStats, aggregate_rollouts, format_key_metrics
from nemo_gym.rollouts.store import RolloutStore, iter_rows
from nemo_gym.rollouts.tasks import RolloutJob, count_tasks, expand_jobs, iter_tasks

DEFAULT_PARALLEL = 256


class CollectRolloutsConfig(BaseModel):
    """Run every task of an input JSONL through an agent (num_repeats times each) and write one scored
    rollout per line to the output JSONL, as each finishes. Needs running servers (ng_run), or pass
    +config_paths=[...] to start them for the duration of the collection."""

    agent_name: str = Field(description="Agent server instance that runs the rollouts.")
    input_jsonl_fpath: str = Field(description="Tasks, one JSON object per line.")
    output_jsonl_fpath: str = Field(description="Where scored rollouts are written.")
    limit: int | None = Field(None, ge=0, description="Use only the first N tasks (null or 0 = all).")
    num_repeats: int | None = Field(None, ge=1, description="Rollouts per task (null = 1).")
    num_samples_in_parallel: int | None = Field(
        None, ge=1, description=f"Rollouts in flight at once (null = {DEFAULT_PARALLEL}).")
    responses_create_params: dict[str, Any] = Field(
        default_factory=dict, description="Overrides merged into every task's responses_create_params.")
    resume: bool = Field(False, description="Finish an interrupted run: only missing (task, rollout) pairs run.")
    overwrite: bool = Field(False, description="Replace an existing output file.")
    max_attempts: int = Field(3, ge=1, description="Attempts per rollout before it is written to the failures file.")
    rollout_timeout_s: float | None = Field(None, gt=0, description="Deadline for one rollout attempt, end to end.")
    config_paths: list[str] | None = Field(None, description="Start these servers if none are running.")
    startup_timeout_s: float = Field(60.0, gt=0, description="Seconds servers get to become healthy (with config_paths).")


def head_is_up(head_url: str) -> bool:
    # urllib, not httpx: this probe runs once, and importing httpx cost ~15% of the CLI's start-up.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{head_url}/health", timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def collect(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: CollectRolloutsConfig = read_command_config(CollectRolloutsConfig, config, "ng_collect_rollouts")
    if params.resume and params.overwrite:
        raise ConfigError("+resume=true and +overwrite=true contradict each other; pick one")
    mode = "resume" if params.resume else "overwrite" if params.overwrite else "new"
    store = RolloutStore(params.output_jsonl_fpath, mode)
    if mode == "new" and store.path.exists() and store.path.stat().st_size > 0:
        raise OutputExistsError(f"{store.path} already exists; pass +resume=true to finish it or +overwrite=true to replace it")

    # Validate every task line before anything starts, so a typo on line 90,000 is not found at hour 3.
    num_tasks = count_tasks(params.input_jsonl_fpath, params.limit)
    num_repeats = params.num_repeats or 1

    with ExitStack() as cleanup:
        head_url = config.head_url
        running = head_is_up(head_url)
        if running and config.instances:
            print(f"Servers are already running at {head_url}; using them instead of starting the configured ones.",
                  file=sys.stderr, flush=True)
        elif not running:
            if not config.instances:
                raise ServerUnreachableError(
                    f"cannot reach the head server at {head_url}: start the servers with ng_run, "
                    f"or pass +config_paths=[...] to start them for this collection"
                )
            from nemo_gym.launcher import LaunchOptions, Stack  # only the one-command mode needs it

            print(f"Starting {len(config.instances)} servers for this collection...", file=sys.stderr, flush=True)
            stack = Stack(config, LaunchOptions(startup_timeout_s=params.startup_timeout_s))
            stack.start()
            cleanup.callback(stack.stop)
            print(f"Servers up in {stack.startup_s:.1f} s.", file=sys.stderr, flush=True)
        try:
            return run_async(_collect(params, config, store, num_tasks, num_repeats))
        except KeyboardInterrupt:
            print(f"Interrupted. Rows written so far are kept in {store.path}; finish the run with the same "
                  f"command plus +resume=true.", file=sys.stderr, flush=True)
            raise


async def _collect(params: CollectRolloutsConfig, config: GlobalConfig, store: RolloutStore,
                   num_tasks: int, num_repeats: int) -> int:
    policy = CollectionPolicy(
        concurrency=params.num_samples_in_parallel or DEFAULT_PARALLEL,
        max_attempts=params.max_attempts,
        rollout_timeout_s=params.rollout_timeout_s,
    )
    raise_open_file_limit()
    started = time.monotonic()
    async with RolloutCollector.connect(config.head_url, params.agent_name, policy) as collector:
        done = store.open()
        try:
            if store.repaired_bytes:
                print(f"Repaired a torn last line in {store.path} ({store.repaired_bytes} bytes dropped).",
                      file=sys.stderr, flush=True)
            if done:
                print(f"Resuming: {len(done)} rollouts already in {store.path}.", file=sys.stderr, flush=True)
            jobs = expand_jobs(iter_tasks(params.input_jsonl_fpath, params.limit), num_repeats=num_repeats,
                               overrides=params.responses_create_params, skip=done)
            todo = num_tasks * num_repeats - sum(1 for task, rollout in done if task < num_tasks and rollout < num_repeats)
            failures = await _run(collector, _materialize(jobs, store), store, todo)
        finally:
            store.close()
    wall_time = time.monotonic() - started

    rows_in_file = sum(1 for _ in iter_rows(store.path))
    missing = max(0, num_tasks * num_repeats - rows_in_file)
    metrics = aggregate_rollouts(iter_rows(store.path), num_repeats=num_repeats, failures=missing, wall_time_s=wall_time)
    store.write_metrics(metrics)
    print(format_key_metrics(metrics), flush=True)
    print(f"Rows: {store.path}  Metrics: {store.metrics_path}", flush=True)
    if failures or missing:
        print(f"{failures} rollouts failed in this run and {missing} (task, rollout) pairs have no row; "
              f"see {store.failures_path}. Re-run with +resume=true to retry them.", file=sys.stderr, flush=True)
        return 1
    return 0


def _materialize(jobs: Iterator[RolloutJob], store: RolloutStore) -> Iterator[RolloutJob]:
    for job in jobs:
        store.write_materialized(job.row | {"_ng_task_index": job.task_index, "_ng_rollout_index": job.rollout_index})
        yield job


async def _run(collector: RolloutCollector, jobs: Iterator[RolloutJob], store: RolloutStore, total: int) -> int:
    failures = 0
    reward = RunningStats()
    with tqdm(total=total, desc="Collecting rollouts", file=sys.stderr, dynamic_ncols=True) as bar:
        async for outcome in collector.stream(jobs):
            if outcome.ok:
                assert outcome.row is not None
                store.write_row(outcome.row)
                reward.add(float(outcome.row["reward"]))
            else:
                failures += 1
                store.write_failure(outcome.failure_record(collector.agent_name))
            bar.set_postfix(failed=failures, reward=f"{reward.mean:.3f}" if reward.count else "-", refresh=False)
            bar.update(1)
    return failures


def main(argv: list[str] | None = None) -> None:
    run_command("ng_collect_rollouts", collect, CollectRolloutsConfig, argv)


if __name__ == "__main__":
    main()
