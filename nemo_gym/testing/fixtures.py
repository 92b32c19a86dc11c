"""pytest fixtures for testing servers and environments (loaded by the project's root conftest.py;
add `pytest_plugins = ["nemo_gym.testing.fixtures"]` to use them elsewhere)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI

from nemo_gym.testing.inprocess import ThreadedServer


def _starlette_test_client_on_httpx() -> None:
    """Build Starlette's TestClient on `httpx`, the client NeMo Gym's environment tests are written for.

    NeMo Gym pins starlette 1.3.1, whose TestClient is an `httpx.Client`; its tests swap the client's
    cookie jar for an `httpx.Cookies` subclass that keeps nothing (`client._cookies =
    StatelessCookies(client._cookies)`). Newer Starlette builds the TestClient on `httpx2` whenever that
    is installed (the OpenAI and Anthropic SDKs bring it), and the two libraries' Cookies do not take each
    other: every request then failed with "'StatelessCookies' object has no attribute 'set_cookie'".
    Starlette still falls back to `httpx` when `httpx2` cannot be imported, so it is hidden for that one
    import (its deprecation warning is silenced). Nothing in this project uses the TestClient itself.
    """
    if "starlette.testclient" in sys.modules:
        return
    try:
        import httpx  # noqa: F401
        import httpx2
    except ImportError:
        return
    sys.modules["httpx2"] = None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import starlette.testclient  # noqa: F401
    finally:
        sys.modules["httpx2"] = httpx2


_starlette_test_client_on_httpx()


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
