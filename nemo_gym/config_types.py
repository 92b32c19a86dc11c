"""NeMo Gym's `nemo_gym.config_types` import path: references to other servers, the base server
config, and the `/aggregate_metrics` request and answer.

    class MyResourcesServerConfig(BaseResourcesServerConfig):
        judge_model_server: ModelServerRef

The references and `BaseServerConfig` are ours (`nemo_gym.servers`), so `ng_run` starts a
referenced server first and checks the name, as it does for our own environments.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from nemo_gym.config import Domain
from nemo_gym.servers.agent import ModelServerRef, ResourcesServerRef, ServerRef
from nemo_gym.servers.base import BaseServerConfig


class AgentServerRef(ServerRef):
    type: str = "responses_api_agents"


class AggregateMetricsRequest(BaseModel):
    """Body of `POST /aggregate_metrics`: verify responses, each with at least `_ng_task_index` and `reward`."""

    verify_responses: list[dict[str, Any]]


class AggregateMetrics(BaseModel):
    """Answer of `/aggregate_metrics`, flat string keys throughout."""

    group_level_metrics: list[dict[str, Any]] = Field(default_factory=list)
    """One dict of metrics per task."""
    agent_metrics: dict[str, Any] = Field(default_factory=dict)
    """Metrics over all rollouts (the environment's `compute_metrics` merged in)."""
    key_metrics: dict[str, Any] = Field(default_factory=dict)
    """The headline subset (the environment's `get_key_metrics`)."""


__all__ = [
    "AgentServerRef",
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseServerConfig",
    "Domain",
    "ModelServerRef",
    "ResourcesServerRef",
    "ServerRef",
]
