"""example_single_tool_call: one `get_weather` tool; every completed episode scores 1.0, and an
episode cut off (at the output-token limit, `max_steps` or a deadline) scores 0.0 with its `reason`.

The smallest environment there is: it shows the shape of a resources server (a tool route plus
`verify`) and exercises the whole rollout path end to end.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


class ExampleSingleToolCallConfig(BaseResourcesServerConfig):
    pass


class ExampleSingleToolCallVerifyResponse(BaseVerifyResponse):
    reason: str | None = None
    """Why the rollout scored 0 (the episode was cut off), None when it completed."""


class GetWeatherRequest(BaseModel):
    city: str


class GetWeatherResponse(BaseModel):
    city: str
    weather_description: str


class ExampleSingleToolCallServer(SimpleResourcesServer):
    config: ExampleSingleToolCallConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/get_weather")(self.get_weather)
        return app

    async def get_weather(self, body: GetWeatherRequest) -> GetWeatherResponse:
        return GetWeatherResponse(city=body.city, weather_description=f"The weather in {body.city} is cold.")

    async def verify(self, body: BaseVerifyRequest) -> ExampleSingleToolCallVerifyResponse:
        cut_off = body.cut_off()
        if cut_off is not None:
            reason = f"the episode was cut off ({cut_off}), it did not complete"
            return ExampleSingleToolCallVerifyResponse(**body.model_dump(), reward=0.0, reason=reason)
        return ExampleSingleToolCallVerifyResponse(**body.model_dump(), reward=1.0)


if __name__ == "__main__":
    ExampleSingleToolCallServer.run_webserver()
