"""Stream a rollouts file into one trainer format, group by group, dropping what should not be trained on.

A collection writes rows as they finish, so a group's members lie scattered and out of rollout order
((0,0),(0,2),(0,1),(1,0),...). Trainers read groups by position (TRL's `num_generations` consecutive
completions, NeMo RL's repeated prompts) or by id (veRL's `uid`), so the export writes each task's
rows together, tasks in ascending order, each in rollout order; rows that name no task come last, in
file order.

Two passes over the input. The first applies the per-row filters (`drop_cut_off`, `min_reward`), tallies
the rollout indices of the rows that survive them (for `drop_incomplete_groups`: GRPO's baseline is wrong
when a group lost a member, whether to a failure or to another filter; "complete" is
`nemo_gym.rollouts.groups`' one definition) and notes where each row starts. The second seeks to each row
in group order, converts it and writes it. Memory is a few integers per row, never a row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, Field

from nemo_gym.errors import InputDataError
from nemo_gym.rollouts.groups import GroupTally, tally_for_file
from nemo_gym.rollouts.job_identity import job_record_path
from nemo_gym.rollouts.quality import is_cut_off
from nemo_gym.rollouts.reverify import parse_rollout_line, read_rollouts, read_rollouts_at
from nemo_gym.training.formats import FORMATS
from nemo_gym.training.turns import TokenDataError

DROP_REASONS = ("incomplete_group", "cut_off", "below_min_reward")


class ExportOptions(BaseModel):
    format: str
    drop_incomplete_groups: bool = False
    drop_cut_off: bool = False
    min_reward: float | None = None
    num_repeats: int | None = Field(None, ge=1)
    train_constrained_tokens: bool = False
    """Keep mask 1 on tokens sampled under a grammar (`generation_constrained`); by default they get mask 0."""


class ExportSummary(BaseModel):
    written: int = 0
    dropped: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def report(self) -> str:
        drops = ", ".join(f"{reason} {count}" for reason, count in self.dropped.items())
        return f"Rows written: {self.written}; dropped: {sum(self.dropped.values())} ({drops})"


def group_tally(source: Path, options: ExportOptions) -> GroupTally:
    """A tally sized as the job's groups are: the one size in `<stem>_job.json`, else each task's own size as
    its rows are stamped (`_ng_group_size`), else the `num_repeats` option (rows of an older version)."""
    first_row = next((row for _, row in read_rollouts(source)), None)
    tally = tally_for_file(source, first_row, fallback=options.num_repeats)
    if tally is not None:
        return tally
    raise InputDataError(
        f"drop_incomplete_groups needs the group size: no {job_record_path(source).name} beside the rollouts "
        f"and no _ng_group_size on the rows, so pass +num_repeats=<n>",
        path=str(source),
    )


class _Placed(NamedTuple):
    """Where one row goes in the output (sort key first) and what the per-row filters said of it."""

    task: float
    rollout: float
    line: int
    offset: int
    dropped_for: str | None


def _position(value: Any) -> float:
    # Rows that name no task (or a malformed index) sort after every group, in file order.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else math.inf


def _row_filter(row: dict[str, Any], options: ExportOptions) -> str | None:
    if options.drop_cut_off and is_cut_off(row):
        return "cut_off"
    if options.min_reward is not None and float(row.get("reward") or 0.0) < options.min_reward:
        return "below_min_reward"
    return None


def export_file(source: str | Path, target: str | Path, options: ExportOptions) -> ExportSummary:
    source, target = Path(source), Path(target)
    train_constrained = options.train_constrained_tokens
    convert = FORMATS[options.format]
    groups = group_tally(source, options) if options.drop_incomplete_groups else None

    placed: list[_Placed] = []
    for line, offset, row in read_rollouts_at(source):
        reason = _row_filter(row, options)
        if groups is not None and reason is None:
            groups.add_row(row)  # only survivors count: a group that lost a member to a filter is incomplete
        task = _position(row.get("_ng_task_index"))
        rollout = _position(row.get("_ng_rollout_index")) if task != math.inf else math.inf
        placed.append(_Placed(task, rollout, line, offset, reason))
    placed.sort()

    summary = ExportSummary()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with source.open("rb") as rows, partial.open("wb") as out:
            for place in placed:
                if place.dropped_for is not None:
                    summary.dropped[place.dropped_for] += 1
                    continue
                rows.seek(place.offset)
                row = parse_rollout_line(rows.readline(), source, place.line)
                if groups is not None and not groups.is_complete(row.get("_ng_task_index")):
                    summary.dropped["incomplete_group"] += 1
                    continue
                try:
                    record = convert(row, train_constrained=train_constrained)
                except TokenDataError as error:
                    refused = InputDataError(str(error), path=str(source), line=place.line)
                    refused.field = error.field  # already leads the message: `file:line: field: what is wrong`
                    raise refused from None
                out.write(orjson.dumps(record) + b"\n")
                summary.written += 1
        # Written under another name and moved into place whole: a refused row never leaves half a file.
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return summary
