"""Throughput, CPU per rollout, latency, startup and collector memory of the whole rollout stack.

    python benchmarks/stack_throughput.py [--quick] [--concurrency 16,256,1024,4096,16384]
                                          [--latency-ms 0] [--repeats 3] [--profile]
                                          [--mode http,colocated]

The stack is the tutorial's: `ng_run` (launcher + head server) with the example_single_tool_call
resources server, simple_agent and openai_model, the model pointed at the scripted OpenAI-compatible
upstream running as its own process. What is measured, and how, is in benchmarks/README.md; the
figures are printed as a table and written to benchmarks/results/<timestamp>.json.

CPU is psutil user+system time, taken per process before and after each run. "Stack CPU" sums the
agent, resources and model server processes and the collector (this process, which runs the
collector in-process and nothing else while a run is timed). The scripted upstream and the ng_run
process (launcher + head server) are reported on their own lines and are not in the sum.

`--mode http,colocated` (the default) also measures co-located collection (`nemo_gym.colocated`):
the agent and resources servers run inside the collector's process and are called in memory, the
model server stays the ng_run one. Each repeat goes round every level and both modes in turn
(interleaved, so the machine's load falls on all of them alike); stack CPU is then model + collector.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nemo_gym.aio import raise_open_file_limit, run_async
from nemo_gym.free_ports import free_port
from nemo_gym.rollouts.collector import CollectionPolicy, RolloutCollector
from nemo_gym.rollouts.tasks import expand_jobs, iter_tasks

CONFIGS = (
    "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml,"
    "responses_api_models/openai_model/configs/openai_model.yaml"
)
AGENT = "example_single_tool_call_simple_agent"
EXAMPLE_DATA = ROOT / "resources_servers/example_single_tool_call/data/example.jsonl"
RESULTS_DIR = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
ROLES = {"example_single_tool_call": "resources", AGENT: "agent", "policy_model": "model"}
STACK_ROLES = ("agent", "resources", "model", "collector")  # what "stack CPU" sums
SAMPLE_INTERVAL_S = 0.02

# Targets from the issue: (label, comparison) pairs are evaluated in `evaluate_targets`.
TARGET_CPU_MS_AT_256 = 4.0
TARGET_SCALING_256_VS_16 = 0.8
TARGET_SCALING_4096_VS_16 = 0.8  # 0 ms upstream: CPU-bound, so nothing may cost more per rollout at 4,096 in flight
TARGET_SCALING_4096_VS_1024 = 1.0  # with upstream latency (50 ms in the issue): more in flight never does worse
TARGET_COLLECTOR_RSS_MB = 200.0
TARGET_NG_RUN_READY_S = 3.0
TARGET_COLLECTOR_STARTUP_S = 1.5
TARGET_FIRST_ROW_S = 1.0
TARGET_INFLIGHT_RSS_MB = 150.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def command(name: str) -> list[str]:
    """The installed console script if there is one (what a user runs), else `python -m`."""
    script = BIN / name
    if script.exists():
        return [str(script)]
    module = {"ng_run": "nemo_gym.cli.run", "ng_collect_rollouts": "nemo_gym.cli.collect"}[name]
    return [sys.executable, "-m", module]


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def tcp_counters() -> dict[str, int]:
    """Machine-wide kernel TCP counters that explain connect timeouts under bursts: accept queues
    that overflowed (the SYN is dropped and retried after 1 s, 3 s, 7 s...)."""
    wanted = ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPTimeouts")
    counters: dict[str, int] = {}
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return counters
    for header, values in zip(lines[::2], lines[1::2]):
        for name, value in zip(header.split()[1:], values.split()[1:]):
            if name in wanted:
                counters[name] = int(value)
    return counters


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after}


def example_rows() -> list[dict[str, Any]]:
    return [row for _, row in iter_tasks(EXAMPLE_DATA)]


def write_input(path: Path, rows: int) -> Path:
    """`rows` lines cycling through the example tasks, written in large chunks."""
    lines = EXAMPLE_DATA.read_bytes().splitlines(keepends=True)
    lines = [line if line.endswith(b"\n") else line + b"\n" for line in lines if line.strip()]
    block = b"".join(lines)
    with path.open("wb") as handle:
        full, rest = divmod(rows, len(lines))
        chunk = block * 2000
        for _ in range(full // 2000):
            handle.write(chunk)
        handle.write(block * (full % 2000))
        handle.write(b"".join(lines[:rest]))
    return path


# ---- processes we start -------------------------------------------------------------------------


class Upstream:
    """The scripted OpenAI-compatible server, as its own process."""

    def __init__(self, latency_ms: float):
        self.port = free_port()
        self.latency_ms = latency_ms
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nemo_gym.testing.scripted_openai",
                "--port",
                str(self.port),
                "--latency-ms",
                str(latency_ms),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"scripted upstream did not start: {line!r}")
        self.process = psutil.Process(self.popen.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        stop_process_group(self.popen)


def stop_process_group(popen: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 20.0) -> None:
    if popen.poll() is not None:
        return
    try:
        os.killpg(popen.pid, sig)
        popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)
    except ProcessLookupError:
        pass


class RunningStack:
    """`ng_run` as a subprocess; `ready_s` is spawn -> the "servers are up" line."""

    def __init__(self, upstream: Upstream, log_path: Path):
        self.head_port = free_port()
        self.log_file = log_path.open("ab")
        started = time.perf_counter()
        self.popen = subprocess.Popen(
            command("ng_run")
            + [
                f"+config_paths=[{CONFIGS}]",
                f"+head_server.port={self.head_port}",
                f"+policy_base_url={upstream.url}",
                "+policy_api_key=x",
                "+policy_model_name=m",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,
            start_new_session=True,
        )
        assert self.popen.stdout is not None
        self.launcher_startup_s: float | None = None
        for line in self.popen.stdout:
            self.log_file.write(line.encode())
            if "servers are up" in line:
                self.ready_s = time.perf_counter() - started
                found = re.search(r"\(([\d.]+) s\)", line)
                self.launcher_startup_s = float(found.group(1)) if found else None
                break
        else:
            self.popen.wait()
            self.log_file.flush()
            raise RuntimeError(f"ng_run exited with {self.popen.returncode}; see {log_path}")
        # Keep draining stdout so ng_run never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        self.processes = self._find_processes()

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.log_file.write(line.encode())

    @property
    def head_url(self) -> str:
        return f"http://127.0.0.1:{self.head_port}"

    def _find_processes(self) -> dict[str, psutil.Process]:
        rows = httpx.get(f"{self.head_url}/server_instances", timeout=5, trust_env=False).json()
        processes = {ROLES[row["name"]]: psutil.Process(row["pid"]) for row in rows}
        processes["ng_run"] = psutil.Process(self.popen.pid)
        return processes

    def stop(self) -> None:
        stop_process_group(self.popen)
        self.log_file.close()


# ---- measurements ---------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds per named process (and of the whole machine) between `start()` and `stop()`."""

    def __init__(self, processes: dict[str, psutil.Process]):
        self.processes = processes

    def _snapshot(self) -> tuple[dict[str, float], float, float]:
        return (
            {name: cpu_seconds(p) for name, p in self.processes.items()},
            machine_busy_seconds(),
            time.perf_counter(),
        )

    def start(self) -> None:
        self._tcp = tcp_counters()
        self._before = self._snapshot()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        self.tcp = counter_delta(self._tcp, tcp_counters())
        used = {name: after[0][name] - self._before[0][name] for name in self.processes}
        wall = after[2] - self._before[2]
        ours = sum(used.values())
        used["other_processes_cores"] = max(0.0, (after[1] - self._before[1]) - ours) / wall
        return used


