"""Rollouts/s and CPU per rollout of a code_gen stack: without Ray, and on Ray with 1, 2 and 4 replicas.

    python benchmarks/ray_replicas.py                       # 3 repeats of 200 rollouts per configuration
    python benchmarks/ray_replicas.py --quick               # 1 repeat of 60 rollouts
    python benchmarks/ray_replicas.py --replicas 1,2 --rollouts 400 --concurrency 32 --skip-baseline
    python benchmarks/ray_replicas.py --skip-baseline --ray-env RAY_idle_worker_killing_time_threshold_ms=600000
    python benchmarks/ray_replicas.py --quick --breakdown   # also log the busiest processes and new Ray workers

The stack is code_gen (whose verification runs the task's unit tests in the sandbox: a confined
child process per task that starts a fresh interpreter per test, so CPU-heavy), simple_agent and
openai_model, the model pointed at a scripted upstream (its own process) that answers every task
with a correct program, so every rollout is verified for real and scores 1.

Configurations, all in one run, in this order:
  * baseline: `ng_run` without Ray (local processes; code_gen runs the sandbox in its own process);
  * Ray xN: a Ray cluster of `--nodes` simulated nodes on this machine (each a real raylet pinned to
    127.0.0.1 with one CPU, `nemo_gym.testing.LocalRayCluster`; `--ray-env` adds environment for
    them), `ng_run +ray_address=<cluster>` with `num_replicas: N` on code_gen. Every server runs on
    the cluster, and code_gen's verification runs as Ray tasks (nemo_gym.compute's Ray backend)
    wherever Ray places them.

Per configuration: start the stack, one warm-up collection (Ray workers and sandbox warm), then
`--repeats` timed collections with `ng_collect_rollouts` (a subprocess) at `--concurrency`.
rollouts/s is rows written / wall time of the collection command (its own start, ~1 s, included).

CPU is counted by the kernel: this process moves itself into a cgroup v1 `cpuacct` group before it
starts anything, so everything it starts and everything those start is in the group (the
collector, ng_run and its head server, every server, on Ray the cluster's own processes, idle and
busy Ray workers, and every sandbox and test interpreter, however short-lived), and the group's
usage is read before and after each collection. Where cpuacct is not writable it falls back to
psutil over the process tree (which misses processes that ended unreaped). The scripted upstream
stands in for the model: it is moved out of the group and reported on its own. "Ray's own" is
the part spent in GCS, raylets and Ray's agents and monitors (psutil); "Ray workers started" counts
Ray worker processes that started during the timed collection (sampled every 0.2 s): worker churn.
Medians over the repeats are printed. Every process shares the same 2 cores (and this machine's
other users), so the simulated nodes show Ray's overhead, not a speed-up from more hardware.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nemo_gym.free_ports import free_port  # noqa: E402
from nemo_gym.testing.ng_run_process import NgRunProcess, console_script

CONFIGS = [
    "resources_servers/code_gen/configs/code_gen.yaml",
    "responses_api_models/openai_model/configs/openai_model.yaml",
]
AGENT = "code_gen_simple_agent"
EXAMPLES = ROOT / "resources_servers/code_gen/data/example.jsonl"

# A correct program for each example task, found by a phrase of its statement.
SOLUTIONS = {
    "print their sum": "a, b = map(int, input().split())\nprint(a + b)",
    "print it reversed": "print(input()[::-1])",
    "Print the largest": "input()\nprint(max(map(int, input().split())))",
    "is_palindrome": "def is_palindrome(s: str) -> bool:\n    return s.lower() == s.lower()[::-1]",
    "two_sum": (
        "def two_sum(nums, target):\n    seen = {}\n    for i, n in enumerate(nums):\n"
        "        if target - n in seen:\n            return [seen[target - n], i]\n        seen[n] = i"
    ),
}

# Ray's own processes (control plane), told apart from the Ray workers that run our servers and tasks.
RAY_SYSTEM_MARKERS = (
    "gcs_server",
    "raylet",
    "ray/dashboard",
    "ray/autoscaler",
    "log_monitor.py",
    "runtime_env/agent",
    "ray::DashboardAgent",
    "ray::RuntimeEnvAgent",
    "local_ray_cluster",
)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- the scripted upstream: a correct program for every task ---------------------------------------


def solve(body: dict[str, Any]) -> Any:
    from nemo_gym.testing.scripted_openai import Turn

    request = orjson.dumps(body).decode()
    for phrase, code in SOLUTIONS.items():
        if phrase in request:
            return Turn(text=f"Here is a solution.\n```python\n{code}\n```")
    return Turn(text="I do not know this task.")


def serve_upstream() -> None:
    """`--serve-upstream`: run the scripted upstream in this process until killed (its own process,
    so its CPU is measured apart from the stack's)."""
    import asyncio

    from nemo_gym.testing.scripted_openai import ScriptedOpenAI

    server = ScriptedOpenAI(solve)
    server.record_requests = False

    async def run() -> None:
        await server.serve()
        print(f"listening on {server.url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


@contextlib.contextmanager
def upstream(group: CpuAccountingGroup | None) -> Iterator[tuple[str, psutil.Process]]:
    popen = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"the scripted upstream did not start: {line!r}")
        if group is not None:
            group.release(popen.pid)  # the stand-in for the model is measured on its own
        yield line.split("listening on", 1)[1].strip(), psutil.Process(popen.pid)
    finally:
        popen.kill()
        popen.wait()


# ---- CPU of every process we started -----------------------------------------------------------------

CPUACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")


class CpuAccountingGroup:
    """A cgroup v1 `cpuacct` group holding this process, so every process it starts from now on, and
    every process those start, is counted by the kernel, including short-lived ones (sandboxes, test
    interpreters) and ones nobody reaps. The sandbox moves its executions between `cpu`/`memory`
    groups, not `cpuacct` ones, so they stay in here. None where cpuacct is not mounted writable."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls) -> CpuAccountingGroup | None:
        own = next(
            (
                line.split(":", 2)[2].strip()
                for line in Path("/proc/self/cgroup").read_text().splitlines()
                if "cpuacct" in line.split(":", 2)[1].split(",")
            ),
            None,
        )
        if own is None or not CPUACCT_ROOT.is_dir():
            return None
        path = CPUACCT_ROOT / own.lstrip("/") / f"nemo_gym_ray_replicas_bench-{os.getpid()}"
        try:
            path.mkdir()
            (path / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            return None
        return cls(path)

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def release(self, pid: int) -> None:
        """Move `pid` out to the parent group (e.g. the upstream, measured on its own)."""
        (self.path.parent / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.release(os.getpid())
            self.path.rmdir()  # fails while a process we started is still alive in it; harmless


@dataclass(frozen=True)
class CpuSnapshot:
    total: float
    ray_system: float
    upstream: float
    by_process: dict[int, tuple[str, float]]
    """pid -> (command line, CPU incl. reaped children), for --breakdown."""


def _cpu(process: psutil.Process, with_children: bool = True) -> float:
    times = process.cpu_times()
    own = times.user + times.system
    return own + (times.children_user + times.children_system if with_children else 0.0)


@dataclass(frozen=True)
class Meters:
    upstream_process: psutil.Process
    group: CpuAccountingGroup | None


class WorkerCensus:
    """Counts the Ray worker processes that start while a collection runs (sampled every 0.2 s: a
    worker that lives shorter than that can be missed), to tell worker churn from steady work."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._since = time.time()

    def __enter__(self) -> WorkerCensus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for process in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if process.pid in self.seen or process.create_time() < self._since:
                        continue
                    command = " ".join(process.cmdline())
                    if "default_worker.py" in command or command.startswith("ray::"):
                        self.seen[process.pid] = command


def cpu_snapshot(meters: Meters) -> CpuSnapshot:
    """User+system seconds of the whole stack: from the cgroup when there is one, else this process's
    descendants and what they reaped (which misses processes that ended and were never reaped)."""
    me = psutil.Process()
    total = ray_system = upstream_cpu = 0.0
    by_process: dict[int, tuple[str, float]] = {}
    children_times = me.cpu_times()
    total += children_times.children_user + children_times.children_system  # collectors that ended
    for process in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if process.pid == meters.upstream_process.pid:
                upstream_cpu += _cpu(process)
                continue
            seconds = _cpu(process)
            total += seconds
            command = " ".join(process.cmdline())
            by_process[process.pid] = (command, seconds)
            if any(marker in command for marker in RAY_SYSTEM_MARKERS):
                ray_system += _cpu(process, with_children=False)
    if meters.group is not None:
        total = meters.group.seconds()
    return CpuSnapshot(total, ray_system, upstream_cpu, by_process)


def log_breakdown(before: CpuSnapshot, after: CpuSnapshot, top: int = 12) -> None:
    """The processes that used the most CPU between two snapshots (live ones; ended ones are in their parent)."""
    deltas = []
    for pid, (command, seconds) in after.by_process.items():
        deltas.append((seconds - before.by_process.get(pid, (command, 0.0))[1], pid, command))
    for seconds, pid, command in sorted(deltas, reverse=True)[:top]:
        log(f"    {seconds:6.2f} s  {pid:>7}  {command[:110]}")


# ---- one configuration ----------------------------------------------------------------------------


@dataclass
class Repeat:
    rollouts: int
    seconds: float
    cpu_s: float
    ray_system_cpu_s: float
    upstream_cpu_s: float
    mean_reward: float
    ray_workers_started: int


def write_input(path: Path, rows: int) -> Path:
    examples = EXAMPLES.read_text().splitlines()
    path.write_text("".join(examples[index % len(examples)] + "\n" for index in range(rows)))
    return path


def collect(head_port: int, input_path: Path, output_path: Path, concurrency: int, env: dict[str, str]) -> None:
    done = subprocess.run(
        [
            console_script("ng_collect_rollouts"),
            f"+agent_name={AGENT}",
            f"+input_jsonl_fpath={input_path}",
            f"+output_jsonl_fpath={output_path}",
            f"+head_server.port={head_port}",
            f"+num_samples_in_parallel={concurrency}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ng_collect_rollouts failed ({done.returncode}):\n{done.stderr[-3000:]}")


def read_rewards(path: Path) -> list[float]:
    return [float(json.loads(line)["reward"]) for line in path.read_text().splitlines() if line.strip()]


def measure(
    label: str,
    stack: NgRunProcess,
    head_port: int,
    args: argparse.Namespace,
    work: Path,
    meters: Meters,
    env: dict[str, str],
) -> list[Repeat]:
    warmup_input = write_input(work / f"{label}-warmup.jsonl", max(40, 2 * args.concurrency))
    collect(head_port, warmup_input, work / f"{label}-warmup-out.jsonl", args.concurrency, env)
    input_path = write_input(work / f"{label}-input.jsonl", args.rollouts)
    repeats = []
    for index in range(args.repeats):
        output_path = work / f"{label}-{index}.jsonl"
        before = cpu_snapshot(meters)
        started = time.perf_counter()
        with WorkerCensus() as census:
            collect(head_port, input_path, output_path, args.concurrency, env)
        seconds = time.perf_counter() - started
        after = cpu_snapshot(meters)
        rewards = read_rewards(output_path)
        if stack.process.poll() is not None:
            raise RuntimeError(f"ng_run exited during {label}:\n{stack.output[-3000:]}")
        repeat = Repeat(
            rollouts=len(rewards),
            seconds=seconds,
            cpu_s=after.total - before.total,
            ray_system_cpu_s=after.ray_system - before.ray_system,
            upstream_cpu_s=after.upstream - before.upstream,
            mean_reward=statistics.fmean(rewards) if rewards else 0.0,
            ray_workers_started=len(census.seen),
        )
        log(
            f"  {label} repeat {index + 1}: {repeat.rollouts} rollouts in {seconds:.1f} s, "
            f"CPU {repeat.cpu_s:.1f} s (Ray's own {repeat.ray_system_cpu_s:.1f} s), mean reward {repeat.mean_reward:.2f}, "
            f"{repeat.ray_workers_started} Ray worker processes started"
        )
        if args.breakdown and index == 0:
            log_breakdown(before, after)
            for command, count in Counter(census.seen.values()).most_common(5):
                log(f"    started {count} x {command[:100]}")
        repeats.append(repeat)
    return repeats


def run_baseline(args: argparse.Namespace, work: Path, upstream_url: str, meters: Meters) -> list[Repeat]:
    log("baseline: ng_run without Ray")
    head_port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "NEMO_GYM_RAY_ADDRESS"}
    with NgRunProcess(CONFIGS, *stack_overrides(head_port, upstream_url), cwd=ROOT, env=env) as stack:
        return measure("baseline", stack, head_port, args, work, meters, env)


def stack_overrides(head_port: int, upstream_url: str) -> list[str]:
    return [
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream_url}",
        "+policy_api_key=scripted",
        "+policy_model_name=scripted",
    ]


