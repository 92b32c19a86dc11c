"""math_with_code over real HTTP: per-rollout sandboxed interpreters, their lifetime, safety, and verify."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

import httpx
import psutil
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from resources_servers.math_with_code.app import (
    MathWithCodeConfig,
    MathWithCodeServer,
    extract_boxed,
    results_match,
)


class Running:
    def __init__(self, **config: Any):
        port = free_port()
        self.server = MathWithCodeServer(
            config=MathWithCodeConfig(name="math_with_code", port=port, **config), server_client=registry_client({})
        )
        self.http = ThreadedServer(self.server.setup_webserver(), port=port).start()
        self.url = self.http.url

    def rollout(self) -> httpx.Client:
        """A client with its own cookie jar: one rollout, one session."""
        return httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        self.http.stop()


@pytest.fixture(scope="module")
def env():
    running = Running(execution_timeout_s=3, max_concurrent_executions=2)
    yield running
    running.stop()


def run(client: httpx.Client, code: str) -> dict[str, Any]:
    reply = client.post("/execute_python", json={"code": code})
    assert reply.status_code == 200, reply.text
    return reply.json()


def assistant(*texts: str) -> dict[str, Any]:
    return {
        "id": "resp_test",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "id": f"msg_{i}",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
            for i, text in enumerate(texts)
        ],
    }


def verify(client: httpx.Client, expected: str, response: dict[str, Any]) -> dict[str, Any]:
    row = {"responses_create_params": {"input": "q"}, "expected_result": expected, "response": response}
    reply = client.post("/verify", json=row)
    assert reply.status_code == 200, reply.text
    return reply.json()


def assert_still_serving(env: Running) -> None:
    assert httpx.get(f"{env.url}/health").status_code == 200
    with env.rollout() as fresh:
        assert run(fresh, "6 * 7") == {"stdout": "42\n", "stderr": "", "error": None}


# ---- the tool ---------------------------------------------------------------------------------


def test_state_persists_within_a_rollout_and_the_last_expression_is_echoed(env):
    with env.rollout() as client:
        assert run(client, "import math\nx = math.factorial(5)") == {"stdout": "", "stderr": "", "error": None}
        assert run(client, "print('x is', x)\nx + 1")["stdout"] == "x is 120\n121\n"


def test_rollouts_do_not_see_each_other(env):
    with env.rollout() as first, env.rollout() as second:
        run(first, "secret_number = 7")
        result = run(second, "secret_number")
        assert "NameError" in result["error"] and "secret_number" in result["stderr"]
        assert run(first, "secret_number")["stdout"] == "7\n"


def test_an_exception_is_reported_and_the_session_keeps_its_state(env):
    with env.rollout() as client:
        run(client, "y = 3")
        result = run(client, "1 / 0")
        assert result["error"] == "exited with code 1: ZeroDivisionError: division by zero"
        assert "Traceback" in result["stderr"]
        assert run(client, "y")["stdout"] == "3\n"


def test_verify_closes_the_rollouts_interpreter(env):
    with env.rollout() as client:
        run(client, "z = 1")
        assert env.server.live_sessions >= 1
        before = env.server.live_sessions
        verify(client, "1", assistant("\\boxed{1}"))
        assert env.server.live_sessions == before - 1
        assert "NameError" in run(client, "z")["error"]  # the same cookie now gets a fresh interpreter
        verify(client, "1", assistant("\\boxed{1}"))


def test_the_number_of_sessions_is_capped_and_an_evicted_rollout_is_told():
    running = Running(max_sessions=2)
    try:
        clients = [running.rollout() for _ in range(3)]
        for number, client in enumerate(clients):
            run(client, f"n = {number}")
        assert running.server.live_sessions == 2  # the least recently used one was closed for the third
        evicted = run(clients[0], "n")["error"]  # its state was lost, and the rollout is told why
        assert "NameError" in evicted and "session was restarted before this cell ran" in evicted
        assert "max_sessions" in evicted and "state (variables, imports) is lost" in evicted
        for client in clients:
            client.close()
    finally:
        running.stop()


def test_idle_sessions_are_reaped():
    # Separate from the cap: under load, opening a session can take longer than this idle timeout.
    running = Running(session_idle_timeout_s=0.4)
    try:
        with running.rollout() as client:
            run(client, "n = 1")
            deadline = time.monotonic() + 10
            while running.server.live_sessions and time.monotonic() < deadline:
                time.sleep(0.1)
            assert running.server.live_sessions == 0
            assert "without a call" in run(client, "n")["error"]
    finally:
        running.stop()


def test_shutdown_leaves_no_interpreter_behind():
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    running = Running()
    clients = [running.rollout() for _ in range(2)]
    for client in clients:
        run(client, "a = 1")
    assert len({child.pid for child in me.children(recursive=True)} - before) >= 2
    running.stop()
    left = [
        child
        for child in me.children(recursive=True)
        if child.pid not in before and child.status() != psutil.STATUS_ZOMBIE
    ]
    assert left == []
    for client in clients:
        client.close()


def post_and_hang_up(env: Running, cookies: httpx.Cookies, code: str, until: Any) -> None:
    """Send one /execute_python request on a raw connection and close it, unanswered, once `until()`
    holds: what a collector does when it gives up on a rollout (a deadline, Ctrl+C)."""
    body = json.dumps({"code": code}).encode()
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    head = (
        f"POST /execute_python HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nCookie: {cookie}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", env.http.port)) as connection:
        connection.sendall(head.encode() + body)
        deadline = time.monotonic() + 30
        while not until() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert until(), "the cell should have started"


def test_a_rollout_given_up_mid_cell_stops_the_cell_and_its_session():
    """A cell sleeping 9 s (beside a Popen'd child) whose request is abandoned: within a few seconds
    the cell, its child and the session's interpreter are gone, and no zombie is left."""
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    running = Running(execution_timeout_s=30)
    marker = uuid.uuid4().hex
    cell = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; marker = \"{marker}\"; time.sleep(300)'])\n"
        "time.sleep(9)"
    )

    def cell_child_running() -> bool:
        return any(marker in " ".join(p.cmdline()) for p in me.children(recursive=True) if p.pid not in before)

    def ours() -> list[psutil.Process]:  # zombies included: each one is a process nobody reaped
        return [child for child in me.children(recursive=True) if child.pid not in before]

    try:
        with running.rollout() as client:
            assert run(client, "kept = 1")["error"] is None
            assert running.server.live_sessions == 1 and ours() != []
            post_and_hang_up(running, client.cookies, cell, until=cell_child_running)
            deadline = time.monotonic() + 5
            while (ours() or running.server.live_sessions) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ours() == [], f"the abandoned cell left processes behind: {ours()}"
            assert running.server.live_sessions == 0
            told = run(client, "kept")["error"]  # the same rollout coming back is told what happened
            assert "NameError" in told and "given up" in told
    finally:
        running.stop()


