"""The quality report of a collection: is this data worth training on, and if not, why.

Computed from what the run left on disk, the rows file and the failures file beside it, in one
streaming pass over each. Memory is O(tasks) (one small reward summary per task) plus one bit per
(task, rollout) pair for duplicate detection; a row is never kept after it has been looked at.

Checks (ids are stable; each has a status "ok", "warn", "fail" or "skipped"):

    unreadable_rows         lines of the rows file that are not a JSON object
    failed_rollouts         rollouts in the failures file, grouped by the innermost error
    tasks_all_failed        tasks that have failures and not a single row
    missing_rollouts        (task, rollout) pairs the run owed and has no row for
    incomplete_groups       GRPO groups (a task's rollouts, its own group size) lacking a member (see `groups`)
    duplicate_rows          two rows for one (task, rollout) pair
    missing_reward          rows without a finite numeric reward
    reward_out_of_range     rewards outside [0, 1]
    no_model_output         rows whose response has no output items at all
    empty_final_answer      rows whose episode does not end in assistant text
    cut_off_max_steps       episodes stopped by the agent's max_steps
    cut_off_token_limit     episodes stopped by the model's output-token limit
    cut_off_context_limit   episodes stopped because the conversation filled the model's context
    cut_off_deadline        episodes stopped by a deadline
    tool_errors             tool outputs that are an error (rate over all tool outputs)
    tools_never_called      rows whose task offered tools and the model called none
    usage_inconsistent      usage missing, or total_tokens != input_tokens + output_tokens
    constant_reward_tasks   tasks whose rollouts all got the same reward (no GRPO signal)

How an episode ended comes from the row's `episode_end` ("completed", "max_steps",
"max_output_tokens", "context_limit", "deadline") when the agent wrote one; otherwise it is inferred:
a response with status "incomplete" hit the limit its `incomplete_details.reason` names (the
output-token limit when it names none), and a response whose last item is a tool output was
stopped before the model could read it (max_steps). Anything but "completed" is cut off
(`is_cut_off`): the export's drop_cut_off and the viewer use the same reading.

A failure's message nests the error of each server on the path (`.../run answered HTTP 502:
{"error": {... ".../v1/responses answered HTTP 502: {"error": ...}"}}`); `root_cause` unwraps
those layers so the console names the error that started it (say, a refused connection).
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson
from pydantic import BaseModel, Field, computed_field

from nemo_gym.episodes import episode_end
from nemo_gym.rollouts.groups import GroupTally
from nemo_gym.rollouts.metrics import RunningStats
from nemo_gym.rollouts.store import quality_report_path, sidecar
from nemo_gym.rollouts.task_plan import TaskPlan

__all__ = [
    "QUALITY_SCHEMA_VERSION",
    "QualityAccumulator",
    "QualityReport",
    "build_quality_report",
    "episode_end",
    "is_cut_off",
    "format_quality_summary",
    "quality_report_path",
    "report_collection_quality",
    "root_cause",
    "write_quality_report",
]

QUALITY_SCHEMA_VERSION = 1

Status = Literal["ok", "warn", "fail", "skipped"]

MAX_EXAMPLES = 5
"""(task, rollout) pairs kept per check, so a person can look one up; never more."""
MAX_DISTINCT_MESSAGES = 1000
"""Distinct failure messages counted per error type; past this only known ones are counted, so a
run whose every message differs (a request id in each) cannot grow memory without bound."""

MAX_ROLLOUT_INDEX = 1 << 16
"""Rollout indices tracked for duplicates (one bit each per task); num_repeats is far below this."""

_NESTED_ERROR = re.compile(r"answered HTTP (\d{3}): (.*)\Z", re.DOTALL)
# The wording of nemo_gym.client's transport errors, for causes relayed as text only.
_TEXT_CAUSES = (
    (re.compile(r"^(cannot connect to |connection to \S+ failed)"), "ServerUnreachableError"),
    (re.compile(r"^(model server '[^']*': upstream )?\w+ \S+ timed out\b"), "RequestTimeoutError"),
    (re.compile(r"response cap; (refused unread|stopped reading)"), "ResponseTooLargeError"),
)

# What to do about the most common root causes; shown under the failure line on the console.
_HINTS = {
    "ServerUnreachableError": "a server could not be reached: is the model (or its upstream, policy_base_url) running?",
    "RequestTimeoutError": "a request timed out: the model may be overloaded; lower num_samples_in_parallel",
    "TimeoutError": "a rollout passed rollout_timeout_s: raise it or lower num_samples_in_parallel",
    "InvalidResponseError": "a server answered with a body that breaks the contract; see the message",
    "ResponseTooLargeError": "an answer was over its size cap: a model's upstream is capped by the model "
    "server's max_upstream_response_bytes, our servers' answers by PoolLimits.max_response_bytes",
}
_STATUS_HINTS = {
    401: "the upstream refused the API key: check policy_api_key",
    403: "the upstream refused the API key: check policy_api_key",
    404: "the upstream has no such route or model: check policy_base_url and policy_model_name",
    429: "the upstream is rate-limiting: lower num_samples_in_parallel",
}


# ---- pure helpers over one row ---------------------------------------------------------------


def root_cause(error_type: str, message: str, status_code: int | None = None) -> tuple[str, str, int | None]:
    """The innermost (error type, message, HTTP status) of a failure whose message relays the errors
    of the servers behind it, either as plain text (`A answered HTTP 502: B answered HTTP 502: cannot
    connect to ...`) or as their JSON error bodies (`... answered HTTP 502: {"error": {"type": ...}}`).
    When only the text is left, a refused connection or a timeout is recognised by its wording."""
    relayed = False
    for _ in range(16):  # a rollout crosses a handful of servers; the bound only guards a cycle
        match = _NESTED_ERROR.search(message)
        if match is None:
            break
        status_code, rest = int(match.group(1)), match.group(2)
        relayed = True
        try:
            body = orjson.loads(rest) if rest[:1] == "{" else None
        except orjson.JSONDecodeError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            error_type, message = str(error.get("type") or error_type), error["message"]
        elif isinstance(error, str):
            message = error
        elif isinstance(body, dict) and "detail" in body:  # a plain FastAPI error body
            message = str(body["detail"])
        else:
            message = rest
    if relayed and error_type == "HTTPStatusError":
        for pattern, inferred in _TEXT_CAUSES:
            if pattern.search(message):
                error_type = inferred
                break
    return error_type, message, status_code


def is_cut_off(row: Mapping[str, Any]) -> bool:
    """The episode did not end on its own (max_steps, an output-token or context limit, a deadline)."""
    return episode_end(row) != "completed"


def final_answer_text(output: list[Any]) -> str:
    """The text of the assistant message that ends the episode ('' if it ends otherwise)."""
    if not output or not isinstance(output[-1], Mapping):
        return ""
    last = output[-1]
    if last.get("type", "message") != "message" or last.get("role", "assistant") != "assistant":
        return ""
    content = last.get("content")
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        return ""
    parts = [part.get("text") or "" for part in content if isinstance(part, Mapping)]
    return "".join(parts).strip()


def is_tool_error(output_text: Any) -> bool:
    """A tool output that reports an error: a JSON object whose `error` holds something (the agent's
    `{"error": "..."}`, our servers' `{"error": {"type", "message"}}`), or FastAPI's bare `{"detail": ...}`
    (an unknown route, a rejected body). `{"result": 10.0, "error": null}` is a result: a tool that
    always sends the key and fills it only on failure succeeded when it is null, empty or false."""
    if not isinstance(output_text, str) or not output_text.startswith("{"):
        return False
    try:
        value = orjson.loads(output_text)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(value, dict):
        return False
    if value.get("error") not in (None, "", False, {}, []):
        return True
    return list(value) == ["detail"] and value["detail"] not in (None, "", {}, [])


# ---- the report --------------------------------------------------------------------------------


class RolloutRef(BaseModel):
    """Where to look: a (task, rollout) pair, or a line of the rows file for an unreadable one."""

    task_index: int | None
    rollout_index: int | None
    line: int | None = None


class Check(BaseModel):
    id: str
    status: Status
    count: int = Field(description="How many rows (or tasks, or tool outputs) the check flagged.")
    total: int = Field(description="Out of how many it looked at.")
    message: str
    hint: str | None = None
    examples: list[RolloutRef] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rate(self) -> float | None:
        return self.count / self.total if self.total else None


class FailureGroup(BaseModel):
    error_type: str = Field(description="The innermost error type (see root_cause).")
    count: int
    most_common_message: str
    most_common_count: int
    status_code: int | None = None
    hint: str | None = None


class TaskSpread(BaseModel):
    task_index: int
    num_rollouts: int
    mean: float
    std: float
    min: float
    max: float


class QualityReport(BaseModel):
    schema_version: int = QUALITY_SCHEMA_VERSION
    rows_path: str
    failures_path: str | None
    num_rows: int
    num_failures: int
    num_tasks: int
    episode_ends: dict[str, int]
    tool_error_rate: float | None
    failures_by_type: list[FailureGroup]
    checks: list[Check]
    per_task: list[TaskSpread]

    def check(self, check_id: str) -> Check:
        return next(check for check in self.checks if check.id == check_id)

    @property
    def findings(self) -> list[Check]:
        return [check for check in self.checks if check.status in ("warn", "fail")]


class _Flagged:
    """A count plus the first few (task, rollout) pairs that made it."""

    __slots__ = ("count", "examples")

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[RolloutRef] = []

    def add(self, task: Any, rollout: Any, line: int | None = None) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(
                RolloutRef(task_index=_int_or_none(task), rollout_index=_int_or_none(rollout), line=line)
            )


class QualityAccumulator:
    """Feed rows (`add_row`) and failure records (`add_failure`) as they come, then `report()`."""

    def __init__(self, *, num_tasks: int | None = None, num_repeats: int | None = None, plan: TaskPlan | None = None):
        """`plan`: the job's tasks and each one's group size (it gives `num_tasks`); else `num_repeats` for
        every task, else each task's size as its rows are stamped (`_ng_group_size`)."""
        if plan is not None:
            num_tasks = plan.num_tasks
        self.num_tasks, self.num_repeats, self.plan = num_tasks, num_repeats, plan
        self.num_rows = 0
        self.num_failures = 0
        self.flags: dict[str, _Flagged] = {name: _Flagged() for name in _ROW_CHECKS}
        self.episode_ends: Counter[str] = Counter()
        self.tool_outputs = 0
        self.rows_offering_tools = 0
        self.rows_with_usage_checked = 0
        self.task_rewards: dict[int, RunningStats] = {}
        self.seen: dict[int, int] = {}  # task index -> bit mask of rollout indices already seen
        self.failed_tasks: set[int] = set()
        self.failure_types: dict[str, Counter[str]] = {}
        self.failure_status: dict[str, int | None] = {}
        self.groups = GroupTally(plan if plan is not None else num_repeats or None)

    def add_unreadable(self, line_number: int) -> None:
        self.flags["unreadable_rows"].add(None, None, line=line_number)

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.num_rows += 1
        task, rollout = row.get("_ng_task_index"), row.get("_ng_rollout_index")
        flag = self.flags

        self.groups.add_row(row)
        if isinstance(task, int) and isinstance(rollout, int) and 0 <= rollout < MAX_ROLLOUT_INDEX:
            mask = self.seen.get(task, 0)
            if mask >> rollout & 1:
                flag["duplicate_rows"].add(task, rollout)
            self.seen[task] = mask | 1 << rollout

        reward = row.get("reward")
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            flag["missing_reward"].add(task, rollout)
        else:
            if not 0.0 <= reward <= 1.0:
                flag["reward_out_of_range"].add(task, rollout)
            if isinstance(task, int):
                self.task_rewards.setdefault(task, RunningStats()).add(float(reward))

        response = row.get("response")
        response = response if isinstance(response, Mapping) else {}
        output = response.get("output")
        output = output if isinstance(output, list) else []
        if not output:
            flag["no_model_output"].add(task, rollout)

        end = episode_end(row)
        self.episode_ends[end] += 1
        cut_off = {
            "max_steps": "cut_off_max_steps",
            "max_output_tokens": "cut_off_token_limit",
            "context_limit": "cut_off_context_limit",
            "deadline": "cut_off_deadline",
        }.get(end)
        if cut_off:
            flag[cut_off].add(task, rollout)
        if not final_answer_text(output):
            flag["empty_final_answer"].add(task, rollout)

        called = False
        for item in output:
            if not isinstance(item, Mapping):
                continue
            kind = item.get("type")
            if kind == "function_call":
                called = True
            elif kind == "function_call_output":
                self.tool_outputs += 1
                if is_tool_error(item.get("output")):
                    flag["tool_errors"].add(task, rollout)
        params = row.get("responses_create_params")
        if isinstance(params, Mapping) and params.get("tools"):
            self.rows_offering_tools += 1
            if not called:
                flag["tools_never_called"].add(task, rollout)

        usage = response.get("usage")
        if output:  # a row with no model output has no usage to check; no_model_output says so
            self.rows_with_usage_checked += 1
            if not _usage_adds_up(usage):
                flag["usage_inconsistent"].add(task, rollout)

    def add_failure(self, record: Mapping[str, Any]) -> None:
        self.num_failures += 1
        task = record.get("_ng_task_index")
        if isinstance(task, int):
            self.failed_tasks.add(task)
        self.groups.add_failure(record)
        status = record.get("status_code")
        error_type, message, status = root_cause(
            str(record.get("error_type") or "UnknownError"),
            str(record.get("message") or ""),
            status if isinstance(status, int) else None,
        )
        messages = self.failure_types.setdefault(error_type, Counter())
        if message in messages or len(messages) < MAX_DISTINCT_MESSAGES:
            messages[message] += 1
        self.failure_status.setdefault(error_type, status)

    def report(self, rows_path: str | Path, failures_path: str | Path | None = None) -> QualityReport:
        groups = []
        for error_type, messages in self.failure_types.items():
            message, count = messages.most_common(1)[0]
            status = self.failure_status.get(error_type)
            groups.append(
                FailureGroup(
                    error_type=error_type,
                    count=sum(messages.values()),
                    most_common_message=message,
                    most_common_count=count,
                    status_code=status,
                    hint=_HINTS.get(error_type) or (_STATUS_HINTS.get(status) if status is not None else None),
                )
            )
        groups.sort(key=lambda group: -group.count)

        per_task = [
            TaskSpread(
                task_index=task,
                num_rollouts=stats.count,
                mean=stats.mean or 0.0,
                std=stats.std or 0.0,
                min=stats.min or 0.0,
                max=stats.max or 0.0,
            )
            for task, stats in sorted(self.task_rewards.items())
        ]
        checks = self._checks(groups, per_task)
        return QualityReport(
            rows_path=str(rows_path),
            failures_path=str(failures_path) if failures_path is not None else None,
            num_rows=self.num_rows,
            num_failures=self.num_failures,
            num_tasks=len(set(self.seen) | self.failed_tasks | set(self.task_rewards)),
            episode_ends=dict(self.episode_ends.most_common()),
            tool_error_rate=self.flags["tool_errors"].count / self.tool_outputs if self.tool_outputs else None,
            failures_by_type=groups,
            checks=checks,
            per_task=per_task,
        )

    def _checks(self, groups: list[FailureGroup], per_task: list[TaskSpread]) -> list[Check]:
        rows = self.num_rows
        attempted = rows + self.num_failures
        checks: list[Check] = []

        def add(
            check_id: str,
            status: Status,
            count: int,
            total: int,
            message: str,
            hint: str | None = None,
            examples: list[RolloutRef] | None = None,
        ) -> None:
            checks.append(
                Check(
                    id=check_id,
                    status=status,
                    count=count,
                    total=total,
                    message=message,
                    hint=hint,
                    examples=examples or [],
                )
            )

        def from_flag(check_id: str, total: int, what: str, bad: Status = "warn", hint: str | None = None) -> None:
            flagged = self.flags[check_id]
            status: Status = bad if flagged.count else "ok"
            add(check_id, status, flagged.count, total, f"{flagged.count} of {total} {what}", hint, flagged.examples)

        from_flag(
            "unreadable_rows",
            rows + self.flags["unreadable_rows"].count,
            "lines are not a JSON row",
            "fail",
            "the rows file was edited by hand or torn by a crash; the examples give line numbers",
        )
        if groups:
            top = groups[0]
            status: Status = "fail" if rows == 0 else "warn"
            add(
                "failed_rollouts",
                status,
                self.num_failures,
                attempted,
                f"{self.num_failures} of {attempted} rollouts failed; most often {top.error_type}: "
                f"{top.most_common_message}",
                top.hint,
            )
        else:
            add("failed_rollouts", "ok", 0, attempted, f"0 of {attempted} rollouts failed")
        all_failed = sorted(self.failed_tasks - set(self.seen))
        add(
            "tasks_all_failed",
            "warn" if all_failed else "ok",
            len(all_failed),
            len(self.failed_tasks | set(self.seen)),
            f"{len(all_failed)} tasks have no row, only failures",
            examples=[RolloutRef(task_index=t, rollout_index=None) for t in all_failed[:MAX_EXAMPLES]],
        )
        if self.plan is not None or (self.num_tasks is not None and self.num_repeats is not None):
            owed = self.plan.rollouts if self.plan is not None else (self.num_tasks or 0) * (self.num_repeats or 0)
            have = sum(
                bin(mask & ((1 << (self.groups.size_of(task) or 0)) - 1)).count("1")
                for task, mask in self.seen.items()
                if task < (self.num_tasks or 0)
            )
            add(
                "missing_rollouts",
                "warn" if have < owed else "ok",
                owed - have,
                owed,
                f"{owed - have} of {owed} (task, rollout) pairs have no row",
                "re-run with +resume=true",
            )
        else:
            add("missing_rollouts", "skipped", 0, 0, "the number of tasks and repeats was not given")
        if self.groups.sized:
            summary = self.groups.summary(self.num_tasks)
            sizes = summary.group_sizes
            of_a_task = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}" if sizes else "?"
            add(
                "incomplete_groups",
                "warn" if summary.incomplete else "ok",
                summary.incomplete,
                summary.num_groups,
                f"{summary.incomplete} of {summary.num_groups} GRPO groups ({of_a_task} rollouts of a task) "
                f"lack a member, {summary.with_failed_members} of them a failed one; their baselines would be wrong",
                "re-run with +resume=true to retry the missing members, or export with +drop_incomplete_groups=true",
                [RolloutRef(task_index=task, rollout_index=None) for task in summary.incomplete_examples],
            )
        else:
            add("incomplete_groups", "skipped", 0, 0, "the group size (num_repeats) is not known")
        from_flag(
            "duplicate_rows",
            rows,
            "rows repeat a (task, rollout) pair already in the file",
            "fail",
            "a resume or a hand-made merge wrote a rollout twice; training would count it twice",
        )
        from_flag("missing_reward", rows, "rows have no finite numeric reward", "fail")
        from_flag("reward_out_of_range", rows, "rewards are outside [0, 1]")
        from_flag("no_model_output", rows, "responses have no output items")
        from_flag("empty_final_answer", rows, "episodes end without assistant text")
        from_flag(
            "cut_off_max_steps",
            rows,
            "episodes were stopped by max_steps",
            hint="raise the agent's max_steps, or check the model is not looping on a tool",
        )
        from_flag(
            "cut_off_token_limit",
            rows,
            "episodes hit the output-token limit",
            hint="raise responses_create_params.max_output_tokens",
        )
        from_flag(
            "cut_off_context_limit",
            rows,
            "episodes filled the model's context",
            hint="raise the model server's context length, or lower the agent's max_steps",
        )
        from_flag("cut_off_deadline", rows, "episodes were stopped by a deadline")
        from_flag(
            "tool_errors",
            self.tool_outputs,
            "tool outputs are errors",
            hint="look at the tool arguments the model sent; the environment's tools may be too strict",
        )
        from_flag("tools_never_called", self.rows_offering_tools, "rows offered tools and the model called none")
        from_flag(
            "usage_inconsistent",
            self.rows_with_usage_checked,
            "responses have no usage or total_tokens != input_tokens + output_tokens",
        )

        repeated = [task for task in per_task if task.num_rollouts >= 2]
        constant = [task for task in repeated if task.min == task.max]
        if not repeated:
            add("constant_reward_tasks", "skipped", 0, 0, "no task has 2 or more rollouts (num_repeats=1)")
        else:
            add(
                "constant_reward_tasks",
                "warn" if constant else "ok",
                len(constant),
                len(repeated),
                f"{len(constant)} of {len(repeated)} tasks got the same reward on every rollout (no GRPO signal)",
                "such tasks are too easy or too hard for this model: filter them or adjust the environment",
                [RolloutRef(task_index=task.task_index, rollout_index=None) for task in constant[:MAX_EXAMPLES]],
            )
        return checks


