"""GRPO groups: which tasks have a row for every one of their rollouts.

A group is the `group_size` rollouts of one task (`num_repeats`, times the copies of its line in NeMo
Gym's collated data: see `TaskScan.copies`). GRPO normalizes each reward by its
group's mean, so a group that lost a member to an infrastructure failure gives every other member a
wrong baseline: trainers want such groups left out, and want to know which they are.

A group is *complete* when every rollout index 0..group_size-1 of its task has a row. Otherwise it is
*incomplete*, and each missing member is either *failed* (its pair is in the failures file: it ran and
gave up) or *pending* (no row and no failure: the collection stopped before it ran; a resume runs it).
This is the one definition: the durable collection writes it to `<stem>_groups.jsonl`, and the quality
report, the training export and the viewer all count with `GroupTally`.

`<stem>_groups.jsonl` has one line per task of the job, in task order:

    {"_ng_task_index": 3, "group_size": 4, "complete": false, "rollouts_with_rows": [0, 2, 3],
     "failed_rollouts": [1], "pending_rollouts": []}

Memory is two small integers per task (bit masks of rollout indices), never a row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from nemo_gym.rollouts.job_identity import job_record_path, read_job_record
from nemo_gym.rollouts.store import sidecar
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

    group_size: int
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

    `group_size` is the job's rollouts per task (`JobIdentity.rollouts_per_task`). Rollout indices at or beyond it belong to no group of this
    job and are ignored; a row without `_ng_task_index` belongs to no group at all (see `unowned_rows`).
    """

    def __init__(self, group_size: int):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = group_size
        self._full = (1 << group_size) - 1
        self._rows: dict[int, int] = {}
        self._failed: dict[int, int] = {}
        self.unowned_rows = 0

    def _key(self, record: Mapping[str, Any]) -> tuple[int, int] | None:
        task, rollout = _int(record.get("_ng_task_index")), _int(record.get("_ng_rollout_index"))
        if task is None or rollout is None or rollout >= self.group_size:
            return None
        return task, rollout

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.add_pair(row.get("_ng_task_index"), row.get("_ng_rollout_index"))

    def add_pair(self, task_index: Any, rollout_index: Any) -> None:
        """A row for (task, rollout), for readers that keep the pair and not the row (the viewer's index)."""
        key = self._key({"_ng_task_index": task_index, "_ng_rollout_index": rollout_index})
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
        return task is not None and self._rows.get(task, 0) == self._full

    def tasks(self, num_tasks: int | None = None) -> range | list[int]:
        """The tasks the job owes (0..num_tasks-1) when known, else every task seen."""
        if num_tasks is not None:
            return range(num_tasks)
        return sorted(set(self._rows) | set(self._failed))

    def status(self, task_index: int) -> GroupStatus:
        rows = self._rows.get(task_index, 0)
        failed = self._failed.get(task_index, 0) & ~rows  # a row written after a failure (a resume) wins
        pending = self._full & ~rows & ~failed
        return GroupStatus(
            task_index=task_index,
            group_size=self.group_size,
            complete=rows == self._full,
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
        for task in self.tasks(num_tasks):
            if self.is_complete(task):
                complete += 1
                continue
            incomplete += 1
            if self._failed.get(task, 0) & ~self._rows.get(task, 0):
                with_failed += 1
            if len(examples) < max_examples:
                examples.append(task)
        return GroupSummary(
            group_size=self.group_size,
            num_groups=complete + incomplete,
            complete=complete,
            incomplete=incomplete,
            with_failed_members=with_failed,
            incomplete_examples=examples,
        )


def groups_path(output_path: str | Path) -> Path:
    """`results/run.jsonl` -> `results/run_groups.jsonl`."""
    return sidecar(Path(output_path), "groups")


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
    """The job's group size: from `<stem>_job.json` beside the rows, else stamped on a row, else None."""
    record = read_job_record(job_record_path(Path(rows_path)))
    if record is not None:
        return record.rollouts_per_task
    stamped = _int((first_row or {}).get(GROUP_SIZE_FIELD))
    return stamped if stamped else None
