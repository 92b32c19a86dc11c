"""The streaming exporter's dropping rules, and the real command end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_gym.errors import InputDataError
from nemo_gym.training import ExportOptions, export_file
from tests.training.rows import FULL_SEQUENCE, make_row, without_token_ids


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def two_groups_one_incomplete() -> list[dict]:
    # Task 0 has both of its 2 rollouts; task 1 lost one (a failed rollout is not in the file).
    return [make_row(0, 0, reward=1.0), make_row(0, 1, reward=0.0), make_row(1, 0, reward=1.0)]


def test_incomplete_groups_are_dropped_with_num_repeats_from_the_job_record(tmp_path):
    source = write_rows(tmp_path / "run.jsonl", two_groups_one_incomplete())
    (tmp_path / "run_job.json").write_text(
        json.dumps(
            {
                "agent_name": "a",
                "input_jsonl_fpath": "/x/tasks.jsonl",
                "input_fingerprint": {"num_tasks": 2, "sha256": "0" * 64},
                "num_repeats": 2,
            }
        )
    )
    summary = export_file(source, tmp_path / "out.jsonl", ExportOptions(format="verl", drop_incomplete_groups=True))

    records = read_records(tmp_path / "out.jsonl")
    assert [record["reward_score"] for record in records] == [1.0, 0.0]
    assert summary.written == 2
    assert summary.dropped["incomplete_group"] == 1


def test_incomplete_groups_without_a_job_record_need_num_repeats(tmp_path):
    source = write_rows(tmp_path / "run.jsonl", two_groups_one_incomplete())
    with pytest.raises(InputDataError, match=r"\+num_repeats"):
        export_file(source, tmp_path / "out.jsonl", ExportOptions(format="trl", drop_incomplete_groups=True))

    summary = export_file(
        source, tmp_path / "out.jsonl", ExportOptions(format="trl", drop_incomplete_groups=True, num_repeats=2)
    )
    assert summary.written == 2 and summary.dropped["incomplete_group"] == 1


def test_cut_off_episodes_and_low_rewards_are_dropped_when_asked(tmp_path):
    rows = [make_row(0, 0, 1.0), make_row(0, 1, 1.0, episode_end="max_steps"), make_row(0, 2, 0.1)]
    source = write_rows(tmp_path / "run.jsonl", rows)

    kept_all = export_file(source, tmp_path / "all.jsonl", ExportOptions(format="skyrl"))
    assert kept_all.written == 3

    summary = export_file(
        source, tmp_path / "out.jsonl", ExportOptions(format="skyrl", drop_cut_off=True, min_reward=0.5)
    )
    records = read_records(tmp_path / "out.jsonl")
    assert [record["trajectory_ids"] for record in records] == [{"instance_id": "0", "repetition_id": 0}]
    assert summary.dropped == {"incomplete_group": 0, "cut_off": 1, "below_min_reward": 1}


def test_a_row_without_episode_end_is_judged_from_its_response(tmp_path):
    truncated = make_row(0, 1)
    del truncated["episode_end"]
    truncated["response"]["status"] = "incomplete"  # the model hit max_output_tokens on its last turn
    untouched = make_row(0, 0)
    del untouched["episode_end"]
    source = write_rows(tmp_path / "run.jsonl", [untouched, truncated])

    summary = export_file(source, tmp_path / "out.jsonl", ExportOptions(format="skyrl", drop_cut_off=True))
    [record] = read_records(tmp_path / "out.jsonl")
    assert record["trajectory_ids"] == {"instance_id": "0", "repetition_id": 0}
    assert (record["stop_reasons"], record["episode_end"]) == ("stop", "completed")
    assert summary.dropped["cut_off"] == 1


def test_a_refused_row_names_its_line_and_leaves_no_output(tmp_path):
    source = write_rows(tmp_path / "run.jsonl", [make_row(0, 0), without_token_ids(make_row(0, 1))])
    with pytest.raises(InputDataError, match=r"run\.jsonl:2: no token ids"):
        export_file(source, tmp_path / "out.jsonl", ExportOptions(format="nemo_rl"))
    assert not (tmp_path / "out.jsonl").exists()
    assert not list(tmp_path.glob("out.jsonl*"))


def run_export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.export_training_data", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_writes_trl_records_and_refuses_a_row_without_token_ids(tmp_path):
    source = write_rows(tmp_path / "run.jsonl", [make_row(0, 0, 1.0), make_row(0, 1, 0.0, episode_end="max_steps")])
    target = tmp_path / "out.jsonl"

    done = run_export(
        f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={target}", "+format=trl", "+drop_cut_off=true"
    )
    assert done.returncode == 0, done.stderr
    [record] = read_records(target)
    assert record["prompt_ids"] + record["completion_ids"] == FULL_SEQUENCE
    assert "Rows written: 1; dropped: 1" in done.stdout

    broken = write_rows(tmp_path / "broken.jsonl", [make_row(0, 0), make_row(0, 1), without_token_ids(make_row(0, 2))])
    refused = run_export(
        f"+input_jsonl_fpath={broken}", f"+output_jsonl_fpath={tmp_path / 'broken_out.jsonl'}", "+format=verl"
    )
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert f"{broken}:3: no token ids" in line
    assert "Traceback" not in refused.stderr


def test_a_duplicate_row_does_not_make_a_group_complete(tmp_path):
    # Counting rows said "2 of 2"; the group still lacks rollout 1. The rows name their group size.
    rows = [make_row(0, 0), make_row(0, 0), make_row(1, 0), make_row(1, 1)]
    for row in rows:
        row["_ng_group_size"] = 2
    source = write_rows(tmp_path / "run.jsonl", rows)
    summary = export_file(source, tmp_path / "out.jsonl", ExportOptions(format="trl", drop_incomplete_groups=True))
    assert summary.written == 2 and summary.dropped["incomplete_group"] == 2


def test_a_context_limit_episode_is_cut_off(tmp_path):
    source = write_rows(tmp_path / "run.jsonl", [make_row(0, 0), make_row(1, 0, episode_end="context_limit")])
    summary = export_file(source, tmp_path / "out.jsonl", ExportOptions(format="trl", drop_cut_off=True))
    assert summary.written == 1 and summary.dropped["cut_off"] == 1


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        # The reproductions: each was written out (exit 0) as a "training record".
        (
            {"generation_token_ids": ["<script>", None, 5, 6, 7, 8, 9, 10], "generation_log_probs": ["x", {"y": 1}]},
            "response.output[4].generation_token_ids[0]: must be a non-negative integer, got '<script>'",
        ),
        (
            {"generation_token_ids": [True, False, 5, 6, 7, 8, 9, 10]},
            "response.output[4].generation_token_ids[0]: must be a non-negative integer, got True",
        ),
        (
            {"generation_token_ids": "67", "generation_log_probs": [-0.1, -0.2]},
            "response.output[4].generation_token_ids: must be a list of non-negative integers, got '67'",
        ),
    ],
)
def test_command_refuses_token_fields_of_the_wrong_type_in_one_line_and_writes_nothing(tmp_path, fields, named):
    bad = make_row(0, 1)
    bad["response"]["output"][4].update(fields)
    source = write_rows(tmp_path / "run.jsonl", [make_row(0, 0), bad, make_row(0, 2)])
    target = tmp_path / "out.jsonl"

    refused = run_export(f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={target}", "+format=trl")

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines() == [f"ng_export_training_data: error: {source}:2: {named}"]
    assert not list(tmp_path.glob("out.jsonl*"))  # neither the output nor its .partial


def test_a_refused_token_value_carries_its_field_path(tmp_path):
    bad = make_row(0, 0)
    bad["response"]["output"][2]["prompt_token_ids"][3] = -1
    source = write_rows(tmp_path / "run.jsonl", [bad])
    with pytest.raises(InputDataError) as refused:
        export_file(source, tmp_path / "out.jsonl", ExportOptions(format="verl"))
    assert refused.value.line == 1 and refused.value.field == "response.output[2].prompt_token_ids[3]"
    assert not list(tmp_path.glob("out.jsonl*"))
