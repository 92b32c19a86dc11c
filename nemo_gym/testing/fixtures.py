"""pytest fixtures for testing servers and environments (loaded by the project's root conftest.py;
add `pytest_plugins = ["nemo_gym.testing.fixtures"]` to use them elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI

from nemo_gym.testing.inprocess import ThreadedServer


@pytest.fixture
def serve() -> Iterator[Callable[[FastAPI], str]]:
    """`serve(app)` runs an app (lifespan included) on a loopback port and returns its base URL;
    every app served is stopped at teardown."""
    running: list[ThreadedServer] = []

    def start(app: FastAPI) -> str:
        running.append(ThreadedServer(app).start())
        return running[-1].url

    yield start
    for server in running:
        server.stop()
