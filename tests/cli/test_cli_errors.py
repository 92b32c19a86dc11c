"""Every bad input to a command is one line naming what and where, with exit code 2."""

from __future__ import annotations

import pytest

from tests.conftest import TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, cli


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_config_file_names_it_and_where_it_looked(tmp_path):
    result = cli("ng_run", "+config_paths=[nope/missing.yaml]", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    message = one_line_error(result)
    assert "nope/missing.yaml" in message and str(tmp_path) in message


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:\n  b: [1, 2\n")
    result = cli("ng_run", f"+config_paths=[{bad}]", timeout=30)
    assert result.returncode == 2
    assert f"{bad}:" in result.stderr and "line" in result.stderr.lower() or f"{bad}:3" in result.stderr


def test_unknown_ref_suggests_the_right_name(tmp_path):
    config = tmp_path / "refs.yaml"
    config.write_text(
        "my_env:\n  resources_servers:\n    example_single_tool_call: {entrypoint: app.py, domain: agent}\n"
        "my_agent:\n  responses_api_agents:\n    simple_agent:\n      entrypoint: app.py\n"
        "      resources_server: {type: resources_servers, name: my_evn}\n"
        "      model_server: {type: responses_api_models, name: policy_model}\n"
        "policy_model:\n  responses_api_models:\n    openai_model: {entrypoint: app.py, openai_base_url: x, openai_model: m}\n"
    )
    result = cli("ng_run", f"+config_paths=[{config}]", timeout=30)
    assert result.returncode == 2
    assert "my_evn" in result.stderr and "my_env" in result.stderr and "resources_server" in result.stderr


def test_missing_mandatory_value_names_the_key(tmp_path):
    result = cli("ng_run", "+config_paths=[responses_api_agents/simple_agent/configs/simple_agent.yaml]", timeout=30)
    assert result.returncode == 2
    assert "simple_agent.responses_api_agents.simple_agent.resources_server.name" in result.stderr


def test_two_servers_on_one_port(tmp_path):
    result = cli(
        "ng_run",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        "+policy_base_url=x",
        "+policy_api_key=x",
        "+policy_model_name=m",
        "+example_single_tool_call.resources_servers.example_single_tool_call.port=18123",
        "+policy_model.responses_api_models.openai_model.port=18123",
        timeout=30,
    )
    assert result.returncode == 2
    assert "18123" in result.stderr and "example_single_tool_call" in result.stderr and "policy_model" in result.stderr


def test_malformed_override():
    result = cli("ng_collect_rollouts", "+agent_name=[unclosed", timeout=30)
    assert result.returncode == 2
    assert "+agent_name=[unclosed" in result.stderr


def test_missing_required_parameters_are_listed():
    result = cli("ng_collect_rollouts", f"+agent_name={TUTORIAL_AGENT}", timeout=30)
    assert result.returncode == 2
    message = one_line_error(result)
    assert "+input_jsonl_fpath=... is required" in message and "+output_jsonl_fpath=... is required" in message


def test_missing_input_file(tmp_path):
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={tmp_path}/none.jsonl",
        f"+output_jsonl_fpath={tmp_path}/out.jsonl",
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{tmp_path}/none.jsonl" in one_line_error(result) and "does not exist" in result.stderr


@pytest.mark.parametrize(
    "command,parameter", [("ng_collect_rollouts", "+num_samples_in_parallel"), ("ng_run", "+config_paths")]
)
def test_help_lists_the_parameters(command, parameter):
    result = cli(command, "+help=true", timeout=30)
    assert result.returncode == 0
    assert parameter in result.stdout


def test_bad_parameter_type_names_the_parameter():
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={TUTORIAL_DATA}",
        "+output_jsonl_fpath=/tmp/x.jsonl",
        "+num_repeats=lots",
        timeout=30,
    )
    assert result.returncode == 2
    assert "+num_repeats" in one_line_error(result) and "lots" in result.stderr
