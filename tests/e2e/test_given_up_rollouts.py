"""A rollout the collector gives up on stops its work: the agent's episode, its model and tool calls,
and the model server's upstream request (issue 8, item 5). Real `ng_run` and `ng_collect_rollouts`
processes; the upstream counts the requests it receives and those somebody still waits for."""

from __future__ import annotations

import time

import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from tests.conftest import TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, cli
from tests.e2e.recording_upstream import RecordingUpstream

pytestmark = pytest.mark.slow
AGENT_KEY = f"{TUTORIAL_AGENT}.responses_api_agents.simple_agent"


@pytest.fixture(scope="module")
def looping_stack():
    upstream = RecordingUpstream(always_call_tool=True, latency_s=0.2).start()
    head_port = free_port()
    # No step cap worth the name and a long episode deadline: only the caller giving up can stop the loop.
    stack = NgRunProcess(
        TUTORIAL_CONFIGS,
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=sk-unused",
        "+policy_model_name=m",
        f"+{AGENT_KEY}.max_steps=100000",
        f"+{AGENT_KEY}.episode_timeout_s=3600",
    )
    try:
        stack.wait_ready()
        yield upstream, head_port
    finally:
        stack.stop()
        upstream.stop()


def give_up_after(seconds: float, head_port: int, output) -> None:
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={TUTORIAL_DATA}",
        f"+output_jsonl_fpath={output}",
        "+limit=1",
        f"+rollout_timeout_s={seconds}",
        "+max_attempts=1",
        f"+head_server.port={head_port}",
    )
    assert result.returncode == 1, result.stderr  # the one rollout failed: it ran out of time
    assert not output.exists() or output.read_text() == ""


def test_the_agent_stops_calling_the_model_once_the_collector_gave_up(looping_stack, tmp_path):
    upstream, head_port = looping_stack
    upstream.latency_s = 0.2
    before = upstream.received
    give_up_after(2, head_port, tmp_path / "rows.jsonl")
    assert upstream.received - before >= 3  # the episode was looping while the collector waited

    assert upstream.wait_until_nothing_open(within_s=10), "the model server kept its upstream request open"
    settled = upstream.received
    time.sleep(1.5)  # today the agent keeps looping here, ~5 model calls a second at this latency
    assert upstream.received == settled, f"{upstream.received - settled} model calls after the collector gave up"


def test_a_hanging_upstream_request_is_closed_once_the_collector_gave_up(looping_stack, tmp_path):
    upstream, head_port = looping_stack
    upstream.latency_s = None
    before = upstream.received
    give_up_after(1.5, head_port, tmp_path / "rows.jsonl")
    assert upstream.received == before + 1
    assert upstream.wait_until_nothing_open(within_s=10), "the connection to the hanging upstream stayed open"
