"""Reading tasks from JSONL and expanding them into rollout jobs, lazily.

Input is read twice, never held: a fast first pass validates every line (so a malformed line is
reported with its file and line number before any rollout starts) and fingerprints the tasks the job
uses (see `scan_tasks`), and a second pass streams the
tasks into jobs as the collector asks for them. Memory stays flat whatever the file size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.errors import InputDataError
from nemo_gym.prompt_templates import PromptTemplate
from nemo_gym.rollouts.task_plan import PlanBuilder, TaskPlan, no_entry_error, repeats_for_agent

JSONDict = dict[str, Any]
GROUP_SIZE_FIELD = "_ng_group_size"
"""Stamped on every row, failure and materialized input: the rollouts its task owes (see `groups`)."""
AGENT_REF_FIELD = "agent_ref"
"""A row's own choice of agent, `{"type": "responses_api_agents", "name": ...}`, as in NeMo Gym."""
TASK_INDEX_FIELD = "_ng_task_index"
ROLLOUT_INDEX_FIELD = "_ng_rollout_index"
"""The (task, rollout) pair of a row, under NeMo Gym's names: in the `/run` body and in every record."""
FAILURE_CLASS_FIELD = "_ng_failure_class"
"""Set by an agent on a row it returns: the rollout failed (its class, e.g. `timeout_exceeded`). NeMo Gym's
name; the row goes to the failures file, never to the rows."""
FAILURE_TERMINAL_FIELD = "_ng_failure_terminal"
"""With `_ng_failure_class`: retrying cannot help, so a resume does not run that pair again."""
NO_PERSIST_FIELD = "_ng_no_persist"
"""Set by an agent on the row of a rollout that was killed: it is written nowhere, and a resume runs it again."""


@dataclass(slots=True)
class RolloutJob:
    """One (task, rollout) pair and its task row (what `/run` gets is `run_body()`)."""

    task_index: int
    rollout_index: int
    row: JSONDict
    group_size: int = 1
    """Rollouts its task owes (`TaskPlan.size_of`): the GRPO group this pair belongs to (see `groups`)."""

    @property
    def key(self) -> tuple[int, int]:
        return (self.task_index, self.rollout_index)

    def run_body(self) -> JSONDict:
        """What is posted to the agent's `/run`: the row with this pair's indices, as NeMo Gym's
        collector sends them, so an agent or environment can read them (to name the rollout, key
        per-rollout state, seed by task). A shallow copy: the row is shared by a task's repeats."""
        return self.row | {TASK_INDEX_FIELD: self.task_index, ROLLOUT_INDEX_FIELD: self.rollout_index}

    def stamp(self, record: JSONDict) -> JSONDict:
        """`record` (a row, a failure, a materialized input) tagged with this pair's `_ng_*` keys, in place.
        The one place those keys are written, so rows, failures and inputs always agree on them."""
        record[TASK_INDEX_FIELD] = self.task_index
        record[ROLLOUT_INDEX_FIELD] = self.rollout_index
        # A row names its group's size, so a rows file copied away from its `_job.json` still says which
        # groups are whole.
        record[GROUP_SIZE_FIELD] = self.group_size
        return record


def check_task(row: Any, *, path: str, line: int) -> JSONDict:
    """Validate the shape of one task row; raise InputDataError naming file, line and field."""
    if not isinstance(row, dict):
        raise InputDataError(f"expected a JSON object, got {type(row).__name__}", path=path, line=line)
    params = row.get("responses_create_params")
    if params is None:
        raise InputDataError("missing required field", path=path, line=line, field="responses_create_params")
    if not isinstance(params, dict):
        raise InputDataError("must be a JSON object", path=path, line=line, field="responses_create_params")
    if "input" not in params:
        raise InputDataError("missing required field", path=path, line=line, field="responses_create_params.input")
    if not isinstance(params["input"], (str, list)):
        raise InputDataError(
            "must be a string or a list of items", path=path, line=line, field="responses_create_params.input"
        )
    tools = params.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InputDataError("must be a list", path=path, line=line, field="responses_create_params.tools")
    ref = row.get(AGENT_REF_FIELD)
    if ref is not None and not (isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]):
        raise InputDataError(
            'must be an object naming an agent, {"name": "<agent>"}', path=path, line=line, field=AGENT_REF_FIELD
        )
    return row


def agent_of(row: JSONDict, default: str | None) -> str | None:
    """The agent that runs `row`: its own `agent_ref.name`, else `default` (`+agent_name`). NeMo Gym's
    rule: `+agent_name` fills in only for rows that name no agent. None when neither says."""
    ref = row.get(AGENT_REF_FIELD)
    if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
        return str(ref["name"])
    return default


