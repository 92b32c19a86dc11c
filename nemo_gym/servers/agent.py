"""Agent servers: `/run` (seed, episode, verify -> a scored rollout row) and `/v1/responses` (episode only)."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from nemo_gym.openai_types import ResponseCreateParams
from nemo_gym.servers.base import BaseServerConfig, SimpleServer


class ServerRef(BaseModel):
    """`{type: <server_type>, name: <instance>}` as written in configs."""

    type: str
    name: str


class ModelServerRef(ServerRef):
    type: str = "responses_api_models"


class ResourcesServerRef(ServerRef):
    type: str = "resources_servers"


class BaseResponsesAPIAgentConfig(BaseServerConfig):
    pass


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
        app.post("/run")(self.run)
        return app

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        """Run one episode and return its Response. Agents override this."""
        raise NotImplementedError(f"{type(self).__name__} does not serve /v1/responses")

    async def run(self, request: Request, body: AgentRunRequest) -> Any:
        """Seed, run an episode, verify; return the scored row. Agents override this."""
        raise NotImplementedError(f"{type(self).__name__} does not serve /run")
