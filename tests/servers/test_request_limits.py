"""Bounded requests on a real uvicorn server with ng_run's protocol settings: the body cap (413),
the head and body deadlines (408), the head size cap (431), and keep-alive left alone."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from nemo_gym.client import HttpClient
from nemo_gym.servers.base import BaseServerConfig, SimpleServer, excerpt
from nemo_gym.testing.inprocess import ThreadedServer, registry_client

LIMIT = 1_000_000


class Order(BaseModel):
    city: str
    count: int


class OrderServer(SimpleServer):
    config: BaseServerConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/order")(self.order)
        return app

    async def order(self, body: Order) -> Order:
        return body


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    config = BaseServerConfig(
        name="orders", max_request_body_bytes=LIMIT, request_head_timeout_s=0.5, request_body_timeout_s=0.5
    )
    with ThreadedServer.of(OrderServer(config=config, server_client=registry_client({}))) as running:
        yield running


def raw(server: ThreadedServer, data: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_defaults_are_64_mib_and_deadlines_of_10_and_60_seconds():
    config = BaseServerConfig()
    assert config.max_request_body_bytes == 64 * 1024 * 1024
    assert (config.request_head_timeout_s, config.request_body_timeout_s) == (10, 60)


def test_our_client_reads_the_413_for_a_body_over_the_cap(server):
    async def post() -> tuple[int, str]:
        client = HttpClient()
        try:
            result = await client.request("POST", f"{server.url}/order", json={"city": "x" * 2 * LIMIT, "count": 1})
            return result.status, result.text
        finally:
            await client.aclose()

    status, text = asyncio.run(post())
    assert status == 413 and "max_request_body_bytes" in text


def test_a_body_of_exactly_the_cap_is_served(server):
    head, tail = b'{"city": "', b'", "count": 1}'
    body = head + b"x" * (LIMIT - len(head) - len(tail)) + tail
    assert len(body) == LIMIT
    answer = httpx.post(f"{server.url}/order", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200 and answer.json()["count"] == 1


def test_a_request_whose_head_never_ends_gets_408(server):
    answer = raw(server, b"POST /order HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request_head_timeout_s" in answer


def test_a_connection_that_sends_nothing_gets_408(server):
    assert raw(server, b"").startswith(b"HTTP/1.1 408 ")


def test_a_body_that_stalls_gets_408(server):
    answer = raw(
        server,
        b'POST /order HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"city": ',
    )
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request_body_timeout_s" in answer


def test_a_flood_of_headers_gets_431(server):
    flood = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"y" * 1000) for n in range(2000))  # ~2 MB of headers
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"POST /order HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            sock.sendall(flood)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before we finish sending
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"RequestHeadTooLarge" in answer


def test_an_idle_keep_alive_connection_outlives_the_head_deadline(server):
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/order", json={"city": "a", "count": 1}).status_code == 200
        time.sleep(1.0)  # twice the head deadline: idle between requests is keep-alive's business
        assert client.post("/order", json={"city": "b", "count": 2}).json() == {"city": "b", "count": 2}


def test_a_validation_error_never_echoes_more_than_an_excerpt(server):
    answer = httpx.post(f"{server.url}/order", json={"city": ["z" * 300_000] * 3, "count": "many"})
    assert answer.status_code == 422 and len(answer.content) < 2_000
    assert [problem["loc"] for problem in answer.json()["detail"]] == [["body", "city"], ["body", "count"]]


def test_excerpt_keeps_small_values_and_shortens_large_ones_without_walking_them():
    assert excerpt(3) == 3 and excerpt("Oslo") == "Oslo" and excerpt(None) is None
    assert len(excerpt("x" * 10_000)) < 100
    assert len(excerpt({"rows": [list(range(1000))] * 1000})) < 200
