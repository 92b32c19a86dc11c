"""A durable collection into a JSONL file: the Python API behind `ng_collect_rollouts`.

    report = await collect_to_file(head_url, CollectionSpec(agent_name="my_agent", input_jsonl_fpath="tasks.jsonl",
                                                            num_repeats=4), "results/run.jsonl", mode="resume")

or in two steps, so a caller can do something between taking the output and running (the CLI
starts servers there, after a second collector on the same file has already been turned away):

    with FileCollection(spec, "results/run.jsonl", mode="new") as collection:   # lock, validate, job identity
        report = run_async(collection.run(head_url, CollectionPolicy(concurrency=64)))

What `open()` does, in order: refuse an output (or a side file) that is the input file under any name
(the same path, a symlink, a hard link: writing it would destroy the tasks), lock the output (one writer
per file, whatever name it is reached by; see `output_lock`), refuse an existing output
unless resume/overwrite was asked for, validate and fingerprint the input in one streaming pass,
check (resume) or record (new, overwrite) the job identity, then open the files (`RolloutStore`).
`run()` streams the missing pairs through a `RolloutCollector`, writes each row or failure as it
finishes (secrets scrubbed from failure messages), and ends with `finish()`, which computes the
metrics from the rows file: the one place the end of a collection happens, so end-of-run reports
(metrics, the quality report, the GRPO groups file `<stem>_groups.jsonl`) hook in there. Then, unless
`aggregate=False` (NeMo Gym's `disable_aggregation`), each agent's environment is asked for its own
metrics, written to `<stem>_aggregate_metrics.json` (`nemo_gym.rollouts.aggregate_metrics`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.errors import OutputIsInputError
from nemo_gym.prompt_templates import PromptTemplate
from nemo_gym.rollouts.collector import CollectionPolicy, RolloutCollector, RolloutOutcome
from nemo_gym.rollouts.job_identity import (
    JobIdentity,
    check_same_job,
    job_record_path,
    read_job_record,
    scan_for_resume,
    write_job_record,
)
from nemo_gym.rollouts.metrics import aggregate_rollouts
from nemo_gym.rollouts.output_lock import OutputLock, how_one_file
from nemo_gym.rollouts.redaction import SecretRedactor
from nemo_gym.rollouts.store import (
    OutputMode,
    PairKey,
    RolloutStore,
    aggregate_metrics_path,
    groups_path,
    iter_rows,
    pair_key,
    quality_report_path,
    write_error,
)
from nemo_gym.rollouts.task_plan import TaskPlan
from nemo_gym.rollouts.tasks import RolloutJob, expand_jobs, fold_copies, iter_tasks

if TYPE_CHECKING:  # the end-of-run reports are imported where they are made, after the last rollout
    from nemo_gym.rollouts.aggregate_metrics import AggregateMetricsOutcome
    from nemo_gym.rollouts.groups import GroupSummary
    from nemo_gym.rollouts.quality import QualityReport


class CollectionSpec(BaseModel):
    """What to collect: the parameters that make up the job's identity."""

    model_config = ConfigDict(frozen=True)

    agent_name: str | None = None
    """The agent for rows without an `agent_ref` (NeMo Gym's rule: a row's own `agent_ref` wins);
    None = every row must name its agent."""
    input_jsonl_fpath: str
    limit: int | None = Field(None, ge=0)
    """First N tasks only (None or 0 = all)."""
    num_repeats: int = Field(1, ge=1)
    """Rollouts of each copy of a task (a run of identical consecutive input lines is one task, its group
    its copies x num_repeats)."""
    num_repeats_per_agent: dict[str, int] | None = None
    """NeMo Gym's per-agent mapping `{agent: n, _default: n}`: a task's rollouts per copy are its agent's
    count (its `agent_ref`, else `agent_name`), else `_default`; `num_repeats` is then not read."""
    responses_create_params: dict[str, Any] = Field(default_factory=dict)
    """Overrides merged into every task's responses_create_params."""
    num_repeats_add_seed: bool = False
    """Each rollout sends its rollout index as `seed` in `metadata.extra_body` (NeMo Gym's parameter)."""
    prompt_config: str | None = None
    """A prompt file that builds every row's input from its fields (see `nemo_gym.prompt_templates`)."""


