"""Over HTTP too, our servers are served through their apps' lean twin (`nemo_gym.servers.lean_app`):
each path's route is looked up once, and every answer is the one FastAPI's whole chain gives."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from nemo_gym.servers.direct_calls import DirectCalls
from nemo_gym.testing.inprocess import ThreadedServer
from tests.servers.test_lean_inproc import REQUESTS, _server


class WholeApp:
    """The FastAPI app behind a plain ASGI callable, so that it is served through FastAPI's whole chain."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _answer(url: str, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
    answer = httpx.request(method, url + path, headers=headers, content=body)
    shown = sorted(
        (name, value if name != "set-cookie" else value.split("=", 1)[0])  # signed per app: compare names
        for name, value in answer.headers.items()
        if name != "date"
    )
    return answer.status_code, shown, answer.content


def test_a_served_server_answers_as_fastapis_whole_chain_does():
    server = _server(max_request_body_bytes=200)
    with (
        ThreadedServer(server.setup_webserver()) as lean,
        ThreadedServer(WholeApp(_server(max_request_body_bytes=200).setup_webserver())) as whole,
    ):
        for request in REQUESTS:
            for _ in range(2):  # the second call of a path takes its remembered route
                assert _answer(lean.url, *request) == _answer(whole.url, *request), request


def test_a_served_server_looks_each_paths_route_up_once(monkeypatch):
    matched: list[str] = []
    original = APIRoute.matches

    def counting(self: APIRoute, scope: Scope) -> Any:
        matched.append(scope["path"])
        return original(self, scope)

    monkeypatch.setattr(APIRoute, "matches", counting)
    app = _server().setup_webserver()
    with ThreadedServer(app) as running:
        answers = []
        for text in ("one", "two", "three"):
            answers.append(httpx.post(running.url + "/echo", json={"text": text}))
            if text == "one":
                first_call = len(matched)
    assert [answer.json() for answer in answers] == [{"text": "one"}, {"text": "two"}, {"text": "three"}]
    # FastAPI's router tries the routes up to /echo on every request; the lean app on the first only.
    assert first_call > 0 and len(matched) == first_call


def test_a_served_request_the_app_admits_skips_the_middleware_stack(monkeypatch):
    served: list[str] = []
    original = DirectCalls.serve

    async def recording(self: DirectCalls, target: Any, scope: Any, receive: Any) -> Any:
        served.append(scope["path"])
        return await original(self, target, scope, receive)

    monkeypatch.setattr(DirectCalls, "serve", recording)
    server = _server(max_request_body_bytes=200)
    with ThreadedServer(server.setup_webserver()) as running:
        assert httpx.post(running.url + "/echo", json={"text": "direct"}).json() == {"text": "direct"}
        assert httpx.get(running.url + "/health").status_code == 200
        assert served == ["/echo", "/health"]

        def chunks():
            yield b'{"text": '
            yield b'"chunked"}'

        chunked = httpx.post(running.url + "/echo", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.json() == {"text": "chunked"}  # no declared length: through the stack
        too_large = httpx.post(running.url + "/echo", json={"text": "x" * 300})
        assert too_large.status_code == 413
        foreign = httpx.post(running.url + "/echo", json={"text": "hi"}, headers={"host": "evil.example"})
        assert foreign.status_code == 421
        assert httpx.post(running.url + "/crash").status_code == 500  # answered by the app's error layers
        assert served == ["/echo", "/health", "/crash"]
