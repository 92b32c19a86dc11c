"""Shared fixtures: a scripted OpenAI-compatible upstream and helpers to run `ng_*` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.scripted_openai import ScriptedOpenAI

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Every Ray cluster a test starts is on loopback, and some tests are Ray drivers in this process
# (tests/compute). With Ray 2.60 a driver reaches nodes pinned to 127.0.0.1 only with this off
# (ray-project/ray#59110), and Ray reads it once, when first imported: a test module's
# `pytest.importorskip("ray")` at collection would otherwise fix it for the whole run.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
TUTORIAL_CONFIGS = (
    "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml,"
    "responses_api_models/openai_model/configs/openai_model.yaml"
)
TUTORIAL_DATA = "resources_servers/example_single_tool_call/data/example.jsonl"
TUTORIAL_AGENT = "example_single_tool_call_simple_agent"


@pytest.fixture
def upstream():
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture
def head_port() -> int:
    return free_port()


def cli(
    command: str,
    *args: str,
    cwd: Path = PROJECT_ROOT,
    timeout: float = 120,
    env: dict | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run an ng_* console script and capture its output."""
    return subprocess.run(
        [_script(command), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or child_env()
    )


def spawn(command: str, *args: str, cwd: Path = PROJECT_ROOT, env: dict | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [_script(command), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or child_env(),
    )


def child_env() -> dict[str, str]:
    return dict(os.environ)


def _script(command: str) -> str:
    candidate = Path(sys.executable).with_name(command)
    return str(candidate) if candidate.exists() else command
