"""NeMo Gym's collated data writes each task `num_repeats` times in a row (`ng_prepare_data`), and its
collector folds identical rows into one task whose copies are that task's rollouts: one group. A file
where every line comes the same number of times in a row is folded the same way here, through the
run, the groups, the metrics, the job record and a resume. Uneven runs stay a task per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from nemo_gym.aio import run_async
from nemo_gym.client import ServerInfo
from nemo_gym.errors import JobMismatchError
from nemo_gym.rollouts import CollectionSpec, collect_to_file, scan_tasks
from nemo_gym.rollouts.groups import group_size_of
from nemo_gym.rollouts.job_identity import job_record_path
from nemo_gym.testing.inprocess import ThreadedServer, running_head

REWARDS = {"solved": 1.0, "unsolved": 0.0, "half": 0.5}


def recording_agent(bodies: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post("/run")
    async def run(request: Request) -> dict[str, Any]:
        body = await request.json()
        bodies.append(body)
        return {"kind": body["kind"], "response": {"output": []}, "reward": REWARDS[body["kind"]]}

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
    ("kinds", "limit", "copies", "repeated"),
    [
        (["solved", "solved", "unsolved", "unsolved", "half", "half"], None, 2, 3),
        (["solved"] * 3 + ["unsolved"] * 3, None, 3, 4),
        (["solved", "solved", "solved"], None, 3, 2),  # identical rows are one task, as in NeMo Gym
        (["solved", "unsolved", "half"], None, 1, 0),
        (["solved"], None, 1, 0),
        (["solved", "solved", "unsolved", "half", "half"], None, 1, 2),  # uneven: a task per line
        (["solved", "solved", "unsolved", "unsolved"], 3, 1, 1),  # the limit cuts a run: uneven
        (["solved", "unsolved", "solved", "unsolved"], None, 1, 0),  # copies apart are not a run
    ],
)
def test_scan_finds_the_copies_every_line_shares(tmp_path, kinds, limit, copies, repeated):
    scan = scan_tasks(write_tasks(tmp_path / "tasks.jsonl", kinds), limit)
    assert (scan.copies, scan.repeated_lines) == (copies, repeated)
    assert scan.folded_tasks == len(kinds[:limit]) // copies


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
    assert record["input_copies"] == 2 and record["num_repeats"] == 2
    assert group_size_of(output) == 4  # what the exports and the viewer group by

    resumed = run_async(collect_to_file(head_url, spec, output, mode="resume"))

    assert len(bodies) == 12 and resumed.resumed_from == 12 and resumed.complete  # nothing ran again


def test_uneven_copies_stay_a_task_per_line(head_with_agent, tmp_path):
    head_url, bodies = head_with_agent
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["solved", "solved", "unsolved"])
    spec = CollectionSpec(agent_name="recorder", input_jsonl_fpath=str(tasks))
    report = run_async(collect_to_file(head_url, spec, tmp_path / "out.jsonl"))
    assert sorted(b["_ng_task_index"] for b in bodies) == [0, 1, 2] and report.expected == 3
    assert {r["_ng_group_size"] for r in lines(tmp_path / "out.jsonl")} == {1}


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