def json_line_error(error: orjson.JSONDecodeError, raw: bytes) -> str:
    """Why one JSONL line is not JSON, with one position in it: the message already names the file's
    line, and the parser's own `line 2 column 1` counts within this line (its newline included)."""
    line = raw.rstrip(b"\r\n")
    if error.pos >= len(line):
        return f"not valid JSON: {error.msg} (the line ends before the JSON value does)"
    return f"not valid JSON at column {error.pos + 1}: {error.msg}"


def _task_lines(
    path: Path, limit: int | None, prompt: PromptTemplate | None = None
) -> Iterator[tuple[int, int, bytes, JSONDict]]:
    """(task_index, line number, raw line, checked row) for the first `limit` tasks (all when falsy);
    `prompt` builds each row's input from its fields first (see `nemo_gym.prompt_templates`)."""
    if not path.is_file():
        raise InputDataError("input file does not exist", path=str(path))
    task_index = 0
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if limit and task_index >= limit:
                return
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                raise InputDataError(json_line_error(error, raw), path=str(path), line=line_number) from None
            if prompt is not None:
                row = prompt.apply(row, path=str(path), line=line_number)
            yield task_index, line_number, raw, check_task(row, path=str(path), line=line_number)
            task_index += 1


def iter_tasks(
    path: str | Path, limit: int | None = None, prompt: PromptTemplate | None = None
) -> Iterator[tuple[int, JSONDict]]:
    """Yield (task_index, row) for the first `limit` tasks (all when falsy). Blank lines are skipped;
    task_index counts tasks from 0 in file order."""
    for task_index, _, _, row in _task_lines(Path(path), limit, prompt):
        yield task_index, row


def count_tasks(path: str | Path, limit: int | None = None) -> int:
    """Validate the first `limit` tasks and count them, without keeping any."""
    return sum(1 for _ in iter_tasks(path, limit))


@dataclass(frozen=True, slots=True)
class TaskScan:
    """What one validating pass over the input learned: how many tasks the job uses, a SHA-256 of
    exactly those task lines, and (when asked for) the digest of the first `checkpoint` tasks."""

    num_tasks: int
    sha256: str
    checkpoint_sha256: str | None = None
    agents: frozenset[str] = frozenset()
    """The agents the tasks go to (each row's `agent_ref`, else the default agent), when asked for."""
    fields: frozenset[str] = frozenset()
    """Every top-level field of the tasks: a row field among them is the task's, not an outcome of verify."""
    repeated_lines: int = 0
    """Task lines identical to the line before them."""
    plan: TaskPlan = TaskPlan()
    """The tasks once each run of identical consecutive lines is folded into one (NeMo Gym's collated data:
    `ng_prepare_data` writes each row `num_repeats` times in a row, and its collector makes identical rows one
    task whose copies are its rollouts), with each task's group size (see `task_plan`)."""


def scan_tasks(
    path: str | Path,
    limit: int | None = None,
    checkpoint: int | None = None,
    *,
    route_to: str | None = None,
    routed: bool = False,
    prompt: PromptTemplate | None = None,
    repeats: int | Mapping[str, int] = 1,
) -> TaskScan:
    """Validate the first `limit` tasks and fingerprint them in the same streaming pass (memory stays
    flat; the hash costs little next to parsing each line). Only the tasks the job uses are hashed,
    each line without its line ending, so lines appended beyond `limit` do not change the job, and
    `checkpoint` tells whether a file that grew still starts with the tasks a job began with.

    `routed`: also find the agent of every task (`agent_of(row, route_to)`), and raise InputDataError
    naming the first task that has none, before any rollout starts.

    `repeats`: the rollouts each copy of a task gets (`num_repeats`), or NeMo Gym's per-agent mapping; with
    the runs of identical lines it makes `TaskScan.plan`. Raises ConfigError naming the agents a mapping
    has no count for."""
    digest = hashlib.sha256()
    at_checkpoint: str | None = None
    num_tasks = 0
    agents: set[str] = set()
    fields: set[str] = set()
    previous, repeated = b"", 0
    builder = PlanBuilder()
    per_agent = not isinstance(repeats, int)
    count: int | None = repeats if isinstance(repeats, int) else None
    missing: set[str] = set()
    for task_index, line_number, raw, row in _task_lines(Path(path), limit, prompt):
        fields.update(row)
        if checkpoint is not None and task_index == checkpoint:
            at_checkpoint = digest.hexdigest()
        line = raw.rstrip(b"\r\n")
        same = task_index > 0 and line == previous
        repeated += same
        previous = line
        digest.update(line)
        digest.update(b"\n")
        num_tasks = task_index + 1
        if routed:
            agent = agent_of(row, route_to)
            if agent is None:
                raise InputDataError(
                    f"task {task_index} names no agent: give the row an agent_ref "
                    f'({{"type": "responses_api_agents", "name": "<agent>"}}) or pass +agent_name=<agent>',
                    path=str(path),
                    line=line_number,
                    field=AGENT_REF_FIELD,
                )
            agents.add(agent)
        if per_agent and not same:
            agent = agent_of(row, route_to)
            count = repeats_for_agent(repeats, agent)
            if count is None:
                missing.add(str(agent))
        builder.add(same, count or 1)
    if missing:
        assert not isinstance(repeats, int)
        raise no_entry_error(repeats, missing)
    if checkpoint is not None and num_tasks == checkpoint:
        at_checkpoint = digest.hexdigest()
    # An empty job still says its group size (what the metrics' k is).
    plan = builder.plan() if num_tasks or not isinstance(repeats, int) else TaskPlan.uniform(0, repeats)
    return TaskScan(num_tasks, digest.hexdigest(), at_checkpoint, frozenset(agents), frozenset(fields), repeated, plan)


