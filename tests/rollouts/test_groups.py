"""GroupTally: the one definition of a complete GRPO group (every rollout index of a task has a row)."""

from __future__ import annotations

from nemo_gym.rollouts.groups import GroupTally, groups_path, read_groups, write_groups
from nemo_gym.rollouts.quality import QualityAccumulator


def row(task, rollout, **extra):
    return {"_ng_task_index": task, "_ng_rollout_index": rollout, "reward": 1.0, **extra}


def test_failed_and_pending_members_are_told_apart_and_a_later_row_wins_over_a_failure(tmp_path):
    tally = GroupTally(3).add_rows([row(0, 0), row(0, 1), row(0, 2), row(1, 0), row(1, 2), row(2, 1)])
    tally.add_failure(row(1, 1))
    tally.add_failure(row(2, 1))  # failed once, then a resume wrote its row
    statuses = {status.task_index: status for status in tally.statuses(num_tasks=4)}

    assert [statuses[task].complete for task in range(4)] == [True, False, False, False]
    assert (statuses[1].failed_rollouts, statuses[1].pending_rollouts) == ([1], [])
    assert (statuses[2].failed_rollouts, statuses[2].pending_rollouts) == ([], [0, 2])
    assert statuses[3].pending_rollouts == [0, 1, 2]  # owed by the job, never run
    summary = tally.summary(num_tasks=4)
    assert (summary.complete, summary.incomplete, summary.with_failed_members) == (1, 3, 1)

    path = write_groups(tally, groups_path(tmp_path / "run.jsonl"), num_tasks=4)
    assert path.name == "run_groups.jsonl"
    assert [status.model_dump() for status in read_groups(path)] == [s.model_dump() for s in statuses.values()]


def test_duplicates_extra_indices_and_rows_without_a_task_do_not_complete_a_group():
    tally = GroupTally(2).add_rows([row(0, 0), row(0, 0), row(1, 0), row(1, 5), {"reward": 1.0}])
    assert not tally.is_complete(0) and not tally.is_complete(1) and not tally.is_complete(None)
    assert tally.unowned_rows == 2  # rollout 5 of a group of 2, and the row that names no task


def test_the_quality_report_reads_the_group_size_from_the_rows_when_not_given():
    quality = QualityAccumulator()
    for task, rollout in [(0, 0), (0, 1), (1, 0)]:
        quality.add_row(row(task, rollout, _ng_group_size=2, response={"output": []}))
    check = quality.report("rows.jsonl").check("incomplete_groups")
    assert (check.status, check.count, check.total) == ("warn", 1, 2)
    assert [example.task_index for example in check.examples] == [1]
