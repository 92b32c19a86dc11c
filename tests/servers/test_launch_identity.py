"""A launcher's servers get the ports it picked for them, and it takes a server as up only when its own
child answers on the port.

A port is picked free and checked, and the child that serves it starts a second or two later, once it
has imported its code. Another process (another stack, another test's server) could take the port in
that gap: the child then failed to bind, and since the launcher took "something answers /health with
200" as "my server is up", every request meant for the environment went to that stranger. A CI run
once collected five rows of one environment from a server of another test. Now the launcher holds each
port, bound and listening, from the check on and hands the socket to the child, and a server's
/health names its process.
"""

from __future__ import annotations

import os
import socket

import httpx
import pytest
from fastapi import FastAPI

from nemo_gym.config import load_global_config
from nemo_gym.errors import ConfigError
from nemo_gym.launcher import LaunchOptions, Stack, answers_as, port_is_free  # port_is_free binds as uvicorn does
from nemo_gym.servers.base import BaseServerConfig, SimpleServer
from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from tests.conftest import PROJECT_ROOT, TUTORIAL_CONFIGS

RESOURCES = "example_single_tool_call"


def tutorial_stack(*overrides: str) -> Stack:
    config = load_global_config(
        [
            f"+config_paths=[{TUTORIAL_CONFIGS}]",
            f"+head_server.port={free_port()}",
            "+policy_base_url=http://127.0.0.1:9",
            "+policy_api_key=sk-unused",
            "+policy_model_name=m",
            *overrides,
        ],
        project_root=PROJECT_ROOT,
        cwd=PROJECT_ROOT,
    )
    return Stack(config, LaunchOptions(startup_timeout_s=60, echo_child_output=False))


def test_from_the_port_check_on_no_other_process_can_take_a_servers_port_and_each_server_serves_its_own():
    stack = tutorial_stack(f"+{RESOURCES}.resources_servers.{RESOURCES}.num_replicas=2")
    try:
        stack.check_ports()
        assert len(stack.slots) == 4  # two resources replicas, the agent, the model server
        assert not any(port_is_free(slot.host, slot.port) for slot in stack.slots)
        stack.start()
        for process in stack.processes:
            health = httpx.get(f"{process.slot.url}/health", trust_env=False).json()
            assert (health["name"], health["pid"]) == (process.instance.name, process.popen.pid)
        assert all(row.healthy for row in stack.registry.rows())
    finally:
        stack.stop()
    assert all(port_is_free(slot.host, slot.port) for slot in stack.slots)


def test_a_port_already_taken_is_one_config_error_and_no_port_stays_held():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = tutorial_stack(f"+{RESOURCES}_simple_agent.responses_api_agents.simple_agent.port={port}")
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} of server '{RESOURCES}_simple_agent' is already in"):
            stack.check_ports()
    assert all(port_is_free(slot.host, slot.port) for slot in stack.slots)


def stranger_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "name": RESOURCES, "kind": "resources"}

    return app


def test_only_the_process_itself_answers_as_that_process():
    ours = SimpleServer(config=BaseServerConfig(name="ours"), server_client=registry_client({}))
    with (
        ThreadedServer(stranger_app()) as stranger,
        ThreadedServer(ours.setup_webserver()) as served,
        httpx.Client(trust_env=False) as probe,
    ):
        assert not answers_as(probe, stranger.url, os.getpid())
        assert answers_as(probe, served.url, os.getpid())
        assert not answers_as(probe, served.url, os.getpid() + 1)
        assert not answers_as(probe, f"http://127.0.0.1:{free_port()}", os.getpid())  # nothing there
