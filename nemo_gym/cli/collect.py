"""`ng_collect_rollouts`: stream JSONL tasks through an agent and write one scored rollout per line.

A thin shell over `nemo_gym.rollouts.FileCollection` (which owns the lock, the job identity, resume,
the side files and the metrics): it reads the parameters, takes the output, optionally starts the
servers (`+config_paths=[...]` with nothing running: the one-command main job), runs the collection
with a progress bar, and prints the metrics.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from nemo_gym.aio import raise_open_file_limit, run_async
from nemo_gym.cli.head_probe import probe_head, stack_to_use
from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.cli.stacks import RAY_ADDRESS_HELP
from nemo_gym.config import GlobalConfig, load_global_config, secret_values
from nemo_gym.errors import ConfigError, InputDataError, ServerGoneError, ServerUnreachableError, UnknownServerError
from nemo_gym.prompt_templates import PromptTemplate
from nemo_gym.rollouts.collector import AGENT_SERVER_TYPE, CollectionPolicy
from nemo_gym.rollouts.file_collection import CollectionReport, CollectionSpec, FileCollection, OpenedOutput
from nemo_gym.rollouts.metrics import format_key_metrics
from nemo_gym.rollouts.progress import RolloutProgress
from nemo_gym.rollouts.store import OutputMode
from nemo_gym.rollouts.task_plan import TaskPlan, no_entry_error, repeats_for_agent
from nemo_gym.rollouts.tasks import TASK_INDEX_FIELD, scan_tasks

DEFAULT_PARALLEL = 256


PositiveCount = Annotated[int, Field(ge=1)]
_POSITIVE_COUNT: TypeAdapter[int] = TypeAdapter(PositiveCount)


class CollectRolloutsConfig(BaseModel):
    """Run every task of an input JSONL through an agent (the one its agent_ref names, else +agent_name),
    num_repeats times each, and write one scored rollout per line to the output JSONL, as each
    finishes. Needs running servers (ng_run), or pass +config_paths=[...] to start them for the
    duration of the collection."""

    agent_name: str | None = Field(
        None,
        description="Agent for rows without an agent_ref; a row's own agent_ref wins, as in NeMo Gym "
        "(null = every row must name its agent).",
    )
    input_jsonl_fpath: str | None = Field(
        description="Tasks, one JSON object per line (required unless +split collates them)."
    )
    output_jsonl_fpath: str = Field(description="Where scored rollouts are written.")
    limit: int | None = Field(None, ge=0, description="Use only the first N tasks (null or 0 = all).")
    num_repeats: PositiveCount | dict[str, PositiveCount] | None = Field(
        None,
        description="Rollouts per task (null = 1): one number, or NeMo Gym's per-agent mapping {agent: n, _default: n} "
        "(each task gets its agent's count).",
    )
    num_samples_in_parallel: int | None = Field(
        None, ge=1, description=f"Rollouts in flight at once (null = {DEFAULT_PARALLEL})."
    )
    responses_create_params: dict[str, Any] = Field(
        default_factory=dict, description="Overrides merged into every task's responses_create_params."
    )
    resume: bool = Field(False, description="Finish an interrupted run: only missing (task, rollout) pairs run.")
    resume_from_cache: bool = Field(
        False, description="NeMo Gym's name for +resume=true (an output that does not exist yet is simply started)."
    )
    num_repeats_add_seed: bool = Field(
        False,
        description='Each rollout sends "seed": <its rollout index> in responses_create_params.metadata.extra_body '
        "(vllm_model passes it to vLLM), as NeMo Gym does.",
    )
    disable_aggregation: bool = Field(
        False,
        description="Write no aggregate metrics file and print no metrics (for shards aggregated afterwards); "
        "rows, failures, quality report and groups are written as usual.",
    )
    prompt_config: str | None = Field(
        None,
        description="YAML prompt file (user, optional system: str.format templates of the row's fields) that builds "
        "each row's responses_create_params.input; rows must not have an input of their own.",
    )
    upload_rollouts: bool = Field(
        True, description="NeMo Gym's upload to configured exporters; there are none here, so it does nothing."
    )
    upload_rollouts_to_wandb: bool | None = Field(
        None, description="NeMo Gym's deprecated name of +upload_rollouts; accepted, and likewise does nothing."
    )
    rollout_collection_driver: str | None = Field(
        None, description="NeMo Gym's custom collection function; not supported here (setting it is an error)."
    )
    skills: dict[str, Any] | None = Field(
        None, description="NeMo Gym's run-level Agent Skills; not supported here (setting it is an error)."
    )
    split: Literal["train", "validation", "benchmark"] | None = Field(
        None,
        description="NeMo Gym's `gym eval run --split`: collate the config's data sets (ng_prepare_data, "
        "train_preparation) into <output without .jsonl>/preprocessed_datasets/ and collect on <split>.jsonl "
        "(rows carry their agent_ref); instead of +input_jsonl_fpath.",
    )
    reuse_existing_data_preparation: bool = Field(
        False, description="With +split: use the collated <split>.jsonl of an earlier run when it exists."
    )
    overwrite: bool = Field(False, description="Replace an existing output file.")
    max_attempts: int = Field(3, ge=1, description="Attempts per rollout before it is written to the failures file.")
    rollout_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Deadline for one rollout attempt, end to end (from when it is sent to its agent: "
        "not the wait for a free connection when more are in flight than one agent server takes at once).",
    )
    config_paths: list[str] | None = Field(None, description="Start these servers if none are running.")
    no_serve: bool = Field(
        False,
        description="Never start servers, even with +config_paths: use the running ones (gym eval run --no-serve).",
    )
    startup_timeout_s: float = Field(
        60.0, gt=0, description="Seconds servers get to become healthy (with config_paths)."
    )
    ray_address: str | None = Field(None, description=f"With config_paths: {RAY_ADDRESS_HELP}")
    colocate: bool = Field(
        False,
        description="Run the agent and resources servers of config_paths inside this process and call them in "
        "memory (no HTTP between them); model servers stay remote. One machine, trusted environments.",
    )
    colocate_workers: int = Field(
        1, ge=1, description="With +colocate=true: worker processes, each a co-located stack (1 = this process)."
    )

    @model_validator(mode="before")
    @classmethod
    def _split_names_the_input(cls, values: Any) -> Any:
        """With +split the tasks are collated from the config (see `input_of`), so no input file is
        required; without it a missing +input_jsonl_fpath is listed with the other missing parameters."""
        if isinstance(values, dict) and values.get("split") is not None:
            return {"input_jsonl_fpath": None} | values
        return values

    @field_validator("num_repeats", mode="before")
    @classmethod
    def _count_or_mapping(cls, value: Any) -> Any:
        # Checked here, so that a mistake reads as one sentence, not as one error per member of the union.
        if value is None:
            return None
        if isinstance(value, Mapping):
            counts = {}
            for agent, count in value.items():
                try:
                    counts[str(agent)] = _POSITIVE_COUNT.validate_python(count)
                except ValidationError:
                    raise PydanticCustomError(
                        "num_repeats",
                        "the count for agent {agent} must be a whole number >= 1, not {count}",
                        {"agent": str(agent), "count": repr(count)},
                    ) from None
            return counts
        try:
            return _POSITIVE_COUNT.validate_python(value)
        except ValidationError:
            raise PydanticCustomError(
                "num_repeats",
                "must be a whole number >= 1, or NeMo Gym's per-agent mapping {form}",
                {"form": "{agent: n, _default: n}"},
            ) from None


def per_agent_repeats(mapping: dict[str, int], agents: frozenset[str]) -> dict[str, int]:
    """Each agent the tasks go to with the rollouts NeMo Gym's per-agent `num_repeats` gives it per copy of a
    task (its own entry, else `_default`). Raises ConfigError naming the agents it has no entry for."""
    missing = {agent for agent in agents if repeats_for_agent(mapping, agent) is None}
    if missing:
        raise no_entry_error(mapping, missing)
    return {agent: repeats_for_agent(mapping, agent) or 1 for agent in sorted(agents)}


def collect(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: CollectRolloutsConfig = read_command_config(CollectRolloutsConfig, config, "ng_collect_rollouts")
    for unsupported in ("rollout_collection_driver", "skills"):
        if getattr(params, unsupported) is not None:
            raise ConfigError(f"+{unsupported} (a NeMo Gym parameter) is not supported by this toolkit; remove it")
    resume = params.resume or params.resume_from_cache
    if resume and params.overwrite:
        which = "+resume=true" if params.resume else "+resume_from_cache=true"
        raise ConfigError(f"{which} and +overwrite=true contradict each other; pick one")
    mode: OutputMode = "resume" if resume else "overwrite" if params.overwrite else "new"
    if params.colocate or params.colocate_workers > 1:
        check_colocation(params, config)
    input_path, split_repeats = input_of(params, config)
    spec = CollectionSpec(
        agent_name=params.agent_name,
        input_jsonl_fpath=str(input_path),
        limit=params.limit,
        num_repeats=split_repeats,
        responses_create_params=params.responses_create_params,
        num_repeats_add_seed=params.num_repeats_add_seed,
        prompt_config=params.prompt_config,
    )
    repeats = params.num_repeats
    if isinstance(repeats, dict):
        counts = per_agent_repeats(repeats, tasks_agents(spec))
        spec = spec.model_copy(update={"num_repeats_per_agent": {a: n * split_repeats for a, n in counts.items()}})
    else:
        spec = spec.model_copy(update={"num_repeats": (repeats or 1) * split_repeats})
    collection = FileCollection(
        spec,
        params.output_jsonl_fpath,
        mode,
        secret_values=_secrets(config),
        aggregate=not params.disable_aggregation,
    )

    if params.no_serve:  # the servers running at the head address, whichever they are: the user's choice
        running = probe_head(config.head_url)
    else:
        # Co-located, only the model servers of a running stack are used: its own note says so.
        config, running = stack_to_use(config, argv, (lambda _: None) if params.colocate else _note)
    head_url = config.head_url
    if running is None and config.instances and not params.no_serve:
        # Servers will be started for this run: a mistyped agent costs one line, not their start-up
        # (nor an output file and job record that a corrected command would then find in its way).
        check_agents_configured(config, tasks_agents(spec))

    with ExitStack() as cleanup:
        # Taken before any server starts: a second collector on the same file is turned away at once.
        opened = collection.open()
        cleanup.callback(collection.close)
        _say_what_was_found(collection, opened)
        if running is not None and params.colocate:
            _note(
                f"Servers are already running at {head_url}; using their model servers, with the configured agent "
                f"and resources servers in this process."
            )
        if running is None:
            if params.no_serve:
                raise ServerUnreachableError(
                    f"cannot reach the head server at {head_url} and +no_serve=true (--no-serve) forbids starting "
                    f"the configured servers: start them with ng_run (gym env start) first"
                )
            if not config.instances:
                raise ServerUnreachableError(
                    f"cannot reach the head server at {head_url}: start the servers with ng_run, "
                    f"or pass +config_paths=[...] to start them for this collection"
                )
            from nemo_gym.cli.stacks import new_stack
            from nemo_gym.launcher import LaunchOptions, Stack  # only the one-command mode needs the launcher

            options = LaunchOptions(startup_timeout_s=params.startup_timeout_s)
            stack: Stack
            if params.colocate:
                from nemo_gym.colocated_remote import RemoteStack

                stack = RemoteStack(config, options)
            else:
                stack = new_stack(config, options, params.ray_address)
            stack.check_ports()  # a busy port is the one line the user sees, not after a "Starting" note
            _note(f"Starting {stack.server_count} servers for this collection...")
            stack.start()
            cleanup.callback(stack.stop)
            _note(f"Servers up in {stack.startup_s:.1f} s.")
        policy = CollectionPolicy(
            concurrency=params.num_samples_in_parallel or DEFAULT_PARALLEL,
            max_attempts=params.max_attempts,
            rollout_timeout_s=params.rollout_timeout_s,
        )
        raise_open_file_limit()
        progress = RolloutProgress(concurrency=policy.concurrency)
        try:
            if params.colocate_workers > 1:
                from nemo_gym.colocated_workers import ColocatedWorkers

                workers = ColocatedWorkers(config, argv, head_url, params.colocate_workers, params.startup_timeout_s)
                _note(f"Starting {params.colocate_workers} co-located workers...")
                workers.start()
                cleanup.callback(workers.stop)
                report = run_async(_run_with_workers(collection, head_url, workers.rows(), policy, progress))
            elif params.colocate:
                report = run_async(_run_colocated(collection, config, head_url, policy, progress))
            else:
                report = run_async(collection.run(head_url, policy, progress))
        except KeyboardInterrupt:
            _note(
                f"Interrupted. Rows written so far are kept in {collection.output_path}; finish the run with the "
                f"same command plus +resume=true."
            )
            return 130  # that line is the whole story: no second "interrupted" line from run_command
        except ServerGoneError as error:
            raise ServerGoneError(
                f"{error}. Rows written so far are kept in {collection.output_path}; once the servers are back, "
                f"finish the run with the same command plus +resume=true",
                server=error.server,
            ) from None
    return _summarize(report, aggregated=not params.disable_aggregation)


def input_of(params: CollectRolloutsConfig, config: GlobalConfig) -> tuple[Path, int]:
    """The tasks file and the rollouts each of its tasks owes per `+num_repeats`: +input_jsonl_fpath (1),
    or with +split the config's data sets of that type collated beside the output, each row once, and
    their `num_repeats` (see `split_repeats`: NeMo Gym's copies of a row are one task's rollouts)."""
    if params.split is None:
        assert params.input_jsonl_fpath is not None  # the model requires one of them
        return Path(params.input_jsonl_fpath), 1
    if params.input_jsonl_fpath is not None:
        raise ConfigError(
            f"+split={params.split} and +input_jsonl_fpath both name the tasks: give one "
            f"(+split collates the config's {params.split} data sets)"
        )
    from nemo_gym.data_preparation import prepare_data, split_repeats

    repeats = split_repeats(config, params.split)
    each = f", each run {repeats} times as its data sets' num_repeats say" if repeats > 1 else ""
    folder = Path(params.output_jsonl_fpath).with_suffix("") / "preprocessed_datasets"
    collated = folder / f"{params.split}.jsonl"
    if params.reuse_existing_data_preparation and collated.is_file():
        _note(f"Using the collated {collated} of an earlier run (+reuse_existing_data_preparation=true){each}.")
        return collated, repeats
    report = prepare_data(config, "train_preparation", folder, say=_note, repeat_rows=False)
    if params.split not in report.collated:
        have = ", ".join(sorted(report.collated)) or "none"
        raise InputDataError(
            f"+split={params.split}: no agent in the config has a {params.split} data set (collated: {have})"
        )
    _note(f"Collecting on {collated} ({report.rows[params.split]} tasks{each}).")
    return collated, repeats


def check_colocation(params: CollectRolloutsConfig, config: GlobalConfig) -> None:
    """One line (exit 2) for a combination co-located collection cannot run."""
    if not params.colocate:
        raise ConfigError("+colocate_workers needs +colocate=true (workers are co-located stacks)")
    if params.ray_address is not None:
        raise ConfigError(
            "+colocate=true runs the agent and resources servers inside this process; it cannot place them on a "
            "Ray cluster (+ray_address): drop one of the two"
        )
    if not any(i.server_type in ("resources_servers", "responses_api_agents") for i in config.instances):
        raise ConfigError(
            "+colocate=true needs +config_paths=[...] naming the agent and resources servers to run in this process"
        )


async def _run_colocated(
    collection: FileCollection, config: GlobalConfig, head_url: str, policy: CollectionPolicy, progress: Any
) -> CollectionReport:
    from nemo_gym.colocated import ColocatedStack, collection_gc

    async with ColocatedStack(config, head_url) as stack:
        assert collection.opened is not None
        async with stack.collector(collection.spec.agent_name, policy) as collector:
            await collector.check_agents(collection.opened.agents)
            with collection_gc(policy.concurrency):
                return await collection.run(collector, policy, progress)


async def _run_with_workers(
    collection: FileCollection, head_url: str, rows: list[Any], policy: CollectionPolicy, progress: Any
) -> CollectionReport:
    from nemo_gym.client import HttpClient, ServerClient
    from nemo_gym.rollouts.collector import RolloutCollector

    client = ServerClient(head_url)
    client.pin_servers(HttpClient(), rows)  # each agent: one replica per worker
    assert collection.opened is not None
    async with RolloutCollector(client, collection.spec.agent_name, policy) as collector:
        await collector.check_agents(collection.opened.agents)
        return await collection.run(collector, policy, progress)


def tasks_agents(spec: CollectionSpec) -> frozenset[str]:
    """The agents the job's tasks go to (each row's `agent_ref`, else +agent_name), from a pass over the input."""
    prompt = PromptTemplate.load(spec.prompt_config)[0] if spec.prompt_config is not None else None
    return scan_tasks(spec.input_jsonl_fpath, spec.limit, route_to=spec.agent_name, routed=True, prompt=prompt).agents


def check_agents_configured(config: GlobalConfig, agents: frozenset[str]) -> None:
    """Raise UnknownServerError, before anything starts, for an agent the tasks go to that the merged
    config does not define (the same line `check_agents` gives against running servers)."""
    configured = sorted(i.name for i in config.instances if i.server_type == AGENT_SERVER_TYPE)
    for name in sorted(agents):
        if name not in configured:
            close = difflib.get_close_matches(name, configured, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownServerError(
                f"unknown agent {name!r}: the config defines the agents {', '.join(configured) or 'none'}.{hint}"
            )


def _secrets(config: GlobalConfig) -> set[str]:
    """Values to scrub from failure messages: the config's keys and secret-looking environment variables."""
    found = secret_values(dict(os.environ))
    try:
        found |= secret_values(config.to_container(resolve=True))
    except Exception:  # an unresolvable value elsewhere in the config must not stop a collection  # noqa: BLE001
        found |= secret_values(config.to_container(resolve=False))
    return found


