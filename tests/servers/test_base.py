"""What every server guarantees: JSON errors, field-naming 422s, signed per-client session ids, health."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from nemo_gym.servers.base import SERVER_GC_THRESHOLDS, BaseServerConfig, SimpleServer
from nemo_gym.servers.session import KNOWN_SESSIONS, SessionIdMiddleware, SessionSigner
from nemo_gym.testing.inprocess import ThreadedServer, registry_client


class Order(BaseModel):
    city: str
    count: int


class DemoServer(SimpleServer):
    config: BaseServerConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/order")(self.order)
        app.post("/explode")(self.explode)
        app.post("/whoami")(self.whoami)
        return app

    async def order(self, body: Order) -> Order:
        return body

    async def explode(self) -> dict[str, Any]:
        raise KeyError("the missing piece")

    async def whoami(self, request: Request) -> dict[str, str]:
        return {"session_id": request.session["session_id"]}


@pytest.fixture(scope="module")
def server_url():
    server = DemoServer(config=BaseServerConfig(name="demo"), server_client=registry_client({}))
    with ThreadedServer(server.setup_webserver()) as running:
        yield running.url


def test_health(server_url):
    # The process id tells a launcher its own child from another process on the port.
    assert httpx.get(f"{server_url}/health").json() == {
        "status": "ok",
        "name": "demo",
        "kind": "server",
        "pid": os.getpid(),
    }


def test_uncaught_errors_are_a_json_500_with_type_and_message(server_url):
    response = httpx.post(f"{server_url}/explode")
    assert response.status_code == 500
    assert response.json() == {"error": {"type": "KeyError", "message": "'the missing piece'"}}


def test_validation_errors_are_a_422_naming_the_field(server_url):
    response = httpx.post(f"{server_url}/order", json={"city": "Oslo", "count": "many"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "count" in message and "/order" in message


def test_a_body_sent_in_pieces_is_read_whole(server_url):
    # Chunked transfer: the server gets several http.request messages, which the direct handler joins.
    pieces = [b'{"city": "Pa', b'ris", "cou', b'nt": 3}']
    answer = httpx.post(f"{server_url}/order", content=iter(pieces), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"city": "Paris", "count": 3}


def test_a_model_return_value_is_serialized(server_url):
    assert httpx.post(f"{server_url}/order", json={"city": "Oslo", "count": 2}).json() == {"city": "Oslo", "count": 2}


def test_each_client_gets_its_own_session_and_keeps_it(server_url):
    with httpx.Client() as first, httpx.Client() as second:
        a1 = first.post(f"{server_url}/whoami").json()["session_id"]
        a2 = first.post(f"{server_url}/whoami").json()["session_id"]
        b1 = second.post(f"{server_url}/whoami").json()["session_id"]
    assert a1 == a2 != b1


def test_a_forged_session_cookie_is_not_trusted(server_url):
    response = httpx.post(f"{server_url}/whoami", cookies={"DemoServer___demo": "chosen-id.0000"})
    assert response.json()["session_id"] != "chosen-id"


def test_signer_round_trip_and_tamper_detection():
    signer = SessionSigner(b"k" * 32)
    signed = signer.sign("abc")
    assert signer.unsign(signed) == "abc"
    assert signer.unsign(signed[:-1] + ("0" if signed[-1] != "0" else "1")) is None
    assert SessionSigner(b"x" * 32).unsign(signed) is None
    # Any length of secret signs (BLAKE2s keys stop at 32 bytes: a longer one is hashed down).
    long = SessionSigner(b"k" * 64)
    assert long.unsign(long.sign("abc")) == "abc" and long.unsign(signed) is None


def test_a_remembered_session_is_the_signed_one_and_a_forgotten_one_is_checked_again():
    sessions = SessionIdMiddleware(None, "demo", SessionSigner(b"k" * 32))  # type: ignore[arg-type]
    first = sessions.resolve([])
    header = [(b"cookie", b"demo=" + first.value.encode())]
    assert sessions.resolve(header) == first and first.set_cookie.startswith(b"demo=" + first.value.encode() + b";")
    for _ in range(KNOWN_SESSIONS):  # more new sessions than are remembered: the first is forgotten
        sessions.resolve([])
    assert sessions.resolve(header) == first  # its signature checked again
    forged = [(b"cookie", b"demo=" + first.session_id.encode() + b".0000")]
    assert sessions.resolve(forged).session_id != first.session_id
    # What another signer made is never taken from what this one remembers.
    stranger = SessionIdMiddleware(None, "demo", SessionSigner(b"x" * 32))  # type: ignore[arg-type]
    assert stranger.resolve(header).session_id != first.session_id


def test_a_json_answer_has_the_headers_starlette_would_give_it():
    from starlette.responses import Response

    from nemo_gym.servers.base import JSONBytesResponse

    class Generic(JSONBytesResponse):
        init_headers = Response.init_headers  # Starlette's own, for comparison

    for kwargs in ({}, {"status_code": 204}, {"status_code": 101}, {"status_code": 422}, {"headers": {"x-a": "1"}}):
        assert JSONBytesResponse({"a": 1}, **kwargs).raw_headers == Generic({"a": 1}, **kwargs).raw_headers, kwargs
    assert (
        JSONBytesResponse(b"x", media_type="text/plain").raw_headers
        == Generic(b"x", media_type="text/plain").raw_headers
    )


def test_a_server_process_freezes_its_start_up_heap_and_collects_less_often():
    # Run in a fresh interpreter: the settings are process-wide, as in a server process.
    script = (
        "import gc\n"
        "from nemo_gym.servers.base import SERVER_GC_THRESHOLDS, tune_server_gc\n"
        "generations = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and generations.append(info['generation']))\n"
        "tune_server_gc()\n"
        "assert gc.get_threshold() == SERVER_GC_THRESHOLDS, gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 0\n"
        "assert generations and max(generations) <= 1, generations  # never a walk of the whole heap\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
    assert SERVER_GC_THRESHOLDS[0] >= 10 * 700  # far above CPython's default young threshold
