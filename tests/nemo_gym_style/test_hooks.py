"""NeMo Gym's server hooks, served over HTTP by our machinery: `/aggregate_metrics` with the
environment's `compute_metrics` / `get_key_metrics`, `GET /reverify_mode`, the judge failsafe
around `/verify`, and a multi-reward verify response kept whole in the row."""

import asyncio
import importlib.util
import json
import math
from pathlib import Path

import httpx
import pytest
from app import LuckyNumberConfig, LuckyNumberServer

from nemo_gym.cli.reverify import check_reverify_modes
from nemo_gym.errors import ConfigError
from nemo_gym.rollouts.metrics import aggregate_rollouts, format_key_metrics
from nemo_gym.testing import ThreadedServer, registry_client

ENVS = Path(__file__).parent / "envs"


def load_env(name: str):
    # Every env folder has an `app.py`; load this one under its own module name.
    spec = importlib.util.spec_from_file_location(f"{name}_app", ENVS / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


guess_scores = load_env("guess_scores")


@pytest.fixture
def scores_server():
    server = guess_scores.GuessScoresServer(
        config=guess_scores.GuessScoresConfig(name="guess_scores"), server_client=registry_client({})
    )
    with ThreadedServer.of(server) as running:
        yield running


def answered(task: dict, text: str) -> dict:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return task | {
        "response": {
            "id": "resp_1",
            "output": [message],
            "usage": {"input_tokens": 10, "output_tokens": 4, "total_tokens": 14},
        }
    }


def tasks() -> list[dict]:
    return [json.loads(line) for line in (ENVS / "guess_scores/data/example.jsonl").read_text().splitlines()]


# (task, rollout) -> the policy's answer: task 0 right twice (polite once), task 1 wrong then right.
ANSWERS = {(0, 0): "Please: 7", (0, 1): "7", (1, 0): "13", (1, 1): "It is 42 please"}


def verified_rows(client: httpx.Client) -> list[dict]:
    rows = []
    for (task, rollout), text in ANSWERS.items():
        answer = client.post("/verify", json=answered(tasks()[task], text))
        assert answer.status_code == 200, answer.text
        rows.append(answer.json() | {"_ng_task_index": task, "_ng_rollout_index": rollout})
    return rows


def test_multi_reward_row_keeps_its_components(scores_server: ThreadedServer) -> None:
    with httpx.Client(base_url=scores_server.url) as client:
        row = client.post("/verify", json=answered(tasks()[0], "Please: 7")).json()
    assert row["reward"] == 2.0
    assert row["reward_components"] == {"correct": 1.0, "polite": 1.0}
    assert row["correct"] == 1.0 and row["secret"] == 7


def test_aggregate_metrics_calls_the_environment_hooks_with_nemo_gym_shapes(scores_server: ThreadedServer) -> None:
    with httpx.Client(base_url=scores_server.url) as client:
        rows = verified_rows(client)
        stripped = [{k: v for k, v in row.items() if k != "responses_create_params"} for row in rows]
        answer = client.post("/aggregate_metrics", json={"verify_responses": stripped})
    assert answer.status_code == 200, answer.text
    metrics = answer.json()
    assert set(metrics) == {"group_level_metrics", "agent_metrics", "key_metrics"}

    agent = metrics["agent_metrics"]
    # Baseline statistics over all four rollouts (rewards 2, 1, 0, 2).
    assert agent["mean/reward"] == 1.25 and agent["max/reward"] == 2.0 and agent["min/reward"] == 0.0
    assert agent["median/reward"] == 1.5
    assert math.isclose(agent["std/reward"], math.sqrt(((0.75**2) * 2 + 0.25**2 + 1.25**2) / 3))
    assert agent["mean/correct"] == 0.75 and agent["mean/polite"] == 0.5 and agent["mean/secret"] == 24.5
    assert agent["mean/total_tokens"] == 14  # response.usage is laid over the row, as NeMo Gym does
    assert "mean/_ng_task_index" not in agent and "mean/_ng_rollout_index" not in agent
    # compute_metrics is merged in: pass@k over the environment's own scores.
    assert agent["pass@1/correct"] == 75.0 and agent["pass@2/correct"] == 100.0
    assert agent["pass@1[avg-of-2]/polite"] == 50.0
    assert "per_task_metrics" not in agent
    # get_key_metrics chose the headline.
    assert metrics["key_metrics"] == {"pass@2/correct": 100.0, "pass@2/polite": 100.0, "mean/reward": 1.25}

    groups = metrics["group_level_metrics"]
    assert [group["_ng_task_index"] for group in groups] == [0, 1]
    first, second = groups
    assert first["mean/reward"] == 1.5 and first["num_rollouts"] == 2 and first["std/reward"] == math.sqrt(0.5)
    assert second["min/correct"] == 0.0 and second["max/correct"] == 1.0
    assert first["solved"] is True and second["solved"] is True  # per_task_metrics went to their groups
    assert [info["rollout_id"] for info in second["rollout_infos"]] == ["1:0", "1:1"]
    assert second["rollout_infos"][0]["reward"] == 0.0 and second["sample"]["secret"] == 42


def test_a_task_with_one_rollout_has_zero_spread_and_no_rows_give_empty_metrics(scores_server: ThreadedServer) -> None:
    with httpx.Client(base_url=scores_server.url) as client:
        row = verified_rows(client)[0]
        one = client.post("/aggregate_metrics", json={"verify_responses": [row]}).json()
        none = client.post("/aggregate_metrics", json={"verify_responses": []}).json()
    assert one["agent_metrics"]["std/reward"] == 0.0
    assert none == {"group_level_metrics": [], "agent_metrics": {}, "key_metrics": {}}


def test_reverify_mode_is_the_config_class_value() -> None:
    lucky = LuckyNumberServer(config=LuckyNumberConfig(name="lucky_number"), server_client=registry_client({}))
    scores = guess_scores.GuessScoresServer(
        config=guess_scores.GuessScoresConfig(name="guess_scores"), server_client=registry_client({})
    )
    with ThreadedServer.of(lucky) as lucky_running, ThreadedServer.of(scores) as scores_running:
        assert httpx.get(f"{lucky_running.url}/reverify_mode").json() == "stateless"
        assert httpx.get(f"{scores_running.url}/reverify_mode").json() == "unsupported"
        # The default hooks answer too: lucky_number chose its own key metrics, pass@1[avg-of-k].
        lucky_rows = [{"_ng_task_index": 0, "_ng_rollout_index": 0, "reward": 1.0, "extracted_answer": 7}]
        lucky_metrics = httpx.post(f"{lucky_running.url}/aggregate_metrics", json={"verify_responses": lucky_rows})
        assert lucky_metrics.json()["key_metrics"] == {"pass@1[avg-of-1]/accuracy": 100.0}


@pytest.mark.parametrize(
    ("text", "said"), [("ask the judge", "refused the connection"), ("judge already failed", "judge timed out")]
)
def test_a_failed_judge_fails_the_rollout_instead_of_scoring_zero(scores_server: ThreadedServer, text, said) -> None:
    with httpx.Client(base_url=scores_server.url) as client:
        answer = client.post("/verify", json=answered(tasks()[0], text))
    # 502: the collector retries the rollout, then records it as a failure (never a row with reward 0).
    assert answer.status_code == 502, answer.text
    assert "judge" in answer.json()["error"]["message"] and said in answer.json()["error"]["message"]
    assert "reward" not in answer.json()


def test_collection_metrics_carry_each_reward_component() -> None:
    rows = [
        {
            "_ng_task_index": 0,
            "_ng_rollout_index": 0,
            "reward": 2.0,
            "reward_components": {"correct": 1.0, "polite": 1.0},
        },
        {
            "_ng_task_index": 0,
            "_ng_rollout_index": 1,
            "reward": 1.0,
            "reward_components": {"correct": 1.0, "polite": 0.0},
        },
    ]
    metrics = aggregate_rollouts(rows, num_repeats=2)
    assert metrics["fields"]["reward_components/correct"]["mean"] == 1.0
    assert metrics["fields"]["reward_components/polite"]["mean"] == 0.5
    assert metrics["key_metrics"]["mean/reward_components/polite"] == 0.5
    assert "mean/reward_components/polite 0.5000" in format_key_metrics(metrics)


def test_ng_reverify_refuses_an_environment_that_says_its_rows_cannot_be_reverified(scores_server, capsys) -> None:
    lucky = LuckyNumberServer(config=LuckyNumberConfig(name="lucky_number"), server_client=registry_client({}))
    with ThreadedServer.of(lucky) as lucky_running:
        servers = {
            "guess_scores": ("resources_servers", scores_server.url),
            "lucky_number": ("resources_servers", lucky_running.url),
        }

        async def check(names: list[str], force: bool) -> None:
            client = registry_client(servers)
            try:
                await check_reverify_modes(client, names, force=force)
            finally:
                await client.aclose()

        asyncio.run(check(["lucky_number"], force=False))  # stateless: fine
        with pytest.raises(ConfigError, match="guess_scores answer reverify_mode 'unsupported'.*\\+force=true"):
            asyncio.run(check(["guess_scores", "lucky_number"], force=False))
        asyncio.run(check(["guess_scores"], force=True))
    assert "re-verified rewards may be wrong" in capsys.readouterr().err
