"""In-memory calls (co-located collection) go through a server app's lean twin (`LeanApp`): the app's own
middleware without what only serves a socket, and routes resolved once per path. Every answer must be
the one the whole app gives: status, headers and body, for successes and for each kind of error."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from nemo_gym.asgi_transport import LocalApp, LocalApps, call_app
from nemo_gym.client import ServerClient
from nemo_gym.colocated import COLLECTION_GC_THRESHOLDS, collection_gc, collection_gc_thresholds
from nemo_gym.errors import InputError
from nemo_gym.servers.base import BaseServerConfig, SimpleServer
from nemo_gym.servers.lean_app import LeanApp


class Echo(BaseModel):
    text: str


class EchoServer(SimpleServer):
    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/echo")(self.echo)
        app.post("/session")(self.session)
        app.post("/refuse")(self.refuse)
        app.post("/crash")(self.crash)
        app.post("/teapot")(self.teapot)
        app.post("/items/{item_id}")(self.item)
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
]


async def _call(local: LocalApp, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
    raw = [(b"host", local.host_header), (b"content-length", str(len(body)).encode())]
    raw = [(k, v) for k, v in raw if k.decode() not in headers]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    status, answer_headers, answer = await call_app(local, method, path, b"", raw, body)
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
        status, headers, first = await call_app(local, "POST", "/session", b"", [(b"host", local.host_header)], b"")
        cookie = dict(headers)[b"set-cookie"].split(b";")[0]
        again = [(b"host", local.host_header), (b"cookie", cookie)]
        _, _, second = await call_app(local, "POST", "/session", b"", again, b"")
        _, _, fresh = await call_app(local, "POST", "/session", b"", [(b"host", local.host_header)], b"")
        assert status == 200 and first == second != fresh

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
    from nemo_gym.asgi_transport import ColocatedHttpClient

    client = ColocatedHttpClient(LocalApps())
    assert client.request_cap("inproc://agent") is None
    assert client.request_cap("http://127.0.0.1:9") == client.limits.max_connections_per_host == 4096
