"""How long `verify` takes on a correct answer, per offline environment added in issue 11.

    python benchmarks/env_verify_latency.py [--repeats 200] [--env NAME ...]
    python benchmarks/env_verify_latency.py --confinement [--repeats 100]

`--confinement` measures what confined scoring costs (issue 16) for reasoning_gym and
math_with_judge, whose scorers parse the answer with sympy: the same correct answer scored the
way it was before confinement (reasoning_gym's scorer in a thread of the server; math-verify in an
unconfined killable process pool) and as the servers do now (a fork of a warm sandboxed
interpreter per answer), one at a time (median, p95) and N at a time (scorings per second), then
the event-loop lag a server sees while 4 hostile answers (a 10**7-digit power) are being killed.

For each environment, the first example task is paired with a hand-made correct response, then
`verify` is awaited in-process `--repeats` times (after a warm-up call); median and p95 wall
clock are printed in milliseconds. Stateful environments are seeded before each call (seeding is
not timed). Target: median under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nemo_gym.testing.inprocess import registry_client

Case = Callable[[], Awaitable[Callable[[], Awaitable[float]]]]
CASES: dict[str, Case] = {}


def first_task(env: str) -> dict[str, Any]:
    return json.loads((ROOT / "resources_servers" / env / "data" / "example.jsonl").read_text().splitlines()[0])


def case(env: str) -> Callable[[Case], Case]:
    def register(build: Case) -> Case:
        CASES[env] = build
        return build

    return register


@case("tool_call_arguments")
async def tool_call_arguments() -> Callable[[], Awaitable[float]]:
    from resources_servers.tool_call_arguments.app import (
        ToolCallArgumentsConfig,
        ToolCallArgumentsServer,
        ToolCallVerifyRequest,
    )

    task = first_task("tool_call_arguments")
    server = ToolCallArgumentsServer(
        config=ToolCallArgumentsConfig(name="b", domain="agent"), server_client=registry_client({})
    )
    call = {
        "type": "function_call",
        "call_id": "c",
        "name": task["expected_call"]["name"],
        "arguments": json.dumps(task["expected_call"]["arguments"]),
    }
    body = ToolCallVerifyRequest.model_validate(task | {"response": {"id": "r", "output": [call]}})

    async def once() -> float:
        return (await server.verify(body)).reward

    return once


@case("text_to_sql")
async def text_to_sql() -> Callable[[], Awaitable[float]]:
    from resources_servers.text_to_sql.app import TextToSQLConfig, TextToSQLServer, TextToSQLVerifyRequest

    task = first_task("text_to_sql")
    server = TextToSQLServer(config=TextToSQLConfig(name="b", domain="coding"), server_client=registry_client({}))
    text = f"```sql\n{task['gold_sql']}\n```"
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    body = TextToSQLVerifyRequest.model_validate(task | {"response": {"id": "r", "output": [message]}})

    async def once() -> float:
        return (await server.verify(body)).reward

    return once


@case("wordle")
async def wordle() -> Callable[[], Awaitable[float]]:
    """Verify of a solved game; each call gets a freshly seeded, solved session (seeding not timed)."""
    from starlette.requests import Request

    from resources_servers.wordle.app import WordleConfig, WordleServer, WordleVerifyRequest
    from resources_servers.wordle.game import Game

    task = first_task("wordle")
    server = WordleServer(config=WordleConfig(name="b", domain="games"), server_client=registry_client({}))
    body = WordleVerifyRequest.model_validate(task | {"response": {"id": "r", "output": []}})
    request = Request({"type": "http", "session": {"session_id": "bench"}})

    async def once() -> float:
        server.games["bench"] = Game(target=task["target"], max_guesses=6, guesses=["slate", task["target"]])
        return (await server.verify(request, body)).reward

    return once


@case("instruction_following")
async def instruction_following() -> Callable[[], Awaitable[float]]:
    from resources_servers.instruction_following.app import (
        InstructionFollowingConfig,
        InstructionFollowingServer,
        InstructionVerifyRequest,
    )

    task = first_task("instruction_following")
    server = InstructionFollowingServer(
        config=InstructionFollowingConfig(name="b", domain="instruction_following"), server_client=registry_client({})
    )
    text = "Have you seen a grey cat named Miso? She went missing near the park. Please call me. Thank you!"
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    body = InstructionVerifyRequest.model_validate(task | {"response": {"id": "r", "output": [message]}})

    async def once() -> float:
        return (await server.verify(body)).reward

    return once


@case("sokoban")
async def sokoban() -> Callable[[], Awaitable[float]]:
    """Verify of a solved game; each call gets a freshly solved session (solving not timed)."""
    from starlette.requests import Request

    from resources_servers.sokoban.app import Game, SokobanConfig, SokobanServer, SokobanVerifyRequest
    from resources_servers.sokoban.board import Level, solve

    task = first_task("sokoban")
    server = SokobanServer(config=SokobanConfig(name="b", domain="games"), server_client=registry_client({}))
    body = SokobanVerifyRequest.model_validate(task | {"response": {"id": "r", "output": []}})
    request = Request({"type": "http", "session": {"session_id": "bench"}})
    level = Level.parse(task["level"])
    state = level.start
    for move in solve(level) or []:
        state = level.step(state, move) or state

    async def once() -> float:
        server.games["bench"] = Game(level, state, task["max_moves"], task["shortest_solution_moves"])
        return (await server.verify(request, body)).reward

    return once


@case("long_context")
async def long_context() -> Callable[[], Awaitable[float]]:
    from resources_servers.long_context.app import LongContextConfig, LongContextServer, LongContextVerifyRequest

    task = first_task("long_context")
    server = LongContextServer(
        config=LongContextConfig(name="b", domain="long_context"), server_client=registry_client({})
    )
    text = ", ".join(task["expected_values"])
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    body = LongContextVerifyRequest.model_validate(task | {"response": {"id": "r", "output": [message]}})

    async def once() -> float:
        return (await server.verify(body)).reward

    return once


@case("workplace_assistant")
async def workplace_assistant() -> Callable[[], Awaitable[float]]:
    """Verify of a finished episode: the session database already holds the goal (setup not timed)."""
    from starlette.requests import Request

    from resources_servers.workplace_assistant.app import (
        WorkplaceAssistantServer,
        WorkplaceConfig,
        WorkplaceVerifyRequest,
    )
    from resources_servers.workplace_assistant.company import call_tool, fresh_state

    task = first_task("workplace_assistant")
    server = WorkplaceAssistantServer(
        config=WorkplaceConfig(name="b", domain="agent"), server_client=registry_client({})
    )
    body = WorkplaceVerifyRequest.model_validate(task | {"response": {"id": "r", "output": []}})
    request = Request({"type": "http", "session": {"session_id": "bench"}})

    async def once() -> float:
        state = fresh_state()
        for call in task["gold_calls"]:
            call_tool(state, call["name"], call["arguments"])
        server.databases["bench"] = state
        return (await server.verify(request, body)).reward

    return once


@case("reasoning_gym")
async def reasoning_gym() -> Callable[[], Awaitable[float]]:
    from resources_servers.reasoning_gym.app import ReasoningGymConfig, ReasoningGymServer, ReasoningGymVerifyRequest

    task = first_task("reasoning_gym")
    server = ReasoningGymServer(config=ReasoningGymConfig(name="b", domain="math"), server_client=registry_client({}))
    text = f"<answer>{task['answer']}</answer>"
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    body = ReasoningGymVerifyRequest.model_validate(task | {"response": {"id": "r", "output": [message]}})

    async def once() -> float:
        return (await server.verify(body)).reward

    return once


async def measure(env: str, repeats: int) -> tuple[float, float]:
    once = await CASES[env]()
    assert await once() == 1.0, f"{env}: the benchmark's correct answer did not score 1.0"
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        await once()
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return statistics.median(timings), timings[int(0.95 * (len(timings) - 1))]


# ---- confinement: before (unconfined) vs after (confined), per scorer -----------------------------

Score = Callable[[str], Awaitable[float]]


async def reasoning_gym_scorers(workers: int) -> tuple[Score, Score, Callable[[], Awaitable[None]], str]:
    from reasoning_gym import create_dataset

    from nemo_gym.compute import ComputeSettings, open_confined_scorer

    task = first_task("reasoning_gym")
    entry = {"question": task["question"], "answer": task["answer"], "metadata": task["metadata"]}
    score_answer = create_dataset(task["dataset_name"], size=1, seed=0, **task["dataset_config"]).score_answer
    settings = ComputeSettings(max_concurrent=workers, timeout_s=10)
    confined = open_confined_scorer(ROOT / "resources_servers/reasoning_gym/scoring.py", settings, warmup="warm_up")
    await confined.start()
    await _all_warm(confined, workers)

    async def before(answer: str) -> float:  # what the server did until issue 16: the scorer in a thread
        return float(await asyncio.wait_for(asyncio.to_thread(score_answer, answer, entry), 10))

    async def after(answer: str) -> float:
        outcome = await confined.call("score", task["dataset_name"], task["dataset_config"], answer, entry)
        return float(outcome["reward"])

    return before, after, confined.aclose, task["answer"]


async def math_with_judge_scorers(workers: int) -> tuple[Score, Score, Callable[[], Awaitable[None]], str]:
    from nemo_gym.compute import ComputeSettings, LocalExecutor, open_confined_scorer
    from resources_servers.math_with_judge import scoring

    expected = first_task("math_with_judge")["expected_answer"]
    settings = ComputeSettings(max_concurrent=workers, timeout_s=10)
    pool = LocalExecutor(settings, warmup=scoring.warm_up)  # what the server used until issue 16
    await pool.start()
    confined = open_confined_scorer(ROOT / "resources_servers/math_with_judge/scoring.py", settings, warmup="warm_up")
    await confined.start()
    await _all_warm(confined, workers)

    async def before(answer: str) -> float:
        return float((await pool.submit(scoring.grade_answer, expected, answer, 10))["reward"])

    async def after(answer: str) -> float:
        return float((await confined.call("grade_answer", expected, answer, 10))["reward"])

    async def close() -> None:
        await pool.aclose()
        await confined.aclose()

    return before, after, close, f"\\boxed{{{expected}}}"


async def _all_warm(confined: Any, workers: int) -> None:
    # Interpreters past the first warm up in the background; the figures are for a warm pool.
    while confined._idle.qsize() < workers:  # noqa: SLF001 - the benchmark waits for the pool it measures
        await asyncio.sleep(0.1)


async def confinement(env: str, repeats: int) -> None:
    build = {"reasoning_gym": reasoning_gym_scorers, "math_with_judge": math_with_judge_scorers}[env]
    workers = 2  # both servers' default
    before, after, close, right = await build(workers)
    try:
        for label, score in (("before (unconfined)", before), ("after (confined)", after)):
            assert await score(right) == 1.0, f"{env} {label}: the correct answer did not score 1.0"
            timings = []
            for _ in range(repeats):
                start = time.perf_counter()
                await score(right)
                timings.append((time.perf_counter() - start) * 1000)
            timings.sort()
            rates = []
            for concurrency in (1, 2, 4, 8):
                count = max(concurrency * 8, 16)
                start = time.perf_counter()
                gate = asyncio.Semaphore(concurrency)
                await asyncio.gather(*(_gated(gate, score, right) for _ in range(count)))
                rates.append(count / (time.perf_counter() - start))
            p95 = timings[int(0.95 * (len(timings) - 1))]
            per_c = "  ".join(f"c={c}: {rate:6.1f}/s" for c, rate in zip((1, 2, 4, 8), rates))
            print(f"{env:16} {label:20} median {statistics.median(timings):7.2f} ms  p95 {p95:7.2f} ms   {per_c}")
        lag = await _loop_lag_during(
            after, "7**(2*10**7)*7**(2*10**7)" if env == "reasoning_gym" else "\\boxed{9^{9^{9^{9}}}}"
        )
        print(
            f"{env:16} {'event-loop lag':20} median {lag[0]:7.2f} ms  max {lag[1]:7.2f} ms while 4 hostile answers are killed"
        )
    finally:
        await close()


async def _gated(gate: asyncio.Semaphore, score: Score, answer: str) -> None:
    async with gate:
        await score(answer)


async def _loop_lag_during(score: Score, hostile: str) -> tuple[float, float]:
    """How late a 10 ms timer fires while hostile answers run (what /health would wait on top)."""
    hostile_runs = asyncio.gather(*(score(hostile) for _ in range(4)), return_exceptions=True)
    lags = []
    while not hostile_runs.done():
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - start) * 1000 - 10)
    await hostile_runs
    return statistics.median(lags), max(lags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--env", action="append", choices=sorted(CASES))
    parser.add_argument("--confinement", action="store_true", help="confined vs unconfined scoring (issue 16)")
    args = parser.parse_args()
    if args.confinement:
        for env in ("reasoning_gym", "math_with_judge"):
            asyncio.run(confinement(env, min(args.repeats, 100)))
        return
    print(f"{'environment':24} {'median ms':>10} {'p95 ms':>8}")
    for env in args.env or sorted(CASES):
        median, p95 = asyncio.run(measure(env, args.repeats))
        print(f"{env:24} {median:10.3f} {p95:8.3f}")


if __name__ == "__main__":
    main()
