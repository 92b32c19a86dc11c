"""ng_viewer on a large rollouts file: time to the first page, time to a complete index, query times
and the server's memory.

    python benchmarks/viewer_large_file.py [--rows 100000] [--keep-file PATH]

Writes a rollouts file of `--rows` rows shaped like example_single_tool_call's (a tool call, its
output, a final message, usage; rewards, turns and endings vary), starts `ng_viewer +port=0` on it
as a subprocess, and measures over HTTP what a browser would ask for. RSS is the server process's,
read with psutil; the peak is the kernel's high-water mark (VmHWM), so nothing between samples is
missed. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
CITIES = ["San Francisco", "Seattle", "Paris", "Lagos", "Lima", "Osaka", "Oslo", "Perth", "Quito", "Accra"]
ENDINGS = ["completed"] * 8 + ["max_steps", "max_output_tokens"]


def synthetic_row(task: int, rollout: int, rng: random.Random) -> dict:
    city = CITIES[task % len(CITIES)]
    calls = rng.randint(1, 3)
    output: list[dict] = []
    for call in range(calls):
        call_id = f"call_{task}_{rollout}_{call}"
        output.append(
            {
                "type": "function_call",
                "id": call_id,
                "call_id": call_id,
                "name": "get_weather",
                "arguments": orjson.dumps({"city": city}).decode(),
                "status": "completed",
            }
        )
        output.append(
            {
                "type": "function_call_output",
                "call_id": call_id,
                "output": orjson.dumps(
                    {"city": city, "weather_description": f"The weather in {city} is cold."}
                ).decode(),
            }
        )
    output.append(
        {
            "id": f"msg_{task}_{rollout}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": f"It is cold in {city}; bring a jacket.", "annotations": []}],
        }
    )
    input_tokens, output_tokens = rng.randint(200, 900), rng.randint(20, 300)
    return {
        "responses_create_params": {
            "input": [
                {"role": "developer", "content": "You are a helpful personal assistant. Use the get_weather tool."},
                {"role": "user", "content": f"What is the weather like in {city} today (question {task})?"},
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "Get the current weather for a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                        "additionalProperties": False,
                    },
                    "strict": True,
                }
            ],
        },
        "response": {
            "id": f"resp_{task}_{rollout}",
            "object": "response",
            "model": "synthetic",
            "output": output,
            "status": "completed",
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        },
        "reward": rng.choice([0.0, 0.0, 0.5, 1.0, 1.0, 1.0]),
        "episode_end": rng.choice(ENDINGS),
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        "agent_ref": {"type": "responses_api_agents", "name": "example_single_tool_call_simple_agent"},
    }


def write_file(path: Path, rows: int, repeats: int = 4, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("wb") as handle:
        for n in range(rows):
            handle.write(orjson.dumps(synthetic_row(n // repeats, n % repeats, rng)) + b"\n")


def rss_mb(process: psutil.Process) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB."""
    current = process.memory_info().rss / 1e6
    peak = current
    status = Path(f"/proc/{process.pid}/status")
    if status.exists():
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
        if match:
            peak = int(match.group(1)) / 1e3
    return current, peak


def timed_get(client: httpx.Client, url: str) -> tuple[float, dict]:
    started = time.perf_counter()
    response = client.get(url)
    response.raise_for_status()
    return time.perf_counter() - started, response.json()


def start_viewer(path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "nemo_gym.cli.viewer", f"+jsonl_fpath={path}", "+port=0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if not match:
        server.kill()
        raise SystemExit(f"ng_viewer did not start: {line}{server.stdout.read()}")
    return server, match.group(0)


def baseline_rss_mb(work: Path, env: dict[str, str]) -> float:
    """RSS of the viewer serving a 10-row file, queried once: what the process costs before any rows."""
    small = work / "small_rollouts.jsonl"
    write_file(small, 10)
    server, base = start_viewer(small, env)
    try:
        with httpx.Client(timeout=60, trust_env=False) as client:
            while not client.get(f"{base}/api/status").json()["a"]["complete"]:
                time.sleep(0.05)
            client.get(f"{base}/api/rows?sort=reward")
            client.get(f"{base}/api/metrics")
        return rss_mb(psutil.Process(server.pid))[0]
    finally:
        server.terminate()
        server.wait(timeout=10)
        small.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep-file", type=Path, default=None, help="write the generated file here and keep it")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="viewer_bench_"))
    path = args.keep_file or work / "large_rollouts.jsonl"
    started = time.perf_counter()
    write_file(path, args.rows)
    size_mb = path.stat().st_size / 1e6
    print(f"file: {path} ({args.rows:,} rows, {size_mb:.0f} MB), written in {time.perf_counter() - started:.1f} s")

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    baseline = baseline_rss_mb(work, env)
    spawned = time.perf_counter()
    server, base = start_viewer(path, env)
    try:
        listening = time.perf_counter() - spawned
        process = psutil.Process(server.pid)
        with httpx.Client(timeout=120, trust_env=False) as client:
            while True:
                data = client.get(f"{base}/api/rows?limit=50").json()
                if data["rows"]:
                    break
                time.sleep(0.01)
            first_page = time.perf_counter() - spawned
            while not client.get(f"{base}/api/status").json()["a"]["complete"]:
                time.sleep(0.05)
            indexed = time.perf_counter() - spawned
            rss_indexed, _ = rss_mb(process)
            figures = [
                ("ng_viewer listening (spawn -> URL printed)", f"{listening:.2f} s"),
                ("first page of 50 rows (spawn -> rows served)", f"{first_page:.2f} s"),
                ("index complete, metrics included (spawn ->)", f"{indexed:.2f} s"),
                ("server RSS on a 10-row file (baseline)", f"{baseline:.0f} MB"),
                ("server RSS after indexing", f"{rss_indexed:.0f} MB"),
            ]
            for label, url in [
                ("page 1000 (file order)", "/api/rows?offset=50000&limit=50"),
                ("sort by reward, descending (first time)", "/api/rows?sort=reward&desc=true&limit=50"),
                ("sort by reward, descending, page 2 (cached)", "/api/rows?sort=reward&desc=true&offset=50&limit=50"),
                ("filter reward <= 0 and ending=max_steps", "/api/rows?reward_max=0&ending=max_steps&limit=50"),
                ("text search 'Osaka' (scans the file)", "/api/rows?q=Osaka&limit=50"),
                ("one whole row", "/api/rows/99999" if args.rows >= 100_000 else "/api/rows/0"),
                ("metrics (pass@k, histogram, per task)", "/api/metrics"),
            ]:
                seconds, _ = timed_get(client, base + url)
                figures.append((label, f"{seconds * 1000:.0f} ms"))
            current, peak = rss_mb(process)
            figures += [
                ("server RSS after the queries above", f"{current:.0f} MB"),
                ("server peak RSS (VmHWM)", f"{peak:.0f} MB"),
            ]
        width = max(len(label) for label, _ in figures)
        for label, value in figures:
            print(f"  {label:<{width}}  {value}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        if args.keep_file is None:
            path.unlink(missing_ok=True)
            work.rmdir()


if __name__ == "__main__":
    main()
