"""The servers' promises under abuse, against a real `ng_run` stack (the tutorial's: resources, simple
agent, openai_model) and a scripted upstream that can misbehave: bounded requests, wrong-shaped
upstream answers, and upstream 4xx that must not be retried as whole rollouts."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nemo_gym.testing.inprocess import PeakRss, free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, huge_answer, trickled_answer
from tests.conftest import TUTORIAL_AGENT, TUTORIAL_CONFIGS, cli

pytestmark = pytest.mark.slow

SECRET = "sk-abuse-test-key-0123456789"
RESOURCES = "example_single_tool_call"
RESOURCES_KEY = f"{RESOURCES}.resources_servers.{RESOURCES}"
MODEL_KEY = "policy_model.responses_api_models.openai_model"
MiB = 1024 * 1024
ANSWER_CAP = 16 * MiB
TASK = json.loads(Path("resources_servers/example_single_tool_call/data/example.jsonl").read_text().splitlines()[0])


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def stack(upstream: ScriptedOpenAI) -> Iterator[dict[str, str]]:
    """The running stack; yields the head port and each server's URL (from the head server's registry)."""
    head_port = free_port()
    running = NgRunProcess(
        TUTORIAL_CONFIGS,
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        f"+policy_api_key={SECRET}",
        "+policy_model_name=scripted-model",
        # Short deadlines on the resources server keep the slow-client tests quick.
        f"+{RESOURCES_KEY}.request_head_timeout_s=1",
        f"+{RESOURCES_KEY}.request_body_timeout_s=1",
        # A small answer cap and read idle timeout on the model server keep the upstream-abuse tests quick.
        f"+{MODEL_KEY}.max_upstream_response_bytes={ANSWER_CAP}",
        f"+{MODEL_KEY}.read_idle_timeout_s=0.5",
    )
    try:
        running.wait_ready()
        registry = httpx.get(f"http://127.0.0.1:{head_port}/server_instances").json()
        yield (
            {"head_port": str(head_port)}
            | {row["name"]: row["url"] for row in registry}
            | {f"{row['name']}.pid": str(row["pid"]) for row in registry}
        )
    finally:
        running.stop()


@pytest.fixture
def healthy_upstream(upstream: ScriptedOpenAI) -> Iterator[ScriptedOpenAI]:
    """The shared upstream, put back to normal after the test whatever it changed."""
    yield upstream
    upstream.fault_every, upstream.fault_status, upstream.mangle, upstream.answer_with = 0, 500, None, None
    upstream.fault_body = b'{"error": {"message": "injected fault"}}'


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# ---- 8. bounded requests ---------------------------------------------------------------------------
def test_a_body_over_the_cap_is_refused_from_its_content_length_before_it_is_sent(stack):
    with socket.create_connection(host_port(stack[RESOURCES]), timeout=30) as sock:
        sock.sendall(
            b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200000000\r\n\r\n{"responses_create_params": '
        )
        answer = read_response(sock)  # on a server without a cap this waits for 200 MB that never come
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"max_request_body_bytes" in answer and b"64 MiB" in answer


def test_a_chunked_body_over_the_cap_is_cut_off_while_streaming(stack):
    def endless_body() -> Iterator[bytes]:
        yield b'{"responses_create_params": {"input": "'
        for _ in range(80):  # 80 MiB, over the 64 MiB default
            yield b"x" * (1 << 20)

    try:
        answer = httpx.post(
            f"{stack[RESOURCES]}/verify",
            content=endless_body(),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
    except httpx.TransportError:
        pytest.fail("the server dropped the connection instead of answering 413")
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "RequestTooLargeError"


def test_a_validation_error_quotes_an_excerpt_of_the_input_not_the_input(stack):
    huge = "y" * 5_000_000
    answer = httpx.post(
        f"{stack[RESOURCES]}/verify", json={"responses_create_params": {"input": 7}, "response": huge}, timeout=60
    )
    assert answer.status_code == 422
    assert len(answer.content) < 5_000  # it was 3 copies of the input before
    error = answer.json()["error"]["message"]
    assert "responses_create_params" in error and "response" in error


def test_slow_clients_are_answered_408_and_disconnected(stack):
    """300 slowloris connections (a header line, then nothing) and one that stalls mid-body: the
    server's deadlines close every one of them (`request_*_timeout_s=1` in this stack)."""
    address = host_port(stack[RESOURCES])
    slow = []
    try:
        for _ in range(300):
            sock = socket.create_connection(address, timeout=30)
            sock.sendall(b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)
        stalled_body = socket.create_connection(address, timeout=30)
        slow.append(stalled_body)
        stalled_body.sendall(
            b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        # recv times out after 30 s if the server keeps a connection open: it used to, for good.
        answers = [read_response(sock) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    assert b"request head not received within 1 s" in answers[0]
    assert b"request body not received within 1 s" in answers[-1]
    # ...and the server still serves everyone else.
    assert httpx.get(f"{stack[RESOURCES]}/health").status_code == 200


# ---- 9. wrong-shaped upstream answers --------------------------------------------------------------
@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda answer: answer | {"output": [1, 2, 3]}, "output.0"),
        (lambda answer: answer | {"usage": "lots"}, "usage"),
        (
            lambda answer: answer | {"output": [{"type": "function_call", "name": "get_weather", "arguments": 5}]},
            "output.0.arguments",
        ),
    ],
)
def test_a_wrong_shaped_upstream_answer_is_a_502_naming_the_model_server_and_the_field(
    stack, healthy_upstream, mangle, field
):
    healthy_upstream.mangle = mangle
    answer = httpx.post(f"{stack['policy_model']}/v1/responses", json=TASK["responses_create_params"], timeout=30)
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert "'policy_model'" in message and f"`{field}`" in message
    assert "has no attribute" not in message

    # Through the agent, the rollout fails with the same explanation (it used to be a 500 with
    # "'int' object has no attribute 'get'").
    run = httpx.post(f"{stack[TUTORIAL_AGENT]}/run", json=TASK, timeout=30)
    assert run.status_code == 502 and f"`{field}`" in run.json()["error"]["message"]


