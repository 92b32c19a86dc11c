"""ng_reverify: stored responses are verified again with no model call, and changed rewards are counted."""

from __future__ import annotations

import json
import shutil

import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from tests.conftest import PROJECT_ROOT, TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, cli
from tests.e2e.env_rollouts import OPENAI_MODEL_CONFIG

pytestmark = pytest.mark.slow
COUNTER_CONFIGS = (
    "resources_servers/example_stateful_counter/configs/example_stateful_counter.yaml,"
    "responses_api_models/openai_model/configs/openai_model.yaml"
)
COUNTER_DATA = "resources_servers/example_stateful_counter/data/example.jsonl"
ALTERED = {(0, 0), (2, 1), (3, 0)}


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_counts_hand_altered_rewards_exactly_and_never_calls_the_model(upstream, head_port, tmp_path):
    collected = tmp_path / "rollouts.jsonl"
    with NgRunProcess(
        TUTORIAL_CONFIGS,
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=x",
        "+policy_model_name=scripted-model",
    ):
        result = cli(
            "ng_collect_rollouts",
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={TUTORIAL_DATA}",
            f"+output_jsonl_fpath={collected}",
            "+limit=5",
            "+num_repeats=2",
            f"+head_server.port={head_port}",
        )
        assert result.returncode == 0, result.stderr
        rows = read_rows(collected)
        assert len(rows) == 10 and all(row["reward"] == 1.0 for row in rows)
        for row in rows:
            if (row["_ng_task_index"], row["_ng_rollout_index"]) in ALTERED:
                row["reward"] = 0.0
        altered = tmp_path / "altered.jsonl"
        write_rows(altered, rows)
        # The exact task rows the collector sent travel with the altered file, as they would beside any collection.
        shutil.copy(tmp_path / "rollouts_materialized_inputs.jsonl", tmp_path / "altered_materialized_inputs.jsonl")
        model_calls_before = len(upstream.requests)

        output = tmp_path / "reverified.jsonl"
        result = cli(
            "ng_reverify",
            f"+input_jsonl_fpath={altered}",
            f"+output_jsonl_fpath={output}",
            f"+head_server.port={head_port}",
        )
        assert len(upstream.requests) == model_calls_before  # not one model call
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Re-verified 10 of 10 rows: 3 rewards changed."
    assert lines[1:4] == [
        "  task 0: 1 of 2 rewards changed, mean 0.500 -> 1.000",
        "  task 2: 1 of 2 rewards changed, mean 0.500 -> 1.000",
        "  task 3: 1 of 2 rewards changed, mean 0.500 -> 1.000",
    ]
    reverified = read_rows(output)
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in reverified) == sorted(
        (r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows
    )
    assert all(row["reward"] == 1.0 for row in reverified)
    by_key = {(r["_ng_task_index"], r["_ng_rollout_index"]): r for r in rows}
    for row in reverified:
        stored = by_key[(row["_ng_task_index"], row["_ng_rollout_index"])]
        assert row["response"] == stored["response"] and row["agent_ref"] == stored["agent_ref"]


def add_three_then_answer(body):
    """A scripted model for the counter environment: add 3 once, then answer."""
    if any(item.get("type") == "function_call_output" for item in body.get("input") or []):
        return Turn(text="done")
    return Turn(tool_calls=[("increment_counter", '{"count": 3}')])


def test_stateful_environment_is_rescored_by_replaying_its_tool_calls(head_port, tmp_path):
    collected = tmp_path / "counter.jsonl"
    with ScriptedOpenAI(add_three_then_answer) as model:
        start = (
            f"+config_paths=[{COUNTER_CONFIGS}]",
            f"+head_server.port={head_port}",
            f"+policy_base_url={model.url}",
            "+policy_api_key=x",
            "+policy_model_name=scripted-model",
        )
        result = cli(
            "ng_collect_rollouts",
            *start,
            "+agent_name=example_stateful_counter_simple_agent",
            f"+input_jsonl_fpath={COUNTER_DATA}",
            f"+output_jsonl_fpath={collected}",
            timeout=180,
        )
        assert result.returncode == 0, result.stderr
        stored = {r["_ng_task_index"]: r for r in read_rows(collected)}
        # Task 0 starts at 3 and expects 6: only it scores, and only through the session's state.
        assert {task: row["reward"] for task, row in stored.items()} == {0: 1.0, 1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}
        model_calls = len(model.requests)

        replayed = tmp_path / "replayed.jsonl"
        result = cli(
            "ng_reverify", *start, f"+input_jsonl_fpath={collected}", f"+output_jsonl_fpath={replayed}", timeout=180
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[0] == "Re-verified 5 of 5 rows: 0 rewards changed."
        assert {r["_ng_task_index"]: r["final_count"] for r in read_rows(replayed)} == {
            task: row["final_count"] for task, row in stored.items()
        }

        # Without the replay the counter is never incremented: the one success is lost, and counted.
        bare = tmp_path / "bare.jsonl"
        result = cli(
            "ng_reverify",
            *start,
            f"+input_jsonl_fpath={collected}",
            f"+output_jsonl_fpath={bare}",
            "+replay_tool_calls=false",
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[:2] == [
            "Re-verified 5 of 5 rows: 1 rewards changed.",
            "  task 0: 1 of 1 rewards changed, mean 1.000 -> 0.000",
        ]

        # A copy without the collector's materialized inputs beside it: the stored rows stand in for their tasks
        # (verify drops the `final_count` they carry) and the run says so; the original tasks file gives the exact
        # task rows and no such note.
        copy = tmp_path / "elsewhere" / "counter.jsonl"
        copy.parent.mkdir()
        shutil.copy(collected, copy)
        result = cli(
            "ng_reverify",
            *start,
            f"+input_jsonl_fpath={copy}",
            f"+output_jsonl_fpath={tmp_path / 'x.jsonl'}",
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[:2] == [
            "Re-verified 5 of 5 rows: 0 rewards changed.",
            "  5 of 5 rows matched no task row and were verified from the stored row (fields verify added are "
            "dropped; task fields the row lacks are missing); pass +tasks_jsonl_fpath=<the tasks the collection ran "
            "on> to verify them from their tasks.",
        ]
        result = cli(
            "ng_reverify",
            *start,
            f"+input_jsonl_fpath={copy}",
            f"+output_jsonl_fpath={tmp_path / 'y.jsonl'}",
            f"+tasks_jsonl_fpath={COUNTER_DATA}",
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[0] == "Re-verified 5 of 5 rows: 0 rewards changed."
        assert "matched no task row" not in result.stdout
        assert len(model.requests) == model_calls


def test_refuses_to_overwrite_and_names_a_bad_line(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"responses_create_params": {"input": "hi"}, "response": {"output": []}, "reward": 1}\n{oops\n')
    existing = tmp_path / "out.jsonl"
    existing.write_text("keep me\n")
    result = cli("ng_reverify", f"+input_jsonl_fpath={rows}", f"+output_jsonl_fpath={existing}", timeout=60)
    assert result.returncode == 2 and "already exists; pass +overwrite=true" in result.stderr
    assert existing.read_text() == "keep me\n"
    result = cli(
        "ng_reverify", f"+input_jsonl_fpath={rows}", f"+output_jsonl_fpath={tmp_path / 'new.jsonl'}", timeout=60
    )
    assert result.returncode == 2 and f"{rows}:2: not valid JSON" in result.stderr


def test_without_servers_says_how_to_get_them(tmp_path, head_port):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"responses_create_params": {"input": "hi"}, "response": {"output": []}, "reward": 1}\n')
    result = cli(
        "ng_reverify",
        f"+input_jsonl_fpath={rows}",
        f"+output_jsonl_fpath={tmp_path / 'new.jsonl'}",
        f"+head_server.port={head_port}",
        timeout=60,
    )
    assert result.returncode == 1
    assert "start the servers with ng_run, or pass +config_paths=[...]" in result.stderr


def test_rows_of_another_environment_are_refused_unless_forced(upstream, head_port, tmp_path):
    # mcqa's example rollouts (all reward 0, agent_ref mcqa_simple_agent) onto example_single_tool_call, which scores
    # every episode 1.0: before, "Re-verified 5 of 5 rows: 5 rewards changed." and exit 0.
    source = tmp_path / "mcqa_rollouts.jsonl"
    shutil.copy(PROJECT_ROOT / "resources_servers/mcqa/data/example_rollouts.jsonl", source)
    refusal = (
        f"ng_reverify: error: {source}:1: agent_ref.name: this row was collected by 'mcqa_simple_agent' for "
        f"environment 'mcqa', not 'example_single_tool_call' that would verify it; its reward there would mean "
        f"nothing. Verify it with its own resources server, or pass +force=true"
    )
    with NgRunProcess(
        TUTORIAL_CONFIGS,
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=x",
        "+policy_model_name=scripted-model",
    ):
        runs = {
            # named on the command line
            "named": ("+resources_server_name=example_single_tool_call",),
            # or chosen as the only resources server running
            "only_running": (),
        }
        for name, extra in runs.items():
            output = tmp_path / f"{name}.jsonl"
            result = cli(
                "ng_reverify",
                f"+input_jsonl_fpath={source}",
                f"+output_jsonl_fpath={output}",
                f"+head_server.port={head_port}",
                *extra,
                timeout=120,
            )
            assert result.returncode == 2, result.stdout + result.stderr
            assert result.stderr.splitlines() == [refusal]  # one line, no progress bar: nothing was sent
            assert not list(tmp_path.glob(f"{name}*"))

        forced = tmp_path / "forced.jsonl"
        result = cli(
            "ng_reverify",
            f"+input_jsonl_fpath={source}",
            f"+output_jsonl_fpath={forced}",
            f"+head_server.port={head_port}",
            "+resources_server_name=example_single_tool_call",
            "+force=true",
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    # The fifth row was cut off at the output-token limit: example_single_tool_call scores it 0.0 as before.
    assert result.stdout.splitlines()[0] == "Re-verified 5 of 5 rows: 4 rewards changed."
    assert len(upstream.requests) == 0


# ---- every environment's example rollouts give back their stored rewards -----------------------------

ENVIRONMENTS = sorted(
    path.parent.parent.name for path in PROJECT_ROOT.glob("resources_servers/*/data/example_rollouts.jsonl")
)


@pytest.fixture(scope="module")
def example_rollouts_reverified(tmp_path_factory) -> tuple[dict[tuple, dict], dict[tuple, dict], str]:
    """All environments on one ng_run, and one ng_reverify over every example rollout (the model is never
    called: policy_base_url points at nothing). Returns (stored rows, re-verified rows), each keyed by
    (agent, task index, rollout index), and ng_reverify's stdout."""
    tmp_path = tmp_path_factory.mktemp("examples")
    stored = [
        row
        for env in ENVIRONMENTS
        for row in read_rows(PROJECT_ROOT / f"resources_servers/{env}/data/example_rollouts.jsonl")
    ]
    source = tmp_path / "all_example_rollouts.jsonl"
    write_rows(source, stored)
    output = tmp_path / "reverified.jsonl"
    configs = [
        str(path.relative_to(PROJECT_ROOT))
        for env in ENVIRONMENTS
        for path in sorted((PROJECT_ROOT / "resources_servers" / env / "configs").glob("*.yaml"))
    ]
    head_port = free_port()
    policy = ("+policy_base_url=http://127.0.0.1:9/v1", "+policy_api_key=x", "+policy_model_name=nobody")
    stack = NgRunProcess([*configs, OPENAI_MODEL_CONFIG], f"+head_server.port={head_port}", *policy, cwd=PROJECT_ROOT)
    try:
        stack.wait_ready(timeout=240)  # sixteen environments and their agents start on a shared machine
        result = cli(
            "ng_reverify",
            f"+input_jsonl_fpath={source}",
            f"+output_jsonl_fpath={output}",
            f"+head_server.port={head_port}",
            timeout=240,
        )
    finally:
        stack.stop()
    assert result.returncode == 0, result.stdout + result.stderr

    def key(row: dict) -> tuple:
        return (row["agent_ref"]["name"], row["_ng_task_index"], row["_ng_rollout_index"])

    return {key(row): row for row in stored}, {key(row): row for row in read_rows(output)}, result.stdout


def test_every_environment_has_example_rollouts_to_reverify():
    assert len(ENVIRONMENTS) == len(list(PROJECT_ROOT.glob("resources_servers/*/app.py"))) >= 16


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_example_rollouts_reverify_to_their_stored_rewards(example_rollouts_reverified, env):
    stored, reverified, stdout = example_rollouts_reverified
    assert stdout.splitlines()[0] == f"Re-verified {len(stored)} of {len(stored)} rows: 0 rewards changed."
    mine = sorted(key for key in stored if key[0] == f"{env}_simple_agent")
    assert len(mine) == 5
    assert [reverified[key]["reward"] for key in mine] == [stored[key]["reward"] for key in mine]
    assert all(reverified[key]["response"] == stored[key]["response"] for key in mine)
