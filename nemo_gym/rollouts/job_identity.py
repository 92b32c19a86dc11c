"""Which job an output file belongs to, so `resume` only ever finishes the job that started it.

When an output file is created, `<stem>_job.json` records the job: the agent, the input file's
absolute path and a fingerprint of the tasks it uses (count + SHA-256 of those lines, see
`tasks.scan_tasks`), `limit`, `num_repeats` and the `responses_create_params` overrides. A resume
compares the job it is asked to run with the record and refuses (JobMismatchError, exit 2) naming
the first field that differs, so rows of two jobs never end up in one file.

Only the tasks a job uses are fingerprinted: lines appended to an input beyond `+limit` leave the
job unchanged. Without a limit, an input that grew is a different job; the message says whether
the original tasks are still the file's first ones, so the user knows what happened.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nemo_gym.errors import JobMismatchError
from nemo_gym.prompt_templates import PromptTemplate
from nemo_gym.rollouts.store import sidecar
from nemo_gym.rollouts.task_plan import canonical_repeats
from nemo_gym.rollouts.tasks import TaskScan, scan_tasks

JOB_RECORD_VERSION = 1


class InputFingerprint(BaseModel):
    model_config = ConfigDict(frozen=True)

    num_tasks: int
    """Tasks the job uses (after `limit`)."""
    sha256: str
    """Of exactly those task lines, each without its line ending."""


class JobIdentity(BaseModel):
    """Everything that decides which (task, rollout) pairs a job has and what each one sends."""

    model_config = ConfigDict(frozen=True)

    version: int = JOB_RECORD_VERSION
    agent_name: str | None
    """None: every row goes to the agent its `agent_ref` names."""
    input_jsonl_fpath: str
    """Absolute, so a resume from another working directory still matches."""
    input_fingerprint: InputFingerprint
    limit: int | None = None
    num_repeats: int = Field(1, ge=1)
    responses_create_params: dict[str, Any] = Field(default_factory=dict)
    num_repeats_add_seed: bool = False
    """Whether each rollout sent its rollout index as the seed (absent in older records: it did not)."""
    prompt_sha256: str | None = None
    """SHA-256 of the `prompt_config` file that built each input (None: the rows' own input)."""
    input_copies: int = Field(1, ge=0)
    """Input lines folded into each task (a run of identical consecutive lines, `TaskScan.plan`) when every
    task has the same number; 0 when it varies (absent in older records: they never folded)."""
    num_repeats_per_agent: dict[str, int] | None = None
    """NeMo Gym's per-agent `num_repeats` when it gives the agents the tasks go to different counts: each of
    them with its count, sorted (`task_plan.canonical_repeats`); None when one number does (`num_repeats`)."""
    folds_runs: bool | None = None
    """Runs of identical lines fold into one task whatever their lengths (None in records of older
    versions, which folded them only when every run had the same length)."""
    tasks: int | None = None
    """Tasks of the job, runs folded (None in older records: `input_fingerprint.num_tasks // input_copies`)."""
    group_size: int | None = None
    """Every task's group size when they are all the same; 0 when they vary (each row's `_ng_group_size`
    says its task's); None in older records (`num_repeats x input_copies`)."""

    @property
    def num_tasks(self) -> int:
        """Tasks of the job, copies folded."""
        if self.tasks is not None:
            return self.tasks
        return self.input_fingerprint.num_tasks // max(self.input_copies, 1)

    @property
    def uniform_group_size(self) -> int | None:
        """The group size every task has; None when sizes vary from task to task."""
        if self.group_size is None:
            return self.num_repeats * max(self.input_copies, 1)
        return self.group_size or None

    @classmethod
    def of(
        cls,
        *,
        agent_name: str | None,
        input_path: str | Path,
        scan: TaskScan,
        limit: int | None,
        num_repeats: int,
        responses_create_params: dict[str, Any] | None,
        num_repeats_add_seed: bool = False,
        prompt_sha256: str | None = None,
        num_repeats_per_agent: Mapping[str, int] | None = None,
    ) -> JobIdentity:
        repeats, per_agent = canonical_repeats(num_repeats, num_repeats_per_agent, scan.agents)
        plan = scan.plan
        return cls(
            agent_name=agent_name,
            input_jsonl_fpath=str(Path(input_path).resolve()),
            input_fingerprint=InputFingerprint(num_tasks=scan.num_tasks, sha256=scan.sha256),
            limit=limit or None,
            num_repeats=repeats,
            responses_create_params=responses_create_params or {},
            num_repeats_add_seed=num_repeats_add_seed,
            prompt_sha256=prompt_sha256,
            input_copies=plan.copies,
            num_repeats_per_agent=per_agent,
            folds_runs=True,
            tasks=plan.num_tasks,
            group_size=plan.group_size,
        )


def job_record_path(output_path: Path) -> Path:
    return sidecar(output_path, "job", ".json")


def read_job_record(path: Path) -> JobIdentity | None:
    """The recorded job, or None when there is no record (a file written before records existed)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return JobIdentity.model_validate(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError):
        raise JobMismatchError(
            f"{path} is not a job record this version understands; start again with +overwrite=true", field="job record"
        ) from None


def write_job_record(path: Path, identity: JobIdentity) -> None:
    """Atomically: a crash leaves the old record or the new one, never half of one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(
        orjson.dumps(identity.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    os.replace(temporary, path)


def check_same_job(
    recorded: JobIdentity, requested: JobIdentity, *, output_path: Path, scan_for_growth: TaskScan | None
) -> None:
    """Raise JobMismatchError naming the first field where `requested` is not the job `output_path` holds.

    `scan_for_growth`: a scan of the input with `checkpoint=recorded task count`, used only to explain
    a changed input (grew with the original tasks first, or edited)."""
    fix = "finish it with the original parameters, or start again with +overwrite=true (or another +output_jsonl_fpath)"

    def refuse(field: str, was: Any, now: Any, detail: str = "") -> None:
        raise JobMismatchError(
            f"cannot resume {output_path}: {field} differs from the job that wrote it "
            f"(was {was}, now {now}){detail}; {fix}",
            field=field,
        )

    if requested.agent_name != recorded.agent_name:
        refuse("agent_name", repr(recorded.agent_name), repr(requested.agent_name))
    if requested.input_jsonl_fpath != recorded.input_jsonl_fpath:
        refuse("input_jsonl_fpath", recorded.input_jsonl_fpath, requested.input_jsonl_fpath)
    if requested.limit != recorded.limit:
        refuse("limit", recorded.limit, requested.limit)
    if requested.num_repeats_per_agent != recorded.num_repeats_per_agent:
        refuse(
            "num_repeats per agent",
            _canonical(recorded.num_repeats_per_agent).decode(),
            _canonical(requested.num_repeats_per_agent).decode(),
        )
    if requested.num_repeats != recorded.num_repeats:
        refuse("num_repeats", recorded.num_repeats, requested.num_repeats)
    if _canonical(requested.responses_create_params) != _canonical(recorded.responses_create_params):
        refuse(
            "responses_create_params",
            _canonical(recorded.responses_create_params).decode(),
            _canonical(requested.responses_create_params).decode(),
        )
    if requested.num_repeats_add_seed != recorded.num_repeats_add_seed:
        refuse("num_repeats_add_seed", recorded.num_repeats_add_seed, requested.num_repeats_add_seed)
    if requested.prompt_sha256 != recorded.prompt_sha256:
        refuse("prompt_config content", recorded.prompt_sha256, requested.prompt_sha256)
    if requested.input_fingerprint == recorded.input_fingerprint and recorded.input_copies != requested.input_copies:
        # Same lines, folded differently: the record predates folding (every line a task: no input_copies), or
        # predates folding runs of different lengths (an uneven input's lines each a task: input_copies 1 where
        # this version records 0), and its (task, rollout) pairs count lines, not tasks.
        refuse(
            "copies of each task line folded into one task",
            _describe_copies(recorded.input_copies),
            _describe_copies(requested.input_copies),
            " (the output was written by a version that did not fold NeMo Gym's collated copies)",
        )
    was, now = recorded.input_fingerprint, requested.input_fingerprint
    if was != now:
        if now.num_tasks > was.num_tasks and scan_for_growth and scan_for_growth.checkpoint_sha256 == was.sha256:
            detail = f": the file grew, its first {was.num_tasks} tasks are unchanged"
        elif now.num_tasks == was.num_tasks:
            detail = ": same number of tasks, different content"
        else:
            detail = ": the tasks were edited"
        refuse(
            "input_jsonl_fpath content",
            f"{was.num_tasks} tasks, sha256 {was.sha256[:12]}",
            f"{now.num_tasks} tasks, sha256 {now.sha256[:12]}",
            detail,
        )


def _describe_copies(copies: int) -> str:
    return "runs of different lengths" if copies == 0 else str(copies)


def _canonical(params: dict[str, Any] | None) -> bytes:
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS)


def scan_for_resume(
    input_path: str | Path,
    limit: int | None,
    recorded: JobIdentity | None,
    *,
    route_to: str | None,
    prompt: PromptTemplate | None = None,
    repeats: int | Mapping[str, int] = 1,
) -> TaskScan:
    """One pass that validates, fingerprints, remembers where the recorded job's tasks ended, finds the
    agent of every task (`route_to` for rows without an `agent_ref`) and plans the tasks (`repeats`)."""
    checkpoint = recorded.input_fingerprint.num_tasks if recorded is not None else None
    return scan_tasks(
        input_path, limit, checkpoint=checkpoint, route_to=route_to, routed=True, prompt=prompt, repeats=repeats
    )
