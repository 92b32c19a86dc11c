"""A careless user's command lines, run as real processes: each mistake is one line and exit code 2.

Typos in parameters (the command's own, the shared ones, a server's fields), asking for help the
usual ways, a head port someone else holds, and a `${policy_base_url}` with no env.yaml behind it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from nemo_gym.cli.collect import CollectRolloutsConfig
from nemo_gym.cli.dump_config import DumpConfigConfig
from nemo_gym.cli.env_test import EnvTestConfig
from nemo_gym.cli.reverify import ReverifyConfig
from nemo_gym.cli.run import RunConfig
from nemo_gym.cli.viewer import ViewerConfig
from nemo_gym.config import SharedParameters
from tests.conftest import PROJECT_ROOT, TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, child_env, cli

POLICY = ("+policy_base_url=http://127.0.0.1:9/v1", "+policy_api_key=sk-test", "+policy_model_name=m")
COLLECT = (f"+agent_name={TUTORIAL_AGENT}", f"+input_jsonl_fpath={TUTORIAL_DATA}")


def error_line(result) -> str:
    """The single line a command printed on stderr (fails if there were more)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "typo,message",
    [
        ("+num_repeat=2", "unknown parameter 'num_repeat'; did you mean 'num_repeats'?"),
        ("+limt=2", "unknown parameter 'limt'; did you mean 'limit'?"),
        (
            "+num_samples_in_paralel=3",
            "unknown parameter 'num_samples_in_paralel'; did you mean 'num_samples_in_parallel'?",
        ),
    ],
)
def test_a_typo_in_a_collect_parameter_is_an_error_not_a_default(tmp_path, typo, message):
    result = cli("ng_collect_rollouts", *COLLECT, f"+output_jsonl_fpath={tmp_path}/out.jsonl", typo, timeout=60)
    assert result.returncode == 2
    assert error_line(result) == f"ng_collect_rollouts: error: {message}"
    assert not (tmp_path / "out.jsonl").exists()


def test_several_typos_are_named_together_on_one_line(tmp_path):
    result = cli("ng_collect_rollouts", *COLLECT, f"+output_jsonl_fpath={tmp_path}/o.jsonl", "+limt=2", "+num_repeat=2")
    assert result.returncode == 2
    line = error_line(result)
    assert "'limt' (did you mean 'limit'?)" in line and "'num_repeat' (did you mean 'num_repeats'?)" in line


@pytest.mark.parametrize(
    "command,args,message",
    [
        ("ng_run", ("+config_path=[a.yaml]",), "unknown parameter 'config_path'; did you mean 'config_paths'?"),
        (
            "ng_run",
            (f"+config_paths=[{TUTORIAL_CONFIGS}]", *POLICY, "+head_server.prot=18001"),
            "unknown parameter 'head_server.prot'; did you mean 'head_server.port'?",
        ),
        (
            "ng_run",
            (f"+config_paths=[{TUTORIAL_CONFIGS}]", *POLICY, "+policy_modle.responses_api_models.openai_model.port=1"),
            "unknown parameter 'policy_modle.responses_api_models.openai_model.port'; "
            "did you mean 'policy_model.responses_api_models.openai_model.port'?",
        ),
        (
            "ng_dump_config",
            (f"+config_paths=[{TUTORIAL_CONFIGS}]", *POLICY, "+show_secret=true"),
            "unknown parameter 'show_secret'; did you mean 'show_secrets'?",
        ),
        (
            "ng_viewer",
            ("+jsonl_fpath=results/none.jsonl", "+compare_jsonl_fpth=results/other.jsonl"),
            "unknown parameter 'compare_jsonl_fpth'; did you mean 'compare_jsonl_fpath'?",
        ),
        (
            "ng_test",
            ("+entrypoint=resources_servers/example_single_tool_call", "+should_validate=false"),
            "unknown parameter 'should_validate'; did you mean 'should_validate_data'?",
        ),
    ],
)
def test_every_command_checks_its_keys(command, args, message):
    result = cli(command, *args, timeout=60)
    assert result.returncode == 2
    assert error_line(result) == f"{command}: error: {message}"


