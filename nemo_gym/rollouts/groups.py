"""GRPO groups: which tasks have a row for every one of their rollouts.

A group is the rollouts of one task: its copies in the input x its agent's `num_repeats`, which may differ
from task to task (`TaskPlan.size_of`, stamped on each row as `_ng_group_size`). GRPO normalizes each reward by its
group's mean, so a group that lost a member to an infrastructure failure gives every other member a
wrong baseline: trainers want such groups left out, and want to know which they are.

A group is *complete* when every rollout index 0..size-1 of its task (its own size) has a row. Otherwise it is
*incomplete*, and each missing member is either *failed* (its pair is in the failures file: it ran and
gave up) or *pending* (no row and no failure: the collection stopped before it ran; a resume runs it).
This is the one definition: the durable collection writes it to `<stem>_groups.jsonl`, and the quality
report, the training export and the viewer all count with `GroupTally`.

`<stem>_groups.jsonl` has one line per task of the job, in task order:

    {"_ng_task_index": 3, "group_size": 4, "complete": false, "rollouts_with_rows": [0, 2, 3],
     "failed_rollouts": [1], "pending_rollouts": []}

Memory is two small integers per task (bit masks of rollout indices), never a row; sizes come from the
job's `TaskPlan`, one number, or the records' own stamps (one more integer only for a task whose size
differs from the first one stamped).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from nemo_gym.rollouts.job_identity import job_record_path, read_job_record
from nemo_gym.rollouts.store import groups_path as groups_path  # re-exported: named beside the other side files
from nemo_gym.rollouts.task_plan import TaskPlan
from nemo_gym.rollouts.tasks import GROUP_SIZE_FIELD


class GroupStatus(BaseModel):
    """One task's group, as written to `<stem>_groups.jsonl`."""

    task_index: int
    group_size: int
    complete: bool
    rollouts_with_rows: list[int]
    failed_rollouts: list[int]
    pending_rollouts: list[int]

    def record(self) -> dict[str, Any]:
        data = self.model_dump()
        return {"_ng_task_index": data.pop("task_index"), **data}


class GroupSummary(BaseModel):
    """The counts a person reads first; `incomplete_examples` names a few tasks to look at."""

    group_size: int | None
    """Every group's size when they are all the same; None when they differ (see `group_sizes`)."""
    group_sizes: list[int]
    """The distinct group sizes of the tasks counted, ascending."""
    num_groups: int
    complete: int
    incomplete: int
    with_failed_members: int
    incomplete_examples: list[int]


