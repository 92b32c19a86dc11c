"""GRPO group completeness on a real collection: one member of one group fails, and the groups file, the
quality report, the export and the viewer all say that group is incomplete; a resume makes it whole."""

from __future__ import annotations

import json

import pytest

from nemo_gym.rollouts.groups import groups_path, read_groups
from nemo_gym.training import ExportOptions, export_file
from nemo_gym.viewer import RolloutIndex
from nemo_gym.viewer.groups import group_summary
from tests.conftest import cli

pytestmark = pytest.mark.slow


def collect(stack, tasks, output, *extra):
    return cli(
        "ng_collect_rollouts",
        f"+agent_name={stack.agent}",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        f"+head_server.port={stack.head_port}",
        "+num_repeats=3",
        "+num_samples_in_parallel=1",  # task-major order: Oslo's rollout 0 is the call that fails
        "+max_attempts=1",
        *extra,
    )


def test_a_failed_member_marks_its_group_incomplete_everywhere_until_a_resume(stack, tmp_path):
    tasks = stack.write_tasks(tmp_path / "tasks.jsonl", ["Paris", "Oslo", "Lima"])
    output = tmp_path / "run.jsonl"
    stack.upstream.fail_next["Oslo"] = 1

    first = collect(stack, tasks, output)
    assert first.returncode == 1, first.stderr  # a rollout failed: the run is not complete
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 8 and all(row["_ng_group_size"] == 3 for row in rows)
    [failure] = [json.loads(line) for line in output.with_name("run_failures.jsonl").read_text().splitlines()]
    assert (failure["_ng_task_index"], failure["_ng_rollout_index"]) == (1, 0)

    groups = {status.task_index: status for status in read_groups(groups_path(output))}
    assert [groups[task].complete for task in (0, 1, 2)] == [True, False, True]
    assert groups[1].failed_rollouts == [0] and groups[1].rollouts_with_rows == [1, 2]
    assert groups[1].pending_rollouts == []

    quality = json.loads(output.with_name("run_quality.json").read_text())
    [check] = [check for check in quality["checks"] if check["id"] == "incomplete_groups"]
    assert (check["status"], check["count"], check["total"]) == ("warn", 1, 3)
    assert [example["task_index"] for example in check["examples"]] == [1]
    assert "incomplete_groups" in first.stderr  # the console summary names it

    summary = export_file(output, tmp_path / "trl.jsonl", ExportOptions(format="trl", drop_incomplete_groups=True))
    assert summary.written == 6 and summary.dropped["incomplete_group"] == 2

    index = RolloutIndex(output).start()
    index.wait(30)
    viewed = group_summary(index, output.with_name("run_failures.jsonl"))
    assert viewed is not None
    assert (viewed["complete"], viewed["incomplete"], viewed["incomplete_tasks"]) == (2, 1, [1])
    assert viewed["with_failed_members"] == 1

    resumed = collect(stack, tasks, output, "+resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert all(status.complete for status in read_groups(groups_path(output)))
    quality = json.loads(output.with_name("run_quality.json").read_text())
    [check] = [check for check in quality["checks"] if check["id"] == "incomplete_groups"]
    assert (check["status"], check["count"]) == ("ok", 0)
    summary = export_file(
        output, tmp_path / "trl_after.jsonl", ExportOptions(format="trl", drop_incomplete_groups=True)
    )
    assert summary.written == 9 and summary.dropped["incomplete_group"] == 0

    # The resume appended Oslo's rollout 0 after everything else: the file is out of group order,
    # every export is in it, each record naming its group where its trainer looks.
    pairs = [
        (row["_ng_task_index"], row["_ng_rollout_index"]) for row in map(json.loads, output.read_text().splitlines())
    ]
    assert pairs[-1] == (1, 0) and pairs != sorted(pairs)
    in_group_order = [(task, rollout) for task in range(3) for rollout in range(3)]
    for format, group_of in (
        ("trl", lambda record: record["_ng_task_index"]),
        ("verl", lambda record: int(record["extra_fields"]["uid"])),
        ("nemo_rl", lambda record: record["idx"]),
        ("skyrl", lambda record: record["_ng_task_index"]),
    ):
        target = tmp_path / f"grouped_{format}.jsonl"
        export_file(output, target, ExportOptions(format=format, drop_incomplete_groups=True))
        records = [json.loads(line) for line in target.read_text().splitlines()]
        assert [(group_of(record), record["_ng_rollout_index"]) for record in records] == in_group_order, format
