"""A server of the stack dying mid-collection stops the collection fast (circuit breaker), and an
upstream that echoes the API key in its error body does not put the key in the failures file."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from nemo_gym.rollouts.redaction import SecretRedactor
from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from tests.conftest import TUTORIAL_AGENT, TUTORIAL_CONFIGS, cli, spawn
from tests.e2e.test_tutorial import RunningStack

pytestmark = pytest.mark.slow
RESOURCES_ENTRYPOINT = "resources_servers/example_single_tool_call/app.py"


def write_tasks(path: Path, count: int) -> Path:
    row = json.loads(Path("resources_servers/example_single_tool_call/data/example.jsonl").read_text().splitlines()[0])
    # Distinct lines: identical consecutive lines would be one task (NeMo Gym's folding of copies).
    path.write_text("".join(json.dumps(row | {"n": n}) + "\n" for n in range(count)))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_a_server_dying_mid_run_stops_the_collection_and_resume_finishes_it(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 600)
    output = tmp_path / "out.jsonl"
    head_port = free_port()
    with ScriptedOpenAI(latency_s=0.05) as upstream:
        overrides = (
            f"+head_server.port={head_port}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=x",
            "+policy_model_name=m",
        )
        stack = RunningStack(*overrides).wait_ready()
        collector = spawn(
            "ng_collect_rollouts",
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={tasks}",
            f"+output_jsonl_fpath={output}",
            f"+head_server.port={head_port}",
            "+num_samples_in_parallel=16",
        )
        try:
            deadline = time.monotonic() + 60
            while not output.exists() or len(output.read_bytes().splitlines()) < 30:
                assert time.monotonic() < deadline and collector.poll() is None
                time.sleep(0.02)
            resources = [
                child
                for child in psutil.Process(stack.process.pid).children(recursive=True)
                if any(part.endswith(RESOURCES_ENTRYPOINT) for part in child.cmdline())
            ]
            assert len(resources) == 1
            resources[0].kill()
            printed, _ = collector.communicate(timeout=120)
            stack.process.wait(timeout=30)  # ng_run stops the rest of the stack by itself
        finally:
            for process in (collector, stack.process):
                if process.poll() is None:
                    process.kill()
                    process.wait()

        assert collector.returncode == 1, printed
        errors = [line for line in printed.splitlines() if "ng_collect_rollouts: error:" in line]
        assert len(errors) == 1, printed
        assert "server 'example_single_tool_call" in errors[0] and "is gone" in errors[0]
        assert "+resume=true" in errors[0] and str(output) in errors[0]
        assert "Traceback" not in printed
        rows, failures = read_rows(output), read_rows(tmp_path / "out_failures.jsonl")
        # Only rollouts that were attempted can be failures, and dispatching stopped: most pairs are
        # neither rows nor failures, just missing, for the resume to run.
        assert len(failures) <= 16, f"{len(failures)} failure records for a dead server"
        assert len(rows) + len(failures) < 600

        with RunningStack(*overrides) as restarted:
            resumed = cli(
                "ng_collect_rollouts",
                f"+agent_name={TUTORIAL_AGENT}",
                f"+input_jsonl_fpath={tasks}",
                f"+output_jsonl_fpath={output}",
                f"+head_server.port={head_port}",
                "+resume=true",
            )
            assert restarted.process.poll() is None
    assert resumed.returncode == 0, resumed.stderr
    keys = [(row["_ng_task_index"], row["_ng_rollout_index"]) for row in read_rows(output)]
    assert sorted(keys) == [(task, 0) for task in range(600)]
    assert not (tmp_path / "out_failures.jsonl").exists()


CONFIGURED_KEY = "org-Secret-Key-Value-0123456789"
OTHER_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx"


@pytest.fixture
def key_echoing_upstream() -> Iterator[str]:
    """An upstream that rejects every request with a 401 quoting the key it was sent (as providers do)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            body = json.dumps(
                {
                    "error": {
                        "message": f"Incorrect API key provided: {sent}. Keys look like {OTHER_KEY}.",
                        "code": "invalid_api_key",
                    }
                }
            )
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_an_api_key_echoed_by_the_upstream_never_reaches_the_failures_file(key_echoing_upstream, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 2)
    output = tmp_path / "out.jsonl"
    result = cli(
        "ng_collect_rollouts",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        f"+head_server.port={free_port()}",
        f"+policy_base_url={key_echoing_upstream}",
        f"+policy_api_key={CONFIGURED_KEY}",
        "+policy_model_name=m",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        "+max_attempts=1",
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    failures_file = tmp_path / "out_failures.jsonl"
    failures = read_rows(failures_file)
    assert len(failures) == 2
    for failure in failures:
        assert "401" in failure["message"] and "Incorrect API key provided: ***" in failure["message"]
        assert "sk-***" in failure["message"]
    text = failures_file.read_text()
    assert CONFIGURED_KEY not in text and OTHER_KEY not in text
    assert CONFIGURED_KEY not in result.stderr + result.stdout


def test_the_redactor_hides_configured_values_and_key_shapes_but_not_placeholders():
    redact = SecretRedactor(["a-configured-secret-value", "x", None])  # type: ignore[list-item]
    text = (
        '{"message": "bad key a-configured-secret-value (Authorization: Bearer tok_abcdefghijkl) '
        'x sk-ant-api03-abcdefghij, see https://host/v1?api_key=zzzzzzzzzz&x=1"}'
    )
    assert redact(text) == (
        '{"message": "bad key *** (Authorization: Bearer ***) x sk-***, see https://host/v1?api_key=***&x=1"}'
    )
