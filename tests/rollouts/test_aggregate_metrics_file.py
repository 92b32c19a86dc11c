"""`<stem>_aggregate_metrics.json`: at the end of a collection the environment's `/aggregate_metrics`
(asked through the agent, as NeMo Gym does) is written beside the output in NeMo Gym's shape; an
agent without the route is skipped silently and any other failure is one line, the rows untouched."""

from __future__ import annotations

import asyncio
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from nemo_gym.rollouts import CollectionPolicy, CollectionSpec, RolloutCollector
from nemo_gym.rollouts.aggregate_metrics import write_aggregate_metrics
from nemo_gym.rollouts.file_collection import FileCollection
from nemo_gym.rollouts.metrics import format_key_metrics
from nemo_gym.servers.resources import BaseVerifyRequest, BaseVerifyResponse, SimpleResourcesServer
from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from resources_servers.example_single_tool_call.app import ExampleSingleToolCallConfig, ExampleSingleToolCallServer
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig

ENV = "example_single_tool_call"


@contextmanager
def stack(resources: SimpleResourcesServer):
    """`resources` behind our simple agent and a scripted model; yields a maker of registry clients."""
    with ScriptedOpenAI() as upstream, ThreadedServer.of(resources) as resources_running:
        agent = SimpleAgent(
            config=SimpleAgentConfig(
                name="agent",
                resources_server={"type": "resources_servers", "name": ENV},
                model_server={"type": "responses_api_models", "name": "policy_model"},
            ),
            server_client=registry_client(
                {
                    ENV: ("resources_servers", resources_running.url),
                    "policy_model": ("responses_api_models", upstream.url.removesuffix("/v1")),
                }
            ),
        )
        with ThreadedServer.of(agent) as agent_running:
            yield lambda: registry_client({"agent": ("responses_api_agents", agent_running.url)})


@pytest.fixture(scope="module")
def agent_client():
    """example_single_tool_call (its server gets the default hooks) behind our simple agent and a scripted model."""
    config = ExampleSingleToolCallConfig(name=ENV)
    with stack(ExampleSingleToolCallServer(config=config, server_client=registry_client({}))) as client:
        yield client


def write_tasks(path: Path, count: int) -> Path:
    row = json.loads((Path("resources_servers") / ENV / "data/example.jsonl").read_text().splitlines()[0])
    path.write_text("".join(json.dumps(row | {"n": i}) + "\n" for i in range(count)))
    return path


def run_collection(agent_client, tasks: Path, output: Path, **options):
    collection = FileCollection(
        CollectionSpec(agent_name="agent", input_jsonl_fpath=str(tasks), num_repeats=2), output, **options
    )

    async def go():
        collector = RolloutCollector(agent_client(), "agent", CollectionPolicy(concurrency=4))
        try:
            return await collection.run(collector)
        finally:
            await collector.server_client.aclose()

    with collection:
        return asyncio.run(go())


def test_a_collection_writes_the_environment_metrics_in_nemo_gym_shape(agent_client, tmp_path):
    output = tmp_path / "run.jsonl"
    report = run_collection(agent_client, write_tasks(tmp_path / "tasks.jsonl", 3), output)
    assert report.complete and report.rows == 6

    written = json.loads((tmp_path / "run_aggregate_metrics.json").read_text())
    assert isinstance(written, list) and len(written) == 1
    entry = written[0]
    assert set(entry) == {"agent_ref", "agent_metrics", "key_metrics", "group_level_metrics"}
    assert entry["agent_ref"] == {"name": "agent"}
    assert entry["agent_metrics"]["mean/reward"] == 1.0 and entry["agent_metrics"]["std/reward"] == 0.0
    assert entry["agent_metrics"]["mean/n"] == 1.0  # a numeric task field, averaged over the rollouts
    assert entry["key_metrics"]["mean/reward"] == 1.0
    assert all(key.startswith("mean/") for key in entry["key_metrics"])  # the default get_key_metrics
    assert [group["_ng_task_index"] for group in entry["group_level_metrics"]] == [0, 1, 2]
    assert all(group["num_rollouts"] == 2 for group in entry["group_level_metrics"])
    assert report.aggregate is not None and report.aggregate.path == tmp_path / "run_aggregate_metrics.json"
    assert report.aggregate.key_metrics == {"agent": entry["key_metrics"]} and report.aggregate.errors == []
    # Our own metrics are beside it, under their own name.
    assert json.loads((tmp_path / "run_metrics.json").read_text())["counts"]["rollouts"] == 6


