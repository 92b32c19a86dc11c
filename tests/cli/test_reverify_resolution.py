"""Which resources server re-verifies a row: the agent's config, the only one running, or the agent's name; and
rows that belong to another environment than that one are refused."""

from __future__ import annotations

import json
import shutil

import pytest

from nemo_gym.cli.reverify import environment_of_agent, known_environments, refuse_foreign_rows, resources_of_agent
from nemo_gym.client import ServerInfo
from nemo_gym.config import load_global_config
from nemo_gym.errors import InputDataError, UnknownServerError
from tests.conftest import PROJECT_ROOT, TUTORIAL_CONFIGS, cli


def registry(*servers: tuple[str, str]) -> dict[str, ServerInfo]:
    return {
        name: ServerInfo(name=name, server_type=kind, implementation="x", url="http://127.0.0.1:9")
        for name, kind in servers
    }


RUNNING = registry(
    ("mcqa", "resources_servers"),
    ("math_with_judge", "resources_servers"),
    ("mcqa_simple_agent", "responses_api_agents"),
)


def test_the_agents_config_names_its_resources_server():
    config = load_global_config(
        [f"+config_paths=[{TUTORIAL_CONFIGS}]", "+policy_base_url=x", "+policy_api_key=x", "+policy_model_name=x"]
    )
    assert resources_of_agent("example_single_tool_call_simple_agent", config, RUNNING) == "example_single_tool_call"


def test_without_config_the_agents_name_or_the_only_server_decides():
    config = load_global_config([])
    assert resources_of_agent("mcqa_simple_agent", config, RUNNING) == "mcqa"
    assert resources_of_agent("anything", config, registry(("code_gen", "resources_servers"))) == "code_gen"


def test_an_undecidable_agent_asks_for_the_name():
    with pytest.raises(
        UnknownServerError,
        match=r"running resources servers: math_with_judge, mcqa\); pass "
        r"\+resources_server_name=",
    ):
        resources_of_agent("my_agent", load_global_config([]), RUNNING)


# --- rows that belong to another environment ------------------------------------------------------

MCQA_ROLLOUTS = PROJECT_ROOT / "resources_servers/mcqa/data/example_rollouts.jsonl"  # agent_ref mcqa_simple_agent


def test_an_agent_belongs_to_its_configs_resources_server_else_to_the_environment_it_is_named_after():
    config = load_global_config(
        [f"+config_paths=[{TUTORIAL_CONFIGS}]", "+policy_base_url=x", "+policy_api_key=x", "+policy_model_name=x"]
    )
    known = known_environments(config)
    assert {"example_single_tool_call", "mcqa", "sokoban"} <= known
    assert environment_of_agent("example_single_tool_call_simple_agent", config, set()) == "example_single_tool_call"
    assert environment_of_agent("mcqa_simple_agent", config, known) == "mcqa"
    assert environment_of_agent("sokoban_agent", config, known) == "sokoban"
    # A name that only looks like the convention claims nothing: no environment `my` exists.
    assert environment_of_agent("my_agent", config, known) is None
    assert environment_of_agent("anything", config, known) is None
    assert environment_of_agent("mcqa_simple_agent", config, set()) is None


def test_rows_of_another_environment_are_refused_in_one_line_before_anything_starts(tmp_path, head_port):
    # Before: onto a running example_single_tool_call these 5 mcqa rows (reward 0) were "5 rewards changed", exit 0.
    source = tmp_path / "mcqa_rollouts.jsonl"
    shutil.copy(MCQA_ROLLOUTS, source)
    output = tmp_path / "reverified.jsonl"
    result = cli(
        "ng_reverify",
        f"+input_jsonl_fpath={source}",
        f"+output_jsonl_fpath={output}",
        "+resources_server_name=example_single_tool_call",
        f"+head_server.port={head_port}",  # nothing runs there: the refusal comes before any server is needed
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"ng_reverify: error: {source}:1: agent_ref.name: this row was collected by 'mcqa_simple_agent' for "
        f"environment 'mcqa', not 'example_single_tool_call' that would verify it; its reward there would mean "
        f"nothing. Verify it with its own resources server, or pass +force=true"
    ]
    assert not output.exists() and not list(tmp_path.glob("reverified*"))


def test_the_first_foreign_row_in_file_order_is_named(tmp_path):
    rows = [json.loads(line) for line in MCQA_ROLLOUTS.read_text().splitlines()]
    own = [dict(row, agent_ref={"type": "responses_api_agents", "name": "wordle_simple_agent"}) for row in rows[:2]]
    odd = dict(
        rows[2], agent_ref={"type": "responses_api_agents", "name": "my_own_name"}
    )  # cannot be told: let through
    source = tmp_path / "mixed.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in [*own, odd, rows[3], rows[4]]))
    firsts = {"wordle_simple_agent": 1, "my_own_name": 3, "mcqa_simple_agent": 4}
    config = load_global_config([])
    known = known_environments(config)
    with pytest.raises(InputDataError) as refused:
        refuse_foreign_rows(source, firsts, lambda agent: "wordle", config, known)
    assert str(refused.value).startswith(f"{source}:4: agent_ref.name: this row was collected by 'mcqa_simple_agent'")
    assert "for environment 'mcqa', not 'wordle'" in str(refused.value) and refused.value.field == "agent_ref.name"
    refuse_foreign_rows(source, {"wordle_simple_agent": 1, "my_own_name": 3}, lambda agent: "wordle", config, known)


def test_help_documents_force():
    result = cli("ng_reverify", "--help", timeout=60)
    [line] = [line for line in result.stdout.splitlines() if line.split()[:1] == ["+force"]]
    assert "default: false" in line and "another environment" in line
