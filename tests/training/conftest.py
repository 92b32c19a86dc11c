"""A real stack for the training tests: `ng_run` (example_single_tool_call + openai_model) in front of
`TokenUpstream`, which attaches token ids and fails the model calls a test asks it to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from nemo_gym.testing import NgRunProcess, free_port
from tests.conftest import PROJECT_ROOT, TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA
from tests.training.token_upstream import TokenUpstream

CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Quito", "Hanoi"]


def weather_task(city: str) -> dict:
    """The tutorial's first task, asking about `city` (a test fails a task's model calls by its city)."""
    task = json.loads((PROJECT_ROOT / TUTORIAL_DATA).read_text().splitlines()[0])
    task["responses_create_params"]["input"][-1]["content"] = f"what's it like in {city}?"
    return task


@dataclass
class TrainingStack:
    head_url: str
    head_port: int
    agent: str
    upstream: TokenUpstream

    def write_tasks(self, path: Path, cities: list[str]) -> Path:
        path.write_text("".join(json.dumps(weather_task(city)) + "\n" for city in cities))
        return path


@pytest.fixture(scope="session")
def training_stack():
    with TokenUpstream() as upstream:
        port = free_port()
        stack = NgRunProcess(
            TUTORIAL_CONFIGS,
            f"+head_server.port={port}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=sk-unused",
            "+policy_model_name=m",
            # One upstream attempt: a scripted failure reaches the collector, whose retries are under test.
            "+policy_model.responses_api_models.openai_model.max_attempts=1",
        )
        try:
            stack.wait_ready()
            yield TrainingStack(f"http://127.0.0.1:{port}", port, TUTORIAL_AGENT, upstream)
        finally:
            stack.stop()


@pytest.fixture
def stack(training_stack):
    training_stack.upstream.fail_next.clear()
    training_stack.upstream.context_full_after_tool.clear()
    yield training_stack
    training_stack.upstream.fail_next.clear()
    training_stack.upstream.context_full_after_tool.clear()