def test_a_key_with_no_close_match_lists_what_the_command_takes(tmp_path):
    result = cli("ng_collect_rollouts", *COLLECT, f"+output_jsonl_fpath={tmp_path}/o.jsonl", "+zzz=1")
    assert result.returncode == 2
    line = error_line(result)
    assert "unknown parameter 'zzz'; expected one of: agent_name, input_jsonl_fpath" in line
    assert "head_server" in line


def test_keys_that_env_yaml_defines_or_interpolation_reads_are_not_typos(tmp_path):
    # env.yaml is shared by every command, so its own keys (and overrides of them) are fine anywhere;
    # +policy_api_key is read by ${policy_api_key} in the model config even though no command declares it.
    (tmp_path / "env.yaml").write_text(
        "policy_base_url: http://127.0.0.1:9/v1\npolicy_model_name: m\nmy_team_note: x\n"
    )
    configs = ",".join(str(PROJECT_ROOT / path) for path in TUTORIAL_CONFIGS.split(","))
    result = cli(
        "ng_dump_config",
        f"+config_paths=[{configs}]",
        "+policy_api_key=sk-1",
        "+my_team_note=keep",
        "+policy_model_name=m2",
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "openai_model: m2" in result.stdout and "my_team_note: keep" in result.stdout


@pytest.mark.slow
def test_a_typo_in_a_server_field_on_the_command_line_stops_ng_run_with_one_line(head_port):
    result = cli(
        "ng_run",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        *POLICY,
        f"+head_server.port={head_port}",
        "+policy_model.responses_api_models.openai_model.max_atempts=3",
        timeout=120,
    )
    assert result.returncode == 2
    assert error_line(result) == (
        "ng_run: error: unknown parameter 'policy_model.responses_api_models.openai_model.max_atempts'; "
        "did you mean 'policy_model.responses_api_models.openai_model.max_attempts'?"
    )
    assert "All 3 servers are up" not in result.stdout


@pytest.mark.slow
def test_a_typo_in_a_server_field_of_a_config_file_stops_one_command_collection(tmp_path, head_port):
    # The agent's own config class (SimpleAgentConfig) is what knows `max_steps`; the agent process
    # checks its block before it binds, and the collector reports that as its own one-line error.
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"{TUTORIAL_AGENT}:\n  responses_api_agents:\n    simple_agent:\n      max_step: 3\n")
    configs = ",".join([*(str(PROJECT_ROOT / p) for p in TUTORIAL_CONFIGS.split(",")), str(typo)])
    result = cli(
        "ng_collect_rollouts",
        f"+config_paths=[{configs}]",
        *POLICY,
        f"+head_server.port={head_port}",
        *COLLECT,
        f"+output_jsonl_fpath={tmp_path}/out.jsonl",
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"ng_collect_rollouts: error: unknown parameter '{TUTORIAL_AGENT}.responses_api_agents.simple_agent.max_step'; "
        f"did you mean '{TUTORIAL_AGENT}.responses_api_agents.simple_agent.max_steps'?"
    ], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_server_field_of_the_wrong_type_is_one_line(head_port):
    result = cli(
        "ng_run",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        *POLICY,
        f"+head_server.port={head_port}",
        "+policy_model.responses_api_models.openai_model.max_attempts=lots",
        timeout=120,
    )
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith("ng_run: error: policy_model.responses_api_models.openai_model.max_attempts: ")
    assert "'lots'" in line


COMMAND_MODELS = [
    ("ng_run", RunConfig),
    ("ng_collect_rollouts", CollectRolloutsConfig),
    ("ng_dump_config", DumpConfigConfig),
    ("ng_test", EnvTestConfig),
    ("ng_viewer", ViewerConfig),
    ("ng_reverify", ReverifyConfig),
]


