"""math_with_judge's math-verify as Ray tasks: graded on the cluster, a hanging answer times out there
with the same row as locally, and the next answer is graded again."""

from __future__ import annotations

import httpx
import pytest

from nemo_gym.compute import RAY_ADDRESS_ENV
from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from resources_servers.math_with_judge.app import MathWithJudgeConfig, MathWithJudgeServer

pytestmark = pytest.mark.slow


def verify(url: str, expected: str, text: str) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    row = {
        "responses_create_params": {"input": "What is it?"},
        "expected_answer": expected,
        "response": {"id": "r", "output": [{"type": "message", "role": "assistant", "id": "m", "content": content}]},
    }
    reply = httpx.post(f"{url}/verify", json=row, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_math_verify_runs_on_the_cluster_with_the_local_deadline_semantics(ray_cluster, monkeypatch):
    monkeypatch.setenv(RAY_ADDRESS_ENV, ray_cluster.address)
    port = free_port()
    config = MathWithJudgeConfig(name="math_with_judge", port=port, verification_workers=1, verification_timeout_s=2)
    server = MathWithJudgeServer(config=config, server_client=registry_client({}))
    with ThreadedServer(server.setup_webserver(), port=port) as running:
        assert server.grading is not None and server.grading.backend == "ray"
        right = verify(running.url, "\\frac{3}{8}", "so \\boxed{0.375}")
        assert (right["reward"], right["library_error"]) == (1.0, None)
        hung = verify(running.url, "2", "\\boxed{9^{9^{9^{9}}}}")
        assert hung["reward"] == 0.0 and hung["library_error"] == "math-verify timed out after 2 s"
        assert verify(running.url, "2", "\\boxed{2}")["reward"] == 1.0