def _say_what_was_found(collection: FileCollection, opened: OpenedOutput) -> None:
    if opened.repaired_bytes:
        _note(f"Repaired a torn last line in {collection.output_path} ({opened.repaired_bytes} bytes dropped).")
    if opened.job_record_was_missing:
        _note(
            f"{collection.output_path} has no job record (written by an older version); "
            f"recorded this job as its owner in {collection.job_path}."
        )
    if opened.done:
        _note(f"Resuming: {len(opened.done)} rollouts already in {collection.output_path}.")
    if opened.terminal:
        _note(
            f"{len(opened.terminal)} rollout(s) in {collection.store.failures_path} were marked terminal by their "
            "agent (_ng_failure_terminal): not run again."
        )
    source = collection.spec.input_jsonl_fpath
    if TASK_INDEX_FIELD in opened.task_fields:
        _note(
            f"Rows of {source} carry their own {TASK_INDEX_FIELD}, which NeMo Gym keeps; here tasks are numbered by "
            f"their place in the file (0..{opened.num_tasks - 1}), and the rows are written with those numbers."
        )
    plan = opened.plan
    if plan.folds:
        runs = f"{plan.copies} times" if plan.copies else "more than once (runs of different lengths)"
        _note(
            f"{opened.repeated_lines} line(s) of {source} repeat the line before them; lines are written {runs} in "
            f"a row (NeMo Gym's collated data): as in NeMo Gym, each run of identical lines is one task and its "
            f"copies are that task's rollouts: {plan.num_tasks} task(s), {_group_sizes(plan)} (one group each). "
            "Identical lines apart from each other stay tasks of their own (NeMo Gym would give them one task)."
        )
    elif plan.sizes_vary:
        _note(f"+num_repeats per agent: {plan.num_tasks} task(s), {_group_sizes(plan)} (one group each).")


