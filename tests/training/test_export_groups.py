"""GRPO groups survive the export: each group's members together and in rollout order, each record naming
its group in the field its trainer reads; and the drop options leave only whole groups, in any combination."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from nemo_gym.training import ExportOptions, export_file
from tests.training.rows import make_row

GROUP_SIZE = 3
# (task, rollout) in the order a parallel collection finished them: every group is scattered and out of order.
COMPLETION_ORDER = [(0, 0), (0, 2), (1, 1), (0, 1), (2, 2), (1, 0), (2, 0), (1, 2), (2, 1)]
GROUPED_ORDER = sorted(COMPLETION_ORDER)
REWARD_FIELD = {"trl": "reward", "verl": "reward_score", "nemo_rl": "reward", "skyrl": "rewards"}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def out_of_order_collection(tmp_path: Path) -> Path:
    rows = [make_row(task, rollout, reward=0.1 * (3 * task + rollout)) for task, rollout in COMPLETION_ORDER]
    for row in rows:
        row["_ng_group_size"] = GROUP_SIZE
    return write_rows(tmp_path / "run.jsonl", rows)


def trainer_group(format: str, record: dict) -> object:
    """The group a record belongs to, read from the field its trainer groups by."""
    if format == "verl":
        return record["extra_fields"]["uid"]  # AgentLoopOutput.extra_fields -> non_tensor_batch["uid"]
    if format == "nemo_rl":
        return record["idx"]  # DatumSpec.idx
    if format == "skyrl":
        return record["trajectory_ids"]["instance_id"]  # TrajectoryID.instance_id
    return record["_ng_task_index"]  # TRL groups by position; the id is there to check it by


@pytest.mark.parametrize("format", ["trl", "verl", "nemo_rl", "skyrl"])
def test_each_group_is_written_together_in_rollout_order_with_its_group_id(tmp_path, format):
    source = out_of_order_collection(tmp_path)
    target = tmp_path / f"{format}.jsonl"

    summary = export_file(source, target, ExportOptions(format=format))

    records = read_records(target)
    assert summary.written == len(records) == len(COMPLETION_ORDER)
    assert [(record["_ng_task_index"], record["_ng_rollout_index"]) for record in records] == GROUPED_ORDER
    # TRL and NeMo RL read a group as GROUP_SIZE consecutive records: each window is one task, all of it.
    for start in range(0, len(records), GROUP_SIZE):
        window = records[start : start + GROUP_SIZE]
        assert len({str(trainer_group(format, record)) for record in window}) == 1
        assert [record["_ng_rollout_index"] for record in window] == list(range(GROUP_SIZE))
    assert [str(trainer_group(format, record)) for record in records] == [str(task) for task, _ in GROUPED_ORDER]
    # The rewards moved with their rows: the record at (task, rollout) holds that row's reward.
    expected = [pytest.approx(0.1 * (3 * task + rollout)) for task, rollout in GROUPED_ORDER]
    assert [record[REWARD_FIELD[format]] for record in records] == expected


def test_verl_uid_is_a_string_per_task_and_nemo_rl_idx_the_task_index(tmp_path):
    source = out_of_order_collection(tmp_path)
    export_file(source, tmp_path / "verl.jsonl", ExportOptions(format="verl"))
    export_file(source, tmp_path / "nemo_rl.jsonl", ExportOptions(format="nemo_rl"))
    uids = [record["extra_fields"]["uid"] for record in read_records(tmp_path / "verl.jsonl")]
    assert uids == ["0", "0", "0", "1", "1", "1", "2", "2", "2"]
    assert [record["idx"] for record in read_records(tmp_path / "nemo_rl.jsonl")] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_rows_that_name_no_task_come_after_the_groups_in_file_order(tmp_path):
    stray_a, stray_b = make_row(0, 0, reward=0.7), make_row(0, 0, reward=0.8)
    for stray in (stray_a, stray_b):
        del stray["_ng_task_index"], stray["_ng_rollout_index"]
    rows = [stray_a, make_row(1, 1), make_row(1, 0), stray_b, make_row(0, 0)]
    source = write_rows(tmp_path / "run.jsonl", rows)

    export_file(source, tmp_path / "out.jsonl", ExportOptions(format="trl"))

    records = read_records(tmp_path / "out.jsonl")
    assert [(record["_ng_task_index"], record["_ng_rollout_index"]) for record in records[:3]] == [
        (0, 0),
        (1, 0),
        (1, 1),
    ]
    assert [(record["_ng_task_index"], record["reward"]) for record in records[3:]] == [(None, 0.7), (None, 0.8)]


LOW_REWARD_ROW = (2, 2)


def reward_of_pair(task: int, rollout: int) -> float:
    """Each row's reward is unique, so a record names its row in every format (today's included)."""
    return 0.2 if (task, rollout) == LOW_REWARD_ROW else 0.5 + 0.01 * (3 * task + rollout)


def mixed_collection(tmp_path: Path) -> Path:
    """Four groups of 3, in completion order: task 0 whole and clean; task 1 has a cut-off member (1, 0);
    task 2 a member scored below 0.5 (2, 2); task 3 lost rollout 2 to a failure (no row)."""
    order = [(1, 2), (0, 1), (2, 0), (1, 0), (3, 1), (0, 0), (2, 2), (1, 1), (3, 0), (0, 2), (2, 1)]
    rows = [
        make_row(
            task, rollout, reward_of_pair(task, rollout), "max_steps" if (task, rollout) == (1, 0) else "completed"
        )
        for task, rollout in order
    ]
    for row in rows:
        row["_ng_group_size"] = GROUP_SIZE
    return write_rows(tmp_path / "run.jsonl", rows)


PAIR_OF_REWARD = {round(reward_of_pair(task, rollout), 6): (task, rollout) for task in range(4) for rollout in range(3)}


def pairs_written(format: str, target: Path) -> list[tuple[int, int]]:
    return [PAIR_OF_REWARD[round(record[REWARD_FIELD[format]], 6)] for record in read_records(target)]


OPTION_NAMES = ("drop_incomplete_groups", "drop_cut_off", "min_reward")


@pytest.mark.parametrize(
    "chosen",
    [combo for size in range(len(OPTION_NAMES) + 1) for combo in itertools.combinations(OPTION_NAMES, size)],
    ids=lambda combo: "+".join(combo) or "none",
)
@pytest.mark.parametrize("format", ["trl", "verl", "nemo_rl", "skyrl"])
def test_every_combination_of_drop_options_leaves_only_complete_groups(tmp_path, chosen, format):
    options = ExportOptions(
        format=format,
        drop_incomplete_groups="drop_incomplete_groups" in chosen,
        drop_cut_off="drop_cut_off" in chosen,
        min_reward=0.5 if "min_reward" in chosen else None,
    )
    summary = export_file(mixed_collection(tmp_path), tmp_path / "out.jsonl", options)
    kept = pairs_written(format, tmp_path / "out.jsonl")

    # What survives the per-row filters, whatever the group option says.
    expected_tasks = {0: [0, 1, 2], 1: [0, 1, 2], 2: [0, 1, 2], 3: [0, 1]}
    if options.drop_cut_off:
        expected_tasks[1] = [1, 2]
    if options.min_reward is not None:
        expected_tasks[2] = [0, 1]
    if options.drop_incomplete_groups:
        expected_tasks = {task: members for task, members in expected_tasks.items() if len(members) == GROUP_SIZE}
        assert set(Counter(task for task, _ in kept).values()) == {GROUP_SIZE}
    assert kept == [(task, rollout) for task, members in sorted(expected_tasks.items()) for rollout in members]
    assert summary.written == len(kept)
    assert summary.written + sum(summary.dropped.values()) == 11
    assert summary.dropped["cut_off"] == (1 if options.drop_cut_off else 0)
    assert summary.dropped["below_min_reward"] == (1 if options.min_reward is not None else 0)


def test_the_readme_example_writes_no_incomplete_group(tmp_path):
    # The README's command: task 1's cut-off member takes its group with it, task 3 lacks a member.
    source, target = mixed_collection(tmp_path), tmp_path / "run_verl.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nemo_gym.cli.export_training_data",
            f"+input_jsonl_fpath={source}",
            f"+output_jsonl_fpath={target}",
            "+format=verl",
            "+drop_incomplete_groups=true",
            "+drop_cut_off=true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert pairs_written("verl", target) == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]
    assert "Rows written: 6; dropped: 5 (incomplete_group 4, cut_off 1, below_min_reward 0)" in done.stdout
