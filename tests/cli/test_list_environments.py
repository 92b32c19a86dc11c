"""ng_list_environments: every environment with domain, tools, offline flag and task count, from files only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nemo_gym.cli.list_environments import discover_environments, render_table
from nemo_gym.config import Domain
from tests.conftest import PROJECT_ROOT, child_env


def run_listing(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    # `python -m` so the test needs no reinstall of console scripts to see this command.
    return subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.list_environments", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )


def test_every_environment_config_states_domain_and_offline_flag():
    summaries = discover_environments(PROJECT_ROOT)
    folders = sorted(p.name for p in (PROJECT_ROOT / "resources_servers").iterdir() if (p / "configs").is_dir())
    assert [s.name for s in summaries] == folders
    for summary in summaries:
        assert summary.offline in (True, False), f"{summary.name}: config does not state offline: true|false"
        assert summary.domain in Domain._value2member_map_, summary.name
        assert summary.example_tasks == 5, summary.name


def test_json_listing_shows_tools_declared_by_example_tasks():
    result = run_listing("+format=json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows["example_stateful_counter"]["tools"] == ["increment_counter", "get_counter_value"]
    assert rows["mcqa"] == rows["mcqa"] | {"domain": "knowledge", "offline": True, "tools": [], "example_tasks": 5}


def test_table_listing_and_filters():
    result = run_listing("+domain=math")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["environment", "domain", "offline", "tasks", "tools"]
    math = {s.name for s in discover_environments(PROJECT_ROOT) if s.domain == "math"}
    assert {line.split()[0] for line in lines[1:]} == math and {"math_with_code", "math_with_judge"} <= math
    assert any(line.split()[:5] == ["math_with_code", "math", "yes", "5", "execute_python"] for line in lines)


def test_unstated_offline_flag_shows_as_unknown_and_bad_flag_is_one_line(tmp_path):
    env = tmp_path / "resources_servers" / "toy"
    (env / "configs").mkdir(parents=True)
    (env / "data").mkdir()
    (tmp_path / "nemo_gym").mkdir()
    (env / "configs" / "toy.yaml").write_text(
        "toy:\n  resources_servers:\n    toy:\n      entrypoint: app.py\n      domain: games\n"
    )
    (env / "data" / "example.jsonl").write_text(
        json.dumps(
            {
                "responses_create_params": {
                    "input": "hi",
                    "tools": [{"type": "function", "name": "move", "parameters": {}}],
                }
            }
        )
        + "\n"
    )
    [summary] = discover_environments(tmp_path)
    assert summary.offline is None and summary.tools == ["move"] and summary.example_tasks == 1
    assert render_table([summary]).splitlines()[1].split() == ["toy", "games", "?", "1", "move"]

    (env / "configs" / "toy.yaml").write_text(
        "toy:\n  resources_servers:\n    toy:\n      domain: games\n      offline: maybe\n"
    )
    result = run_listing(cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ng_list_environments: error: {env / 'configs' / 'toy.yaml'}: `offline` must be true or false, got 'maybe'"
    ]


def test_bad_format_is_rejected_with_exit_code_2():
    result = run_listing("+format=xml")
    assert result.returncode == 2 and "+format" in result.stderr and "Traceback" not in result.stderr


def test_unreadable_config_is_one_line_naming_the_file(tmp_path):
    env = tmp_path / "resources_servers" / "toy"
    (env / "configs").mkdir(parents=True)
    (tmp_path / "nemo_gym").mkdir()
    (env / "configs" / "toy.yaml").write_text("toy: [unclosed\n")
    result = run_listing(cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"ng_list_environments: error: {env / 'configs' / 'toy.yaml'}: cannot be read as YAML"
    )
