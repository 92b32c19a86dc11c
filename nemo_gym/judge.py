"""NeMo Gym's `nemo_gym.judge` import path: calling an LLM judge from `verify`.

    judge = await call_judge(self.server_client, server_name=self.config.judge_model_server.name,
                             url_path="/v1/responses", json=params, response_model=NeMoGymResponse)

A failed call (connection, timeout, error status, an answer `response_model` cannot parse) raises
`JudgeError`, which our servers answer as 502: the collector retries the rollout and then records it
as a failure, never as reward 0. A judge that answered but whose verdict cannot be read is a wrong
answer, for the environment's parser to score: do not raise for that.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel

from nemo_gym.client import ServerClient
from nemo_gym.errors import JudgeError
from nemo_gym.server_utils import get_response_json, raise_for_status

ResponseT = TypeVar("ResponseT", bound=BaseModel)

__all__ = ["JudgeError", "call_judge", "reraise_judge_errors"]


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