def _indices(mask: int) -> list[int]:
    return [index for index in range(mask.bit_length()) if mask >> index & 1]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class GroupTally:
    """Feed rows and failure records (any order, any number of passes), then ask about groups.

    `group_size` says how big each task's group is: one number for every task, the job's `TaskPlan`
    (`size_of`), or None: each task's size as its records are stamped (`_ng_group_size`, for readers that
    have only the files). Rollout indices at or beyond a task's size belong to no group of this job and are
    ignored; a row without `_ng_task_index` (or, with None, without a stamp) belongs to no group at all
    (see `unowned_rows`).
    """

    def __init__(self, group_size: int | TaskPlan | None = None):
        if isinstance(group_size, int) and group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.plan = group_size if isinstance(group_size, TaskPlan) else None
        self.group_size = group_size if isinstance(group_size, int) else None
        """The one size of every group, when given as a number."""
        self._first_stamp: int | None = None
        self._stamps: dict[int, int] = {}  # tasks whose stamped size differs from the first stamp
        self._rows: dict[int, int] = {}
        self._failed: dict[int, int] = {}
        self.unowned_rows = 0

    @property
    def sized(self) -> bool:
        """Whether any group's size is known (from the job, or from a stamped record)."""
        return self.group_size is not None or self.plan is not None or self._first_stamp is not None

    def size_of(self, task: int) -> int | None:
        """The task's group size; None when nothing says it."""
        if self.group_size is not None:
            return self.group_size
        if self.plan is not None and task < self.plan.num_tasks:
            return self.plan.size_of(task)
        return self._stamps.get(task, self._first_stamp)

    def _learn(self, task: int, record: Mapping[str, Any]) -> None:
        if self.group_size is not None or (self.plan is not None and task < self.plan.num_tasks):
            return
        stamped = _int(record.get(GROUP_SIZE_FIELD))
        if not stamped:
            return
        if self._first_stamp is None:
            self._first_stamp = stamped
        elif stamped != self._first_stamp:
            self._stamps[task] = stamped
        elif task in self._stamps:
            del self._stamps[task]

    def _key(self, record: Mapping[str, Any]) -> tuple[int, int] | None:
        task, rollout = _int(record.get("_ng_task_index")), _int(record.get("_ng_rollout_index"))
        if task is None or rollout is None:
            return None
        self._learn(task, record)
        size = self.size_of(task)
        if size is None or rollout >= size:
            return None
        return task, rollout

    def _full(self, task: int) -> int:
        size = self.size_of(task)
        return (1 << size) - 1 if size else -1  # -1: no mask of rows equals it (unknown size: never complete)

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.add_pair(row.get("_ng_task_index"), row.get("_ng_rollout_index"), row.get(GROUP_SIZE_FIELD))

    def add_pair(self, task_index: Any, rollout_index: Any, group_size: Any = None) -> None:
        """A row for (task, rollout) stamped with `group_size`, for readers that keep the pair and not the
        row (the viewer's index)."""
        key = self._key(
            {"_ng_task_index": task_index, "_ng_rollout_index": rollout_index, GROUP_SIZE_FIELD: group_size}
        )
        if key is None:
            self.unowned_rows += 1
            return
        self._rows[key[0]] = self._rows.get(key[0], 0) | 1 << key[1]

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> GroupTally:
        for row in rows:
            self.add_row(row)
        return self

    def add_failure(self, record: Mapping[str, Any]) -> None:
        key = self._key(record)
        if key is not None:
            self._failed[key[0]] = self._failed.get(key[0], 0) | 1 << key[1]

    def is_complete(self, task_index: Any) -> bool:
        """False for a task with a missing member, and for a row that names no task."""
        task = _int(task_index)
        return task is not None and self._rows.get(task, 0) == self._full(task)

    def tasks(self, num_tasks: int | None = None) -> range | list[int]:
        """The tasks the job owes (0..num_tasks-1) when known, else every task seen."""
        if num_tasks is not None:
            return range(num_tasks)
        return sorted(set(self._rows) | set(self._failed))

    def status(self, task_index: int) -> GroupStatus:
        rows = self._rows.get(task_index, 0)
        failed = self._failed.get(task_index, 0) & ~rows  # a row written after a failure (a resume) wins
        size = self.size_of(task_index) or 0  # 0: nothing says this task's size (no record of it, no job plan)
        full = (1 << size) - 1
        pending = full & ~rows & ~failed
        return GroupStatus(
            task_index=task_index,
            group_size=size,
            complete=bool(size) and rows == full,
            rollouts_with_rows=_indices(rows),
            failed_rollouts=_indices(failed),
            pending_rollouts=_indices(pending),
        )

    def statuses(self, num_tasks: int | None = None) -> Iterator[GroupStatus]:
        for task in self.tasks(num_tasks):
            yield self.status(task)

    def incomplete_tasks(self, num_tasks: int | None = None) -> set[int]:
        return {task for task in self.tasks(num_tasks) if not self.is_complete(task)}

    def summary(self, num_tasks: int | None = None, max_examples: int = 5) -> GroupSummary:
        complete = incomplete = with_failed = 0
        examples: list[int] = []
        sizes: set[int] = set()
        for task in self.tasks(num_tasks):
            size = self.size_of(task)
            if size:
                sizes.add(size)
            if self.is_complete(task):
                complete += 1
                continue
            incomplete += 1
            if self._failed.get(task, 0) & ~self._rows.get(task, 0):
                with_failed += 1
            if len(examples) < max_examples:
                examples.append(task)
        return GroupSummary(
            group_size=next(iter(sizes)) if len(sizes) == 1 else None,
            group_sizes=sorted(sizes),
            num_groups=complete + incomplete,
            complete=complete,
            incomplete=incomplete,
            with_failed_members=with_failed,
            incomplete_examples=examples,
        )


def write_groups(tally: GroupTally, path: Path, num_tasks: int | None = None) -> Path:
    """One line per group, written whole under another name and moved into place (never half a file)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as handle:
            for status in tally.statuses(num_tasks):
                handle.write(orjson.dumps(status.record()) + b"\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read_groups(path: str | Path) -> list[GroupStatus]:
    """The statuses written by a collection (small: one line per task)."""
    statuses = []
    with Path(path).open("rb") as handle:
        for raw in handle:
            if raw.strip():
                record = orjson.loads(raw)
                statuses.append(GroupStatus(task_index=record.pop("_ng_task_index"), **record))
    return statuses


def group_size_of(rows_path: str | Path, first_row: Mapping[str, Any] | None = None) -> int | None:
    """The size every group of the job has: from `<stem>_job.json` beside the rows, else stamped on
    `first_row`; None when unknown or when sizes vary from task to task (see `tally_for_file`)."""
    record = read_job_record(job_record_path(Path(rows_path)))
    if record is not None:
        return record.uniform_group_size
    stamped = _int((first_row or {}).get(GROUP_SIZE_FIELD))
    return stamped if stamped else None


def tally_for_file(
    rows_path: str | Path, first_row: Mapping[str, Any] | None = None, fallback: int | None = None
) -> GroupTally | None:
    """A GroupTally for a rows file read on its own (exports, the viewer): the job record's one size when
    every task has it; each task's own stamped size (`_ng_group_size`) when the record says sizes vary or
    there is no record and `first_row` is stamped; else `fallback` (a size the user gives); None when
    nothing says any size."""
    record = read_job_record(job_record_path(Path(rows_path)))
    if record is not None:
        size = record.uniform_group_size
        return GroupTally(size) if size is not None else GroupTally()
    if _int((first_row or {}).get(GROUP_SIZE_FIELD)):
        return GroupTally()
    return GroupTally(fallback) if fallback is not None else None