_ROW_CHECKS = (
    "unreadable_rows",
    "duplicate_rows",
    "missing_reward",
    "reward_out_of_range",
    "no_model_output",
    "empty_final_answer",
    "cut_off_max_steps",
    "cut_off_token_limit",
    "cut_off_context_limit",
    "cut_off_deadline",
    "tool_errors",
    "tools_never_called",
    "usage_inconsistent",
)


def _usage_adds_up(usage: Any) -> bool:
    if not isinstance(usage, Mapping):
        return False
    numbers = [usage.get(key) for key in ("input_tokens", "output_tokens", "total_tokens")]
    counts = [n for n in numbers if isinstance(n, int) and not isinstance(n, bool)]
    return len(counts) == 3 and counts[0] + counts[1] == counts[2]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---- files and console ---------------------------------------------------------------------------


def _json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line number, object or None when the line is not a JSON object); blank lines are skipped."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield line_number, None
                continue
            yield line_number, value if isinstance(value, dict) else None


def build_quality_report(
    rows_path: str | Path,
    failures_path: str | Path | None = None,
    *,
    num_tasks: int | None = None,
    num_repeats: int | None = None,
    plan: TaskPlan | None = None,
) -> QualityReport:
    """Stream the rows file (and the failures file, when it exists) into a QualityReport (`plan`: the job's
    tasks and group sizes, in place of `num_tasks` and `num_repeats`)."""
    rows_path = Path(rows_path)
    accumulator = QualityAccumulator(num_tasks=num_tasks, num_repeats=num_repeats, plan=plan)
    if rows_path.exists():
        for line_number, row in _json_objects(rows_path):
            if row is None:
                accumulator.add_unreadable(line_number)
            else:
                accumulator.add_row(row)
    failures = Path(failures_path) if failures_path is not None else None
    if failures is not None and failures.exists():
        for _, record in _json_objects(failures):
            if record is not None:
                accumulator.add_failure(record)
    return accumulator.report(rows_path, failures)