# ---- safety: hostile code stays in the sandbox, the server keeps serving -----------------------------


def test_infinite_loop_times_out_and_the_session_restarts(env):
    with env.rollout() as client:
        run(client, "kept = 1")
        result = run(client, "while True:\n    pass")
        assert "timed out" in result["error"] and "state" in result["error"]
        assert "NameError" in run(client, "kept")["error"]  # restarted: a fresh, empty interpreter
    assert_still_serving(env)


def test_memory_bomb_hits_the_memory_limit(env):
    with env.rollout() as client:
        result = run(client, "hog = bytearray(8 * 1024 ** 3)")
        assert "memory limit 512 MB exceeded" in result["error"]
    assert_still_serving(env)


def test_fork_bomb_is_contained_and_the_session_survives_it(env):
    with env.rollout() as client:
        run(client, "kept = 40")
        result = run(client, "import os\nwhile True:\n    os.fork()")
        assert "process limit" in result["error"] and "BlockingIOError" in result["error"]
        assert run(client, "kept + 2")["stdout"] == "42\n"  # same interpreter, state intact
    assert_still_serving(env)


def test_writing_outside_the_work_dir_is_refused(env, tmp_path):
    target = tmp_path / "escaped.txt"
    with env.rollout() as client:
        for path in (str(target), "/etc/escaped.txt", "/root/escaped.txt"):
            result = run(client, f"open({path!r}, 'w').write('pwned')")
            assert result["error"] is not None and (
                "PermissionError" in result["error"] or "FileNotFoundError" in result["error"]
            ), result
        assert run(client, "open('scratch.txt', 'w').write('ok')")["stdout"] == "2\n"  # its own dir is fine
    assert not target.exists() and not os.path.exists("/etc/escaped.txt") and not os.path.exists("/root/escaped.txt")
    assert_still_serving(env)