def _group_sizes(plan: TaskPlan) -> str:
    if not plan.sizes_vary:
        return f"{plan.group_size} rollouts each"
    return f"{plan.smallest_group} to {max(plan.sizes or [0])} rollouts each, {plan.rollouts} in all"


def _summarize(report: CollectionReport, aggregated: bool = True) -> int:
    # Imported after the last rollout, with the modules that wrote these reports (not before the first).
    from nemo_gym.rollouts.aggregate_metrics import format_environment_key_metrics
    from nemo_gym.rollouts.quality import format_quality_summary

    if aggregated:
        print(format_key_metrics(report.metrics), flush=True)
        print(f"Rows: {report.output_path}  Metrics: {report.metrics_path}", flush=True)
    else:
        print(f"Rows: {report.output_path}  (no metrics: +disable_aggregation=true)", flush=True)
    aggregate = report.aggregate
    if aggregate is not None:
        for agent, key_metrics in aggregate.key_metrics.items():
            print(f"Key metrics for {agent}: {format_environment_key_metrics(key_metrics)}", flush=True)
        if aggregate.path is not None:
            print(f"Aggregate metrics: {aggregate.path}", flush=True)
        for error in aggregate.errors:
            _note(error)
    if report.quality is not None:
        _note(format_quality_summary(report.quality, report.quality_path))
    if report.failed_this_run or report.missing:
        _note(
            f"{report.failed_this_run} rollouts failed in this run and {report.missing} (task, rollout) pairs have "
            f"no row; see {report.failures_path}. Re-run with +resume=true to retry them."
        )
        return 1
    return 0


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    run_command("ng_collect_rollouts", collect, CollectRolloutsConfig, argv)


if __name__ == "__main__":
    main()
