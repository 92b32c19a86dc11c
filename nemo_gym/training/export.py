"""Stream a rollouts file into one trainer format, dropping what should not be trained on.

Two passes over the input: the first tallies each task's rollout indices (for `drop_incomplete_groups`:
GRPO's baseline is wrong when a group lost a member; "complete" is `nemo_gym.rollouts.groups`' one
definition, the one the collection's `_groups.jsonl` and the quality report use), the second converts
and writes one row at a time, so a file of any size needs memory only for two bit masks per task.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel, Field

from nemo_gym.errors import InputDataError
from nemo_gym.rollouts.groups import GroupTally, group_size_of
from nemo_gym.rollouts.job_identity import job_record_path
from nemo_gym.rollouts.quality import is_cut_off
from nemo_gym.rollouts.reverify import read_rollouts
from nemo_gym.training.formats import FORMATS
from nemo_gym.training.turns import TokenDataError

DROP_REASONS = ("incomplete_group", "cut_off", "below_min_reward")


class ExportOptions(BaseModel):
    format: str
    drop_incomplete_groups: bool = False
    drop_cut_off: bool = False
    min_reward: float | None = None
    num_repeats: int | None = Field(None, ge=1)


class ExportSummary(BaseModel):
    written: int = 0
    dropped: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def report(self) -> str:
        drops = ", ".join(f"{reason} {count}" for reason, count in self.dropped.items())
        return f"Rows written: {self.written}; dropped: {sum(self.dropped.values())} ({drops})"


def group_size(source: Path, options: ExportOptions) -> int:
    """The job's num_repeats (`<stem>_job.json`, else the option, else stamped on the rows as `_ng_group_size`)."""
    size = group_size_of(source) or options.num_repeats
    if size is None:
        size = group_size_of(source, next((row for _, row in read_rollouts(source)), None))
    if size is not None:
        return size
    raise InputDataError(
        f"drop_incomplete_groups needs the group size: no {job_record_path(source).name} beside the rollouts "
        f"and no _ng_group_size on the rows, so pass +num_repeats=<n>",
        path=str(source),
    )


def export_file(source: str | Path, target: str | Path, options: ExportOptions) -> ExportSummary:
    source, target = Path(source), Path(target)
    convert = FORMATS[options.format]
    groups: GroupTally | None = None
    if options.drop_incomplete_groups:
        groups = GroupTally(group_size(source, options)).add_rows(row for _, row in read_rollouts(source))

    summary = ExportSummary()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb") as out:
            for line, row in read_rollouts(source):
                if groups is not None and not groups.is_complete(row.get("_ng_task_index")):
                    summary.dropped["incomplete_group"] += 1
                elif options.drop_cut_off and is_cut_off(row):
                    summary.dropped["cut_off"] += 1
                elif options.min_reward is not None and float(row.get("reward") or 0.0) < options.min_reward:
                    summary.dropped["below_min_reward"] += 1
                else:
                    try:
                        record = convert(row)
                    except TokenDataError as error:
                        refused = InputDataError(str(error), path=str(source), line=line)
                        refused.field = error.field  # already leads the message: `file:line: field: what is wrong`
                        raise refused from None
                    out.write(orjson.dumps(record) + b"\n")
                    summary.written += 1
        # Written under another name and moved into place whole: a refused row never leaves half a file.
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return summary