@dataclass
class RunResult:
    concurrency: int
    rollouts: int
    failures: int
    wall_s: float
    rollouts_per_s: float
    first_rollout_s: float
    p50_latency_s: float
    p99_latency_s: float
    cpu_ms_per_rollout: dict[str, float]
    stack_cpu_ms_per_rollout: float
    stack_cpu_cores: float
    other_processes_cores: float
    failure_types: dict[str, int]
    tcp: dict[str, int]


async def collect_in_process(
    head_url: str, rows: list[dict[str, Any]], concurrency: int, count: int, meter: CpuMeter | None
) -> RunResult:
    jobs = expand_jobs((index, rows[index % len(rows)]) for index in range(count))
    durations: list[float] = []
    failures: Counter[str] = Counter()
    first: float | None = None
    async with RolloutCollector.connect(head_url, AGENT, CollectionPolicy(concurrency=concurrency)) as collector:
        if meter:
            meter.start()
        started = time.perf_counter()
        async for outcome in collector.stream(jobs):
            if first is None:
                first = time.perf_counter() - started
            durations.append(outcome.duration_s)
            if outcome.failure is not None:
                failures[outcome.failure.error_type] += 1
        wall = time.perf_counter() - started
        used = meter.stop() if meter else {}
    durations.sort()
    other = used.pop("other_processes_cores", 0.0)
    per_rollout = {name: 1000 * seconds / count for name, seconds in used.items()}
    stack = sum(per_rollout.get(role, 0.0) for role in STACK_ROLES)
    return RunResult(
        concurrency=concurrency,
        rollouts=count,
        failures=sum(failures.values()),
        wall_s=wall,
        rollouts_per_s=count / wall,
        first_rollout_s=first or float("nan"),
        p50_latency_s=percentile(durations, 0.5),
        p99_latency_s=percentile(durations, 0.99),
        cpu_ms_per_rollout=per_rollout,
        stack_cpu_ms_per_rollout=stack,
        stack_cpu_cores=stack * count / 1000 / wall,
        other_processes_cores=other,
        failure_types=dict(failures),
        tcp=getattr(meter, "tcp", {}),
    )


def median_result(runs: list[RunResult]) -> dict[str, Any]:
    """Field-wise median over repeats (each figure independently), plus the raw runs."""
    summary: dict[str, Any] = {
        "concurrency": runs[0].concurrency,
        "rollouts": runs[0].rollouts,
        "repeats": len(runs),
        "failures": sum(r.failures for r in runs),
    }
    for name in (
        "wall_s",
        "rollouts_per_s",
        "first_rollout_s",
        "p50_latency_s",
        "p99_latency_s",
        "stack_cpu_ms_per_rollout",
        "stack_cpu_cores",
        "other_processes_cores",
    ):
        summary[name] = median([getattr(r, name) for r in runs])
    summary["rollouts_per_s_min_max"] = [min(r.rollouts_per_s for r in runs), max(r.rollouts_per_s for r in runs)]
    summary["stack_cpu_ms_min_max"] = [
        min(r.stack_cpu_ms_per_rollout for r in runs),
        max(r.stack_cpu_ms_per_rollout for r in runs),
    ]
    summary["cpu_ms_per_rollout"] = {
        name: median([r.cpu_ms_per_rollout[name] for r in runs]) for name in runs[0].cpu_ms_per_rollout
    }
    summary["failure_types"] = dict(sum((Counter(r.failure_types) for r in runs), Counter()))
    summary["tcp"] = {name: sum(r.tcp.get(name, 0) for r in runs) for name in runs[0].tcp}
    summary["runs"] = [asdict(r) for r in runs]
    return summary


@dataclass
class WatchedRun:
    returncode: int
    wall_s: float
    peak_rss_mb: float
    first_row_s: float | None
    cpu_s: float
    stdout: str = ""
    stderr: str = ""
    rollout_peak_rss_mb: float | None = None
    """The peak while `output` held fewer lines than expected: while rollouts ran, before the end-of-run
    work (metrics, the environment's aggregate metrics) that reads every row."""
    servers_rollout_peak_rss_mb: float | None = None
    """The same for the summed RSS of the `servers` processes (HTTP mode's agent and resources servers hold
    what a co-located collector holds itself): the two modes' memory compared like for like."""