def write_quality_report(report: QualityReport, path: str | Path) -> Path:
    """Write atomically, so a reader never sees half a report."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
    temporary.replace(path)
    return path


def format_quality_summary(
    report: QualityReport, report_path: str | Path | None = None, max_message_chars: int = 240
) -> str:
    """A few lines for the console: every failure type with its most common message, then each
    check that found something, with what to do about it."""
    findings = report.findings
    where = f" (details: {report_path})" if report_path is not None else ""
    if not findings:
        return f"Quality: all {sum(c.status != 'skipped' for c in report.checks)} checks passed{where}"
    lines = [f"Quality: {len(findings)} of {len(report.checks)} checks found something{where}"]
    for group in report.failures_by_type:
        status = f" (HTTP {group.status_code})" if group.status_code else ""
        lines.append(
            f"  failed: {group.count} x {group.error_type}{status}: "
            f"{_clip(group.most_common_message, max_message_chars)}"
        )
        if group.hint:
            lines.append(f"    -> {group.hint}")
    for check in findings:
        if check.id == "failed_rollouts":
            continue  # already shown, one line per error type
        lines.append(f"  {check.id}: {_clip(check.message, max_message_chars)}")
        if check.hint:
            lines.append(f"    -> {check.hint}")
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def report_collection_quality(
    output_path: str | Path,
    *,
    num_tasks: int | None = None,
    num_repeats: int | None = None,
    stream: TextIO | None = None,
) -> QualityReport:
    """The end-of-collection hook: build the report from the run's files, write `<stem>_quality.json`
    beside the output, and print the summary (to stderr by default: stdout stays for data)."""
    output_path = Path(output_path)
    report = build_quality_report(
        output_path, sidecar(output_path, "failures"), num_tasks=num_tasks, num_repeats=num_repeats
    )
    path = write_quality_report(report, quality_report_path(output_path))
    print(format_quality_summary(report, path), file=stream or sys.stderr, flush=True)
    return report
