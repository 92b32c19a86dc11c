"""Resources servers: an environment's tools (`POST /<tool>`), `/seed_session`, `/verify` and
`/aggregate_metrics` (the metrics of a whole collection, through the `compute_metrics` and
`get_key_metrics` hooks: see `nemo_gym.servers.aggregate_metrics`)."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from nemo_gym.episodes import EPISODE_END_FIELD, episode_end
from nemo_gym.openai_types import Response, ResponseCreateParams
from nemo_gym.servers.aggregate_metrics import (
    AggregateMetrics,
    AggregateMetricsRequest,
    compute_aggregate_metrics,
    default_key_metrics,
    task_field_names,
)
from nemo_gym.servers.base import BaseServerConfig, SimpleServer


class BaseResourcesServerConfig(BaseServerConfig):
    domain: str | None = None
    offline: bool | None = None
    """True when the environment scores with no network access (no judge, web API or download at
    run time); `ng_list_environments` shows it. None = not stated."""
    expose_tools_over_mcp: bool = False
    """NeMo Gym's switch to also serve the tool routes over MCP, accepted so its configs load. There
    is no MCP endpoint here: the tools are served as `POST /<tool>` either way, and `true` changes
    nothing (the server says so once when it starts)."""


class BaseRunRequest(BaseModel):
    """A task row: the model request plus any task fields (kept, so they reach verify and the output)."""

    model_config = ConfigDict(extra="allow")

    responses_create_params: ResponseCreateParams


class BaseVerifyRequest(BaseRunRequest):
    response: Response

    def cut_off(self) -> str | None:
        """Why the episode was stopped before the model ended it (`max_steps`, `max_output_tokens`,
        `context_limit`, `deadline`), or None when it completed. An environment that rewards finishing
        checks this: an answer cut off at the token limit is no completed episode."""
        ending = episode_end(self._ending_view())
        return None if ending == "completed" else ending

    def _ending_view(self) -> dict[str, Any]:
        """The parts of the request `episode_end` reads, as plain values: dumping the whole response
        for them was the largest serialisation cost of a verify that asks (a typed response's items and
        details are models, hence `_plain`)."""
        response = self.response
        view: dict[str, Any] = {"status": response.status, "incomplete_details": _plain(response.incomplete_details)}
        if response.output:
            view["output"] = [_plain(response.output[-1])]
        ended = (response.__pydantic_extra__ or {}).get(EPISODE_END_FIELD)
        if ended is not None:
            view[EPISODE_END_FIELD] = ended
        row: dict[str, Any] = {"response": view}
        if EPISODE_END_FIELD in (self.__pydantic_extra__ or {}):
            row[EPISODE_END_FIELD] = self.__pydantic_extra__[EPISODE_END_FIELD]  # type: ignore[index]
        return row


class BaseVerifyResponse(BaseVerifyRequest):
    """The rollout row: request, response, reward and any extras the environment adds."""

    reward: float


def _plain(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


class BaseSeedSessionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")


class BaseSeedSessionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")


# Paths a tool may not take: the agent must never dispatch a model's tool call to them.
RESERVED_RESOURCES_PATHS = frozenset(
    {"seed_session", "verify", "health", "aggregate_metrics", "docs", "openapi.json", "redoc"}
)


class SimpleResourcesServer(SimpleServer):
    """Subclass it, add tool routes in `setup_webserver`, and implement `verify`.

    Override `compute_metrics(tasks)` and `get_key_metrics(agent_metrics)` to add an environment's
    own figures to `/aggregate_metrics` (the collector writes them to `<stem>_aggregate_metrics.json`).
    """

    config: BaseResourcesServerConfig
    server_kind: ClassVar[str] = "resources_servers"

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        if self.config.expose_tools_over_mcp:
            print(
                f"note: {self.config.name}: expose_tools_over_mcp is ignored here (no MCP endpoint); "
                f"the tools are served as POST /<tool>",
                file=sys.stderr,
                flush=True,
            )
        app.post("/seed_session")(self.seed_session)
        app.post("/verify")(verify_endpoint(self.verify_route()))
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        return app

    def verify_route(self) -> Callable[..., Any]:
        """What `/verify` calls (before stored-row handling): `verify` itself here."""
        return self.verify

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> AggregateMetrics:
        key_metrics: Callable[[dict[str, Any]], dict[str, Any]] = self.get_key_metrics
        outcomes = declared_outputs(self.verify_route())
        if type(self).get_key_metrics is SimpleResourcesServer.get_key_metrics and outcomes is not None:
            # The default headline is the mean of each outcome: a task field (`expected_answer: 1538`,
            # `max_guesses: 6`) is numeric too, but its mean says nothing about the policy.
            task_fields = task_field_names(body.verify_responses, outcomes)
            key_metrics = functools.partial(default_key_metrics, leave_out=task_fields)
        # Plain arithmetic over the rows, but a collection can hold 100k of them: off the event loop.
        return await run_in_threadpool(
            compute_aggregate_metrics, body.verify_responses, self.compute_metrics, key_metrics
        )

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """Metrics over every rollout, grouped by task (`tasks[i]` = the rollouts of task i), merged into
        the agent-level metrics; a `per_task_metrics` list (dicts with `_ng_task_index`) goes to the
        per-task groups. None by default."""
        return {}

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        """The headline metrics: by default every `mean/...` entry."""
        return default_key_metrics(agent_metrics)

    async def seed_session(self, body: BaseSeedSessionRequest) -> BaseSeedSessionResponse:
        return BaseSeedSessionResponse()

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        raise NotImplementedError(f"{type(self).__name__} must implement verify()")


def _verify_body(signature: inspect.Signature) -> inspect.Parameter | None:
    """The one pydantic-model parameter of `verify` (its body), or None when there is not exactly one."""
    bodies = [
        p
        for p in signature.parameters.values()
        if inspect.isclass(p.annotation) and issubclass(p.annotation, BaseModel)
    ]
    return bodies[0] if len(bodies) == 1 else None


def declared_outputs(verify: Callable[..., Any]) -> frozenset[str] | None:
    """The fields `verify` adds to the task: `reward` and those its response model declares beyond its
    request model (`solved`, `guesses_used`, ...); task fields the request declares are not among them.
    None when the signature does not say (no single body model)."""
    signature = inspect.signature(verify, eval_str=True)
    body = _verify_body(signature)
    if body is None:
        return None
    returned = signature.return_annotation
    outputs = {"reward"}
    if inspect.isclass(returned) and issubclass(returned, BaseModel):
        outputs |= set(returned.model_fields)
    return frozenset(outputs - set(body.annotation.model_fields))


def verify_endpoint(verify: Callable[..., Any]) -> Callable[..., Any]:
    """`verify` as the `/verify` route, taking a stored rollout row as well as a task row.

    A stored row already holds the fields the last verify added (`reward`, `extracted_answer`, ...),
    and the body keeps unknown keys, so `VerifyResponse(**body.model_dump(), reward=...)` got the
    same keyword twice (HTTP 500). The fields the response model declares beyond the request model
    are outputs: they are dropped from the body's extras before `verify` runs, so a stored row
    scores as its task plus response would. Task fields the request model declares are kept.
    """
    signature = inspect.signature(verify, eval_str=True)
    body = _verify_body(signature)
    if body is None:
        return verify
    body_name = body.name
    outputs = set(declared_outputs(verify) or ())

    def drop_outputs(kwargs: dict[str, Any]) -> None:
        extra = getattr(kwargs.get(body_name), "__pydantic_extra__", None)
        if extra:
            for name in outputs.intersection(extra):
                del extra[name]

    if inspect.iscoroutinefunction(verify):

        @functools.wraps(verify)
        async def endpoint(*args: Any, **kwargs: Any) -> Any:
            drop_outputs(kwargs)
            return await verify(*args, **kwargs)
    else:

        @functools.wraps(verify)
        async def endpoint(*args: Any, **kwargs: Any) -> Any:
            drop_outputs(kwargs)
            return await run_in_threadpool(verify, *args, **kwargs)

    endpoint.__signature__ = signature  # type: ignore[attr-defined]
    return endpoint
