"""The viewer's GRPO group summary: complete and incomplete groups of the file viewed, counted with
`nemo_gym.rollouts.groups.GroupTally` (the definition the collection, the quality report and the
export use), from the (task, rollout) pairs the index already holds and the failures file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from nemo_gym.rollouts.groups import tally_for_file
from nemo_gym.rollouts.job_identity import job_record_path, read_job_record
from nemo_gym.viewer.index import RolloutIndex

MAX_LISTED = 50
"""Incomplete tasks listed by number; the rest are only counted."""


def group_summary(index: RolloutIndex, failures_path: Path | None) -> dict[str, Any] | None:
    """{group_size (None when tasks' groups differ in size), group_sizes, num_groups, complete, incomplete,
    with_failed_members, incomplete_tasks}, or None when the group size is unknown (no `_job.json` beside
    the file and no `_ng_group_size` on its rows)."""
    first_row = orjson.loads(index.read_raw(0)) if index.count else None
    tally = tally_for_file(index.path, first_row if isinstance(first_row, dict) else None)
    if tally is None:
        return None
    for task, rollout, size in zip(index.tasks, index.rollouts, index.group_sizes, strict=True):
        tally.add_pair(task if task >= 0 else None, rollout if rollout >= 0 else None, size or None)
    if failures_path is not None and failures_path.is_file():
        with failures_path.open("rb") as handle:
            for raw in handle:
                try:
                    record = orjson.loads(raw) if raw.strip() else None
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    tally.add_failure(record)
    job = read_job_record(job_record_path(index.path))
    num_tasks = job.num_tasks if job is not None else None
    summary = tally.summary(num_tasks, max_examples=MAX_LISTED)
    data = summary.model_dump()
    data["incomplete_tasks"] = data.pop("incomplete_examples")
    return data
