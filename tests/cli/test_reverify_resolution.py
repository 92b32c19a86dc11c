"""Which resources server re-verifies a row: the agent's config, the only one running, or the agent's name."""

from __future__ import annotations

import pytest

from nemo_gym.cli.reverify import resources_of_agent
from nemo_gym.client import ServerInfo
from nemo_gym.config import load_global_config
from nemo_gym.errors import UnknownServerError
from tests.conftest import TUTORIAL_CONFIGS


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
