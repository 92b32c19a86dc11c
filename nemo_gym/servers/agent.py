"""Agent servers: `/run` (seed, episode, verify -> a scored rollout row) and `/v1/responses` (episode only).

Every agent bounds its own episodes (`max_steps`, `episode_timeout_s`), so a rollout nobody waits
for any more cannot run on forever, and says in the row how its episode ended (`episode_end`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from nemo_gym.openai_types import ResponseCreateParams
from nemo_gym.servers.aggregate_metrics import AggregateMetrics, AggregateMetricsRequest, compute_aggregate_metrics
from nemo_gym.servers.base import BaseServerConfig, SimpleServer


class ServerRef(BaseModel):
    """`{type: <server_type>, name: <instance>}` as written in configs."""

    type: str
    name: str


class ModelServerRef(ServerRef):
    type: str = "responses_api_models"


class ResourcesServerRef(ServerRef):
    type: str = "resources_servers"


EpisodeEnd = Literal["completed", "max_steps", "max_output_tokens", "context_limit", "deadline"]
"""How an episode ended, written to the `/run` row as `episode_end` (read by the viewer, the quality
report and the training export under exactly these names):
  * "completed": the model answered without calling a tool (or stopped for a reason other than
    the output-token limit, which its `incomplete_details` then names);
  * "max_steps": cut off after `max_steps` model calls while the model was still calling tools;
  * "max_output_tokens": the last model response was incomplete because of the output-token limit;
  * "context_limit": the conversation no longer fit the model's context, so the last call generated
    nothing (its `incomplete_details.reason` is "context_limit", see nemo_gym.conversion);
  * "deadline": cut off by `episode_timeout_s`; the row holds the steps finished by then."""

EPISODE_END_FIELD = "episode_end"
DEFAULT_MAX_STEPS = 32
DEFAULT_EPISODE_TIMEOUT_S = 3600.0


class BaseResponsesAPIAgentConfig(BaseServerConfig):
    max_steps: int = Field(DEFAULT_MAX_STEPS, ge=1)
    """Most model calls per episode (default 32). There is no unlimited: `null` means the default,
    because a model that never stops calling tools would otherwise loop until the deadline."""
    episode_timeout_s: float = Field(DEFAULT_EPISODE_TIMEOUT_S, gt=0)
    """Wall-clock budget of one episode (default one hour), the agent's own bound on a rollout that
    nobody waits for any more. At the deadline the episode stops and is verified as it stands."""

    skip_verification: bool = False
    """NeMo Gym's `skip_verification`: run the episode but never call the resources server's
    `/verify`; the row is the input, the response, `reward: skip_verification_reward` and
    `verification_skipped: true`. For collecting responses that are scored later (ng_reverify)."""
    skip_verification_reward: float = 0.0
    """The reward written on every row when `skip_verification` is true (default 0.0)."""
    token_id_capture: bool = False
    """NeMo Gym's per-agent switch for capturing token ids of opaque harnesses during training,
    accepted so its configs load and ignored: agents here get token ids inline from the model
    server's answer (see nemo_gym.token_prefix)."""

    @field_validator("max_steps", mode="before")
    @classmethod
    def _null_means_default(cls, value: Any) -> Any:
        return DEFAULT_MAX_STEPS if value is None else value


class AgentRunRequest(BaseModel):
    """A task row as the collector sends it; task fields ride along untouched."""

    model_config = ConfigDict(extra="allow")

    responses_create_params: ResponseCreateParams


class SimpleResponsesAPIAgent(SimpleServer):
    config: BaseResponsesAPIAgentConfig
    server_kind: ClassVar[str] = "responses_api_agents"

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/v1/responses")(self.responses)
        app.post("/run")(self.run_route())
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        return app

    def run_route(self) -> Callable[..., Any]:
        """What `/run` calls: `run` itself here."""
        return self.run

    async def aggregate_metrics(self, request: Request, body: AggregateMetricsRequest) -> Any:
        """The metrics of a collection of this agent's rows (the collector calls this at the end, as
        NeMo Gym's does). Default: the baseline statistics with no environment hooks; an agent that
        has a resources server asks it instead, so the environment's `compute_metrics` runs. With
        `skip_verification` the rows were never scored: empty metrics, as NeMo Gym answers."""
        if self.config.skip_verification:
            return AggregateMetrics()
        return await run_in_threadpool(compute_aggregate_metrics, body.verify_responses)

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        """Run one episode and return its Response. Agents override this."""
        raise NotImplementedError(f"{type(self).__name__} does not serve /v1/responses")

    async def run(self, request: Request, body: AgentRunRequest) -> Any:
        """Seed, run an episode, verify; return the scored row. Agents override this."""
        raise NotImplementedError(f"{type(self).__name__} does not serve /run")
