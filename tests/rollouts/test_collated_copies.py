"""NeMo Gym's collated data writes each task `num_repeats` times in a row (`ng_prepare_data`), and its
collector folds identical rows into one task whose copies are that task's rollouts: one group. Every run of
identical consecutive lines is folded the same way here, whatever its length (data sets with different
num_repeats collated into one file give runs of different lengths, so groups of different sizes), through
the run, the groups, the metrics, the job record, a resume and the readers of the rows file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from nemo_gym.aio import run_async
from nemo_gym.client import ServerInfo
from nemo_gym.errors import JobMismatchError
from nemo_gym.rollouts import CollectionSpec, FileCollection, collect_to_file, scan_tasks
from nemo_gym.rollouts.groups import GroupTally, group_size_of
from nemo_gym.rollouts.job_identity import job_record_path
from nemo_gym.testing.inprocess import ThreadedServer, running_head
from nemo_gym.training.export import ExportOptions, export_file

REWARDS = {"solved": 1.0, "unsolved": 0.0, "half": 0.5}


def recording_agent(bodies: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post("/run")
    async def run(request: Request) -> dict[str, Any]:
        body = await request.json()
        bodies.append(body)
        return {
            "kind": body["kind"],
            "responses_create_params": body["responses_create_params"],
            "response": {
                "output": [
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]}
                ]
            },
            "reward": REWARDS[body["kind"]],
        }

    return app


@pytest.fixture
def head_with_agent():
    bodies: list[dict[str, Any]] = []
    with ThreadedServer(recording_agent(bodies)) as agent:
        row = ServerInfo(name="recorder", server_type="responses_api_agents", implementation="t", url=agent.url)
        with running_head([row]) as head_url:
            yield head_url, bodies


def task(kind: str) -> dict[str, Any]:
    return {"kind": kind, "responses_create_params": {"input": f"task {kind}"}}


def write_tasks(path: Path, kinds: list[str]) -> Path:
    path.write_text("".join(json.dumps(task(kind)) + "\n" for kind in kinds))
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("kinds", "limit", "runs", "repeated"),
    [
        (["solved", "solved", "unsolved", "unsolved", "half", "half"], None, [2, 2, 2], 3),
        (["solved"] * 3 + ["unsolved"] * 3, None, [3, 3], 4),
        (["solved", "solved", "solved"], None, [3], 2),  # identical rows are one task, as in NeMo Gym
        (["solved", "unsolved", "half"], None, [1, 1, 1], 0),
        (["solved"], None, [1], 0),
        (["solved", "solved", "unsolved", "half", "half"], None, [2, 1, 2], 2),  # runs of any length fold
        (["solved"] * 3 + ["unsolved"] * 2 + ["half"], None, [3, 2, 1], 3),
        (["solved", "solved", "unsolved", "unsolved"], 3, [2, 1], 1),  # the limit cuts a run
        (["solved", "unsolved", "solved", "unsolved"], None, [1, 1, 1, 1], 0),  # copies apart are not a run
    ],
)
def test_scan_folds_every_run_of_identical_lines(tmp_path, kinds, limit, runs, repeated):
    scan = scan_tasks(write_tasks(tmp_path / "tasks.jsonl", kinds), limit, repeats=2)
    plan = scan.plan
    assert scan.repeated_lines == repeated and plan.num_tasks == len(runs)
    assert [plan.copies_of(t) for t in range(plan.num_tasks)] == runs
    assert [plan.size_of(t) for t in range(plan.num_tasks)] == [2 * run for run in runs]
    assert plan.rollouts == 2 * sum(runs) and plan.sizes_vary == (len(set(runs)) > 1)
    # Nothing beyond a few integers unless the tasks differ (memory stays flat for the usual input).
    assert (plan.runs is None) == (len(set(runs)) == 1)


def test_collated_copies_are_one_task_and_one_group_through_run_groups_metrics_and_resume(head_with_agent, tmp_path):
    head_url, bodies = head_with_agent
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["solved", "solved", "unsolved", "unsolved", "half", "half"])
    spec = CollectionSpec(agent_name="recorder", input_jsonl_fpath=str(tasks), num_repeats=2, num_repeats_add_seed=True)
    output = tmp_path / "out.jsonl"

    report = run_async(collect_to_file(head_url, spec, output))

    # 3 tasks x (2 copies x num_repeats 2) rollouts; each rollout's seed is its rollout index (NeMo Gym's
    # num_repeats_add_seed counts across a task's copies).
    sent = sorted(
        (
            b["_ng_task_index"],
            b["_ng_rollout_index"],
            json.loads(b["responses_create_params"]["metadata"]["extra_body"]),
        )
        for b in bodies
    )
    assert sent == [(t, r, {"seed": r}) for t in range(3) for r in range(4)]
    rows = lines(output)
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows) == [
        (t, r) for t in range(3) for r in range(4)
    ]
    assert {r["_ng_group_size"] for r in rows} == {4}
    assert {r["_ng_task_index"]: r["kind"] for r in rows} == {0: "solved", 1: "unsolved", 2: "half"}
    assert report.expected == 12 and report.rows == 12 and report.complete
    assert report.metrics["counts"]["tasks"] == 3 and report.metrics["counts"]["expected_rollouts"] == 12
    assert report.metrics["key_metrics"]["pass@4"] == pytest.approx(1 / 3)  # only the solved task passes
    assert report.groups is not None and report.groups.complete == 3 and report.groups.incomplete == 0
    groups = lines(tmp_path / "out_groups.jsonl")
    assert [(g["_ng_task_index"], g["complete"]) for g in groups] == [(0, True), (1, True), (2, True)]
    record = json.loads(job_record_path(output).read_text())
    assert record["input_copies"] == 2 and record["num_repeats"] == 2 and record["folds_runs"] is True
    assert group_size_of(output) == 4  # what the exports and the viewer group by

    resumed = run_async(collect_to_file(head_url, spec, output, mode="resume"))

    assert len(bodies) == 12 and resumed.resumed_from == 12 and resumed.complete  # nothing ran again


def test_runs_of_different_lengths_are_tasks_with_groups_of_their_own_sizes(head_with_agent, tmp_path):
    # What ng_prepare_data writes when data sets with num_repeats 3, 2 and 1 are collated into one file.
    head_url, bodies = head_with_agent
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["solved"] * 3 + ["unsolved"] * 2 + ["half"])
    spec = CollectionSpec(agent_name="recorder", input_jsonl_fpath=str(tasks), num_repeats=2)
    output = tmp_path / "out.jsonl"

    report = run_async(collect_to_file(head_url, spec, output))

    owed = [(0, r) for r in range(6)] + [(1, r) for r in range(4)] + [(2, r) for r in range(2)]
    assert sorted((b["_ng_task_index"], b["_ng_rollout_index"]) for b in bodies) == owed
    rows = lines(output)
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows) == owed
    assert {(r["_ng_task_index"], r["kind"], r["_ng_group_size"]) for r in rows} == {
        (0, "solved", 6),
        (1, "unsolved", 4),
        (2, "half", 2),
    }
    assert report.expected == 12 and report.rows == 12 and report.complete
    counts = report.metrics["counts"]
    assert counts["tasks"] == 3 and counts["expected_rollouts"] == 12 and counts["rollouts"] == 12
    # pass@k up to the smallest group (2), averaged over every task; only the solved task passes.
    assert report.metrics["key_metrics"]["pass@2"] == pytest.approx(1 / 3)
    assert report.groups is not None and (report.groups.complete, report.groups.incomplete) == (3, 0)
    assert report.groups.group_size is None and report.groups.group_sizes == [2, 4, 6]
    groups = lines(tmp_path / "out_groups.jsonl")
    assert [(g["_ng_task_index"], g["group_size"], g["complete"]) for g in groups] == [
        (0, 6, True),
        (1, 4, True),
        (2, 2, True),
    ]
    assert report.quality is not None and report.quality.check("incomplete_groups").status == "ok"
    assert report.quality.check("missing_rollouts").total == 12
    record = json.loads(job_record_path(output).read_text())
    assert (record["input_copies"], record["tasks"], record["group_size"]) == (0, 3, 0)

    # Readers of the rows file alone (exports, the viewer) take each task's size from its rows.
    assert group_size_of(output) is None
    tally = GroupTally().add_rows(rows)
    assert [tally.is_complete(t) for t in range(3)] == [True, True, True]
    exported = export_file(
        output, tmp_path / "train.jsonl", ExportOptions(format="messages", drop_incomplete_groups=True)
    )
    assert exported.written == 12 and exported.dropped["incomplete_group"] == 0

    # Without one of task 1's rows, only its group is incomplete (its own size, 4, is owed).
    partial = tmp_path / "partial.jsonl"
    partial.write_text(
        "".join(json.dumps(r) + "\n" for r in rows if (r["_ng_task_index"], r["_ng_rollout_index"]) != (1, 3))
    )
    exported = export_file(
        partial, tmp_path / "train2.jsonl", ExportOptions(format="messages", drop_incomplete_groups=True)
    )
    assert exported.written == 8 and exported.dropped["incomplete_group"] == 3

    resumed = run_async(collect_to_file(head_url, spec, output, mode="resume"))

    assert len(bodies) == 12 and resumed.resumed_from == 12 and resumed.complete  # nothing ran again


def test_a_resume_of_a_partly_collected_uneven_input_runs_only_what_is_missing(head_with_agent, tmp_path):
    head_url, bodies = head_with_agent
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["solved"] * 2 + ["unsolved"])
    spec = CollectionSpec(agent_name="recorder", input_jsonl_fpath=str(tasks))
    output = tmp_path / "out.jsonl"
    run_async(collect_to_file(head_url, spec, output))
    kept = [r for r in lines(output) if (r["_ng_task_index"], r["_ng_rollout_index"]) != (0, 1)]
    output.write_text("".join(json.dumps(r) + "\n" for r in kept))
    bodies.clear()

    resumed = run_async(collect_to_file(head_url, spec, output, mode="resume"))

    assert [(b["_ng_task_index"], b["_ng_rollout_index"]) for b in bodies] == [(0, 1)]
    assert resumed.complete and resumed.expected == 3
    assert {(r["_ng_task_index"], r["_ng_group_size"]) for r in lines(output)} == {(0, 2), (1, 1)}


def test_resume_of_an_uneven_output_written_before_runs_of_any_length_folded_is_refused(head_with_agent, tmp_path):
    head_url, _ = head_with_agent
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["solved", "solved", "unsolved"])
    spec = CollectionSpec(agent_name="recorder", input_jsonl_fpath=str(tasks))
    output = tmp_path / "out.jsonl"
    run_async(collect_to_file(head_url, spec, output))
    # The previous version wrote this output with each line of an uneven input its own task: its record has
    # input_copies 1 and none of the fields that came with folding runs of any length.
    record_path = job_record_path(output)
    record = json.loads(record_path.read_text())
    for field in ("folds_runs", "tasks", "group_size", "num_repeats_per_agent"):
        del record[field]
    record["input_copies"] = 1
    record_path.write_text(json.dumps(record))
    before = output.read_bytes()

    with pytest.raises(JobMismatchError, match="copies of each task line folded into one task differs") as refused:
        run_async(collect_to_file(head_url, spec, output, mode="resume"))
    assert "was 1, now runs of different lengths" in str(refused.value)
    assert output.read_bytes() == before


def test_resume_with_another_per_agent_num_repeats_is_refused_by_name(head_with_agent, tmp_path):
    head_url, bodies = head_with_agent
    routed = [task("solved") | {"agent_ref": {"name": "recorder"}}, task("unsolved")]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(row) + "\n" for row in routed))
    output = tmp_path / "out.jsonl"
    spec = CollectionSpec(
        agent_name="other", input_jsonl_fpath=str(tasks), num_repeats_per_agent={"recorder": 2, "other": 1}
    )
    scan = scan_tasks(tasks, route_to="other", routed=True, repeats={"recorder": 2, "other": 1})
    assert [scan.plan.size_of(t) for t in range(2)] == [2, 1]
    # Only the plan's own agent runs here; recording the job is what this test is about.
    with FileCollection(spec, output) as collection:
        assert collection.opened is not None and collection.opened.plan.rollouts == 3
    record = json.loads(job_record_path(output).read_text())
    assert record["num_repeats_per_agent"] == {"other": 1, "recorder": 2}

    changed = spec.model_copy(update={"num_repeats_per_agent": {"recorder": 3, "_default": 1}})
    with pytest.raises(JobMismatchError, match="num_repeats per agent differs") as refused:
        FileCollection(changed, output, mode="resume").open()
    assert refused.value.field == "num_repeats per agent"
    # The same plan written another way is the same job (entries for agents no task goes to decide nothing).
    same = spec.model_copy(update={"num_repeats_per_agent": {"recorder": 2, "_default": 1, "unused": 7}})
    with FileCollection(same, output, mode="resume") as collection:
        assert collection.opened is not None and collection.opened.plan.rollouts == 3
    assert not bodies


def test_resume_of_an_output_written_before_folding_is_refused_by_name(head_with_agent, tmp_path):
    head_url, _ = head_with_agent
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["solved", "solved"])
    spec = CollectionSpec(agent_name="recorder", input_jsonl_fpath=str(tasks))
    output = tmp_path / "out.jsonl"
    run_async(collect_to_file(head_url, spec, output))
    # An older version wrote this output with each line its own task: its record has no input_copies.
    record_path = job_record_path(output)
    record = json.loads(record_path.read_text())
    del record["input_copies"]
    record_path.write_text(json.dumps(record))
    before = output.read_bytes()

    with pytest.raises(JobMismatchError, match="copies of each task line folded into one task differs"):
        run_async(collect_to_file(head_url, spec, output, mode="resume"))
    assert output.read_bytes() == before