class CollectionProgress(Protocol):
    """Told about each finished rollout; the CLI's progress bar is one."""

    def start(self, total: int, already_done: int) -> None: ...

    def advance(self, outcome: RolloutOutcome) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class CollectionReport:
    """How a collection ended. `missing == 0` means every (task, rollout) pair has a row."""

    output_path: Path
    failures_path: Path
    metrics_path: Path
    metrics: dict[str, Any]
    expected: int
    """(task, rollout) pairs of the job."""
    rows: int
    """Rows in the output file for pairs of the job."""
    resumed_from: int
    """Pairs that were already done when this run started."""
    failed_this_run: int
    wall_time_s: float
    quality: QualityReport | None = None
    """The quality report (`nemo_gym.rollouts.quality`), also written to `quality_path`."""
    quality_path: Path | None = None
    groups: GroupSummary | None = None
    """Complete and incomplete GRPO groups (`nemo_gym.rollouts.groups`); one line per group in `groups_path`."""
    groups_path: Path | None = None
    aggregate: AggregateMetricsOutcome | None = None
    """The environments' `/aggregate_metrics` answers as written to `<stem>_aggregate_metrics.json`;
    None when not asked for (`aggregate=False`)."""

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.rows)

    @property
    def complete(self) -> bool:
        return self.missing == 0


@dataclass(slots=True)
class OpenedOutput:
    """What `open()` found: useful to say before the run starts."""

    num_tasks: int
    done: set[PairKey]
    repaired_bytes: int
    job_record_was_missing: bool
    agents: frozenset[str] = frozenset()
    """The agents the job's rows go to (their `agent_ref`, else `agent_name`)."""
    task_fields: frozenset[str] = frozenset()
    """The tasks' top-level fields: echoed in every row, never an outcome metric."""
    repeated_lines: int = 0
    """Input lines identical to the line before them (see `TaskScan.repeated_lines`)."""
    terminal: frozenset[PairKey] = frozenset()
    """Missing pairs the agent marked terminal (`_ng_failure_terminal`): not run again on resume."""
    plan: TaskPlan = TaskPlan()
    """The job's tasks (runs of identical lines folded; `num_tasks` counts them) and each one's group size."""