def run_on_ray(args: argparse.Namespace, work: Path, upstream_url: str, meters: Meters) -> dict[int, list[Repeat]]:
    from nemo_gym.testing import LocalRayCluster  # needs the `ray` extra and the Ray launcher

    results: dict[int, list[Repeat]] = {}
    layout = [{f"bench_node_{index}": 1.0} for index in range(args.nodes)]
    log(f"starting a Ray cluster of {args.nodes} simulated nodes on 127.0.0.1")
    # --ray-env settings reach the raylets through the environment the cluster process starts with.
    saved = {key: os.environ.get(key) for key in args.ray_env}
    os.environ.update(args.ray_env)
    try:
        cluster = LocalRayCluster(layout).start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    with contextlib.closing(cluster):
        env = LocalRayCluster.environment()
        for replicas in args.replicas:
            label = f"ray-x{replicas}"
            log(f"{label}: ng_run +ray_address={cluster.address} with {replicas} code_gen replica(s)")
            head_port = free_port()
            overrides = [
                *stack_overrides(head_port, upstream_url),
                f"+ray_address={cluster.address}",
                f"++code_gen.resources_servers.code_gen.num_replicas={replicas}",
            ]
            with NgRunProcess(CONFIGS, *overrides, cwd=ROOT, env=env) as stack:
                results[replicas] = measure(label, stack, head_port, args, work, meters, env)
    return results


