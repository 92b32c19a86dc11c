"""Session cookies as NeMo Gym's environment tests use them: Starlette's TestClient on `httpx`, a cookie jar
that keeps nothing, and `cookies=response.cookies` threaded by hand from one call to the next (the pattern
of NeMo Gym's example_session_state_mgmt and openenv tests)."""

from unittest.mock import MagicMock

import httpx
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.server_utils import SESSION_ID_KEY, ServerClient


class AddRequest(BaseModel):
    count: int


class CounterServer(SimpleResourcesServer):
    config: BaseResourcesServerConfig
    counters: dict[str, int] = Field(default_factory=dict)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/add")(self.add)
        app.post("/value")(self.value)
        return app

    async def add(self, request: Request, body: AddRequest) -> dict:
        session_id = request.session[SESSION_ID_KEY]
        self.counters[session_id] = self.counters.get(session_id, 0) + body.count
        return {"success": True}

    async def value(self, request: Request) -> dict:
        return {"count": self.counters.get(request.session[SESSION_ID_KEY], 0)}

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        return BaseVerifyResponse(**body.model_dump(), reward=1.0)


def stateless_client() -> TestClient:
    config = BaseResourcesServerConfig(host="0.0.0.0", port=8080, entrypoint="", name="")
    client = TestClient(CounterServer(config=config, server_client=MagicMock(spec=ServerClient)).setup_webserver())

    class StatelessCookies(httpx.Cookies):
        def extract_cookies(self, response):
            pass

    client._cookies = StatelessCookies(client._cookies)
    return client


def test_the_test_client_is_the_httpx_client_nemo_gym_tests_expect() -> None:
    assert issubclass(TestClient, httpx.Client)


def test_a_session_threaded_through_response_cookies_keeps_its_state() -> None:
    client = stateless_client()
    first = client.post("/value")
    session_a = first.cookies
    assert first.json() == {"count": 0}
    assert client.post("/add", json={"count": 2}, cookies=session_a).json() == {"success": True}

    # A fresh session, then each call passes on the cookies of the answer before it. Every answer must
    # carry the session's cookie, not only the one that created it, or the chain starts over.
    response = client.post("/add", json={"count": 4})
    response = client.post("/value", cookies=response.cookies)
    assert response.json() == {"count": 4}
    response = client.post("/add", json={"count": 3}, cookies=response.cookies)
    response = client.post("/value", cookies=response.cookies)
    assert response.json() == {"count": 7}

    assert client.post("/value", cookies=session_a).json() == {"count": 2}
    # A known session's cookie comes back unchanged.
    again = client.post("/value", cookies=session_a)
    assert dict(again.cookies) == dict(session_a)
