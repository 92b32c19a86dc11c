"""A command that starts its own servers never borrows another stack that happens to hold the head port.

Before the head served a digest of its config, one-command `ng_collect_rollouts` took whatever answered
at the head address, so a second collection on the same machine (another model, other settings) ran
its rollouts on the first collection's servers.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

import nemo_gym.config._loader as loader
from nemo_gym.cli.head_probe import probe_head, stack_to_use
from nemo_gym.config import load_global_config
from nemo_gym.errors import ConfigError
from nemo_gym.servers.head import HeadServer, Registry
from nemo_gym.testing import NgRunProcess, free_port
from tests.conftest import PROJECT_ROOT, TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, cli

BASE = [
    f"+config_paths=[{TUTORIAL_CONFIGS}]",
    "+policy_base_url=http://127.0.0.1:9/v1",
    "+policy_api_key=sk-unused",
    "+policy_model_name=m",
]
OTHER_MODEL = "+policy_model_name=another-model"


def load(*overrides: str):
    return load_global_config([*BASE, *overrides], project_root=PROJECT_ROOT, cwd=PROJECT_ROOT)


def serve_head(port: int, digest: str | None) -> HeadServer:
    head = HeadServer(Registry([]), "127.0.0.1", port, config_digest=digest)
    head.start()
    deadline = time.monotonic() + 10
    while not head.started:  # uvicorn binds on its own thread
        assert not head.failed and time.monotonic() < deadline, "the head server did not start"
        time.sleep(0.01)
    return head


def test_the_digest_names_what_runs_not_where():
    one, again = load(), load()
    assert one.stack_digest() == again.stack_digest()
    assert load(OTHER_MODEL).stack_digest() != one.stack_digest()


def test_the_head_serves_the_digest_and_no_config_value():
    port = free_port()
    config = load(f"+head_server.port={port}")
    head = serve_head(port, config.stack_digest())
    try:
        body = json.loads(urllib.request.urlopen(f"{config.head_url}/stack_identity", timeout=5).read())
        assert body == {"config_digest": config.stack_digest()}
        running = probe_head(config.head_url)
        assert running is not None and running.config_digest == config.stack_digest()
    finally:
        head.stop()


def test_the_same_stack_is_used_and_another_one_on_a_chosen_port_is_one_line():
    port = free_port()
    mine = load(f"+head_server.port={port}")
    head = serve_head(port, mine.stack_digest())
    notes: list[str] = []
    try:
        config, running = stack_to_use(mine, [], notes.append)
        assert running is not None and config is mine
        assert "already running" in notes[0]

        other = load(f"+head_server.port={port}", OTHER_MODEL)
        with pytest.raises(ConfigError) as caught:
            stack_to_use(other, [], notes.append)
        assert f"127.0.0.1:{port}" in str(caught.value) and "\n" not in str(caught.value)
    finally:
        head.stop()


def test_another_stack_on_the_default_port_makes_the_command_start_its_own_elsewhere(monkeypatch):
    port = free_port()
    monkeypatch.setattr(loader, "DEFAULT_HEAD_PORT", port)  # stands in for 11000, which other runs may hold
    argv = [*BASE, OTHER_MODEL]
    other = load_global_config(argv, project_root=PROJECT_ROOT, cwd=PROJECT_ROOT)
    assert other.head_port == port and not other.head_port_chosen
    head = serve_head(port, load().stack_digest())
    notes: list[str] = []
    try:
        config, running = stack_to_use(other, argv, notes.append)
    finally:
        head.stop()
    assert running is None
    assert config.head_port != port and config.stack_digest() == other.stack_digest()
    assert f"127.0.0.1:{port}" in notes[0] and str(config.head_port) in notes[0]


def test_a_head_that_does_not_say_its_config_is_used_as_before():
    port = free_port()
    head = serve_head(port, None)
    try:
        config, running = stack_to_use(load(f"+head_server.port={port}"), [], lambda _: None)
        assert running is not None and running.config_digest is None
    finally:
        head.stop()


def test_a_collection_refuses_a_running_stack_of_other_configs_and_writes_nothing(tmp_path, upstream):
    """End to end: `ng_run` with one model name holds the port; a collection asking for another is turned away."""
    port = free_port()
    served = [f"+policy_base_url={upstream.url}", "+policy_api_key=sk-unused", "+policy_model_name=m"]
    output = tmp_path / "rollouts.jsonl"
    with NgRunProcess(TUTORIAL_CONFIGS, f"+head_server.port={port}", *served):
        result = cli(
            "ng_collect_rollouts",
            f"+config_paths=[{TUTORIAL_CONFIGS}]",
            f"+head_server.port={port}",
            *served[:2],
            "+policy_model_name=another-model",
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={TUTORIAL_DATA}",
            f"+output_jsonl_fpath={output}",
            "+limit=1",
        )
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "different configs" in lines[0] and f":{port}" in lines[0], result.stderr
        assert not output.exists()

        same = cli(
            "ng_collect_rollouts",
            f"+config_paths=[{TUTORIAL_CONFIGS}]",
            f"+head_server.port={port}",
            *served,
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={TUTORIAL_DATA}",
            f"+output_jsonl_fpath={output}",
            "+limit=1",
        )
        assert same.returncode == 0, same.stderr
        assert "already running" in same.stderr
        assert len(output.read_text().splitlines()) == 1
