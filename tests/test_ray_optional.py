"""Ray is used only when asked: nothing imports it without `ray_address`, and a wrong address or an
unreachable cluster gets one line and exit 2 (bad input) or 1 (nothing answers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from nemo_gym.testing.inprocess import free_port
from tests.conftest import PROJECT_ROOT, cli

CONFIGS = (
    "+config_paths=[resources_servers/example_stateful_counter/configs/example_stateful_counter.yaml,"
    "responses_api_models/openai_model/configs/openai_model.yaml]"
)
MODEL_KEYS = ("+policy_base_url=http://127.0.0.1:9/v1", "+policy_api_key=sk-test", "+policy_model_name=m")
COUNTER_BLOCK = "example_stateful_counter.resources_servers.example_stateful_counter"


def test_a_local_stack_with_replicas_never_imports_ray():
    script = textwrap.dedent(
        f"""
        import sys
        import nemo_gym.cli.collect, nemo_gym.cli.run, nemo_gym.client, nemo_gym.servers.base
        from nemo_gym.config import load_global_config
        from nemo_gym.launcher import LaunchOptions, Stack

        config = load_global_config([{CONFIGS!r}, *{MODEL_KEYS!r}, "+head_server.port={free_port()}",
                                     "+{COUNTER_BLOCK}.num_replicas=2"])
        with Stack(config, LaunchOptions(echo_child_output=False)) as stack:
            assert stack.server_count == 4, stack.server_count
        print(sorted(name for name in sys.modules if name == "ray" or name.startswith(("ray.", "nemo_gym.launcher_ray"))))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("address", ["not-an-address", "ray://10.0.0.1:10001", "10.0.0.1:notaport"])
def test_a_malformed_ray_address_is_one_line_and_exit_2(address):
    result = cli("ng_run", CONFIGS, *MODEL_KEYS, f"+ray_address={address}", f"+head_server.port={free_port()}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ray_address" in lines[0] and address in lines[0] and "Traceback" not in result.stderr


def test_a_cluster_nobody_runs_is_one_line_and_exit_1():
    pytest.importorskip("ray")
    result = cli("ng_run", CONFIGS, *MODEL_KEYS, f"+ray_address=127.0.0.1:{free_port()}", timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Ray cluster answers at ray_address" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"+{COUNTER_BLOCK}.num_replicas=0", "`num_replicas` must be an integer >= 1, got 0"),
        (f"+{COUNTER_BLOCK}.ray_resources={{num_cpus: -1}}", "`ray_resources.num_cpus` must be a number >= 0"),
        (f"+{COUNTER_BLOCK}.num_replica=2", "did you mean 'example_stateful_counter.resources_servers"),
    ],
)
def test_replica_settings_are_checked_with_the_rest_of_the_server_block(override, message):
    result = cli("ng_run", CONFIGS, *MODEL_KEYS, override, f"+head_server.port={free_port()}")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_one_command_collection_starts_its_servers_on_the_cluster_it_is_given(tmp_path):
    # The same launcher choice as ng_run: an unreachable cluster is one line, exit 1, and the output
    # stays free for the next try (the lock taken before the servers start is released).
    pytest.importorskip("ray")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"responses_create_params": {"input": "count"}}\n')
    output = tmp_path / "out.jsonl"
    command = (
        "ng_collect_rollouts",
        CONFIGS,
        *MODEL_KEYS,
        "+agent_name=example_stateful_counter_simple_agent",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        f"+ray_address=127.0.0.1:{free_port()}",
        f"+head_server.port={free_port()}",
    )
    for attempt in range(2):
        result = cli(*command, *(["+resume=true"] if attempt else []), timeout=60)
        assert result.returncode == 1, result.stderr
        assert "no Ray cluster answers at ray_address" in result.stderr.strip().splitlines()[-1], result.stderr
        assert "Traceback" not in result.stderr and "locked" not in result.stderr
    assert not output.exists() or output.read_text() == ""
