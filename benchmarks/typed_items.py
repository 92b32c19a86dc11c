"""What a verify request costs to parse and write back, with NeMo Gym's typed items and with our plain ones.

    python benchmarks/typed_items.py [--turns 1,8] [--batches 9] [--calls 2000]

An environment written for NeMo Gym declares `verify(self, body: BaseVerifyRequest)` from
`nemo_gym.base_resources_server`: the response's output items are typed classes (`nemo_gym.response_items`),
and its verify usually ends with NeMo Gym's idiom `VerifyResponse(**body.model_dump(), reward=...)`. Our own
environments use `nemo_gym.servers.resources`, whose items stay plain dicts. This prints, for a rollout of
`--turns` tool calls (each a function_call and its function_call_output, then an assistant message), how long
each step takes with either class, in microseconds per call: the median of `--batches` timed batches of
`--calls` calls each (one process, the classes alternated batch by batch, so load on a shared machine falls on
both alike).

  validate_json     the body parsed and validated from JSON (what the server's handler does)
  model_dump        the body as Python dicts
  idiom             `VerifyResponse(**body.model_dump(), reward=1.0)`
  to_json           the verify answer rendered as JSON (what the server sends back)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nemo_gym import base_resources_server as typed
from nemo_gym.servers import resources as plain


class TypedVerifyResponse(typed.BaseVerifyResponse):
    pass


class PlainVerifyResponse(plain.BaseVerifyResponse):
    pass


def verify_body(turns: int) -> bytes:
    """A verify request of a rollout that made `turns` tool calls before answering."""
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
    output: list[dict[str, Any]] = []
    for turn in range(turns):
        call_id = f"call_{turn:04d}"
        output.append(
            {
                "id": f"fc_{turn:04d}",
                "type": "function_call",
                "call_id": call_id,
                "name": "get_weather",
                "arguments": orjson.dumps({"city": f"City {turn}"}).decode(),
                "status": "completed",
            }
        )
        output.append(
            {
                "type": "function_call_output",
                "call_id": call_id,
                "output": orjson.dumps({"city": f"City {turn}", "weather": "cold"}).decode(),
            }
        )
    output.append(
        {
            "id": "msg_0001",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "It is cold, bring a jacket.", "annotations": []}],
        }
    )
    body = {
        "responses_create_params": {
            "input": [
                {"role": "developer", "content": "Use the get_weather tool, then answer briefly."},
                {"role": "user", "content": "What is the weather like?"},
            ],
            "tools": [tool],
        },
        "response": {
            "id": "resp_0001",
            "object": "response",
            "created_at": 1796654436,
            "model": "policy",
            "output": output,
            "status": "completed",
            "incomplete_details": None,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [tool],
            "usage": {
                "input_tokens": 200,
                "output_tokens": 40,
                "total_tokens": 240,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        },
        "expected": "cold",
    }
    return orjson.dumps(body)


def steps(request_class: Any, response_class: Any, raw: bytes) -> dict[str, Callable[[], object]]:
    body = request_class.model_validate_json(raw)
    answer = response_class(**body.model_dump(), reward=1.0)
    serializer = answer.__pydantic_serializer__
    return {
        "validate_json": lambda: request_class.model_validate_json(raw),
        "model_dump": body.model_dump,
        "idiom": lambda: response_class(**body.model_dump(), reward=1.0),
        "to_json": lambda: serializer.to_json(answer),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", default="1,8", help="comma-separated tool calls per rollout")
    parser.add_argument("--batches", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    print("Verify request, typed (NeMo Gym's classes) and plain (ours); us per call, median of batches")
    print(f"{'turns':>5} {'bytes':>6} {'step':<14} {'typed':>8} {'plain':>8} {'typed/plain':>12}")
    for turns in [int(part) for part in args.turns.split(",")]:
        raw = verify_body(turns)
        kinds = {
            "typed": steps(typed.BaseVerifyRequest, TypedVerifyResponse, raw),
            "plain": steps(plain.BaseVerifyRequest, PlainVerifyResponse, raw),
        }
        for step in kinds["typed"]:
            timings: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(args.batches):
                for kind, functions in kinds.items():
                    function = functions[step]
                    started = time.perf_counter()
                    for _ in range(args.calls):
                        function()
                    timings[kind].append((time.perf_counter() - started) / args.calls * 1e6)
            typed_us, plain_us = (statistics.median(timings[kind]) for kind in ("typed", "plain"))
            print(
                f"{turns:>5} {len(raw):>6} {step:<14} {typed_us:>8.1f} {plain_us:>8.1f} {typed_us / plain_us:>11.1f}x"
            )


if __name__ == "__main__":
    main()
