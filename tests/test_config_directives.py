"""NeMo Gym's config directives (`_inherit_from`, `_copy`, `${inherit_from:...}`, `${copy:...}`,
`_delete_key`): 122 of NeMo Gym's YAML files (every benchmark's config.yaml among them) build one
server block from another; before, our loader passed the directive through as an unknown key."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_gym.config import load_global_config
from nemo_gym.config._directives import apply_directives
from nemo_gym.errors import ConfigError
from tests.conftest import PROJECT_ROOT


def test_inherit_takes_the_block_merges_its_own_keys_on_top_and_drops_the_source():
    config = apply_directives(
        {
            "judge": {"resources_servers": {"math": {"entrypoint": "app.py", "use_judge": True, "k": 1}}},
            "variant": {"_inherit_from": "judge", "resources_servers": {"math": {"use_judge": False}}},
        }
    )
    assert config == {"variant": {"resources_servers": {"math": {"entrypoint": "app.py", "use_judge": False, "k": 1}}}}


def test_copy_keeps_the_source_and_string_forms_take_the_whole_value():
    config = apply_directives(
        {
            "policy_model": {"responses_api_models": {"openai_model": {"entrypoint": "app.py"}}},
            "simulator_model": {"_copy": "policy_model"},
            "params": {"temperature": 0.5},
            "a": {"params": "${copy:params}"},
            "b": {"params": "${inherit_from:params}"},
        }
    )
    assert config["simulator_model"] == config["policy_model"]
    assert config["a"]["params"] == config["b"]["params"] == {"temperature": 0.5}
    assert "params" not in config  # inherited, so moved


def test_delete_key_drops_keys_as_nemo_gym_does():
    # A named key the block sets itself is dropped from the block before the merge (so the source's
    # value shows through); the others are dropped from the result.
    config = apply_directives(
        {
            "base": {"x": 1, "y": 2, "z": 3},
            "variant": {"_copy": "base", "_delete_key": "y, z", "z": 9},
        }
    )
    assert config["variant"] == {"x": 1, "z": 3}
    with pytest.raises(ConfigError, match="names 'w'"):
        apply_directives({"base": {"x": 1}, "variant": {"_copy": "base", "_delete_key": "w"}})


def test_an_unset_source_leaves_the_target_unset_and_a_missing_one_is_one_line():
    assert apply_directives({"base": "???", "v": {"_copy": "base"}})["v"] == "???"
    with pytest.raises(ConfigError) as caught:
        apply_directives({"v": {"_inherit_from": "nowhere.at_all"}})
    assert str(caught.value) == "`v` builds on `nowhere.at_all`, which is not in the config"


def test_a_nemo_gym_benchmark_config_loads_as_a_variation_of_the_environment(tmp_path: Path):
    """The shape of NeMo Gym's benchmarks/<name>/config.yaml, on one of our environments."""
    bench = tmp_path / "config.yaml"
    bench.write_text(
        "config_paths:\n"
        "  - resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml\n"
        "quick_weather_resources_server:\n"
        "  _inherit_from: example_single_tool_call\n"
        "quick_weather_simple_agent:\n"
        "  _inherit_from: example_single_tool_call_simple_agent\n"
        "  responses_api_agents:\n"
        "    simple_agent:\n"
        "      max_steps: 2\n"
        "      resources_server:\n"
        "        name: quick_weather_resources_server\n"
    )
    config = load_global_config(
        [
            f"+config_paths=[{bench},responses_api_models/openai_model/configs/openai_model.yaml]",
            "+policy_base_url=http://127.0.0.1:9/v1",
            "+policy_api_key=k",
            "+policy_model_name=m",
        ],
        project_root=PROJECT_ROOT,
        cwd=PROJECT_ROOT,
    )
    names = {instance.name for instance in config.instances}
    assert {"quick_weather_resources_server", "quick_weather_simple_agent"} <= names
    assert "example_single_tool_call" not in names and "example_single_tool_call_simple_agent" not in names
    agent = config.server_config_dict("quick_weather_simple_agent")
    assert agent["max_steps"] == 2 and agent["resources_server"]["name"] == "quick_weather_resources_server"
    assert agent["model_server"]["name"] == "policy_model"  # inherited from the environment's agent