def test_secrets_in_the_server_environment_are_invisible(env, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    with env.rollout() as client:
        result = run(
            client, "import os\nprint(os.environ.get('OPENAI_API_KEY'))\nprint(open('/proc/self/environ').read())"
        )
        assert "sk-secret" not in result["stdout"] + result["stderr"]
        assert result["stdout"].startswith("None\n")
    assert_still_serving(env)


def test_network_is_unreachable(env):
    with env.rollout() as client:
        result = run(client, f"import socket\nsocket.create_connection(('127.0.0.1', {env.http.port}), timeout=2)")
        assert "OSError" in result["error"] and "unreachable" in result["error"]
    assert_still_serving(env)


# ---- verify -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expected, texts",
    [
        ("233168", ["The sum is \\boxed{233168}."]),
        ("0.5", ["\\boxed{ 0.50 }"]),  # numerically equal
        ("\\frac{1}{2}", ["\\boxed{\\frac{1}{2}}"]),  # nested braces
        ("\\(-3\\)", ["So \\boxed{-3}."]),  # NeMo Gym's rows wrap expected_result in \\(...\\)
        ("2", ["First guess \\boxed{1}", "Checked with code; corrected: \\boxed{2}", "Done."]),  # latest boxed message
    ],
)
def test_correct_answers_score_one(env, expected, texts):
    with env.rollout() as client:
        row = verify(client, expected, assistant(*texts))
    assert row["reward"] == 1.0 and row["expected_result"] == expected


@pytest.mark.parametrize(
    "expected, texts, extracted",
    [
        ("233168", ["\\boxed{233167}"], "233167"),
        ("0.5", ["\\boxed{1/2}"], "1/2"),  # a string (or float) compare, not a symbolic one
        ("2", ["\\boxed{2}", "Actually \\boxed{3}"], "3"),  # the latest boxed message counts
    ],
)
def test_wrong_answers_score_zero(env, expected, texts, extracted):
    with env.rollout() as client:
        row = verify(client, expected, assistant(*texts))
    assert row["reward"] == 0.0 and row["extracted_result"] == extracted


@pytest.mark.parametrize(
    "response",
    [
        assistant("\\boxed{42"),  # never closed
        assistant("The answer is 42."),  # no box
        assistant(""),
        {"id": "resp_empty", "output": []},
        {
            "id": "resp_calls",
            "output": [
                {"type": "function_call", "name": "execute_python", "arguments": "{}", "call_id": "c1"},
                {"type": "function_call_output", "call_id": "c1", "output": "\\boxed{42}"},
            ],
        },  # a box in tool output is not an answer
    ],
)
def test_malformed_or_empty_answers_score_zero(env, response):
    with env.rollout() as client:
        row = verify(client, "42", response)
    assert row["reward"] == 0.0 and row["extracted_result"] is None


def test_boxed_extraction_and_matching_rules():
    assert extract_boxed("a \\boxed{x^{2}} b \\boxed{3}") == "x^{2}"
    assert extract_boxed("\\boxed{") is None and extract_boxed("none") is None
    assert results_match(" 3 ", "3") and results_match("3.0", "3") and results_match("1e3", "1000")
    assert not results_match("3", "4") and not results_match("abc", "3")


def test_expected_results_wrapped_as_in_nemo_gym_rows_are_unwrapped():
    assert results_match("-3", "\\(-3\\)") and results_match("\\frac{1}{2}", "$\\frac{1}{2}$")
    assert results_match("12 apples", "\\text{12  apples}") and results_match("0.5", "\\( 0.50 \\)")
    assert not results_match("3", "\\(-3\\)")