def run_watched(
    argv: list[str],
    output: Path | None = None,
    expected_rows: int | None = None,
    servers: Sequence[psutil.Process] = (),
) -> WatchedRun:
    """Run a command, sampling the RSS of it and its children every 20 ms; note when `output` first
    holds a complete line, and (with `expected_rows`) the peak while it holds fewer lines than that, of
    the command and of the `servers` processes together."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        popen = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err)
        process = psutil.Process(popen.pid)
        peak = 0
        rollout_peak: int | None = None if expected_rows is None else 0
        servers_peak = 0
        lines, read_to = 0, 0  # newlines counted so far in `output`, read incrementally
        first_row: float | None = None
        cpu = 0.0
        while popen.poll() is None:
            try:
                tree = [process] + process.children(recursive=True)
                rss = sum(_rss(member) for member in tree)
                peak = max(peak, rss)
                if rollout_peak is not None and output is not None:
                    with contextlib.suppress(OSError):  # the CLI has not created the output yet
                        with output.open("rb") as handle:
                            handle.seek(read_to)
                            fresh = handle.read()
                        lines, read_to = lines + fresh.count(b"\n"), read_to + len(fresh)
                    if lines < (expected_rows or 0):
                        rollout_peak = max(rollout_peak, rss)
                        servers_peak = max(servers_peak, sum(_rss(server) for server in servers))
                cpu = cpu_seconds(process)
            except psutil.Error:
                pass
            if output is not None and first_row is None:
                try:
                    if output.stat().st_size > 0 and b"\n" in output.read_bytes()[: 1 << 20]:
                        first_row = time.perf_counter() - started
                except OSError:
                    pass
            time.sleep(SAMPLE_INTERVAL_S)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return WatchedRun(
            popen.returncode,
            wall,
            peak / 2**20,
            first_row,
            cpu,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            None if rollout_peak is None else rollout_peak / 2**20,
            servers_peak / 2**20 if servers and rollout_peak is not None else None,
        )


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0  # gone: it holds nothing


def collect_cli(head_port: int, input_path: Path, output_path: Path, *extra: str) -> list[str]:
    return command("ng_collect_rollouts") + [
        f"+agent_name={AGENT}",
        f"+input_jsonl_fpath={input_path}",
        f"+output_jsonl_fpath={output_path}",
        f"+head_server.port={head_port}",
        *extra,
    ]


def rss_peaks(run: dict[str, Any]) -> str:
    """`142 MB while rollouts ran (230 MB over the whole run)`, or the whole run's peak alone."""
    whole = f"{run['collector_peak_rss_mb']:.0f} MB"
    during = run.get("collector_rollout_peak_rss_mb")
    return whole if during is None else f"{during:.0f} MB while rollouts ran ({whole} over the whole run)"


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


# ---- the benchmark sections -----------------------------------------------------------------------


def measure_startup(upstream: Upstream, starts: int, work: Path) -> tuple[RunningStack, dict[str, Any]]:
    """Start ng_run `starts` times; keep the last stack running for the other sections."""
    ready, launcher = [], []
    stack: RunningStack | None = None
    for attempt in range(starts):
        if stack is not None:
            stack.stop()
        stack = RunningStack(upstream, work / "ng_run.log")
        ready.append(stack.ready_s)
        launcher.append(stack.launcher_startup_s)
        log(
            f"  ng_run start {attempt + 1}/{starts}: ready in {stack.ready_s:.2f} s "
            f"(launcher's own count: {stack.launcher_startup_s} s)"
        )
    assert stack is not None
    return stack, {"ready_s": median(ready), "launcher_reported_s": median(launcher), "starts": ready}


def measure_sweep(
    stack: RunningStack, upstream: Upstream, levels: list[int], repeats: int, rollouts_for: Any
) -> list[dict[str, Any]]:
    rows = example_rows()
    processes = {role: stack.processes[role] for role in ("agent", "resources", "model", "ng_run")}
    processes["collector"] = psutil.Process()
    processes["upstream"] = upstream.process
    meter = CpuMeter(processes)
    log("  warm-up: 200 rollouts at concurrency 16")
    run_async(collect_in_process(stack.head_url, rows, 16, 200, None))
    results = []
    for level in levels:
        count = rollouts_for(level)
        runs = []
        for repeat in range(repeats):
            result = run_async(collect_in_process(stack.head_url, rows, level, count, meter))
            log(
                f"  concurrency {level:>6}  run {repeat + 1}/{repeats}: {result.rollouts_per_s:8.1f} rollouts/s, "
                f"stack CPU {result.stack_cpu_ms_per_rollout:.2f} ms/rollout, failures {result.failures}, "
                f"other load {result.other_processes_cores:.2f} cores"
                + (f", failure types {result.failure_types}, kernel TCP {result.tcp}" if result.failures else "")
            )
            runs.append(result)
        results.append(median_result(runs))
    return results


def measure_collector_startup(stack: RunningStack, repeats: int, work: Path) -> dict[str, Any]:
    """Wall time of a 1-rollout CLI run, minus the median latency of one rollout run in-process."""
    single = [run_async(collect_in_process(stack.head_url, example_rows(), 1, 1, None)).wall_s for _ in range(10)]
    walls, imports = [], []
    for attempt in range(repeats):
        output = work / f"startup_{attempt}.jsonl"
        run = run_watched(collect_cli(stack.head_port, EXAMPLE_DATA, output, "+limit=1"))
        if run.returncode != 0:
            raise RuntimeError(f"ng_collect_rollouts +limit=1 failed:\n{run.stderr[-2000:]}")
        walls.append(run.wall_s)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import nemo_gym.cli.collect"], cwd=ROOT, check=True)
        imports.append(time.perf_counter() - started)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - started
    wall = median(walls)
    rollout = median(single)
    return {
        "cli_wall_s": wall,
        "single_rollout_s": rollout,
        "fixed_startup_s": wall - rollout,
        "python_and_imports_s": median(imports),
        "bare_python_s": bare,
        "cli_walls": walls,
    }


def measure_collector_rss(stack: RunningStack, work: Path, big_rows: int) -> dict[str, Any]:
    results = {}
    for label, rows in (("big", big_rows), ("small", 10)):
        input_path = write_input(work / f"rss_input_{rows}.jsonl", rows)
        output = work / f"rss_output_{rows}.jsonl"
        run = run_watched(collect_cli(stack.head_port, input_path, output, "+limit=2000"))
        if run.returncode != 0:
            raise RuntimeError(f"ng_collect_rollouts on {rows} rows failed:\n{run.stderr[-2000:]}")
        results[label] = {
            "input_rows": rows,
            "rollouts": count_lines(output),
            "peak_rss_mb": run.peak_rss_mb,
            "wall_s": run.wall_s,
            "cpu_s": run.cpu_s,
        }
        input_path.unlink()
        log(f"  {rows:>9,}-row input, +limit=2000: peak RSS {run.peak_rss_mb:.1f} MB, {run.wall_s:.1f} s")
    return results


