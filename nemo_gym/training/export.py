"""Stream a rollouts file into one trainer format, dropping what should not be trained on.

Two passes over the input: the first counts each task's rows (for `drop_incomplete_groups`: GRPO's
baseline is wrong when a group lost a member), the second converts and writes one row at a time, so a
file of any size needs memory only for the per-task counts.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
from pydantic import BaseModel, Field

from nemo_gym.errors import InputDataError
from nemo_gym.rollouts.job_identity import job_record_path, read_job_record
from nemo_gym.rollouts.quality import episode_end
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
    """num_repeats from `<stem>_job.json` beside the rollouts, else the option; needed to judge completeness."""
    record = read_job_record(job_record_path(source))
    if record is not None:
        return record.num_repeats
    if options.num_repeats is not None:
        return options.num_repeats
    raise InputDataError(
        f"drop_incomplete_groups needs the group size: no {job_record_path(source).name} beside the rollouts, "
        f"so pass +num_repeats=<n>",
        path=str(source),
    )


def export_file(source: str | Path, target: str | Path, options: ExportOptions) -> ExportSummary:
    source, target = Path(source), Path(target)
    convert = FORMATS[options.format]
    incomplete: set[object] = set()
    if options.drop_incomplete_groups:
        repeats = group_size(source, options)
        counts = Counter(row.get("_ng_task_index") for _, row in read_rollouts(source))
        incomplete = {task for task, count in counts.items() if count < repeats}

    summary = ExportSummary()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb") as out:
            for line, row in read_rollouts(source):
                if row.get("_ng_task_index") in incomplete:
                    summary.dropped["incomplete_group"] += 1
                elif options.drop_cut_off and episode_end(row) != "completed":
                    summary.dropped["cut_off"] += 1
                elif options.min_reward is not None and float(row.get("reward") or 0.0) < options.min_reward:
                    summary.dropped["below_min_reward"] += 1
                else:
                    try:
                        record = convert(row)
                    except TokenDataError as error:
                        raise InputDataError(str(error), path=str(source), line=line) from None
                    out.write(orjson.dumps(record) + b"\n")
                    summary.written += 1
        # Written under another name and moved into place whole: a refused row never leaves half a file.
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return summary