class GuessRequest(BaseVerifyRequest):
    expected_answer: int  # a task field the request declares; `max_guesses` stays an undeclared extra


class GuessResponse(GuessRequest, BaseVerifyResponse):
    output_items: int  # what verify adds: the outcome


class GuessServer(ExampleSingleToolCallServer):
    async def verify(self, body: GuessRequest) -> GuessResponse:  # type: ignore[override]
        return GuessResponse(**body.model_dump(), reward=1.0, output_items=len(body.response.output))


def test_numeric_task_fields_are_no_outcome_metrics_only_what_verify_adds_is(tmp_path):
    """The issue's crafted collection: tasks with numeric `expected_answer` and `max_guesses`."""
    row = json.loads((Path("resources_servers") / ENV / "data/example.jsonl").read_text().splitlines()[0])
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps(row | {"expected_answer": 1000 + 300 * i, "max_guesses": 5 + i}) + "\n" for i in range(3))
    )
    output = tmp_path / "run.jsonl"
    server = GuessServer(config=ExampleSingleToolCallConfig(name=ENV), server_client=registry_client({}))
    with stack(server) as client:
        report = run_collection(client, tasks, output)
    assert report.complete and report.rows == 6

    ours = json.loads((tmp_path / "run_metrics.json").read_text())
    assert set(ours["fields"]) == {"reward", "output_items"}
    printed = format_key_metrics(report.metrics)
    assert "mean/output_items" in printed and "expected_answer" not in printed and "max_guesses" not in printed

    [entry] = json.loads((tmp_path / "run_aggregate_metrics.json").read_text())
    assert set(entry["key_metrics"]) >= {"mean/reward", "mean/output_items"}
    assert not {"mean/expected_answer", "mean/max_guesses"} & set(entry["key_metrics"])
    # NeMo Gym's agent_metrics describe every numeric field; only the headline changed.
    assert entry["agent_metrics"]["mean/expected_answer"] == 1300


def test_aggregation_can_be_turned_off(agent_client, tmp_path):
    report = run_collection(
        agent_client, write_tasks(tmp_path / "tasks.jsonl", 2), tmp_path / "run.jsonl", aggregate=False
    )
    assert report.complete and report.aggregate is None
    assert not (tmp_path / "run_aggregate_metrics.json").exists()


def agent_answering(status: int | None) -> FastAPI:
    app = FastAPI()
    if status is not None:

        @app.post("/aggregate_metrics")
        async def broken() -> JSONResponse:
            return JSONResponse({"error": {"message": "metrics exploded"}}, status_code=status)

    return app


ROWS = [
    {
        "_ng_task_index": 0,
        "_ng_rollout_index": 0,
        "reward": 1.0,
        "response": {"output": [], "usage": {"total_tokens": 3}},
    }
]


def test_an_agent_without_the_route_is_skipped_silently(tmp_path):
    with ThreadedServer(agent_answering(None)) as running:
        client = registry_client({"agent": ("responses_api_agents", running.url)})
        outcome = asyncio.run(write_aggregate_metrics(client, ROWS, tmp_path / "run.jsonl", default_agent="agent"))
    assert outcome.path is None and outcome.errors == [] and outcome.key_metrics == {}
    assert not (tmp_path / "run_aggregate_metrics.json").exists()


