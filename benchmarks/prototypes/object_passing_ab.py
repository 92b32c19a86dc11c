"""Would co-located mode gain from handing validated objects across its in-memory hops instead of JSON?

Issue 20 asked to measure it. This drives a prototype (`object_passing.patch`, not part of the library):
request bodies go to the endpoint as Python objects (validated with `model_validate`), and an endpoint's
pydantic answer comes back as `model_dump(mode="json")`, so neither side encodes or parses JSON. HTTP mode
and four co-located variants run alternately on one stack, in rotating order, and the paired medians of
stack CPU per rollout are printed:

    git worktree add --detach /tmp/objects HEAD
    git -C /tmp/objects apply "$PWD/benchmarks/prototypes/object_passing.patch"
    PYTHONPATH=/tmp/objects python benchmarks/prototypes/object_passing_ab.py --tree /tmp/objects
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

VARIANTS: dict[str, tuple[bool, bool, bool, bool] | None] = {  # name: (ON, REQ, ANS, ISO) of nemo_gym._proto
    "HTTP mode": None,
    "co-located, JSON bodies (today)": (False, False, False, False),
    "objects: requests shared": (True, True, False, False),
    "objects: requests copied": (True, True, False, True),
    "objects: requests shared, answers too": (True, True, True, False),
}
TODAY = "co-located, JSON bodies (today)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, required=True, help="a worktree with object_passing.patch applied")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--rollouts", type=int, default=2000, help="per run")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree / "benchmarks"))
    import stack_throughput as bench

    import nemo_gym

    if not Path(nemo_gym.__file__).resolve().is_relative_to(args.tree.resolve()):
        sys.exit(f"nemo_gym comes from {nemo_gym.__file__}: run with PYTHONPATH={args.tree}")
    try:
        from nemo_gym import _proto  # type: ignore[attr-defined]
    except ImportError:
        sys.exit(f"{args.tree} does not have object_passing.patch applied")

    bench.raise_open_file_limit()
    upstream = bench.Upstream(0.0)
    stack = bench.RunningStack(upstream, Path(tempfile.mkdtemp(prefix="object_passing_")) / "ng_run.log")
    runner = asyncio.Runner(loop_factory=bench._loop_factory())
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        rows = bench.example_rows()
        colocated = bench.colocated_stack(stack, upstream)
        runner.run(colocated.start())
        processes = {"collector": bench.psutil.Process(), **stack.processes}

        def run(name: str, count: int, meter: Any) -> Any:
            switches = VARIANTS[name]
            if switches is None:
                return runner.run(bench.collect_in_process(stack.head_url, rows, args.concurrency, count, meter))
            _proto.ON, _proto.REQ, _proto.ANS, _proto.ISO = switches
            return runner.run(bench.collect_colocated_in_process(colocated, rows, args.concurrency, count, meter))

        for name in VARIANTS:  # warm-up
            run(name, 500, None)
        names = list(VARIANTS)
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                result = run(name, args.rollouts, bench.CpuMeter(processes))
                if result.failures:
                    sys.exit(f"{name}: {result.failures} rollouts failed ({result.failure_types})")
                results[name].append(result.stack_cpu_ms_per_rollout)
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.items()), flush=True)
        runner.run(colocated.stop())
    finally:
        runner.close()
        stack.stop()
        upstream.stop()
    print(f"\nstack CPU per rollout, {args.rounds} rounds of {args.rollouts} rollouts at {args.concurrency} in flight")
    for name in names:
        to_http = [mine / http for mine, http in zip(results[name], results["HTTP mode"])]
        to_json = [mine / today for mine, today in zip(results[name], results[TODAY])]
        print(
            f"  {name:40s} {statistics.median(results[name]):.3f} ms   to JSON bodies {statistics.median(to_json):.3f}x"
            f" (pairs {min(to_json):.2f}-{max(to_json):.2f})   to HTTP mode {statistics.median(to_http):.3f}x"
            f" (pairs {min(to_http):.2f}-{max(to_http):.2f})"
        )


if __name__ == "__main__":
    main()
