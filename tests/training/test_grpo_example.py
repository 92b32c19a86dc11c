"""examples/grpo_trl.py without the `train` extra: `--help` works, a run says in one line what to install."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT, child_env

# Runs the example with the training libraries made unimportable, as on a machine (or CI) without the extra.
WITHOUT_TRAIN_EXTRA = """
import runpy, sys
for name in ("trl", "transformers", "torch", "gguf", "datasets", "accelerate"):
    sys.modules[name] = None
sys.argv = ["examples/grpo_trl.py", *sys.argv[1:]]
runpy.run_path("examples/grpo_trl.py", run_name="__main__")
"""


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TRAIN_EXTRA, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )


def test_help_works_without_trl_and_names_the_extra():
    result = run_example("--help")
    assert result.returncode == 0, result.stderr
    assert "--num-generations" in result.stdout and "--head-url" in result.stdout
    assert "pip install -e '.[train]'" in " ".join(result.stdout.split())
    assert result.stderr == ""


def test_a_run_without_trl_is_one_line_and_exit_2():
    result = run_example("--steps", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: trl, transformers, torch, gguf, datasets not installed")
    assert "pip install -e '.[train]'" in lines[0]
