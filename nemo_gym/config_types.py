"""NeMo Gym's `nemo_gym.config_types` import path: references to other servers, the base server
config, and the `/aggregate_metrics` request and answer.

    class MyResourcesServerConfig(BaseResourcesServerConfig):
        judge_model_server: ModelServerRef

The references and `BaseServerConfig` are ours (`nemo_gym.servers`), so `ng_run` starts a
referenced server first and checks the name, as it does for our own environments.
"""

from __future__ import annotations

from nemo_gym.config import Domain
from nemo_gym.servers.agent import ModelServerRef, ResourcesServerRef, ServerRef
from nemo_gym.servers.aggregate_metrics import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.servers.base import BaseServerConfig


class AgentServerRef(ServerRef):
    type: str = "responses_api_agents"


ROLLOUT_PATH_PREFIX = "ng-rollout"
"""First path segment of a model call that names its rollout: `/ng-rollout/<rollout id>/v1/responses`."""
TOKEN_CAPTURE_PATH_SEGMENT = "training-token-capture"
"""Segment after the rollout id of a call whose token ids are captured for training."""


__all__ = [
    "AgentServerRef",
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseServerConfig",
    "Domain",
    "ModelServerRef",
    "ResourcesServerRef",
    "ServerRef",
    "ROLLOUT_PATH_PREFIX",
    "TOKEN_CAPTURE_PATH_SEGMENT",
]