@pytest.mark.parametrize("flag", ["--help", "-h", "+help=true"])
@pytest.mark.parametrize("command,model", COMMAND_MODELS)
def test_help_lists_every_parameter_with_its_default(command, model: type[BaseModel], flag):
    result = cli(command, flag, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {command}")
    assert "PydanticUndefined" not in result.stdout
    lines = result.stdout.splitlines()
    for name, field in model.model_fields.items():
        [line] = [line for line in lines if line.split()[:1] == [f"+{name}"]]
        assert ("required" in line) if field.is_required() else ("default: " in line), line
    assert any(line.split()[:1] == ["+head_server.port"] and "default: 11000" in line for line in lines)
    assert set(SharedParameters.model_fields) - set(model.model_fields) - {"head_server"} <= {
        line.split()[0].lstrip("+") for line in lines if line.startswith("  +")
    }


def test_help_piped_into_a_reader_that_stops_early_prints_no_traceback():
    # `ng_collect_rollouts --help | head -1`, at its most extreme: the reader has gone before the help is written.
    shell = f"'{sys.executable}' -m nemo_gym.cli.collect --help | true"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "BrokenPipeError" not in result.stderr


@pytest.mark.parametrize("command", ["ng_run", "ng_collect_rollouts"])
def test_a_busy_head_port_is_one_line_and_exit_2(command, tmp_path):
    collect_args = (
        [
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={TUTORIAL_DATA}",
            f"+output_jsonl_fpath={tmp_path / 'out.jsonl'}",
        ]
        if command == "ng_collect_rollouts"
        else []
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = cli(
            command,
            f"+config_paths=[{TUTORIAL_CONFIGS}]",
            *POLICY,
            *collect_args,
            f"+head_server.port={port}",
            timeout=60,
        )
    assert result.returncode == 2
    line = error_line(result)
    assert f"127.0.0.1:{port} is already in use" in line and "+head_server.port=" in line


def _bare_project(tmp_path: Path) -> Path:
    """A folder that looks like a project root (so env.yaml is searched only here), with no env.yaml."""
    (tmp_path / "resources_servers").mkdir()
    (tmp_path / "nemo_gym").mkdir()
    return tmp_path


def _tutorial_configs_absolute() -> str:
    return ",".join(str(PROJECT_ROOT / path) for path in TUTORIAL_CONFIGS.split(","))


@pytest.mark.parametrize("command", ["ng_run", "ng_dump_config"])
def test_a_missing_env_yaml_is_named_when_policy_values_cannot_resolve(tmp_path, command):
    root = _bare_project(tmp_path)
    result = cli(command, f"+config_paths=[{_tutorial_configs_absolute()}]", cwd=root, timeout=60)
    assert result.returncode == 2
    line = error_line(result)
    assert "`policy_model.responses_api_models.openai_model.openai_base_url`" in line
    assert "responses_api_models/openai_model/configs/openai_model.yaml" in line
    assert "${policy_base_url}" in line
    assert f"no env.yaml was found (looked for {root / 'env.yaml'})" in line
    assert "+policy_base_url=<value>" in line


def test_an_env_yaml_without_the_key_is_named(tmp_path):
    root = _bare_project(tmp_path)
    (root / "env.yaml").write_text("policy_api_key: sk-1\npolicy_model_name: m\n")
    result = cli("ng_dump_config", f"+config_paths=[{_tutorial_configs_absolute()}]", cwd=root, timeout=60)
    assert result.returncode == 2
    line = error_line(result)
    assert "${policy_base_url}" in line and f"neither {root / 'env.yaml'} nor the command line" in line


def test_dump_config_masks_credentials_inside_urls():
    result = cli(
        "ng_dump_config",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        "+policy_base_url=http://user:KEY123@up:8000/v1",
        "+policy_api_key=sk-1",
        "+policy_model_name=m",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "KEY123" not in result.stdout
    assert "openai_base_url: http://user:***@up:8000/v1" in result.stdout
    shown = cli(
        "ng_dump_config",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        "+policy_base_url=http://user:KEY123@up:8000/v1",
        "+policy_api_key=sk-1",
        "+policy_model_name=m",
        "+show_secrets=true",
        timeout=60,
    )
    assert "openai_base_url: http://user:KEY123@up:8000/v1" in shown.stdout


@pytest.mark.slow
def test_a_server_missing_a_required_field_is_one_line_without_echoing_secrets(head_port, tmp_path):
    config = tmp_path / "model_without_name.yaml"
    config.write_text(
        "policy_model:\n  responses_api_models:\n    openai_model:\n      entrypoint: app.py\n"
        "      openai_api_key: sk-must-not-show\n      openai_base_url: http://127.0.0.1:9/v1\n"
    )
    result = cli("ng_run", f"+config_paths=[{config}]", f"+head_server.port={head_port}", timeout=120)
    assert result.returncode == 2
    line = error_line(result)
    assert line == "ng_run: error: policy_model.responses_api_models.openai_model.openai_model: Field required"
    assert "sk-must-not-show" not in result.stderr + result.stdout
