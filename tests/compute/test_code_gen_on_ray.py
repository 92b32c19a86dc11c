"""code_gen's verification as Ray tasks: real verifications, run by the sandbox on a cluster node.

The code_gen server runs in this process with NEMO_GYM_RAY_ADDRESS set (as ng_run sets it for a
server on Ray); the cluster is two simulated nodes on loopback."""

from __future__ import annotations

import threading
import time

import httpx
import psutil
import pytest

from nemo_gym.compute import RAY_ADDRESS_ENV
from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from resources_servers.code_gen.app import CodeGenConfig, CodeGenServer

pytestmark = pytest.mark.slow

SUM_TESTS = {"inputs": ["1 2\n", "-5 5\n"], "outputs": ["3\n", "0\n"]}
SLOW_SUM = "import time\ntime.sleep(1.5)\na, b = map(int, input().split())\nprint(a + b)"


@pytest.fixture(scope="module")
def url(ray_cluster):
    with pytest.MonkeyPatch.context() as env:
        env.setenv(RAY_ADDRESS_ENV, ray_cluster.address)
        port = free_port()
        config = CodeGenConfig(name="code_gen", port=port, unit_test_timeout_s=3)
        server = CodeGenServer(config=config, server_client=registry_client({}))
        with ThreadedServer(server.setup_webserver(), port=port) as running:
            assert server._executor is not None and server._executor.backend == "ray"
            yield running.url


def verify(url: str, code: str) -> dict:
    text = f"```python\n{code}\n```"
    row = {
        "responses_create_params": {"input": "task"},
        "verifier_metadata": {"unit_tests": SUM_TESTS},
        "response": {
            "id": "resp",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
        },
    }
    reply = httpx.post(f"{url}/verify", json=row, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_right_and_wrong_code_score_as_they_do_locally(url):
    right = verify(url, "a, b = map(int, input().split())\nprint(a + b)")
    assert (right["reward"], right["num_passed"], right["error"]) == (1.0, 2, None)
    wrong = verify(url, "a, b = map(int, input().split())\nprint(a - b)")
    assert (wrong["reward"], wrong["error"]) == (0.0, "test 1: expected '3', got '-1'")


def test_the_limits_hold_on_the_node(url):
    looping = verify(url, "while True:\n    pass")
    assert looping["reward"] == 0.0 and looping["error"] == "test 1: timed out after 3 s"
    network = verify(url, "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=2)\nprint(3)")
    assert network["reward"] == 0.0 and "network" in network["error"]


def sandbox_launchers() -> list[list[str]]:
    """For each sandboxed program running now, the command lines of its ancestors (nearest first)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(part.endswith("nemo_gym/sandbox/_child.py") for part in cmdline):
            found.append([" ".join(parent.cmdline()) for parent in process.parents()])
    return found


def test_the_code_runs_in_a_ray_worker_not_in_the_server_process(url):
    result: dict = {}
    verifying = threading.Thread(target=lambda: result.update(verify(url, SLOW_SUM)))
    verifying.start()
    ancestries: list[list[str]] = []
    deadline = time.monotonic() + 60
    while verifying.is_alive() and not ancestries and time.monotonic() < deadline:
        ancestries = sandbox_launchers()
        time.sleep(0.05)
    verifying.join()
    assert result["reward"] == 1.0
    assert ancestries, "no sandboxed program was seen running"
    for ancestors in ancestries:
        # setpriv/unshare start the sandbox; the process that started them is a Ray worker running our task.
        launcher = next(cmd for cmd in ancestors if not cmd.startswith(("setpriv", "unshare", "/usr/bin")))
        assert launcher.startswith("ray::_run_python_on_node"), ancestors
