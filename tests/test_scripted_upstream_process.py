"""The scripted upstream as its own process, the way benchmarks/stack_throughput.py starts it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT, child_env


def test_python_dash_m_starts_the_scripted_upstream_and_says_where_first():
    process = subprocess.Popen(
        [sys.executable, "-m", "nemo_gym.testing.scripted_openai", "--port", "0"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the benchmark reads one merged stream: a warning first would break it
        text=True,
        env=child_env(),
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
    finally:
        process.kill()
        process.wait(timeout=10)
    assert first_line.startswith("scripted OpenAI server listening on http://127.0.0.1:"), first_line
