"""NeMo Gym's `nemo_gym.base_resources_server` import path: what an environment subclasses.

    from nemo_gym.base_resources_server import (
        BaseResourcesServerConfig, BaseVerifyRequest, BaseVerifyResponse, SimpleResourcesServer,
    )

    class MyServer(SimpleResourcesServer):
        config: BaseResourcesServerConfig

        async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
            return BaseVerifyResponse(**body.model_dump(), reward=float(body.response.output_text == "42"))

These are subclasses of our own (`nemo_gym.servers.resources`), served by the same machinery:
the verify route, the session cookie, request limits and error answers are unchanged. The one
difference is in the request models: here `response` and `responses_create_params` hold typed
items (`nemo_gym.response_items`: `item.type`, `item.content[0].text`, `response.output_text`)
that serialise to exactly the JSON they were parsed from. Our own environments, which import
`nemo_gym.servers`, keep plain dict items (the cheaper path the agent loop uses).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar

from fastapi import FastAPI

from nemo_gym.config_types import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.global_config import remember_server_bootstrap
from nemo_gym.judge import judge_failsafe
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.server_utils import ServerClient
from nemo_gym.servers import resources
from nemo_gym.servers.base import ServerBootstrap
from nemo_gym.servers.resources import BaseSeedSessionRequest, BaseSeedSessionResponse

__all__ = [
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseMultiRewardVerifyResponse",
    "BaseResourcesServerConfig",
    "BaseRunRequest",
    "BaseSeedSessionRequest",
    "BaseSeedSessionResponse",
    "BaseVerifyRequest",
    "BaseVerifyResponse",
    "NeMoGymResponse",
    "ReverifyMode",
    "SimpleResourcesServer",
]


class ReverifyMode(StrEnum):
    """Whether a stored rollout can be scored again from its row alone (`ng_reverify`)."""

    STATELESS = "stateless"
    """Verify reads only the row: re-verifying a stored row gives its reward again."""
    UNSUPPORTED = "unsupported"
    """Verify needs state from the rollout itself (a session, a sandbox): it cannot be re-run."""
    UNKNOWN = "unknown"


class BaseResourcesServerConfig(resources.BaseResourcesServerConfig):
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.UNKNOWN
    """Set by an environment's config class to say whether its rows can be re-verified."""


class BaseRunRequest(resources.BaseRunRequest):
    """A task row with the model request's `input` items typed."""

    responses_create_params: NeMoGymResponseCreateParamsNonStreaming


class BaseVerifyRequest(BaseRunRequest, resources.BaseVerifyRequest):
    """A task row plus the rollout's response, with its output items typed."""

    response: NeMoGymResponse


class BaseVerifyResponse(BaseVerifyRequest, resources.BaseVerifyResponse):
    """The scored rollout row."""

    reward: float


class BaseMultiRewardVerifyResponse(BaseVerifyResponse):
    """A scored row with several objectives: `reward` is their scalar aggregate, `reward_components`
    each one by name (the same names for every task of the environment)."""

    reward_components: dict[str, float]


class SimpleResourcesServer(resources.SimpleResourcesServer):
    """Subclass it, add tool routes in `setup_webserver`, implement `verify` (as in NeMo Gym).

    `self.server_client` has NeMo Gym's call shape (`nemo_gym.server_utils.ServerClient`).
    `compute_metrics(tasks)` and `get_key_metrics(agent_metrics)` are the hooks NeMo Gym's
    `/aggregate_metrics` calls; override them to add an environment's own metrics.
    `GET /reverify_mode` answers the config's `REVERIFY_MODE` (read by `ng_reverify`), and `/verify`
    is wrapped in `judge_failsafe` (a failed judge fails the rollout: `nemo_gym.judge`).
    """

    config: BaseResourcesServerConfig
    # NeMo Gym's config classes ignore keys they do not declare, and its YAMLs carry such keys
    # (`strip_thinking_from_response`, `env`): a warning names each one, as a typo may hide there.
    unknown_config_keys = "warn"

    @classmethod
    def from_bootstrap(cls, bootstrap: ServerBootstrap) -> SimpleResourcesServer:
        config = cls.checked_config(bootstrap)
        remember_server_bootstrap(bootstrap.name, config.model_dump(), bootstrap.head_url, bootstrap.registry)
        return cls(config=config, server_client=ServerClient(bootstrap.head_url, registry=bootstrap.registry))

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.get("/reverify_mode")(self.get_reverify_mode)
        return app

    def verify_route(self) -> Callable[..., Any]:
        return judge_failsafe(self.verify)

    async def get_reverify_mode(self) -> ReverifyMode:
        return self.config.REVERIFY_MODE
