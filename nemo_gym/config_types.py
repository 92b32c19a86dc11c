"""NeMo Gym's `nemo_gym.config_types` import path: references to other servers, the base server
config, and the `/aggregate_metrics` request and answer.

    class MyResourcesServerConfig(BaseResourcesServerConfig):
        judge_model_server: ModelServerRef

The references and `BaseServerConfig` are ours (`nemo_gym.servers`), so `ng_run` starts a
referenced server first and checks the name, as it does for our own environments.
"""

from __future__ import annotations

from nemo_gym.config import Domain
from nemo_gym.rollout_correlation import ROLLOUT_PATH_PREFIX, TOKEN_CAPTURE_PATH_SEGMENT
from nemo_gym.servers.agent import ModelServerRef, ResourcesServerRef, ServerRef
from nemo_gym.servers.aggregate_metrics import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.servers.base import BaseServerConfig


class AgentServerRef(ServerRef):
    type: str = "responses_api_agents"


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
