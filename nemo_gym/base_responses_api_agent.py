"""NeMo Gym's `nemo_gym.base_responses_api_agent` import path: what an agent folder subclasses.

    from nemo_gym.base_resources_server import BaseRunRequest, BaseVerifyRequest, BaseVerifyResponse
    from nemo_gym.base_responses_api_agent import BaseResponsesAPIAgentConfig, Body, SimpleResponsesAPIAgent
    from nemo_gym.config_types import ModelServerRef, ResourcesServerRef

    class MyAgentConfig(BaseResponsesAPIAgentConfig):
        resources_server: ResourcesServerRef
        model_server: ModelServerRef

    class MyAgent(SimpleResponsesAPIAgent):
        config: MyAgentConfig

        async def responses(self, request: Request, body: NeMoGymResponseCreateParamsNonStreaming = Body()):
            answer = await self.server_client.post(server_name=self.config.model_server.name,
                                                   url_path="/v1/responses", json=body)
            await raise_for_status(answer)
            return NeMoGymResponse.model_validate(await answer.json())

        async def run(self, request: Request, body: BaseRunRequest = Body()) -> BaseVerifyResponse:
            ...  # /seed_session, self-call /v1/responses, /verify

    if __name__ == "__main__":
        MyAgent.run_webserver()

A folder like this under `responses_api_agents/<name>/` is started by `ng_run` from a config
`<instance>: {responses_api_agents: {<name>: {entrypoint: app.py, ...}}}` and driven by
`ng_collect_rollouts`, as in NeMo Gym. The classes are subclasses of our own
(`nemo_gym.servers.agent`): the routes `/run`, `/v1/responses` and `/aggregate_metrics`, sessions,
request limits, error answers and the episode bounds (`max_steps`, `episode_timeout_s`, accepted
from the config) are ours. `self.server_client` has NeMo Gym's call shape
(`nemo_gym.server_utils.ServerClient`); `run` and `responses` are the agent's own.

NeMo Gym's rollout-scoped paths (`url_path_for_run`, `base_url_for_run`, ...) are there with its
behaviour when neither its evaluation observability nor its training-token capture is switched
on, which is always the case here: the path is returned unchanged, because our model servers give
token ids inline and record nothing per rollout (see nemo_gym.rollout_correlation).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Body, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from nemo_gym.config_types import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.global_config import get_first_server_config_dict, get_global_config_dict, remember_server_bootstrap
from nemo_gym.rollout_correlation import (
    TOKEN_CAPTURE_PATH_SEGMENT,
    apply_rollout_prefix,
    maybe_rollout_id_from_run_body,
    rollout_context,
    rollout_path_prefix,
)
from nemo_gym.server_utils import ServerClient
from nemo_gym.servers import agent
from nemo_gym.servers.aggregate_metrics import compute_aggregate_metrics, default_key_metrics
from nemo_gym.servers.base import ServerBootstrap, SimpleServer

__all__ = [
    "BaseResponsesAPIAgent",
    "BaseResponsesAPIAgentConfig",
    "Body",
    "SimpleResponsesAPIAgent",
]


class BaseResponsesAPIAgentConfig(agent.BaseResponsesAPIAgentConfig):
    """An agent's config: NeMo Gym's `skip_verification`, `skip_verification_reward` and
    `token_id_capture`, plus our episode bounds (`max_steps`, `episode_timeout_s`)."""


class BaseResponsesAPIAgent(SimpleServer):
    """NeMo Gym's base of every agent: a server with an agent config (no routes of its own)."""

    config: BaseResponsesAPIAgentConfig


class SimpleResponsesAPIAgent(agent.SimpleResponsesAPIAgent):
    """Subclass it and implement `responses` (one episode) and `run` (seed, episode, verify), as in
    NeMo Gym. `/aggregate_metrics` defaults to the baseline statistics plus this class's
    `compute_metrics`/`get_key_metrics` hooks; an agent that proxies it to its resources server
    overrides `aggregate_metrics` as NeMo Gym's agents do."""

    config: BaseResponsesAPIAgentConfig

    @classmethod
    def from_bootstrap(cls, bootstrap: ServerBootstrap) -> SimpleResponsesAPIAgent:
        config = cls.checked_config(bootstrap)
        remember_server_bootstrap(bootstrap.name, config.model_dump(), bootstrap.head_url, bootstrap.registry)
        return cls(config=config, server_client=ServerClient(bootstrap.head_url, registry=bootstrap.registry))

    def run_route(self) -> Callable[..., Any]:
        """`run` inside its rollout's context, so `current_rollout_id()` names the rollout (as in NeMo
        Gym); FastAPI reads the parameters (request, body model) from the agent's own `run`."""
        run = self.run

        async def run_with_rollout_context(*args: Any, **kwargs: Any) -> Any:
            body = next((value for value in kwargs.values() if isinstance(value, BaseModel)), None)
            with rollout_context(maybe_rollout_id_from_run_body(body)):
                return await run(*args, **kwargs)

        run_with_rollout_context.__signature__ = inspect.signature(run, eval_str=True)  # type: ignore[attr-defined]
        return run_with_rollout_context

    async def aggregate_metrics(self, body: AggregateMetricsRequest = Body()) -> AggregateMetrics:  # type: ignore[override]
        if self.config.skip_verification:
            return AggregateMetrics()
        return await run_in_threadpool(
            compute_aggregate_metrics, body.verify_responses, self.compute_metrics, self.get_key_metrics
        )

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """Metrics over every rollout grouped by task, merged into the agent-level metrics (none here)."""
        return {}

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        """The headline metrics: by default every `mean/...` entry."""
        return default_key_metrics(agent_metrics)

    # ---- NeMo Gym's rollout-scoped paths: unchanged here (see the module docstring) ----------------
    def rollout_id_from_run(self, body: Any) -> str | None:
        """The id downstream calls of this run are filed under: None, as no capture is switched on."""
        return None

    def url_path_for_run(self, url_path: str, body: Any) -> str:
        return f"{rollout_path_prefix(self.rollout_id_from_run(body))}{url_path}"

    def base_url_for_run(self, base_url: str, body: Any) -> str:
        return apply_rollout_prefix(base_url, self.rollout_id_from_run(body))

    def url_path_for_request(self, url_path: str, request: Request | None) -> str:
        """`url_path` under the rollout prefix the incoming request came with, if any."""
        path_params = getattr(request, "path_params", None)
        rollout_id = path_params.get("rollout_id") if isinstance(path_params, Mapping) else None
        token_capture = f"/{TOKEN_CAPTURE_PATH_SEGMENT}/" in str(getattr(getattr(request, "url", None), "path", ""))
        return f"{rollout_path_prefix(rollout_id, token_capture=token_capture)}{url_path}"

    def resolve_model_base_url(self, model_server_name: str, rollout_id: str | None = None) -> str:
        """`http://host:port/v1` of a model server (for agents that hand an OpenAI client a base URL)."""
        block = get_first_server_config_dict(get_global_config_dict(), model_server_name)
        root = f"http://{block['host']}:{block['port']}"
        return f"{apply_rollout_prefix(root, rollout_id)}/v1"