def measure_inflight(concurrency: int, latency_ms: float, rollouts: int, work: Path) -> dict[str, Any]:
    """A fresh upstream and stack; the CLI with `concurrency` rollouts in flight; watch the first row."""
    upstream = Upstream(latency_ms)
    stack = RunningStack(upstream, work / "ng_run_inflight.log")
    try:
        input_path = write_input(work / "inflight_input.jsonl", rollouts)
        output = work / "inflight_output.jsonl"
        processes = {role: stack.processes[role] for role in ("agent", "resources", "model", "ng_run")}
        processes["upstream"] = upstream.process
        meter = CpuMeter(processes)
        meter.start()
        run = run_watched(
            collect_cli(stack.head_port, input_path, output, f"+num_samples_in_parallel={concurrency}"),
            output=output,
            expected_rows=rollouts,
            servers=[stack.processes["agent"], stack.processes["resources"]],
        )
        used = meter.stop()
        rows = count_lines(output)
        failures = count_lines(output.with_name(output.stem + "_failures.jsonl"))
        errors = Counter(
            json.loads(line).get("error_type")
            for line in (output.with_name(output.stem + "_failures.jsonl").read_text().splitlines() if failures else [])
        )
        used["collector"] = run.cpu_s
        return {
            "concurrency": concurrency,
            "latency_ms": latency_ms,
            "rollouts": rollouts,
            "rows_written": rows,
            "failures": failures,
            "failure_types": dict(errors),
            "returncode": run.returncode,
            "all_succeeded": run.returncode == 0 and rows == rollouts and failures == 0,
            "first_row_s": run.first_row_s,
            "wall_s": run.wall_s,
            "rollouts_per_s": rows / run.wall_s,
            "collector_peak_rss_mb": run.peak_rss_mb,
            "collector_rollout_peak_rss_mb": run.rollout_peak_rss_mb,
            "agent_and_resources_rollout_peak_rss_mb": run.servers_rollout_peak_rss_mb,
            "cpu_ms_per_rollout": {
                name: 1000 * seconds / max(rows, 1) for name, seconds in used.items() if name != "other_processes_cores"
            },
            "other_processes_cores": used["other_processes_cores"],
            "tcp": meter.tcp,
            "stderr_tail": run.stderr[-1500:] if run.returncode != 0 else "",
        }
    finally:
        stack.stop()
        upstream.stop()


# ---- co-located mode --------------------------------------------------------------------------------

MODES = ("http", "colocated")


def stack_argv(upstream: Upstream) -> list[str]:
    """The parameters every stack here is built from (ng_run's, and the co-located collector's)."""
    return [
        f"+config_paths=[{CONFIGS}]",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=x",
        "+policy_model_name=m",
    ]


def colocated_stack(stack: RunningStack, upstream: Upstream) -> Any:
    """A `ColocatedStack` of the benchmark's agent and resources servers, using the running ng_run's model
    server (whose own agent and resources processes then stay idle). Start it inside the loop it serves."""
    from nemo_gym.colocated import ColocatedStack
    from nemo_gym.config import load_global_config

    config = load_global_config(stack_argv(upstream) + [f"+head_server.port={stack.head_port}"], cwd=ROOT)
    return ColocatedStack(config, stack.head_url)


async def collect_colocated_in_process(
    colocated: Any, rows: list[dict[str, Any]], concurrency: int, count: int, meter: CpuMeter | None
) -> RunResult:
    """`collect_in_process` through a started co-located stack (kept across runs, as ng_run's servers are)."""
    from nemo_gym.colocated import collection_gc

    collector = colocated.collector(AGENT, CollectionPolicy(concurrency=concurrency))
    with collection_gc(concurrency):  # as `ng_collect_rollouts +colocate=true` runs its collection
        return await _timed_stream(collector, rows, concurrency, count, meter)


async def _timed_stream(
    collector: RolloutCollector, rows: list[dict[str, Any]], concurrency: int, count: int, meter: CpuMeter | None
) -> RunResult:
    jobs = expand_jobs((index, rows[index % len(rows)]) for index in range(count))
    durations: list[float] = []
    failures: Counter[str] = Counter()
    first: float | None = None
    async with collector:
        if meter:
            meter.start()
        started = time.perf_counter()
        async for outcome in collector.stream(jobs):
            if first is None:
                first = time.perf_counter() - started
            durations.append(outcome.duration_s)
            if outcome.failure is not None:
                failures[outcome.failure.error_type] += 1
        wall = time.perf_counter() - started
        used = meter.stop() if meter else {}
    durations.sort()
    other = used.pop("other_processes_cores", 0.0)
    per_rollout = {name: 1000 * seconds / count for name, seconds in used.items()}
    stack_cpu = sum(per_rollout.get(role, 0.0) for role in STACK_ROLES)
    return RunResult(
        concurrency=concurrency,
        rollouts=count,
        failures=sum(failures.values()),
        wall_s=wall,
        rollouts_per_s=count / wall,
        first_rollout_s=first or float("nan"),
        p50_latency_s=percentile(durations, 0.5),
        p99_latency_s=percentile(durations, 0.99),
        cpu_ms_per_rollout=per_rollout,
        stack_cpu_ms_per_rollout=stack_cpu,
        stack_cpu_cores=stack_cpu * count / 1000 / wall,
        other_processes_cores=other,
        failure_types=dict(failures),
        tcp=getattr(meter, "tcp", {}),
    )


