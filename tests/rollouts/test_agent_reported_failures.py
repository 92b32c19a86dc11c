"""A NeMo Gym agent reports a failed rollout in the row it returns (`_ng_failure_class`, and
`_ng_failure_terminal` / `_ng_no_persist`), not with an error status. Such a row is a failure: it goes
to the failures file (or nowhere, when killed), never to the rows or the metrics, is not retried in the
run, and a resume runs it again unless the agent said retrying cannot help."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from nemo_gym.aio import run_async
from nemo_gym.client import ServerInfo
from nemo_gym.rollout_collection import NG_FAILURE_CLASS_KEY, NG_NO_PERSIST_KEY, NG_TERMINAL_KEY
from nemo_gym.rollouts import CollectionSpec, collect_to_file
from nemo_gym.testing.inprocess import ThreadedServer, running_head

# What the agent answers per task: a scored row, or one of NeMo Gym's failure shapes.
ANSWERS: dict[str, dict[str, Any]] = {
    "fine": {"reward": 1.0},
    "flaky": {"reward": 0.0, NG_FAILURE_CLASS_KEY: "timeout_exceeded", "error": "the sandbox never answered"},
    "hopeless": {"reward": 0.0, NG_FAILURE_CLASS_KEY: "skipped", NG_TERMINAL_KEY: True},
    "killed": {NG_NO_PERSIST_KEY: True},
}


def reporting_agent(calls: Counter[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/run")
    async def run(request: Request) -> dict[str, Any]:
        body = await request.json()
        kind = body["kind"]
        calls[kind] += 1
        return {"kind": kind, "response": {"output": []}, **ANSWERS[kind]}

    return app


@pytest.fixture
def head_with_agent():
    calls: Counter[str] = Counter()
    with ThreadedServer(reporting_agent(calls)) as agent:
        row = ServerInfo(name="reporter", server_type="responses_api_agents", implementation="t", url=agent.url)
        with running_head([row]) as head_url:
            yield head_url, calls


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_rows_marked_failed_by_the_agent_are_failures_and_resume_follows_their_markers(head_with_agent, tmp_path):
    head_url, calls = head_with_agent
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps({"kind": kind, "responses_create_params": {"input": kind}}) + "\n" for kind in ANSWERS)
    )
    spec = CollectionSpec(agent_name="reporter", input_jsonl_fpath=str(tasks))
    output = tmp_path / "out.jsonl"

    report = run_async(collect_to_file(head_url, spec, output))

    assert [row["kind"] for row in lines(output)] == ["fine"]  # only the scored row is a row
    assert report.rows == 1 and report.failed_this_run == 3 and report.missing == 3
    assert report.metrics["counts"]["rollouts"] == 1 and report.metrics["counts"]["failed"] == 3
    assert report.metrics["fields"]["reward"]["mean"] == 1.0  # the failures' 0.0 never reaches the metrics
    failures = {record["_ng_task_index"]: record for record in lines(tmp_path / "out_failures.jsonl")}
    assert sorted(failures) == [1, 2]  # the killed rollout is written nowhere
    assert failures[1][NG_FAILURE_CLASS_KEY] == "timeout_exceeded" and failures[1]["attempts"] == 1
    assert failures[1]["error_type"] == "AgentReportedFailureError"
    assert "failure class 'timeout_exceeded': the sandbox never answered" in failures[1]["message"]
    assert failures[2][NG_TERMINAL_KEY] is True
    assert calls == Counter({"fine": 1, "flaky": 1, "hopeless": 1, "killed": 1})  # none retried in the run

    resumed = run_async(collect_to_file(head_url, spec, output, mode="resume"))

    # The flaky and the killed rollouts run again; the terminal one and the done one do not.
    assert calls == Counter({"fine": 1, "flaky": 2, "hopeless": 1, "killed": 2})
    assert resumed.resumed_from == 1 and resumed.failed_this_run == 2
    assert sorted(record["_ng_task_index"] for record in lines(tmp_path / "out_failures.jsonl")) == [1, 2]