def fold_copies(tasks: Iterable[tuple[int, JSONDict]], plan: TaskPlan) -> Iterator[tuple[int, JSONDict]]:
    """(task_index, row) of each task of `plan` once: the first line of each run of identical lines, numbered
    after folding (NeMo Gym's task index for collated data: its collector gives identical rows one index)."""
    if not plan.folds:
        yield from tasks
        return
    task, left = -1, 0
    for _, row in tasks:
        if left:
            left -= 1
            continue
        task += 1
        left = plan.copies_of(task) - 1
        yield task, row


def apply_overrides(row: JSONDict, overrides: JSONDict | None) -> JSONDict:
    """A copy of `row` whose responses_create_params carry `overrides` (the overrides win)."""
    if not overrides:
        return dict(row)
    return row | {"responses_create_params": row["responses_create_params"] | overrides}


def with_seed(row: JSONDict, seed: int) -> JSONDict:
    """A copy of `row` whose request carries `"seed": seed` in `metadata.extra_body`, a JSON string
    (NeMo Gym's `num_repeats_add_seed`; metadata values are strings, and vllm_model merges it into
    the body it sends). Other `extra_body` entries are kept."""
    params = dict(row["responses_create_params"])
    metadata = dict(params.get("metadata") or {})
    try:
        extra = orjson.loads(metadata.get("extra_body") or "{}")
    except orjson.JSONDecodeError:
        extra = None
    if not isinstance(extra, dict):
        raise InputDataError(
            "must be a JSON object string to add a seed to (num_repeats_add_seed)",
            field="responses_create_params.metadata.extra_body",
        )
    metadata["extra_body"] = orjson.dumps(extra | {"seed": seed}).decode()
    return row | {"responses_create_params": params | {"metadata": metadata}}


def expand_jobs(
    tasks: Iterable[tuple[int, JSONDict]],
    *,
    num_repeats: int = 1,
    overrides: JSONDict | None = None,
    skip: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset(),
    add_seed: bool = False,
    plan: TaskPlan | None = None,
) -> Iterator[RolloutJob]:
    """Rollout jobs in task-major order (a a b b c c), skipping pairs already done. `add_seed`: each
    rollout's request carries its rollout index as the seed (see `with_seed`). `plan`: each task's group
    size is its `size_of` (else `num_repeats` for all)."""
    for task_index, row in tasks:
        materialized = apply_overrides(row, overrides)
        size = plan.size_of(task_index) if plan is not None else num_repeats
        for rollout_index in range(size):
            if (task_index, rollout_index) not in skip:
                sent = with_seed(materialized, rollout_index) if add_seed else materialized
                yield RolloutJob(task_index, rollout_index, sent, size)


def jobs_from_rows(
    rows: Iterable[JSONDict],
    *,
    num_repeats: int = 1,
    overrides: JSONDict | None = None,
) -> Iterator[RolloutJob]:
    """Jobs for in-memory (or generated) task rows: each row is checked, then repeated `num_repeats` times."""
    checked = ((index, check_task(row, path="<rows>", line=index + 1)) for index, row in enumerate(rows))
    return expand_jobs(checked, num_repeats=num_repeats, overrides=overrides)