def test_a_failing_environment_is_one_line_and_writes_nothing(tmp_path):
    with ThreadedServer(agent_answering(500)) as running:
        client = registry_client({"agent": ("responses_api_agents", running.url)})
        outcome = asyncio.run(write_aggregate_metrics(client, ROWS, tmp_path / "run.jsonl", default_agent="agent"))
    assert outcome.path is None and len(outcome.errors) == 1
    [error] = outcome.errors
    assert "\n" not in error and "metrics exploded" in error and "500" in error and "agent" in error
    assert not (tmp_path / "run_aggregate_metrics.json").exists()


def counting_agent() -> FastAPI:
    app = FastAPI()

    @app.post("/aggregate_metrics")
    async def count(body: dict) -> dict:
        rows = body["verify_responses"]
        return {"key_metrics": {"rows": len(rows), "has_request": any("responses_create_params" in r for r in rows)}}

    return app


def test_rows_go_to_the_agent_their_agent_ref_names_stripped_of_the_request(tmp_path):
    rows = [
        {"_ng_task_index": t, "_ng_rollout_index": 0, "reward": 1.0, "agent_ref": {"name": agent}}
        | {"responses_create_params": {"input": "hi"}}
        for t, agent in enumerate(["counting", "counting", "routeless"])
    ] + [{"_ng_task_index": 3, "_ng_rollout_index": 0, "reward": 0.0}]  # no agent_ref: the default agent's
    with ThreadedServer(counting_agent()) as counting, ThreadedServer(agent_answering(None)) as routeless:
        client = registry_client(
            {
                "counting": ("responses_api_agents", counting.url),
                "routeless": ("responses_api_agents", routeless.url),
            }
        )
        outcome = asyncio.run(write_aggregate_metrics(client, rows, tmp_path / "run.jsonl", default_agent="counting"))
    assert outcome.errors == []
    assert outcome.key_metrics == {"counting": {"rows": 3, "has_request": False}}
    written = json.loads((tmp_path / "run_aggregate_metrics.json").read_text())
    assert [entry["agent_ref"] for entry in written] == [{"name": "counting"}]


def answering(answer: object) -> FastAPI:
    app = FastAPI()

    @app.post("/aggregate_metrics")
    async def aggregate(body: dict) -> object:
        return answer

    return app


@pytest.mark.parametrize(
    "answer, says",
    [
        ([1, 2], "the answer is a list, not an object"),
        ({"key_metrics": [1]}, "`key_metrics` of the answer is not an object"),
        ({"group_level_metrics": [{"a": 1}, 3]}, "`group_level_metrics` of the answer is not a list of objects"),
    ],
)
def test_an_answer_of_the_wrong_shape_is_one_line(tmp_path, answer, says):
    with ThreadedServer(answering(answer)) as running:
        client = registry_client({"agent": ("responses_api_agents", running.url)})
        outcome = asyncio.run(write_aggregate_metrics(client, ROWS, tmp_path / "run.jsonl", default_agent="agent"))
    assert outcome.path is None and len(outcome.errors) == 1 and says in outcome.errors[0]
    assert not (tmp_path / "run_aggregate_metrics.json").exists()


def test_the_file_holds_each_field_of_the_answer_defaults_filled_and_nothing_else(tmp_path):
    answer = {"key_metrics": {"mean/reward": 1.0}, "extra_field": {"not": "kept"}}
    with ThreadedServer(answering(answer)) as running:
        client = registry_client({"agent": ("responses_api_agents", running.url)})
        outcome = asyncio.run(write_aggregate_metrics(client, ROWS, tmp_path / "run.jsonl", default_agent="agent"))
    assert outcome.errors == [] and outcome.key_metrics == {"agent": {"mean/reward": 1.0}}
    written = json.loads((tmp_path / "run_aggregate_metrics.json").read_text())
    assert written == [
        {
            "agent_ref": {"name": "agent"},
            "group_level_metrics": [],
            "agent_metrics": {},
            "key_metrics": {"mean/reward": 1.0},
        }
    ]
