"""NeMo Gym's `nemo_gym.judge` import path: calling an LLM judge from `verify`.

    judge = await call_judge(self.server_client, server_name=self.config.judge_model_server.name,
                             url_path="/v1/responses", json=params, response_model=NeMoGymResponse)

A failed call (connection, timeout, error status, an answer `response_model` cannot parse) raises
`JudgeError`, which our servers answer as 502: the collector retries the rollout and then records it
as a failure, never as reward 0. A judge that answered but whose verdict cannot be read is a wrong
answer, for the environment's parser to score: do not raise for that.

`judge_failsafe(verify)` wraps every NeMo Gym-style server's `/verify` (as NeMo Gym's base class
does). NeMo Gym turns a `JudgeError` into a row with reward 0.0 tagged
`_ng_failure_class: "judge_failed"`, which its collector moves to the failures file. Here a failed
rollout never travels as a row with a reward, because a consumer reading the row alone would train
on that 0.0: so the wrapper does the opposite conversion. A `JudgeError` stays an error (502, retried,
then a failure record naming the judge), and a row that arrives already tagged `judge_failed` (a
verify that built NeMo Gym's failsafe row itself) is turned back into a `JudgeError` carrying its
`_ng_failure_judge_error`. Either way the rollout ends in the failures file, as in NeMo Gym, and
never in the rows or the metrics.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response as StarletteResponse

from nemo_gym.client import ServerClient
from nemo_gym.errors import JudgeError
from nemo_gym.server_utils import get_response_json, raise_for_status

ResponseT = TypeVar("ResponseT", bound=BaseModel)

__all__ = ["JUDGE_FAILED", "JudgeError", "call_judge", "judge_failsafe", "reraise_judge_errors"]

JUDGE_FAILED = "judge_failed"
"""NeMo Gym's `_ng_failure_class` of a rollout whose judge call failed."""


async def reraise_judge_errors(call: Awaitable[Any]) -> Any:
    """Await a judge call written by hand; any exception it raises becomes `JudgeError` (its type
    and message kept). Wrap the call only, not the scoring around it, or scoring bugs pass for
    judge failures."""
    try:
        return await call
    except JudgeError:
        raise
    except Exception as error:
        raise JudgeError(f"{type(error).__name__}: {error}") from error


async def call_judge(
    server_client: ServerClient,
    *,
    server_name: str,
    url_path: str,
    json: Any,
    response_model: type[ResponseT],
) -> ResponseT:
    """POST `json` to the judge model server `server_name` at `url_path` (`/v1/responses` or
    `/v1/chat/completions`) and parse its answer as `response_model`; `JudgeError` on failure.
    The status is checked before parsing, so an auth error reports itself, not a parse error."""

    async def call() -> ResponseT:
        answer = await server_client.post(server_name=server_name, url_path=url_path, json=json)
        await raise_for_status(answer)
        return response_model.model_validate(await get_response_json(answer))

    return await reraise_judge_errors(call())


def _judge_failure(result: Any) -> str | None:
    """The judge error a verify answer carries as NeMo Gym's failsafe row, else None."""
    row: Any = result
    if isinstance(result, StarletteResponse):
        try:
            row = orjson.loads(bytes(result.body))
        except (orjson.JSONDecodeError, TypeError):
            return None
    elif isinstance(result, BaseModel):
        row = {**(result.__pydantic_extra__ or {}), **{k: getattr(result, k) for k in type(result).model_fields}}
    if isinstance(row, dict) and row.get("_ng_failure_class") == JUDGE_FAILED:
        return str(row.get("_ng_failure_judge_error") or "the judge call failed")
    return None


def judge_failsafe(verify: Callable[..., Any]) -> Callable[..., Any]:
    """`verify` whose judge failures end the rollout as a failure, never as reward 0 (module docstring).
    The signature is kept, so FastAPI injects the same parameters."""

    @functools.wraps(verify)
    async def failsafe(*args: Any, **kwargs: Any) -> Any:
        if inspect.iscoroutinefunction(verify):
            result = await verify(*args, **kwargs)
        else:
            result = await run_in_threadpool(verify, *args, **kwargs)
        failure = _judge_failure(result)
        if failure is not None:
            raise JudgeError(f"judge call failed during verify: {failure}")
        return result

    return failsafe
