"""A config written the way NeMo Gym's environments write theirs loads here, and NeMo Gym's collection
parameters do what they do there: rows go to the agent their `agent_ref` names, seeds, resume.

The YAML below is our own, in the shape of NeMo Gym's environment configs: its catalogue keys
(`verified`, `verified_url`, `description`, `value`), `num_workers`, `expose_tools_over_mcp`, and
`datasets` entries with licences, download identifiers and a benchmark. Two agents share one
resources server; the second skips verification, so which agent ran a row shows in its reward.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from tests.conftest import PROJECT_ROOT, cli
from tests.e2e.env_rollouts import OPENAI_MODEL_CONFIG, example_tasks

EXAMPLE_DATA = "resources_servers/example_single_tool_call/data/example.jsonl"

NEMO_GYM_STYLE_YAML = f"""\
weather:
  resources_servers:
    example_single_tool_call:
      entrypoint: app.py
      domain: agent
      verified: true
      verified_url: https://example.org/runs/weather
      description: Answers weather questions with one tool call.
      value: Teaches calling a tool before answering.
      expose_tools_over_mcp: false
      num_workers: 2
      host: 127.0.0.1
weather_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      domain: agent
      description: The weather environment's agent.
      value: Multi-step tool use.
      num_workers: 1
      token_id_capture: false
      resources_server:
        type: resources_servers
        name: weather
      model_server:
        type: responses_api_models
        name: policy_model
      datasets:
        - name: weather_train
          type: train
          jsonl_fpath: {EXAMPLE_DATA}
          license: Apache 2.0
          num_repeats: 2
          gitlab_identifier:
            dataset_name: weather
            version: 0.0.1
            artifact_fpath: train.jsonl
        - name: weather_validation
          type: validation
          jsonl_fpath: {EXAMPLE_DATA}
          license: MIT
          huggingface_identifier:
            repo_id: example-org/weather
            artifact_fpath: validation.jsonl
        - name: weather_example
          type: example
          jsonl_fpath: {EXAMPLE_DATA}
          source:
            type: huggingface
            repo_id: example-org/weather
        - name: weather_benchmark
          type: benchmark
          jsonl_fpath: {EXAMPLE_DATA}
          prepare_script: prepare_weather.py
          prompt_config: null
unverified_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server:
        type: resources_servers
        name: weather
      model_server:
        type: responses_api_models
        name: policy_model
      skip_verification: true
      skip_verification_reward: 0.5
