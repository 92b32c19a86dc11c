"""In-memory calls (co-located collection) go through a server app's lean twin (`LeanApp`): the app's own
middleware without what only serves a socket, and routes resolved once per path. Every answer must be
the one the whole app gives: status, headers and body, for successes and for each kind of error."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from nemo_gym.asgi_transport import ColocatedHttpClient, LocalApp, LocalApps, call_app, call_local
from nemo_gym.client import ServerClient, Timeouts
from nemo_gym.colocated import COLLECTION_GC_THRESHOLDS, collection_gc, collection_gc_thresholds
from nemo_gym.errors import InputError, RequestTimeoutError
from nemo_gym.servers.base import BaseServerConfig, JSONBytesResponse, SimpleServer
from nemo_gym.servers.lean_app import LeanApp


class Echo(BaseModel):
    text: str


class Nap(BaseModel):
    seconds: float


SESSIONS_SEEN: list[str] = []
NAPS_CANCELLED: list[float] = []


class EchoServer(SimpleServer):
    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/echo")(self.echo)
        app.post("/session")(self.session)
        app.post("/refuse")(self.refuse)
        app.post("/crash")(self.crash)
        app.post("/teapot")(self.teapot)
        app.post("/items/{item_id}")(self.item)
        app.post("/stream")(self.stream)
        app.post("/fail_in_session")(self.fail_in_session)
        app.post("/nap")(self.nap)
        app.post("/set_cookie")(self.set_cookie)
        return app

    async def echo(self, body: Echo) -> dict[str, Any]:
        return {"text": body.text}

    async def session(self, request: Request) -> dict[str, Any]:
        return {"session_id": request.session["session_id"]}

    async def refuse(self, body: Echo) -> dict[str, Any]:
        raise InputError(f"no {body.text}")

    async def crash(self) -> dict[str, Any]:
        raise RuntimeError("environment bug")

    async def teapot(self) -> dict[str, Any]:
        raise HTTPException(status_code=418, detail="short and stout")

    async def stream(self, body: Echo) -> StreamingResponse:  # a response that must be sent, not read off
        async def pieces() -> AsyncIterator[bytes]:
            yield body.text.encode()
            yield b"!"

        return StreamingResponse(pieces(), media_type="text/plain")

    async def fail_in_session(self, request: Request) -> dict[str, Any]:
        SESSIONS_SEEN.append(request.session["session_id"])
        raise InputError("refused after the session was made")

    async def nap(self, body: Nap) -> dict[str, Any]:
        try:
            await asyncio.sleep(body.seconds)
        except asyncio.CancelledError:
            NAPS_CANCELLED.append(body.seconds)
            raise
        return {"slept": body.seconds}

    async def set_cookie(self, request: Request) -> JSONBytesResponse:
        answer = JSONBytesResponse({"ok": True})
        answer.set_cookie("model_server", "replica-1")  # as an agent passes a model server's cookie on
        return answer

    async def item(self, item_id: int) -> dict[str, Any]:  # a path parameter: FastAPI's own routing serves it
        return {"item_id": item_id}


def _server(**config: Any) -> EchoServer:
    return EchoServer(config=BaseServerConfig(name="echo", **config), server_client=ServerClient("http://127.0.0.1:9"))


REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("POST", "/echo", {"content-type": "application/json"}, b'{"text": "hi"}'),
    ("POST", "/echo", {"content-type": "application/json"}, b'{"txt": 1}'),  # 422
    ("POST", "/echo", {"content-type": "application/json"}, b"not json"),  # 422
    ("POST", "/echo", {"content-type": "text/plain"}, b'{"text": "hi"}'),  # 415
    ("POST", "/echo", {"content-type": "application/json", "host": "evil.example"}, b"{}"),  # 421
    ("POST", "/echo", {"content-type": "application/json"}, b'{"text": "' + b"x" * 300 + b'"}'),  # 413
    ("GET", "/echo", {}, b""),  # 405
    ("POST", "/nowhere", {"content-type": "application/json"}, b"{}"),  # 404
    ("POST", "/refuse", {"content-type": "application/json"}, b'{"text": "way"}'),  # 400
    ("POST", "/crash", {}, b""),  # 500
    ("POST", "/teapot", {}, b""),  # 418
    ("POST", "/items/7", {}, b""),
    ("POST", "/items/seven", {}, b""),  # 422
    ("GET", "/health", {}, b""),
    ("POST", "/stream", {"content-type": "application/json"}, b'{"text": "hi"}'),
    ("POST", "/fail_in_session", {}, b""),  # 400
    ("POST", "/echo", {"content-type": "application/json", "origin": "http://evil.example"}, b"{}"),  # 403
]


async def _call(local: LocalApp, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
    raw = [(b"host", local.host_header), (b"content-length", str(len(body)).encode())]
    raw = [(k, v) for k, v in raw if k.decode() not in headers]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    status, answer_headers, answer, _ = await call_local(local, method, path, b"", raw, body)
    # The session cookie's value is signed with a per-middleware secret: compare its shape, not its value.
    shown = [
        (k, v if k != b"set-cookie" else v.split(b"=", 1)[0] + b"=~" + v.split(b";", 1)[1]) for k, v in answer_headers
    ]
    return status, shown, answer


def test_an_in_memory_call_answers_as_the_whole_app_does(capsys):
    async def scenario() -> None:
        lean = LocalApp("echo", _server(max_request_body_bytes=200).setup_webserver())
        whole = LocalApp("echo", _server(max_request_body_bytes=200).setup_webserver())
        assert isinstance(lean.handler, LeanApp)
        whole.handler = whole.app  # the app as uvicorn serves it
        whole.direct_calls = None
        assert lean.direct_calls is not None  # its direct-handler routes skip the ASGI round trip
        apps = LocalApps()
        apps.add(lean)
        await apps.start()
        for request in REQUESTS:
            for _ in range(2):  # the second call of a path takes its remembered route
                assert await _call(lean, *request) == await _call(whole, *request), request
        await apps.stop()

    asyncio.run(scenario())
    crashes = [line for line in capsys.readouterr().err.splitlines() if "environment bug" in line]
    assert len(crashes) == 4 and all(line.startswith("(echo) exception in POST /crash") for line in crashes)


def test_an_in_memory_session_keeps_its_id_across_calls():
    async def scenario() -> None:
        local = LocalApp("echo", _server().setup_webserver())
        status, headers, first, _ = await call_app(local, "POST", "/session", b"", [(b"host", local.host_header)], b"")
        cookie = dict(headers)[b"set-cookie"].split(b";")[0]
        again = [(b"host", local.host_header), (b"cookie", cookie)]
        _, _, second, _ = await call_app(local, "POST", "/session", b"", again, b"")
        _, _, fresh, _ = await call_app(local, "POST", "/session", b"", [(b"host", local.host_header)], b"")
        assert status == 200 and first == second != fresh

    asyncio.run(scenario())


def test_routes_with_a_direct_handler_skip_the_asgi_round_trip_and_refusals_go_through_the_app():
    async def scenario() -> None:
        local = LocalApp("echo", _server(max_request_body_bytes=200).setup_webserver())
        through_app: list[str] = []
        lean = local.handler

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            through_app.append(scope["path"])
            await lean(scope, receive, send)

        local.handler = counting
        for request in REQUESTS:
            await _call(local, *request)
        # Direct: /echo answered (200 and 422), /refuse, /crash, /teapot, /health, /stream and /fail_in_session.
        # Through the app: what the guard or the body cap refuses, unknown paths and methods, path parameters.
        assert through_app == [
            "/echo",  # 415
            "/echo",  # 421
            "/echo",  # 413
            "/echo",  # GET: 405
            "/nowhere",
            "/items/7",
            "/items/seven",
            "/echo",  # 403
        ]

    asyncio.run(scenario())


def test_a_session_made_by_a_call_that_failed_is_the_one_its_cookie_names():
    async def scenario() -> None:
        local = LocalApp("echo", _server().setup_webserver())
        SESSIONS_SEEN.clear()
        status, headers, _, _ = await call_local(
            local, "POST", "/fail_in_session", b"", [(b"host", local.host_header)], b""
        )
        cookie = dict(headers)[b"set-cookie"].split(b";")[0]
        again = [(b"host", local.host_header), (b"cookie", cookie)]
        _, _, answer, _ = await call_local(local, "POST", "/session", b"", again, b"")
        assert status == 400 and answer == b'{"session_id":"%s"}' % SESSIONS_SEEN[0].encode()

    asyncio.run(scenario())


def test_an_app_with_middleware_of_its_own_is_always_called_through_it():
    class Tagged:
        def __init__(self, app: Any):
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("state", {})["tagged"] = True
            await self.app(scope, receive, send)

    app = _server().setup_webserver()
    app.add_middleware(Tagged)
    assert LocalApp("echo", app).direct_calls is None
    assert LocalApp("echo", _server().setup_webserver()).direct_calls is not None


def test_an_in_memory_call_that_waits_has_its_deadline_and_one_that_does_not_ends_at_once():
    # The deadline timer is armed only when a call waits on something, counted from the call's start.
    async def scenario() -> None:
        local = LocalApp("echo", _server().setup_webserver())
        apps = LocalApps()
        apps.add(local)
        client = ColocatedHttpClient(apps, timeouts=Timeouts(total_s=0.2))
        NAPS_CANCELLED.clear()
        quick = await client.request("POST", "inproc://echo/echo", json={"text": "hi"})
        short = await client.request("POST", "inproc://echo/nap", json={"seconds": 0.01})
        assert (quick.status, quick.json(), short.json()) == (200, {"text": "hi"}, {"slept": 0.01})
        started = time.monotonic()
        with pytest.raises(
            RequestTimeoutError, match=r"POST inproc://echo/nap timed out: no complete answer for 0.2 s"
        ):
            await client.request("POST", "inproc://echo/nap", json={"seconds": 5})
        assert 0.15 < time.monotonic() - started < 2 and NAPS_CANCELLED == [5]
        # A caller that goes away (its rollout's deadline, Ctrl+C) cancels the work it waits on.
        waiting = asyncio.ensure_future(client.request("POST", "inproc://echo/nap", json={"seconds": 3}))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert NAPS_CANCELLED == [5, 3]

    asyncio.run(scenario())


def test_the_cookies_of_a_direct_answer_are_the_session_and_those_the_endpoint_set():
    async def scenario() -> None:
        local = LocalApp("echo", _server().setup_webserver())
        apps = LocalApps()
        apps.add(local)
        client = ColocatedHttpClient(apps)
        plain = await client.request("POST", "inproc://echo/session")
        both = await client.request("POST", "inproc://echo/set_cookie", cookies=plain.cookies)
        name = local.direct_calls.session.cookie_name  # type: ignore[union-attr]
        assert list(plain.cookies) == [name]
        assert both.cookies == {"model_server": "replica-1", name: plain.cookies[name]}

    asyncio.run(scenario())


def test_collection_gc_collects_less_often_and_restores_the_callers_settings():
    before = gc.get_threshold()
    with collection_gc(16):
        assert gc.get_threshold() == COLLECTION_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_the_young_generation_grows_with_the_rollouts_in_flight():
    # A young collection walks every live object allocated since the last one: with thousands of rollouts
    # in flight a fixed threshold made it walk all of them, again and again, and find nothing to free.
    young = [collection_gc_thresholds(concurrency)[0] for concurrency in (1, 40, 256, 4096, 16384)]
    assert young == [10_000, 10_000, 64_000, 1_024_000, 4_096_000]
    with collection_gc(4096):
        assert gc.get_threshold() == (1_024_000, *COLLECTION_GC_THRESHOLDS[1:])


def test_entering_collection_gc_never_walks_the_whole_heap():
    # A trainer may enter it once per step with a large heap: only the young generations are collected.
    collected: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    young_garbage = [[] for _ in range(100)]
    for item in young_garbage:
        item.append(item)  # cycles only a collection frees
    del young_garbage
    gc.callbacks.append(note)
    try:
        with collection_gc(16):
            pass
    finally:
        gc.callbacks.remove(note)
    assert collected and max(collected) <= 1


def test_a_call_in_memory_has_no_connection_to_wait_for():
    # The collector holds back rollouts beyond what its client carries to an agent at once (`request_cap`); an
    # agent called in memory (co-located) takes every rollout in flight. Capping it as over HTTP was measured:
    # at 16,384 in flight the collector held 240-242 MB instead of 346-354 MB, but ran 6-13% fewer rollouts/s.
    client = ColocatedHttpClient(LocalApps())
    assert client.request_cap("inproc://agent") is None
    assert client.request_cap("http://127.0.0.1:9") == client.limits.max_connections_per_host == 4096
