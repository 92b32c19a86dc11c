"""A launcher takes a server as up only when its own child answers on the port.

A port is picked free, checked, and bound by the child a second or two later, once the child has
imported its code. Another process (another stack, another test's server) can take the port in that
gap. The child then fails to bind, and if the launcher took "something answers /health with 200" as
"my server is up", every request meant for the environment would go to that stranger: a CI run once
collected five rows of one environment from a server of another test.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from nemo_gym.config import load_global_config
from nemo_gym.errors import ServerStartupError
from nemo_gym.launcher import LaunchOptions, Stack
from nemo_gym.testing.inprocess import ThreadedServer, free_port
from tests.conftest import PROJECT_ROOT, TUTORIAL_CONFIGS

RESOURCES = "example_single_tool_call"


def stranger_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "name": RESOURCES, "kind": "resources"}

    return app


def test_a_stranger_on_the_port_is_not_taken_for_the_server_the_launcher_started():
    with ThreadedServer(stranger_app()) as stranger:
        config = load_global_config(
            [
                f"+config_paths=[{TUTORIAL_CONFIGS}]",
                f"+head_server.port={free_port()}",
                f"+{RESOURCES}.resources_servers.{RESOURCES}.port={stranger.port}",
                "+policy_base_url=http://127.0.0.1:9",
                "+policy_api_key=sk-unused",
                "+policy_model_name=m",
            ],
            project_root=PROJECT_ROOT,
            cwd=PROJECT_ROOT,
        )
        stack = Stack(config, LaunchOptions(startup_timeout_s=60, echo_child_output=False))
        # The stranger took the port after the launcher checked it, as in the race.
        stack.check_ports = lambda: None  # type: ignore[method-assign]
        with pytest.raises(ServerStartupError) as raised:
            stack.start()
    message = str(raised.value)
    assert f"server {RESOURCES!r} exited" in message
    assert "address already in use" in message.lower()
    assert not any(row.healthy for row in stack.registry.rows() if row.name == RESOURCES)
