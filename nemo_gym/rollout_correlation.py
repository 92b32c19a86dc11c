"""NeMo Gym's `nemo_gym.rollout_correlation` import path: which rollout a request belongs to.

NeMo Gym can route a rollout's downstream calls under `/ng-rollout/<id>/...` so that what a model
server saw can be filed under the rollout that asked (its observability and training-token
capture). Environments and agents import these names; the base gymnasium server, for one, adds
`RolloutContextMiddleware` to its app:

    app.add_middleware(RolloutContextMiddleware)   # `/ng-rollout/3-0/step` is served as `/step`
    current_rollout_id()                           # "3-0" inside that request, else None

Here the id is known the same way (`_ng_rollout_id`, else `<task>-<rollout>` from the indices the
collector stamps on every row, `-a<n>` for a retried attempt), and the middleware strips the prefix
and exposes the id. Nothing here sends prefixed paths: our agents reach the model at its plain
`/v1/responses` and get token ids inline (see nemo_gym.base_responses_api_agent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

from nemo_gym.errors import InputError
from nemo_gym.global_config import (
    ATTEMPT_INDEX_KEY_NAME,
    ROLLOUT_ID_KEY_NAME,
    ROLLOUT_INDEX_KEY_NAME,
    TASK_INDEX_KEY_NAME,
)

__all__ = [
    "ROLLOUT_ID_PATTERN",
    "ROLLOUT_PATH_PREFIX",
    "TOKEN_CAPTURE_PATH_SEGMENT",
    "RolloutContextMiddleware",
    "apply_rollout_prefix",
    "current_rollout_id",
    "maybe_rollout_id_from_run_body",
    "rollout_context",
    "rollout_path_prefix",
]

ROLLOUT_PATH_PREFIX = "ng-rollout"
"""The first path segment of a rollout-scoped call: `/ng-rollout/<id>/<path>`."""

TOKEN_CAPTURE_PATH_SEGMENT = "training-token-capture"
"""The segment after the id on NeMo Gym's training-token-capture paths."""

ROLLOUT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""A rollout id is one path segment and may name a file: no slash, no leading dot."""

_CURRENT: ContextVar[str | None] = ContextVar("nemo_gym_rollout_id", default=None)


def _field(body: BaseModel | Mapping[str, Any], key: str) -> Any:
    if isinstance(body, Mapping):
        return body.get(key)
    value = getattr(body, key, None)
    if value is None and body.model_extra:
        value = body.model_extra.get(key)
    return value


def maybe_rollout_id_from_run_body(body: BaseModel | Mapping[str, Any] | None) -> str | None:
    """The id of the rollout a `/run` body is: its `_ng_rollout_id` if given, else
    `<task index>-<rollout index>`; `-a<n>` is appended for a retried attempt n > 0. None when the
    body carries no indices. A malformed explicit id is an `InputError` (never silently rewritten:
    the caller could not look the rewritten id up)."""
    if not isinstance(body, (BaseModel, Mapping)):
        return None
    explicit = _field(body, ROLLOUT_ID_KEY_NAME)
    if explicit is not None:
        if not isinstance(explicit, str) or not ROLLOUT_ID_PATTERN.match(explicit):
            raise InputError(
                f"{ROLLOUT_ID_KEY_NAME} must be letters, digits, '.', '-' or '_' starting with a letter or "
                f"digit; got {explicit!r}"
            )
        rollout_id = explicit
    else:
        task, rollout = _field(body, TASK_INDEX_KEY_NAME), _field(body, ROLLOUT_INDEX_KEY_NAME)
        if task is None or rollout is None:
            return None
        rollout_id = f"{task}-{rollout}"
    attempt = _field(body, ATTEMPT_INDEX_KEY_NAME)
    if attempt is not None and int(attempt) > 0:
        rollout_id += f"-a{int(attempt)}"
    return rollout_id


def rollout_path_prefix(rollout_id: str | None, *, token_capture: bool = False) -> str:
    """`/ng-rollout/<id>` (then `/training-token-capture` for training capture), "" without an id."""
    if not rollout_id:
        return ""
    prefix = f"/{ROLLOUT_PATH_PREFIX}/{rollout_id}"
    return f"{prefix}/{TOKEN_CAPTURE_PATH_SEGMENT}" if token_capture else prefix


def apply_rollout_prefix(base_url: str, rollout_id: str | None, *, token_capture: bool = False) -> str:
    """A server's root URL with the rollout's prefix appended (unchanged without an id)."""
    if not rollout_id:
        return base_url
    return base_url.rstrip("/") + rollout_path_prefix(rollout_id, token_capture=token_capture)


def current_rollout_id() -> str | None:
    """The rollout the running request belongs to (set by `rollout_context` or the middleware)."""
    return _CURRENT.get()


@contextmanager
def rollout_context(rollout_id: str | None) -> Iterator[None]:
    """Within the block, `current_rollout_id()` is `rollout_id`."""
    token = _CURRENT.set(rollout_id)
    try:
        yield
    finally:
        _CURRENT.reset(token)


_PREFIXED_PATH = re.compile(rf"^/{ROLLOUT_PATH_PREFIX}/(?P<rollout_id>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<rest>/.*)$")


class RolloutContextMiddleware:
    """ASGI middleware: a request for `/ng-rollout/<id>/<path>` is served as `/<path>` with
    `current_rollout_id()` set to `<id>`; any other request passes through untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = _PREFIXED_PATH.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        path = match.group("rest")
        with rollout_context(match.group("rollout_id")):
            await self.app({**scope, "path": path, "raw_path": path.encode()}, receive, send)
