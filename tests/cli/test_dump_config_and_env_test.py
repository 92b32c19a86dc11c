"""ng_dump_config masks secrets; ng_test validates an environment's data and runs its tests."""

from __future__ import annotations

import json

from nemo_gym.cli.env_test import check_data
from tests.conftest import TUTORIAL_CONFIGS, cli


def test_dump_config_resolves_and_masks_secrets():
    result = cli(
        "ng_dump_config",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        "+policy_base_url=http://up/v1",
        "+policy_api_key=sk-do-not-print",
        "+policy_model_name=m",
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "sk-do-not-print" not in result.stdout
    assert "openai_api_key: '***'" in result.stdout and "openai_base_url: http://up/v1" in result.stdout


def test_dump_config_shows_secrets_only_when_asked():
    result = cli(
        "ng_dump_config",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        "+policy_base_url=x",
        "+policy_api_key=sk-visible",
        "+policy_model_name=m",
        "+show_secrets=true",
        timeout=30,
    )
    assert "openai_api_key: sk-visible" in result.stdout


def test_ng_test_checks_data_then_runs_the_folder_tests():
    result = cli("ng_test", "+entrypoint=resources_servers/example_single_tool_call", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "data ok" in result.stdout and "passed" in result.stdout


def test_ng_test_rejects_a_folder_that_is_not_a_server():
    result = cli("ng_test", "+entrypoint=nemo_gym", timeout=30)
    assert result.returncode == 2 and "+entrypoint=nemo_gym" in result.stderr


def test_data_check_names_each_problem(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "example.jsonl").write_text(json.dumps({"responses_create_params": {"input": "q"}}) + "\n")
    (data / "example_rollouts.jsonl").write_text(json.dumps({"reward": "high"}) + "\n")
    problems = check_data(tmp_path)
    assert any("1 tasks, expected exactly 5" in p for p in problems)
    assert any("1 rows, expected exactly 5" in p for p in problems)
    assert any("example_rollouts.jsonl:1: no numeric reward" in p for p in problems)