# ---- 11. an upstream 4xx is one failure, not max_attempts rollouts ---------------------------------
def test_an_upstream_401_is_one_failure_record_after_one_attempt_with_the_key_redacted(
    stack, healthy_upstream, tmp_path
):
    healthy_upstream.fault_every, healthy_upstream.fault_status = 1, 401
    healthy_upstream.fault_body = json.dumps(
        {"error": {"message": f"Incorrect API key provided: {SECRET}.", "code": "invalid_api_key"}}
    ).encode()
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(TASK) + "\n" + json.dumps(TASK) + "\n")
    output = tmp_path / "out.jsonl"
    before = len(healthy_upstream.requests)

    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        f"+head_server.port={stack['head_port']}",
        "+max_attempts=3",
        timeout=120,
    )

    assert result.returncode == 1
    assert len(healthy_upstream.requests) - before == 2  # one call per rollout: nobody retried a 401
    failures = [json.loads(line) for line in (tmp_path / "out_failures.jsonl").read_text().splitlines()]
    assert len(failures) == 2
    for failure in failures:
        assert failure["attempts"] == 1
        assert failure["status_code"] == 424  # failed dependency: not retryable, unlike 502
        assert "'policy_model'" in failure["message"] and "HTTP 401" in failure["message"]
        assert "Incorrect API key provided" in failure["message"]
        assert SECRET not in failure["message"]


def test_an_upstream_429_is_retried_and_the_rollouts_succeed(stack, healthy_upstream, tmp_path):
    healthy_upstream.fault_every, healthy_upstream.fault_status, healthy_upstream.retry_after_s = 2, 429, 0.01
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text((json.dumps(TASK) + "\n") * 4)
    output = tmp_path / "out.jsonl"
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        f"+head_server.port={stack['head_port']}",
        timeout=120,
    )
    healthy_upstream.retry_after_s = None
    assert result.returncode == 0, result.stderr
    assert len(output.read_text().splitlines()) == 4


# ---- 16. bounded upstream answers: a failure record, not a reward of 0, and memory held ------------
def collect_one(stack, tmp_path, *extra: str):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(TASK) + "\n")
    output = tmp_path / "out.jsonl"
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        f"+head_server.port={stack['head_port']}",
        *extra,
        timeout=120,
    )
    rows = output.read_text().splitlines() if output.exists() else []
    failures_path = tmp_path / "out_failures.jsonl"
    failures = [json.loads(line) for line in failures_path.read_text().splitlines()] if failures_path.exists() else []
    return result, rows, failures


def test_a_300_mb_upstream_answer_is_one_failure_record_naming_the_url_and_the_cap(stack, healthy_upstream, tmp_path):
    healthy_upstream.answer_with = huge_answer(300 * MiB, with_content_length=False)
    before = len(healthy_upstream.requests)
    with PeakRss(int(stack["policy_model.pid"])) as model_rss:
        result, rows, failures = collect_one(stack, tmp_path, "+max_attempts=3")

    assert result.returncode == 1 and rows == []  # failed, never scored
    assert len(failures) == 1
    failure = failures[0]
    assert failure["attempts"] == 1 and failure["status_code"] == 424  # an oversized answer is not retried
    assert "'policy_model': upstream POST " in failure["message"]
    assert f"{healthy_upstream.url}/responses" in failure["message"]
    assert "over the 16 MiB response cap" in failure["message"]
    assert f"max_upstream_response_bytes={ANSWER_CAP}" in failure["message"]
    assert len(healthy_upstream.requests) - before == 1
    assert model_rss.grown < 100 * MiB, f"the model server grew {model_rss.grown / MiB:.0f} MiB"

    healthy_upstream.answer_with = None  # the model server goes on serving
    answer = httpx.post(f"{stack['policy_model']}/v1/responses", json=TASK["responses_create_params"], timeout=30)
    assert answer.status_code == 200


def test_an_upstream_trickling_a_byte_a_second_fails_the_rollout_without_a_rollout_timeout(
    stack, healthy_upstream, tmp_path
):
    healthy_upstream.answer_with = trickled_answer(1.0)
    result, rows, failures = collect_one(stack, tmp_path, "+max_attempts=1")  # no rollout_timeout_s

    assert result.returncode == 1 and rows == []
    assert len(failures) == 1
    message = failures[0]["message"]
    assert "'policy_model': upstream POST " in message
    assert "timed out: no byte for 0.5 s" in message and "(read idle timeout)" in message
