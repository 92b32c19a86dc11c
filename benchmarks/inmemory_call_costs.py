"""What one in-memory call costs under load, layer by layer (co-located collection).

    python benchmarks/inmemory_call_costs.py [--concurrency 256] [--rollouts 4000] [--repeats 2] [--paths direct,asgi]

A co-located collection runs as `stack_throughput.py` runs it: `ng_run` starts the benchmark's stack
(its model server in front of the scripted upstream, which answers at once), and the agent and
resources servers run in this process, called in memory. Every call the agent makes to the resources
server (`/seed_session`, `/get_weather`, `/verify`) is timed at each layer it passes, outermost
first:

    client      ServerClient.post, what the agent awaits (URL, retry policy, JSON encoding of the body)
    transport   ColocatedHttpClient._send_once and call_local (scope, deadline, answer)
    middleware  the server app's middleware stack (error answers, Host guard, body cap, session cookie);
                on the direct path (`nemo_gym.servers.direct_calls`) there is none: it is asked, not stacked
    route       the route looked up, the Request built, the Response sent back through the middleware; on
                the direct path, `DirectCalls.call`: the guard and session asked, the Response read off
    handler     the body read and validated, the answer rendered as JSON
    endpoint    the environment's own method

`--paths direct,asgi` alternates repeats between the direct path (what a co-located collection uses)
and the ASGI path through each app's middleware (what it used before), in the same process.

These calls never wait on anything (the resources server answers from memory), so each one runs
start to end without yielding to the event loop: its wall time is its CPU time. Figures are medians
over every call of a repeat (medians leave out the calls the OS preempted); a layer's own cost is
the difference between its median and the next layer's.

Why this exists: one call repeated in a tight loop (hot caches) costs ~26 us, which made the in-memory
path look cheap. Inside a collection, with a rollout's other work between its calls, the same call
costs 2-3x that, and the layers around the endpoint, not the endpoint, are most of it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import stack_throughput as bench  # noqa: E402

from nemo_gym import asgi_transport  # noqa: E402
from nemo_gym.aio import raise_open_file_limit  # noqa: E402
from nemo_gym.client import ServerClient  # noqa: E402
from nemo_gym.servers import base, direct_calls, lean_app  # noqa: E402
from nemo_gym.servers.resources import SimpleResourcesServer  # noqa: E402

ENDPOINTS = ("seed_session", "get_weather", "verify")
LAYERS = ("client", "transport", "middleware", "route", "handler", "endpoint")

samples: dict[tuple[str, str], list[float]] = defaultdict(list)
"""(endpoint, layer) -> seconds spent in that layer and every layer inside it, one entry per call."""


def _endpoint_of(path: Any) -> str | None:
    name = str(path).rsplit("/", 1)[-1]
    return name if name in ENDPOINTS else None


def _time_layer(owner: Any, attribute: str, layer: str, path_of: Callable[[tuple[Any, ...]], Any]) -> None:
    """Wrap the coroutine function `owner.attribute` so that calls to one of ENDPOINTS are timed as `layer`."""
    original = getattr(owner, attribute)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        endpoint = _endpoint_of(path_of(args))
        if endpoint is None:
            return await original(*args, **kwargs)
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            samples[(endpoint, layer)].append(time.perf_counter() - started)

    setattr(owner, attribute, timed)


def instrument() -> None:
    """Time every layer; must run before the co-located stack builds its apps (routes keep their handlers)."""
    _time_layer(ServerClient, "post", "client", lambda args: args[2])
    _time_layer(asgi_transport.ColocatedHttpClient, "_send_once", "transport", lambda args: args[2])
    _time_layer(lean_app.LeanApp, "__call__", "middleware", lambda args: args[1]["path"])
    _time_layer(lean_app._DirectRoutes, "__call__", "route", lambda args: args[1]["path"])
    _time_layer(direct_calls.DirectCalls, "call", "route", lambda args: args[2]["path"])
    import resources_servers.example_single_tool_call.app as environment

    for owner, name in (
        (SimpleResourcesServer, "seed_session"),
        (environment.ExampleSingleToolCallServer, "get_weather"),
        (environment.ExampleSingleToolCallServer, "verify"),
    ):
        _time_layer(owner, name, "endpoint", lambda args, name=name: name)

    make_handler = base._direct_handler

    def timed_direct_handler(endpoint: Callable[..., Any]) -> Any:
        handler = make_handler(endpoint)
        name = getattr(endpoint, "__name__", "")
        if handler is None or name not in ENDPOINTS:
            return handler

        async def timed_handler(request: Any) -> Any:
            started = time.perf_counter()
            try:
                return await handler(request)
            finally:
                samples[(name, "handler")].append(time.perf_counter() - started)

        return timed_handler

    base._direct_handler = timed_direct_handler


def report(rollouts_per_s: float) -> float:
    """Print one repeat's table; returns the in-memory cost per rollout outside the endpoints (us)."""
    print(f"  {rollouts_per_s:.0f} rollouts/s. Median us per call, each layer's own share (total incl. inner layers):")
    print(f"  {'call':14}" + "".join(f"{layer:>12}" for layer in LAYERS) + f"{'total':>10}")
    around = 0.0
    for endpoint in ENDPOINTS:
        medians: list[float] = []
        for layer in reversed(LAYERS):  # a layer the call did not pass (middleware, direct) adds nothing
            timed = samples[(endpoint, layer)]
            medians.insert(0, 1e6 * statistics.median(timed) if timed else medians[0])
        own = [outer - inner for outer, inner in zip(medians, medians[1:])] + [medians[-1]]
        around += medians[0] - medians[-1]
        print(f"  /{endpoint:13}" + "".join(f"{value:>12.1f}" for value in own) + f"{medians[0]:>10.1f}")
    print(f"  around the endpoints, per rollout (these three calls): {around:.0f} us")
    return around


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--rollouts", type=int, default=4000, help="rollouts per repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--paths", default="direct", help="comma-separated: direct (served without ASGI), asgi (through each app)"
    )
    args = parser.parse_args()

    raise_open_file_limit()
    instrument()
    upstream = bench.Upstream(0.0)
    work = Path(tempfile.mkdtemp(prefix="ng_inmemory_costs_"))
    stack = bench.RunningStack(upstream, work / "ng_run.log")
    runner = asyncio.Runner(loop_factory=bench._loop_factory())
    try:
        colocated = bench.colocated_stack(stack, upstream)
        runner.run(colocated.start())
        rows = bench.example_rows()
        runner.run(bench.collect_colocated_in_process(colocated, rows, args.concurrency, 1000, None))  # warm-up
        direct = {name: local.direct_calls for name, local in colocated.local.apps.items()}
        print(f"In-memory calls to the resources server, co-located collection at concurrency {args.concurrency}:")
        around: dict[str, list[float]] = defaultdict(list)
        for repeat in range(args.repeats):
            for path in args.paths.split(","):
                for name, local in colocated.local.apps.items():
                    local.direct_calls = direct[name] if path == "direct" else None
                samples.clear()
                result = runner.run(
                    bench.collect_colocated_in_process(colocated, rows, args.concurrency, args.rollouts, None)
                )
                print(f"repeat {repeat + 1}/{args.repeats}, {path} path:")
                around[path].append(report(result.rollouts_per_s))
        for path, figures in around.items():
            print(f"{path} path, around the endpoints per rollout: median {statistics.median(figures):.0f} us")
        runner.run(colocated.stop())
    finally:
        runner.close()
        stack.stop()
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