class FileCollection:
    """One collection into one output file. `open()` (or `with`), `await run(...)`, `close()`."""

    def __init__(
        self,
        spec: CollectionSpec,
        output_path: str | Path,
        mode: OutputMode = "new",
        *,
        secret_values: Iterable[str] = (),
        aggregate: bool = True,
    ):
        """`aggregate=False` (NeMo Gym's `disable_aggregation`): no aggregate metrics are computed or
        written at the end (neither ours in `<stem>_metrics.json` nor the environment's in
        `<stem>_aggregate_metrics.json`), for shards whose rows are aggregated together afterwards;
        `report.metrics` is then empty. The quality report and the group file are still written."""
        self.spec = spec
        self.aggregate = aggregate
        self.mode = mode
        self.store = RolloutStore(output_path, mode)
        self.lock = OutputLock(self.store.path)
        self.job_path = job_record_path(self.store.path)
        self.redact = SecretRedactor(secret_values)
        self.opened: OpenedOutput | None = None
        self.prompt: PromptTemplate | None = None

    @property
    def output_path(self) -> Path:
        return self.store.path

    def written_files(self) -> list[tuple[str, Path]]:
        """Every file a run writes, with what messages call it: the rows file first (named ""), then the
        side files, the lock, and the temporaries that the atomic writes move into place."""
        store = self.store
        sides = [
            ("failures file", store.failures_path),
            ("materialized inputs file", store.materialized_path),
            ("metrics file", store.metrics_path),
            ("job record", self.job_path),
            ("groups file", groups_path(store.path)),
            ("quality report", quality_report_path(store.path)),
            ("aggregate metrics file", aggregate_metrics_path(store.path)),
        ]
        temporaries = [(f"temporary {what}", path.with_name(path.name + ".tmp")) for what, path in sides]
        return [("", store.path), *sides, ("lock file", self.lock.path), *temporaries]

    def check_input_is_not_written(self) -> None:
        """Raise OutputIsInputError if the run would write the input file, by any name. Touches nothing."""
        source = self.spec.input_jsonl_fpath
        for what, path in self.written_files():
            how = how_one_file(path, source)
            if how is None:
                continue
            via = "" if how == "the same path" else f" ({how})"
            subject = f"the {what} {path} of {self.store.path}" if what else str(self.store.path)
            raise OutputIsInputError(
                f"{subject} is the input file {source}{via}: writing it would destroy the tasks; "
                f"choose another +output_jsonl_fpath",
                path=str(path),
                input_path=source,
            )

    def open(self) -> OpenedOutput:
        """Check the input is not an output, lock, validate, check or record the job, open the files.
        Raises OutputIsInputError, OutputLockedError, OutputExistsError, InputDataError, JobMismatchError
        or OutputWriteError; holds nothing then."""
        self.check_input_is_not_written()
        self.lock.acquire()
        try:
            self.opened = self._open_locked()
        except BaseException:
            self.store.close()
            self.lock.release()
            raise
        return self.opened

    def _open_locked(self) -> OpenedOutput:
        self.store.check_mode()  # before the input pass: an existing file is refused at once
        spec = self.spec
        recorded = read_job_record(self.job_path) if self.mode == "resume" else None
        prompt_sha256 = None
        if spec.prompt_config is not None:
            self.prompt, prompt_sha256 = PromptTemplate.load(spec.prompt_config)
        scan = scan_for_resume(
            spec.input_jsonl_fpath,
            spec.limit,
            recorded,
            route_to=spec.agent_name,
            prompt=self.prompt,
            repeats=spec.num_repeats_per_agent if spec.num_repeats_per_agent is not None else spec.num_repeats,
        )
        identity = JobIdentity.of(
            agent_name=spec.agent_name,
            input_path=spec.input_jsonl_fpath,
            scan=scan,
            limit=spec.limit,
            num_repeats=spec.num_repeats,
            responses_create_params=spec.responses_create_params,
            num_repeats_add_seed=spec.num_repeats_add_seed,
            prompt_sha256=prompt_sha256,
            num_repeats_per_agent=spec.num_repeats_per_agent,
        )
        missing_record = False
        if recorded is not None:
            check_same_job(recorded, identity, output_path=self.store.path, scan_for_growth=scan)
        else:
            missing_record = self.mode == "resume" and self.store.output_exists
            try:
                # Recorded before the first row exists, so no row is ever without its job.
                write_job_record(self.job_path, identity)
            except OSError as error:
                raise write_error(self.job_path, error) from None
        done = self.store.open()
        self.lock.hold_file()  # a new output exists only now; its inode is held from here (hard links)
        return OpenedOutput(
            scan.plan.num_tasks,
            done,
            self.store.repaired_bytes,
            missing_record,
            scan.agents,
            scan.fields,
            scan.repeated_lines,
            frozenset(self.store.terminal_failures),
            scan.plan,
        )

    def close(self) -> None:
        self.store.close()
        self.lock.release()

    def __enter__(self) -> FileCollection:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def run(
        self,
        head_url_or_collector: str | RolloutCollector,
        policy: CollectionPolicy = CollectionPolicy(),
        progress: CollectionProgress | None = None,
    ) -> CollectionReport:
        """Collect every missing pair. Raises ServerGoneError (circuit breaker) or OutputWriteError;
        either way what was written stays, and a resume finishes it."""
        assert self.opened is not None, "FileCollection.open() first"
        started = time.monotonic()
        if isinstance(head_url_or_collector, RolloutCollector):
            if head_url_or_collector.agent_name != self.spec.agent_name:
                raise ValueError(  # the job record names the agent: rows of another one would mix two jobs
                    f"the collector runs agent {head_url_or_collector.agent_name!r}, the job {self.spec.agent_name!r}"
                )
            return await self._run_with(head_url_or_collector, progress, started)
        async with RolloutCollector.connect(head_url_or_collector, self.spec.agent_name, policy) as collector:
            await collector.check_agents(self.opened.agents)
            return await self._run_with(collector, progress, started)

    async def _run_with(
        self, collector: RolloutCollector, progress: CollectionProgress | None, started: float
    ) -> CollectionReport:
        failed = await self._stream(collector, progress)
        self.store.close()  # flush and compact the side files before the metrics read the rows
        report = self.finish(failed_this_run=failed, wall_time_s=time.monotonic() - started)
        if self.aggregate:
            from nemo_gym.rollouts.aggregate_metrics import write_aggregate_metrics

            report.aggregate = await write_aggregate_metrics(
                collector.server_client, self._job_rows(), self.store.path, default_agent=self.spec.agent_name
            )
        return report

    def _jobs(self) -> Iterator[RolloutJob]:
        """Every pair of the job in order: each is materialized once, and only missing ones are run."""
        assert self.opened is not None
        done, terminal, plan = self.opened.done, self.opened.terminal, self.opened.plan
        for job in expand_jobs(
            fold_copies(iter_tasks(self.spec.input_jsonl_fpath, self.spec.limit, self.prompt), plan),
            overrides=self.spec.responses_create_params,
            add_seed=self.spec.num_repeats_add_seed,
            plan=plan,
        ):
            self.store.write_materialized(job)
            if job.key not in done and job.key not in terminal:
                yield job

    def _pending(self) -> int:
        assert self.opened is not None
        plan = self.opened.plan
        settled = self.opened.done | self.opened.terminal
        return plan.rollouts - sum(1 for task, rollout in settled if plan.owes(task, rollout))

    async def _stream(self, collector: RolloutCollector, progress: CollectionProgress | None) -> int:
        assert self.opened is not None
        failed = 0
        total = self._pending()
        if progress is not None:
            progress.start(total, self.opened.plan.rollouts - total)
        try:
            async for outcome in collector.stream(self._jobs()):
                if outcome.ok:
                    assert outcome.row is not None
                    self.store.write_row(outcome.row)
                else:
                    failed += 1
                    assert outcome.failure is not None
                    if outcome.failure.persist:  # an agent's killed rollout is written nowhere (NeMo Gym's rule)
                        record = outcome.failure_record(collector.agent_for(outcome.job))
                        record["message"] = self.redact(record["message"])
                        self.store.write_failure(record)
                if progress is not None:
                    progress.advance(outcome)
        finally:
            if progress is not None:
                progress.close()
        return failed

    def _job_rows(self) -> Iterator[dict[str, Any]]:
        """The rows of the output file that belong to this job's (task, rollout) pairs."""
        assert self.opened is not None
        owes = self.opened.plan.owes
        for row in iter_rows(self.store.path):
            if (key := pair_key(row)) is not None and owes(*key):
                yield row

    def finish(self, *, failed_this_run: int, wall_time_s: float) -> CollectionReport:
        """Metrics from the rows file (so they always agree with it), written beside it."""
        # Imported here, at the end of the run: no rollout waits for the modules that write the reports.
        from nemo_gym.rollouts.groups import GroupTally, write_groups
        from nemo_gym.rollouts.quality import build_quality_report, write_quality_report

        assert self.opened is not None
        plan = self.opened.plan
        num_tasks, expected = plan.num_tasks, plan.rollouts
        rows = sum(1 for row in iter_rows(self.store.path) if (key := pair_key(row)) is not None and plan.owes(*key))
        metrics: dict[str, Any] = {}
        if self.aggregate:
            metrics = aggregate_rollouts(
                iter_rows(self.store.path),
                num_repeats=plan.smallest_group,
                failures=max(0, expected - rows),
                wall_time_s=wall_time_s,
                task_fields=self.opened.task_fields,
                group_size=plan.size_of if plan.sizes_vary else None,
            )
            self.store.write_metrics(metrics)
        quality = build_quality_report(self.store.path, self.store.failures_path, plan=plan)
        quality_path = write_quality_report(quality, quality_report_path(self.store.path))
        # Rewritten at the end of every run (a resume included), so it always describes the files as they are.
        tally = GroupTally(plan).add_rows(iter_rows(self.store.path))
        if self.store.failures_path.exists():
            for record in iter_rows(self.store.failures_path):
                tally.add_failure(record)
        groups_file = groups_path(self.store.path)
        try:
            write_groups(tally, groups_file, num_tasks)
        except OSError as error:
            raise write_error(groups_file, error) from None
        return CollectionReport(
            self.store.path,
            self.store.failures_path,
            self.store.metrics_path,
            metrics,
            expected,
            rows,
            len(self.opened.done),
            failed_this_run,
            wall_time_s,
            quality,
            quality_path,
            tally.summary(num_tasks),
            groups_file,
        )


async def collect_to_file(
    head_url: str,
    spec: CollectionSpec,
    output_path: str | Path,
    *,
    mode: OutputMode = "new",
    policy: CollectionPolicy = CollectionPolicy(),
    progress: CollectionProgress | None = None,
    secret_values: Iterable[str] = (),
    aggregate: bool = True,
) -> CollectionReport:
    """Collect `spec` into `output_path` durably (lock, job identity, resume, side files, metrics)."""
    collection = FileCollection(spec, output_path, mode, secret_values=secret_values, aggregate=aggregate)
    await asyncio.to_thread(collection.open)  # the input pass can take seconds; keep the loop free
    try:
        return await collection.run(head_url, policy, progress)
    finally:
        collection.close()