def measure_sweep_modes(
    stack: RunningStack, upstream: Upstream, levels: list[int], repeats: int, rollouts_for: Any, modes: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """The sweep in each mode, repeats interleaved (each repeat: every level, http then colocated at each)."""
    rows = example_rows()
    processes = {role: stack.processes[role] for role in ("agent", "resources", "model", "ng_run")}
    processes["collector"] = psutil.Process()
    processes["upstream"] = upstream.process
    meter = CpuMeter(processes)

    # One loop for the whole sweep: the co-located servers (and their pool to the model server) live
    # across runs, as ng_run's server processes do.
    runner = asyncio.Runner(loop_factory=_loop_factory())
    colocated = colocated_stack(stack, upstream) if "colocated" in modes else None
    if colocated is not None:
        runner.run(colocated.start())

    def run(mode: str, level: int, count: int, meter: CpuMeter | None) -> RunResult:
        if mode == "http":
            return runner.run(collect_in_process(stack.head_url, rows, level, count, meter))
        return runner.run(collect_colocated_in_process(colocated, rows, level, count, meter))

    try:
        return _sweep_interleaved(run, levels, repeats, rollouts_for, modes, meter)
    finally:
        if colocated is not None:
            runner.run(colocated.stop())
        runner.close()


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _sweep_interleaved(
    run: Any, levels: list[int], repeats: int, rollouts_for: Any, modes: list[str], meter: CpuMeter
) -> dict[str, list[dict[str, Any]]]:
    for mode in modes:
        log(f"  warm-up ({mode}): 200 rollouts at concurrency 16")
        run(mode, 16, 200, None)
    # Each repeat goes round every level and mode in turn, so a change in the machine's load falls on
    # all of them alike: ratios between levels (4,096 vs 1,024) compare runs made at about the same time.
    runs: dict[tuple[str, int], list[RunResult]] = {(mode, level): [] for mode in modes for level in levels}
    for repeat in range(repeats):
        for level in levels:
            count = rollouts_for(level)
            for mode in modes:
                result = run(mode, level, count, meter)
                log(
                    f"  {mode:>9} concurrency {level:>6}  run {repeat + 1}/{repeats}: {result.rollouts_per_s:8.1f} "
                    f"rollouts/s, stack CPU {result.stack_cpu_ms_per_rollout:.2f} ms/rollout, failures "
                    f"{result.failures}, other load {result.other_processes_cores:.2f} cores"
                    + (f", failure types {result.failure_types}" if result.failures else "")
                )
                runs[mode, level].append(result)
    return {mode: [median_result(runs[mode, level]) for level in levels] for mode in modes}


def colocated_stack_roles(row: dict[str, Any]) -> dict[str, Any]:
    """A co-located sweep row: the idle ng_run agent/resources processes are not part of its stack."""
    cpu = row["cpu_ms_per_rollout"]
    stack_cpu = cpu["model"] + cpu["collector"]
    scale = stack_cpu / row["stack_cpu_ms_per_rollout"] if row["stack_cpu_ms_per_rollout"] else 1.0
    return row | {"stack_cpu_ms_per_rollout": stack_cpu, "stack_cpu_cores": row["stack_cpu_cores"] * scale}


def measure_inflight_colocated(concurrency: int, latency_ms: float, rollouts: int, work: Path) -> dict[str, Any]:
    """`measure_inflight` with `+colocate=true`: the CLI runs the agent and resources servers itself and
    uses the model server of a running ng_run (whose own agent and resources stay idle)."""
    upstream = Upstream(latency_ms)
    stack = RunningStack(upstream, work / "ng_run_inflight_colocated.log")
    try:
        input_path = write_input(work / "inflight_input.jsonl", rollouts)
        output = work / "inflight_output_colocated.jsonl"
        meter = CpuMeter({"model": stack.processes["model"], "upstream": upstream.process})
        meter.start()
        argv = collect_cli(
            stack.head_port,
            input_path,
            output,
            f"+num_samples_in_parallel={concurrency}",
            "+colocate=true",
            *stack_argv(upstream),
        )
        run = run_watched(argv, output=output, expected_rows=rollouts)
        used = meter.stop()
        rows = count_lines(output)
        failures = count_lines(output.with_name(output.stem + "_failures.jsonl"))
        used["collector"] = run.cpu_s
        return {
            "concurrency": concurrency,
            "latency_ms": latency_ms,
            "rollouts": rollouts,
            "rows_written": rows,
            "failures": failures,
            "returncode": run.returncode,
            "all_succeeded": run.returncode == 0 and rows == rollouts and failures == 0,
            "first_row_s": run.first_row_s,
            "wall_s": run.wall_s,
            "rollouts_per_s": rows / run.wall_s,
            "collector_peak_rss_mb": run.peak_rss_mb,
            "collector_rollout_peak_rss_mb": run.rollout_peak_rss_mb,
            "cpu_ms_per_rollout": {
                name: 1000 * seconds / max(rows, 1) for name, seconds in used.items() if name != "other_processes_cores"
            },
            "stderr_tail": run.stderr[-1500:] if run.returncode != 0 else "",
        }
    finally:
        stack.stop()
        upstream.stop()


TARGET_COLOCATED_CPU_RATIO = 0.6


def paired_cpu_ratio(http_row: dict[str, Any], colocated_row: dict[str, Any]) -> float | None:
    """The median, over repeats, of co-located stack CPU / HTTP stack CPU of the two runs made back to back.
    This machine's speed drifts by 10-30% between runs of a few seconds (the same level and mode, nothing
    else running); a ratio of medians mixes runs made at different speeds, a pair shares its moment."""
    ratios = [
        (colocated["cpu_ms_per_rollout"]["model"] + colocated["cpu_ms_per_rollout"]["collector"])
        / http["stack_cpu_ms_per_rollout"]
        for http, colocated in zip(http_row["runs"], colocated_row["runs"])
        if http["stack_cpu_ms_per_rollout"]
    ]
    return median(ratios) if ratios else None


def format_modes(figures: dict[str, Any]) -> list[str]:
    """HTTP and co-located side by side: rollouts/s and stack CPU per level, then the 16k in-flight run."""
    http = {row["concurrency"]: row for row in figures.get("sweep", [])}
    colocated = {row["concurrency"]: row for row in figures.get("sweep_colocated", [])}
    if not colocated:
        return format_inflight(figures, [""]) if figures.get("inflight_colocated") else []
    lines = [
        "",
        "HTTP vs co-located (medians of interleaved repeats; stack CPU in ms per rollout; paired = median of",
        "each repeat's co-located / HTTP CPU, the two runs made back to back):",
    ]
    header = (
        f"{'conc':>6} | {'http r/s':>9} {'coloc r/s':>9} {'ratio':>6} | {'http CPU':>8} {'coloc CPU':>9} {'ratio':>6} "
        f"{'paired':>6}"
    )
    lines += [header, "-" * len(header)]
    for level in sorted(colocated):
        h, c = http.get(level), colocated[level]
        if h is None:
            continue
        cpu_h, cpu_c = h["stack_cpu_ms_per_rollout"], c["stack_cpu_ms_per_rollout"]
        paired = paired_cpu_ratio(h, c)
        lines.append(
            f"{level:>6} | {h['rollouts_per_s']:>9.1f} {c['rollouts_per_s']:>9.1f} "
            f"{c['rollouts_per_s'] / h['rollouts_per_s']:>5.2f}x | {cpu_h:>8.2f} {cpu_c:>9.2f} {cpu_c / cpu_h:>5.2f}x "
            + (f"{paired:>5.2f}x" if paired is not None else f"{'-':>6}")
        )
    lines.append("co-located stack = model server + collector (which runs the agent and resources servers).")
    return format_inflight(figures, lines)


def format_inflight(figures: dict[str, Any], lines: list[str]) -> list[str]:
    """`lines`, then one line per mode's 16k in-flight run."""
    for label, key in (("http", "inflight"), ("co-located", "inflight_colocated")):
        run = figures.get(key)
        if run:
            first = "never" if run["first_row_s"] is None else f"{run['first_row_s']:.1f} s"
            lines.append(
                f"{label:>10}: {run['concurrency']:,} in flight at {run['latency_ms']:.0f} ms: "
                f"{run['rows_written']:,}/{run['rollouts']:,} rows, first row {first}, "
                f"{run['rollouts_per_s']:.0f} rollouts/s, collector peak RSS {rss_peaks(run)}"
                + (
                    f"; agent + resources servers {servers:.0f} MB while rollouts ran"
                    if (servers := run.get("agent_and_resources_rollout_peak_rss_mb")) is not None
                    else " (the agent and resources servers included)"
                )
            )
    return lines


def colocated_target(figures: dict[str, Any]) -> dict[str, Any]:
    http = {row["concurrency"]: row for row in figures.get("sweep", [])}
    colocated = {row["concurrency"]: row for row in figures.get("sweep_colocated", [])}
    level = 256 if 256 in colocated and 256 in http else max(set(colocated) & set(http), default=None)
    ratio = paired_cpu_ratio(http[level], colocated[level]) if level is not None else None
    return {
        "target": f"co-located stack CPU per rollout vs HTTP at concurrency {level or 256} (paired runs)",
        "goal": f"<= {TARGET_COLOCATED_CPU_RATIO}x",
        "measured": None if ratio is None else f"{ratio:.2f}x",
        "pass": None if ratio is None else ratio <= TARGET_COLOCATED_CPU_RATIO,
    }


# ---- profiling (optional) ---------------------------------------------------------------------------


def py_spy() -> str:
    """The venv's py-spy, else one on PATH (a profiler installed outside the project's venv)."""
    script = BIN / "py-spy"
    return str(script) if script.exists() else (shutil.which("py-spy") or str(script))


def profile_stack(stack: RunningStack, concurrency: int, seconds: float, work: Path, top: int) -> dict[str, Any]:
    """Sample every stack process with py-spy while the collector runs at `concurrency`; return the
    top functions by own (self) samples and by inclusive samples, per process."""
    targets = {role: stack.processes[role].pid for role in ("agent", "resources", "model")}
    targets["collector"] = os.getpid()
    spies = {}
    for role, pid in targets.items():
        path = work / f"profile_{role}.txt"
        spies[role] = (
            path,
            subprocess.Popen(
                [
                    py_spy(),
                    "record",
                    "-p",
                    str(pid),
                    "-d",
                    str(int(seconds)),
                    "-r",
                    "200",
                    "--format",
                    "raw",
                    "-o",
                    str(path),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            ),
        )
    time.sleep(0.5)
    deadline = time.perf_counter() + seconds + 2
    rows = example_rows()
    while time.perf_counter() < deadline:
        run_async(collect_in_process(stack.head_url, rows, concurrency, max(2000, 4 * concurrency), None))
    report = {}
    for role, (path, spy) in spies.items():
        _, err = spy.communicate(timeout=60)
        if not path.exists():
            report[role] = {"error": err.decode(errors="replace")[-500:]}
            continue
        report[role] = summarize_collapsed(path, top)
        report[role]["file"] = str(path)
    return report


def summarize_collapsed(path: Path, top: int) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [simplify_frame(frame) for frame in stack_text.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "own": [(frame, round(100 * n / total, 1)) for frame, n in own.most_common(top)] if total else [],
        "inclusive": [(frame, round(100 * n / total, 1)) for frame, n in inclusive.most_common(top * 3)]
        if total
        else [],
    }


def simplify_frame(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`; line numbers dropped so
    one function is one entry."""
    found = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not found:
        return frame
    name, path = found.groups()
    for marker in ("site-packages/", "lib/python3", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# ---- report -------------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


def evaluate_targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    by_level = {row["concurrency"]: row for row in figures.get("sweep", [])}
    latency = figures["settings"]["latency_ms"]
    targets = []

    at256 = by_level.get(256)
    cpu = at256["stack_cpu_ms_per_rollout"] if at256 and latency == 0 else None
    targets.append(
        {
            "target": "stack CPU per rollout at concurrency 256, 0 ms upstream",
            "goal": f"<= {TARGET_CPU_MS_AT_256} ms",
            "measured": None if cpu is None else f"{cpu:.2f} ms",
            "pass": None if cpu is None else cpu <= TARGET_CPU_MS_AT_256,
        }
    )

    at16 = by_level.get(16)
    ratio = at256["rollouts_per_s"] / at16["rollouts_per_s"] if at16 and at256 else None
    targets.append(
        {
            "target": "rollouts/s at 256 vs at 16",
            "goal": f">= {TARGET_SCALING_256_VS_16:.0%}",
            "measured": None if ratio is None else f"{ratio:.0%}",
            "pass": None if ratio is None else ratio >= TARGET_SCALING_256_VS_16,
        }
    )

    at1024, at4096 = by_level.get(1024), by_level.get(4096)
    if latency == 0:
        ratio = at4096["rollouts_per_s"] / at16["rollouts_per_s"] if at16 and at4096 else None
        goal, label = TARGET_SCALING_4096_VS_16, "rollouts/s at 4096 vs at 16, 0 ms upstream"
    else:
        ratio = at4096["rollouts_per_s"] / at1024["rollouts_per_s"] if at1024 and at4096 else None
        goal, label = TARGET_SCALING_4096_VS_1024, f"rollouts/s at 4096 vs at 1024, {latency:g} ms upstream"
    targets.append(
        {
            "target": label,
            "goal": f">= {goal:.0%}",
            "measured": None if ratio is None else f"{ratio:.0%}",
            "pass": None if ratio is None else ratio >= goal,
        }
    )

    rss = figures.get("collector_rss", {}).get("big")
    targets.append(
        {
            "target": f"collector peak RSS, {rss['input_rows']:,}-row input, +limit=2000"
            if rss
            else "collector peak RSS, 1M-row input",
            "goal": f"< {TARGET_COLLECTOR_RSS_MB:.0f} MB",
            "measured": None if rss is None else f"{rss['peak_rss_mb']:.1f} MB",
            "pass": None if rss is None else rss["peak_rss_mb"] < TARGET_COLLECTOR_RSS_MB,
        }
    )

    startup = figures.get("ng_run_startup")
    targets.append(
        {
            "target": "ng_run ready (spawn -> 'servers are up')",
            "goal": f"< {TARGET_NG_RUN_READY_S} s",
            "measured": None if startup is None else f"{startup['ready_s']:.2f} s",
            "pass": None if startup is None else startup["ready_s"] < TARGET_NG_RUN_READY_S,
        }
    )

    fixed = figures.get("collector_startup")
    targets.append(
        {
            "target": "collector fixed startup (1-rollout CLI wall - 1 rollout)",
            "goal": f"< {TARGET_COLLECTOR_STARTUP_S} s",
            "measured": None
            if fixed is None
            else f"{fixed['fixed_startup_s']:.2f} s (wall {fixed['cli_wall_s']:.2f} s)",
            "pass": None if fixed is None else fixed["fixed_startup_s"] < TARGET_COLLECTOR_STARTUP_S,
        }
    )

    inflight = figures.get("inflight")
    first = inflight["first_row_s"] if inflight else None
    targets.append(
        {
            "target": f"{inflight['concurrency']:,} in flight at {inflight['latency_ms']:.0f} ms: all succeed, "
            "first row"
            if inflight
            else "16,384 in flight at 200 ms: all succeed, first row",
            "goal": f"all, < {TARGET_FIRST_ROW_S:.0f} s",
            "measured": None
            if inflight is None
            else f"{inflight['rows_written']:,}/{inflight['rollouts']:,} ok, first row "
            + ("never" if first is None else f"{first:.1f} s"),
            "pass": None
            if inflight is None
            else bool(inflight["all_succeeded"] and first is not None and first < TARGET_FIRST_ROW_S),
        }
    )
    # While rollouts are in flight, as the target says; the whole run's peak (end-of-run metrics included)
    # is printed beside it.
    peak = inflight.get("collector_rollout_peak_rss_mb") if inflight else None
    targets.append(
        {
            "target": f"collector peak RSS with {inflight['concurrency']:,} in flight"
            if inflight
            else "collector peak RSS with 16,384 in flight",
            "goal": f"< {TARGET_INFLIGHT_RSS_MB:.0f} MB",
            "measured": None if peak is None else f"{peak:.0f} MB",
            "pass": None if peak is None else peak < TARGET_INFLIGHT_RSS_MB,
        }
    )
    return targets


def format_report(figures: dict[str, Any]) -> str:
    lines = []
    settings = figures["settings"]
    lines.append(
        f"Stack throughput ({settings['started']}; {psutil.cpu_count()} cores; upstream latency "
        f"{settings['latency_ms']} ms; medians of {settings['repeats']} runs; load average before "
        f"{settings['load_average_before']})"
    )
    if figures.get("sweep"):
        lines.append("")
        lines.append("Rollouts through the collector (in-process), per concurrency level. CPU in ms per rollout.")
        header = (
            f"{'conc':>6} {'rollouts':>8} {'fail':>4} {'roll/s':>8} {'(min-max)':>13} {'first':>7} {'p50':>7} "
            f"{'p99':>7} | {'stack':>6} {'agent':>6} {'resrc':>6} {'model':>6} {'collct':>6} | "
            f"{'upstrm':>6} {'ng_run':>6} | {'cores':>5} {'other':>5}"
        )
        lines.append(header)
        lines.append("-" * len(header))
        for row in figures["sweep"]:
            cpu = row["cpu_ms_per_rollout"]
            low, high = row["rollouts_per_s_min_max"]
            lines.append(
                f"{row['concurrency']:>6} {row['rollouts']:>8} {row['failures']:>4} {row['rollouts_per_s']:>8.1f} "
                f"{f'{low:.0f}-{high:.0f}':>13} {row['first_rollout_s']:>6.2f}s {row['p50_latency_s']:>6.3f}s "
                f"{row['p99_latency_s']:>6.3f}s | {row['stack_cpu_ms_per_rollout']:>6.2f} {cpu['agent']:>6.2f} "
                f"{cpu['resources']:>6.2f} {cpu['model']:>6.2f} {cpu['collector']:>6.2f} | {cpu['upstream']:>6.2f} "
                f"{cpu['ng_run']:>6.2f} | {row['stack_cpu_cores']:>5.2f} {row['other_processes_cores']:>5.2f}"
            )
        for row in figures["sweep"]:
            if row["failures"]:
                lines.append(
                    f"  concurrency {row['concurrency']}: failures {row['failure_types']}; kernel TCP counters "
                    f"over its runs {row['tcp']}"
                )
        lines.append("stack = agent + resources + model + collector. upstream (scripted model) and ng_run (launcher +")
        lines.append("head server) are not in it. cores = stack CPU / wall; other = CPU used by processes outside")
        lines.append("this benchmark during the run (other engineers' jobs): the noise on this shared machine.")
    startup = figures.get("ng_run_startup")
    if startup:
        lines.append("")
        lines.append(
            f"ng_run ready: {startup['ready_s']:.2f} s median (starts: "
            f"{', '.join(f'{s:.2f}' for s in startup['starts'])} s; launcher's own count "
            f"{startup['launcher_reported_s']} s)"
        )
    fixed = figures.get("collector_startup")
    if fixed:
        lines.append(
            f"collector startup: 1-rollout CLI wall {fixed['cli_wall_s']:.2f} s - one rollout "
            f"{1000 * fixed['single_rollout_s']:.1f} ms = {fixed['fixed_startup_s']:.2f} s fixed "
            f"(python + imports alone {fixed['python_and_imports_s']:.2f} s; bare python {fixed['bare_python_s']:.2f} s)"
        )
    rss = figures.get("collector_rss")
    if rss:
        lines.append(
            "collector peak RSS (CLI, +limit=2000, 256 in flight, sampled every 20 ms incl. children): "
            + "; ".join(
                f"{v['input_rows']:,}-row input {v['peak_rss_mb']:.1f} MB ({v['wall_s']:.1f} s)" for v in rss.values()
            )
        )
    inflight = figures.get("inflight")
    if inflight:
        cpu = inflight["cpu_ms_per_rollout"]
        lines.append(
            f"{inflight['concurrency']:,} in flight, {inflight['latency_ms']:.0f} ms upstream, CLI: "
            f"{inflight['rows_written']:,}/{inflight['rollouts']:,} rows, {inflight['failures']} failures "
            f"{inflight['failure_types'] or ''}, exit {inflight['returncode']}, first row "
            + ("never" if inflight["first_row_s"] is None else f"{inflight['first_row_s']:.1f} s")
            + f", {inflight['rollouts_per_s']:.0f} rollouts/s, collector peak RSS {rss_peaks(inflight)}, "
            f"CPU ms/rollout "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            + f"; kernel TCP counters during the run: {inflight['tcp']}"
        )
    lines.extend(format_modes(figures))
    lines.append("")
    lines.append("Targets:")
    for target in figures["targets"]:
        lines.append(
            f"  [{verdict(target['pass'])}] {target['target']}: {target['measured'] or 'not measured'} "
            f"(goal {target['goal']})"
        )
    profile = figures.get("profile")
    if profile:
        lines.append("")
        lines.append(
            f"py-spy profile at concurrency {figures['settings']['profile_concurrency']} "
            f"(% of samples; own = time in the function itself):"
        )
        for role, summary in profile.items():
            if "error" in summary:
                lines.append(f"  {role}: py-spy failed: {summary['error']}")
                continue
            lines.append(f"  {role} ({summary['samples']} samples):")
            for frame, share in summary["own"]:
                lines.append(f"    {share:5.1f}%  {frame}")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer rollouts (max(concurrency, 500) per level), 1 repeat, 1 ng_run start, "
        "16,384 rollouts for the in-flight check",
    )
    parser.add_argument("--concurrency", default="16,256,1024,4096,16384", help="comma-separated levels")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="scripted upstream latency for the sweep")
    parser.add_argument("--repeats", type=int, default=None, help="runs per level (default 3, 1 with --quick)")
    parser.add_argument(
        "--rollouts", type=int, default=None, help="rollouts per level (default max(4 x concurrency, 2000))"
    )
    parser.add_argument("--rss-rows", type=int, default=1_000_000, help="input rows for the peak RSS check")
    parser.add_argument("--inflight-concurrency", type=int, default=16384)
    parser.add_argument("--inflight-latency-ms", type=float, default=200.0)
    parser.add_argument(
        "--skip", default="", help="comma-separated sections to skip: startup,sweep,collector-startup,rss,inflight"
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="keep inputs, outputs, ng_run logs and profiles here (default: a temp dir, deleted)",
    )
    parser.add_argument(
        "--mode",
        default="http,colocated",
        help="comma-separated: http (servers over loopback HTTP), colocated (agent and resources in the "
        "collector's process); both = side by side, repeats interleaved",
    )
    parser.add_argument("--profile", action="store_true", help="also sample every stack process with py-spy")
    parser.add_argument("--profile-concurrency", type=int, default=256)
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    levels = [int(level) for level in args.concurrency.split(",") if level.strip()]
    repeats = args.repeats or (1 if args.quick else 3)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    modes = [mode.strip() for mode in args.mode.split(",") if mode.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        sys.exit(f"error: --mode takes a comma-separated list of {', '.join(MODES)}, got {args.mode!r}")

    def rollouts_for(level: int) -> int:
        if args.rollouts:
            return args.rollouts
        return max(level, 500) if args.quick else max(4 * level, 2000)

    fd_limit = raise_open_file_limit()
    started = datetime.now()
    figures: dict[str, Any] = {
        "settings": {
            "started": started.isoformat(timespec="seconds"),
            "quick": args.quick,
            "levels": levels,
            "latency_ms": args.latency_ms,
            "repeats": repeats,
            "rollouts_per_level": {lvl: rollouts_for(lvl) for lvl in levels},
            "cores": psutil.cpu_count(),
            "open_file_limit": fd_limit,
            "python": sys.version.split()[0],
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
            "profile_concurrency": args.profile_concurrency,
            "modes": modes,
        }
    }
    with contextlib.ExitStack() as cleanup:
        if args.work_dir:
            work = Path(args.work_dir).resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ng_stack_bench_")))
        log(f"Working in {work}; open file limit {fd_limit}")
        # The in-flight check starts its own upstream and stack: with every other section skipped
        # (`--skip startup,sweep,collector-startup,rss`) none is started for nothing.
        if args.profile or not {"startup", "sweep", "collector-startup", "rss"} <= skip:
            upstream = Upstream(args.latency_ms)
            stack: RunningStack | None = None
            try:
                log("ng_run startup:")
                stack, startup = measure_startup(upstream, 1 if args.quick or "startup" in skip else 3, work)
                if "startup" not in skip:
                    figures["ng_run_startup"] = startup
                if "sweep" not in skip and modes != ["http"]:
                    log(f"Concurrency sweep ({', '.join(modes)}, interleaved):")
                    by_mode = measure_sweep_modes(stack, upstream, levels, repeats, rollouts_for, modes)
                    if "http" in by_mode:
                        figures["sweep"] = by_mode["http"]
                    if "colocated" in by_mode:
                        figures["sweep_colocated"] = [colocated_stack_roles(row) for row in by_mode["colocated"]]
                elif "sweep" not in skip:
                    log("Concurrency sweep:")
                    figures["sweep"] = measure_sweep(stack, upstream, levels, repeats, rollouts_for)
                if "collector-startup" not in skip:
                    log("Collector fixed startup:")
                    figures["collector_startup"] = measure_collector_startup(stack, repeats, work)
                if "rss" not in skip:
                    log("Collector peak RSS:")
                    figures["collector_rss"] = measure_collector_rss(stack, work, args.rss_rows)
                if args.profile:
                    log(f"Profiling with py-spy at concurrency {args.profile_concurrency}:")
                    figures["profile"] = profile_stack(stack, args.profile_concurrency, args.profile_seconds, work, 12)
            finally:
                if stack is not None:
                    stack.stop()
                upstream.stop()
        if "inflight" not in skip:
            count = args.inflight_concurrency if args.quick else max(4 * args.inflight_concurrency, 2000)
            log(
                f"{args.inflight_concurrency:,} in flight at {args.inflight_latency_ms:.0f} ms ({count:,} rollouts, CLI):"
            )
            if "http" in modes:
                figures["inflight"] = measure_inflight(args.inflight_concurrency, args.inflight_latency_ms, count, work)
            if "colocated" in modes:
                log("  the same, co-located (+colocate=true):")
                figures["inflight_colocated"] = measure_inflight_colocated(
                    args.inflight_concurrency, args.inflight_latency_ms, count, work
                )
    figures["settings"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    figures["settings"]["duration_s"] = round((datetime.now() - started).total_seconds(), 1)
    figures["targets"] = evaluate_targets(figures)
    if "colocated" in modes:
        figures["targets"].append(colocated_target(figures))

    print(format_report(figures), flush=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nFigures written to {path}", flush=True)


if __name__ == "__main__":
    main()