# ---- report ---------------------------------------------------------------------------------------


def summarize(label: str, repeats: list[Repeat]) -> dict[str, Any]:
    return {
        "configuration": label,
        "rollouts": repeats[0].rollouts if repeats else 0,
        "rollouts_per_s": statistics.median(r.rollouts / r.seconds for r in repeats),
        "cpu_ms_per_rollout": statistics.median(1000 * r.cpu_s / r.rollouts for r in repeats),
        "ray_own_ms_per_rollout": statistics.median(1000 * r.ray_system_cpu_s / r.rollouts for r in repeats),
        "upstream_ms_per_rollout": statistics.median(1000 * r.upstream_cpu_s / r.rollouts for r in repeats),
        "mean_reward": statistics.median(r.mean_reward for r in repeats),
        "ray_workers_started": statistics.median(r.ray_workers_started for r in repeats),
    }


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\ncode_gen stack, {args.rollouts} rollouts per repeat at concurrency {args.concurrency}, "
        f"median of {args.repeats} repeat(s); {psutil.cpu_count()} cores, load average "
        f"{' '.join(f'{value:.1f}' for value in os.getloadavg())}"
    )
    header = (
        "configuration",
        "rollouts/s",
        "CPU ms/rollout",
        "of it Ray's own",
        "Ray workers started",
        "upstream ms/rollout",
        "reward",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print(
            f"| {row['configuration']} | {row['rollouts_per_s']:.1f} | {row['cpu_ms_per_rollout']:.0f} | "
            f"{row['ray_own_ms_per_rollout']:.0f} | {row['ray_workers_started']:.0f} | "
            f"{row['upstream_ms_per_rollout']:.1f} | {row['mean_reward']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--replicas", default="1,2,4", help="comma-separated replica counts to run on Ray")
    parser.add_argument("--nodes", type=int, default=4, help="simulated Ray nodes (one CPU each)")
    parser.add_argument(
        "--ray-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the Ray nodes, e.g. RAY_num_workers_soft_limit=8 (repeatable; default: Ray's defaults)",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 60 rollouts")
    parser.add_argument("--breakdown", action="store_true", help="log the top processes by CPU (first repeat)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep inputs and outputs here")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return
    if args.quick:
        args.rollouts, args.repeats = 60, 1
    args.replicas = [int(value) for value in args.replicas.split(",") if value.strip()]
    args.ray_env = dict(item.split("=", 1) for item in args.ray_env)

    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ray_replicas_")))
        work.mkdir(parents=True, exist_ok=True)
        group = CpuAccountingGroup.create()
        if group is not None:
            stack.callback(group.close)
        else:
            log("cpuacct cgroup not writable: CPU from psutil (misses processes that ended unreaped)")
        upstream_url, upstream_process = stack.enter_context(upstream(group))
        meters = Meters(upstream_process, group)
        rows = []
        if not args.skip_baseline:
            rows.append(summarize("no Ray (baseline)", run_baseline(args, work, upstream_url, meters)))
        if not args.skip_ray:
            for replicas, repeats in run_on_ray(args, work, upstream_url, meters).items():
                tuned = "".join(f", {key}={value}" for key, value in args.ray_env.items())
                rows.append(summarize(f"Ray, {args.nodes} nodes, {replicas} replica(s){tuned}", repeats))
    print_table(rows, args)


if __name__ == "__main__":
    main()
