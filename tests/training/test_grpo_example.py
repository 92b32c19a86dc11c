"""examples/grpo_trl.py without the `train` extra: `--help` works, a run says in one line what to install."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from nemo_gym.config import load_global_config
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


def load_example():
    spec = importlib.util.spec_from_file_location("grpo_trl_example", PROJECT_ROOT / "examples" / "grpo_trl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # module level imports only the standard library
    return module


def test_the_example_stack_config_builds_with_the_policy_server_as_vllm():
    example = load_example()
    config_paths, overrides = example.stack_arguments("echo_word", 11987, "http://127.0.0.1:4321/v1")
    config = load_global_config(
        [f"+config_paths=[{','.join(config_paths)}]", *overrides], project_root=PROJECT_ROOT, cwd=PROJECT_ROOT
    )
    model = config.get("policy_model")["responses_api_models"]["vllm_model"]
    # Token ids on, token-exact turns, pointed at the in-process policy server: the rollouts are on-policy.
    assert model["base_url"] == "http://127.0.0.1:4321/v1" and model["return_token_id_information"] is True
    assert model["model"] == example.POLICY_MODEL_NAME and model["uses_reasoning_parser"] is False
    agent = config.get("echo_word_simple_agent")["responses_api_agents"]["simple_agent"]
    assert agent["resources_server"]["name"] == "echo_word" and agent["model_server"]["name"] == "policy_model"
    assert config.get("head_server")["port"] == 11987


def test_the_default_environment_is_one_the_small_model_sometimes_solves():
    example = load_example()
    args = example.parse_args([])
    # echo_word's reward is dense and the groups hold 8 samples: GRPO gets advantages that are not all zero.
    assert args.env == "echo_word" and args.num_generations >= 8
    tasks = example.read_tasks(args.env)
    assert tasks and all(task["word"] in task["responses_create_params"]["input"][0]["content"] for task in tasks)


STEP_LINE = re.compile(
    r"step 1: loss (?P<loss>\S+)  grad_norm (?P<grad_norm>\S+)  mean reward (?P<reward>\S+)  "
    r"reward std in groups (?P<std>\S+)"
)


@pytest.mark.slow
def test_a_step_of_the_example_has_reward_spread_in_its_group_and_moves_the_weights():
    for module in ("trl", "transformers", "torch", "gguf", "datasets"):
        pytest.importorskip(module, reason="the `train` extra is not installed")
    arguments = ["--steps", "1", "--threads", "1"]  # the shipped defaults otherwise
    result = subprocess.run(
        [sys.executable, "examples/grpo_trl.py", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env=child_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    step = STEP_LINE.search(result.stdout)
    assert step is not None, result.stdout[-2000:]
    # The shipped mcqa run printed loss 0.000000 and grad_norm 0: every reward in the group was the same.
    assert float(step["std"]) > 0 and float(step["grad_norm"]) > 0
    assert "done: 1 GRPO steps, 1 rollout_func calls" in result.stdout
