"""Reading tasks from JSONL and expanding them into rollout jobs, lazily.

Input is read twice, never held: a fast first pass validates every line (so a malformed line is
reported with its file and line number before any rollout starts), and a second pass streams the
tasks into jobs as the collector asks for them. Memory stays flat whatever the file size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.errors import InputDataError

JSONDict = dict[str, Any]


@dataclass(slots=True)
class RolloutJob:
    """One (task, rollout) pair and the exact row sent to the agent's /run."""

    task_index: int
    rollout_index: int
    row: JSONDict

    @property
    def key(self) -> tuple[int, int]:
        return (self.task_index, self.rollout_index)


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
        raise InputDataError("must be a string or a list of items", path=path, line=line, field="responses_create_params.input")
    tools = params.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InputDataError("must be a list", path=path, line=line, field="responses_create_params.tools")
    return row


def iter_tasks(path: str | Path, limit: int | None = None) -> Iterator[tuple[int, JSONDict]]:
    """Yield (task_index, row) for the first `limit` tasks (all when falsy). Blank lines are skipped;
    task_index counts tasks from 0 in file order."""
    path = Path(path)
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
                raise InputDataError(f"not valid JSON ({error})", path=str(path), line=line_number) from None
            yield task_index, check_task(row, path=str(path), line=line_number)
            task_index += 1


def count_tasks(path: str | Path, limit: int | None = None) -> int:
    """Validate the first `limit` tasks and count them, without keeping any."""
    return sum(1 for _ in iter_tasks(path, limit))


def apply_overrides(row: JSONDict, overrides: JSONDict | None) -> JSONDict:
    """A copy of `row` whose responses_create_params carry `overrides` (the overrides win)."""
    if not overrides:
        return dict(row)
    return row | {"responses_create_params": row["responses_create_params"] | overrides}


def expand_jobs(tasks: Iterable[tuple[int, JSONDict]], *, num_repeats: int = 1, overrides: JSONDict | None = None,
                skip: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset()) -> Iterator[RolloutJob]:
    """Rollout jobs in task-major order (a a b b c c), skipping pairs already done."""
    for task_index, row in tasks:
        materialized = apply_overrides(row, overrides)
        for rollout_index in range(num_repeats):
            if (task_index, rollout_index) not in skip:
                yield RolloutJob(task_index, rollout_index, materialized)


def jobs_from_rows(rows: Iterable[JSONDict], *, num_repeats: int = 1, overrides: JSONDict | None = None,
                   ) -> Iterator[RolloutJob]:
    """Jobs for in-memory (or generated) task rows: each row is checked, then repeated `num_repeats` times."""
    checked = ((index, check_task(row, path="<rows>", line=index + 1)) for index, row in enumerate(rows))
    return expand_jobs(checked, num_repeats=num_repeats, overrides=overrides)
