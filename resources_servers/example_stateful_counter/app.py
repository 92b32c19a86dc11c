"""example_stateful_counter: a counter per rollout, kept on the server between tool calls.

Trains using tools whose results depend on earlier calls. It is also the reference for per-rollout
state: everything is keyed by `request.session["session_id"]`, the id the agent carries in a signed
cookie from `/seed_session` through every tool call to `/verify`. Concurrent rollouts therefore
never see each other's counters, and `verify` deletes the rollout's entry so memory does not grow
with the number of rollouts served.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.servers.session import SESSION_ID_KEY


class ExampleStatefulCounterConfig(BaseResourcesServerConfig):
    max_sessions: int = Field(100_000, ge=1)
    """Most counters held at once. A rollout that dies between seed and verify never frees its entry;
    beyond this many, the oldest-seeded entries are dropped so such leaks stay bounded."""


class CounterSeedSessionRequest(BaseSeedSessionRequest):
    initial_count: int


class IncrementCounterRequest(BaseModel):
    count: int


class IncrementCounterResponse(BaseModel):
    success: bool


class GetCounterValueRequest(BaseModel):
    pass


class GetCounterValueResponse(BaseModel):
    count: int


class CounterVerifyRequest(BaseVerifyRequest):
    expected_count: int
    initial_count: int | None = None


class CounterVerifyResponse(CounterVerifyRequest, BaseVerifyResponse):
    final_count: int | None
    """The session's counter when verify ran; None when the session had no state."""


class ExampleStatefulCounterServer(SimpleResourcesServer):
    config: ExampleStatefulCounterConfig
    counters: dict[str, int] = Field(default_factory=dict)
    """session id -> counter. Handlers run on one event loop and never await between read and write,
    so no lock is needed."""

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/increment_counter")(self.increment_counter)
        app.post("/get_counter_value")(self.get_counter_value)
        return app

    async def seed_session(self, request: Request, body: CounterSeedSessionRequest) -> BaseSeedSessionResponse:
        self.counters[request.session[SESSION_ID_KEY]] = body.initial_count
        while len(self.counters) > self.config.max_sessions:
            del self.counters[next(iter(self.counters))]
        return BaseSeedSessionResponse()

    async def increment_counter(self, request: Request, body: IncrementCounterRequest) -> IncrementCounterResponse:
        session_id = request.session[SESSION_ID_KEY]
        # An unseeded session starts from 0, as in NeMo Gym.
        self.counters[session_id] = self.counters.get(session_id, 0) + body.count
        return IncrementCounterResponse(success=True)

    async def get_counter_value(self, request: Request, body: GetCounterValueRequest) -> GetCounterValueResponse:
        return GetCounterValueResponse(count=self.counters.get(request.session[SESSION_ID_KEY], 0))

    async def verify(self, request: Request, body: CounterVerifyRequest) -> CounterVerifyResponse:
        final_count = self.counters.pop(request.session[SESSION_ID_KEY], None)
        reward = 1.0 if final_count is not None and final_count == body.expected_count else 0.0
        return CounterVerifyResponse(**body.model_dump(), reward=reward, final_count=final_count)


if __name__ == "__main__":
    ExampleStatefulCounterServer.run_webserver()