"""

POLICY = ("+policy_base_url=http://127.0.0.1:9/v1", "+policy_api_key=sk-test", "+policy_model_name=m")


def write_config(tmp_path: Path, text: str = NEMO_GYM_STYLE_YAML) -> str:
    path = tmp_path / "nemo_gym_style.yaml"
    path.write_text(text)
    return f"+config_paths=[{path},{PROJECT_ROOT / OPENAI_MODEL_CONFIG}]"


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_nemo_gym_style_config_with_its_base_keys_loads(tmp_path):
    result = cli("ng_dump_config", write_config(tmp_path), *POLICY, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "verified_url: https://example.org/runs/weather" in result.stdout
    assert "prepare_script: prepare_weather.py" in result.stdout


def test_a_typo_in_a_dataset_entry_is_still_an_error(tmp_path):
    typo = NEMO_GYM_STYLE_YAML.replace("license: MIT", "licence: MIT")
    result = cli("ng_dump_config", write_config(tmp_path, typo), *POLICY, timeout=60)
    assert result.returncode == 2
    [line] = stderr_lines(result)
    assert "`datasets[1]` has unknown key `licence` (did you mean `license`?)" in line, line
    assert "weather_agent" in line


def test_a_row_that_names_no_agent_without_agent_name_is_one_error_naming_it(tmp_path):
    tasks = example_tasks("example_single_tool_call")[:3]
    tasks[0]["agent_ref"] = {"type": "responses_api_agents", "name": "weather_agent"}
    tasks[2]["agent_ref"] = {"type": "responses_api_agents", "name": "weather_agent"}
    source = tmp_path / "tasks.jsonl"
    source.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    output = tmp_path / "out.jsonl"
    result = cli(
        "ng_collect_rollouts",
        f"+input_jsonl_fpath={source}",
        f"+output_jsonl_fpath={output}",
        f"+head_server.port={free_port()}",
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    [line] = stderr_lines(result)
    assert line.startswith(f"ng_collect_rollouts: error: {source}:2: task 1 names no agent"), line
    assert "+agent_name=" in line and "(field `agent_ref`)" in line
    assert not output.exists() or output.read_text() == ""


@pytest.mark.parametrize(
    "parameter,message",
    [
        (
            "+rollout_collection_driver=my_module:collect",
            "+rollout_collection_driver (a NeMo Gym parameter) is not supported by this toolkit; remove it",
        ),
        (  # NeMo Gym's per-agent form needs a count (its own, or _default) for every agent the tasks go to
            "+num_repeats={other_agent:2}",
            "+num_repeats has no entry for the agent(s) unverified_agent, weather_agent the tasks go to and no "
            "_default (it lists other_agent)",
        ),
        (
            "+num_repeats={weather_agent:0}",
            "+num_repeats: the count for agent weather_agent must be a whole number >= 1, not 0 "
            "(got {'weather_agent': 0}) (see ng_collect_rollouts --help)",
        ),
    ],
)
def test_nemo_gym_collection_parameters_that_cannot_run_here_are_one_line(tmp_path, parameter, message):
    output = tmp_path / "out.jsonl"
    result = cli(
        "ng_collect_rollouts",
        f"+input_jsonl_fpath={routed_tasks(tmp_path)}",
        f"+output_jsonl_fpath={output}",
        parameter,
        f"+head_server.port={free_port()}",
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    [line] = stderr_lines(result)
    assert line == f"ng_collect_rollouts: error: {message}", line
    assert not output.exists()


def test_prompt_config_refuses_a_row_that_already_has_an_input(tmp_path):
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text('user: "Weather question: {question}"\n')
    source = tmp_path / "tasks.jsonl"
    source.write_text(
        json.dumps({"question": "sf?", "responses_create_params": {}})
        + "\n"
        + json.dumps({"question": "la?", "responses_create_params": {"input": "hi"}})
        + "\n"
    )
    result = cli(
        "ng_collect_rollouts",
        "+agent_name=weather_agent",
        f"+input_jsonl_fpath={source}",
        f"+output_jsonl_fpath={tmp_path / 'out.jsonl'}",
        f"+prompt_config={prompt}",
        f"+head_server.port={free_port()}",
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert stderr_lines(result) == [
        f"ng_collect_rollouts: error: {source}:2: the row already has an input and +prompt_config would replace it; "
        "use one or the other (field `responses_create_params.input`)"
    ]


def routed_tasks(tmp_path: Path) -> Path:
    """The example tasks, alternately naming the verifying agent and the one that skips verification."""
    tasks = example_tasks("example_single_tool_call")[:4]
    for index, task in enumerate(tasks):
        name = "weather_agent" if index % 2 == 0 else "unverified_agent"
        task["agent_ref"] = {"type": "responses_api_agents", "name": name}
    source = tmp_path / "routed.jsonl"
    source.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    return source


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(rows, key=lambda row: (row["_ng_task_index"], row["_ng_rollout_index"]))


def test_a_nemo_gym_style_stack_runs_and_each_row_goes_to_the_agent_its_agent_ref_names(tmp_path):
    head_port = free_port()
    with ScriptedOpenAI(lambda body: Turn(text="It is cold.")) as upstream:
        config_paths = write_config(tmp_path).removeprefix("+config_paths=[").removesuffix("]").split(",")
        with NgRunProcess(
            config_paths,
            f"+head_server.port={head_port}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=sk-test",
            "+policy_model_name=scripted-model",
            cwd=PROJECT_ROOT,
        ) as stack:
            source, output = routed_tasks(tmp_path), tmp_path / "routed_out.jsonl"
            collect = (
                "ng_collect_rollouts",
                f"+input_jsonl_fpath={source}",
                f"+output_jsonl_fpath={output}",
                # NeMo Gym's per-agent form: each task gets its agent's count (3 for unverified_agent's tasks).
                "+num_repeats={weather_agent:2,_default:3}",
                "+num_repeats_add_seed=true",
                "+disable_aggregation=true",
                "+upload_rollouts=false",
                f"+head_server.port={head_port}",
            )
            result = cli(*collect, timeout=120)
            assert result.returncode == 0, result.stdout + result.stderr
            rows = read_rows(output)
            assert len(rows) == 10
            for row in rows:
                if row["_ng_task_index"] % 2 == 0:
                    assert row["agent_ref"] == {"type": "responses_api_agents", "name": "weather_agent"}
                    assert row["reward"] == 1.0 and "verification_skipped" not in row
                    assert row["_ng_group_size"] == 2 and row["_ng_rollout_index"] < 2
                else:
                    assert row["agent_ref"] == {"type": "responses_api_agents", "name": "unverified_agent"}
                    assert row["reward"] == 0.5 and row["verification_skipped"] is True
                    assert row["_ng_group_size"] == 3 and row["_ng_rollout_index"] < 3
                extra_body = json.loads(row["responses_create_params"]["metadata"]["extra_body"])
                assert extra_body == {"seed": row["_ng_rollout_index"]}
            assert "no metrics: +disable_aggregation=true" in result.stdout
            assert not list(tmp_path.glob("routed_out*metrics*"))

            # NeMo Gym's resume_from_cache: the same command again keeps every row and runs nothing new.
            calls_before = len(upstream.requests)
            again = cli(*collect, "+resume_from_cache=true", timeout=120)
            assert again.returncode == 0, again.stdout + again.stderr
            assert "Resuming: 10 rollouts already" in again.stderr
            assert read_rows(output) == rows
            assert len(upstream.requests) == calls_before
            groups = [json.loads(line) for line in (tmp_path / "routed_out_groups.jsonl").read_text().splitlines()]
            assert [(g["group_size"], g["complete"]) for g in groups] == [(2, True), (3, True)] * 2

            # Another per-agent count is another job: refused by name, nothing written.
            other = [
                arg if not arg.startswith("+num_repeats=") else "+num_repeats={weather_agent:2,_default:4}"
                for arg in collect
            ]
            refused = cli(*other, "+resume=true", timeout=120)
            assert refused.returncode == 2
            [line] = stderr_lines(refused)
            assert "num_repeats per agent differs from the job that wrote it" in line, line
            assert read_rows(output) == rows

            # NeMo Gym's prompt_config: rows carry only their fields; the prompt file builds each input.
            prompt = tmp_path / "prompt.yaml"
            prompt.write_text('system: "Answer in {style}."\nuser: "Weather question: {question}"\n')
            bare = tmp_path / "bare.jsonl"
            bare.write_text(
                json.dumps(
                    {"question": "what's it like in sf?", "style": "one word", "agent_ref": {"name": "weather_agent"}}
                )
                + "\n"
            )
            prompted_output = tmp_path / "prompted.jsonl"
            prompted = cli(
                "ng_collect_rollouts",
                f"+input_jsonl_fpath={bare}",
                f"+output_jsonl_fpath={prompted_output}",
                f"+prompt_config={prompt}",
                f"+head_server.port={head_port}",
                timeout=120,
            )
            assert prompted.returncode == 0, prompted.stdout + prompted.stderr
            [row] = read_rows(prompted_output)
            expected_input = [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Weather question: what's it like in sf?"},
            ]
            assert row["responses_create_params"]["input"] == expected_input
            assert row["question"] == "what's it like in sf?" and row["reward"] == 1.0
            assert upstream.requests[-1]["input"][:2] == expected_input  # what the model was asked
        assert stack.process.returncode == 0, stack.output
