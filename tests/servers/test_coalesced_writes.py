"""A served connection sends each answer with one write (`nemo_gym.servers.coalesced_writes`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from nemo_gym.servers.base import uvicorn_protocol_options
from nemo_gym.servers.coalesced_writes import MAX_HELD_BYTES, CoalescedWrites
from nemo_gym.servers.lean_app import LeanApp
from tests.servers.test_lean_inproc import _server


class RecordingTransport(asyncio.Transport):
    """A transport that records what is done to it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.events.append(("write", bytes(data)))

    def close(self) -> None:
        self.closing = True
        self.events.append(("close", b""))

    def abort(self) -> None:
        self.closing = True
        self.events.append(("abort", b""))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def writes(transport: RecordingTransport) -> list[bytes]:
    return [data for kind, data in transport.events if kind == "write"]


async def test_writes_of_one_turn_leave_as_one_write_in_order() -> None:
    inner = RecordingTransport()
    outer = CoalescedWrites(inner, asyncio.get_running_loop())
    outer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    outer.write(memoryview(b"{}"))
    outer.write(b"")
    assert writes(inner) == [] and outer.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\n{}")
    await asyncio.sleep(0)
    assert writes(inner) == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    outer.write(b"next")
    await asyncio.sleep(0)
    assert writes(inner) == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"next"]


async def test_a_close_sends_what_was_written_first_and_an_abort_drops_it() -> None:
    inner = RecordingTransport()
    outer = CoalescedWrites(inner, asyncio.get_running_loop())
    outer.write(b"head")
    outer.write(b"body")
    outer.close()
    assert inner.events == [("write", b"headbody"), ("close", b"")]

    inner = RecordingTransport()
    outer = CoalescedWrites(inner, asyncio.get_running_loop())
    outer.write(b"unsent")
    outer.abort()
    await asyncio.sleep(0)
    assert inner.events == [("abort", b"")]


async def test_nothing_is_written_to_a_connection_that_closed_within_the_turn() -> None:
    inner = RecordingTransport()
    outer = CoalescedWrites(inner, asyncio.get_running_loop())
    outer.write(b"late")
    inner.closing = True  # the peer went away
    await asyncio.sleep(0)
    assert writes(inner) == []


async def test_a_large_write_is_not_held_and_keeps_its_place() -> None:
    inner = RecordingTransport()
    outer = CoalescedWrites(inner, asyncio.get_running_loop())
    big = b"x" * MAX_HELD_BYTES
    outer.write(b"head")
    outer.write(big)  # what is held goes first, then the large body as it is
    assert writes(inner) == [b"head", big]
    outer.write(big)
    assert writes(inner) == [b"head", big, big]
    await asyncio.sleep(0)
    assert writes(inner) == [b"head", big, big]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST /echo HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n"
            b'{"text": "hi"}',
            b"200",
        ),
        (b"GET /nowhere HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n", b"404"),
    ],
)
async def test_a_served_answer_leaves_in_one_write(request_bytes: bytes, status: bytes) -> None:
    server = _server()
    options = uvicorn_protocol_options(server.config)
    config = uvicorn.Config(LeanApp.of(server.setup_webserver(), in_memory=False), lifespan="off", **options)
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request_bytes)
    for _ in range(100):
        await asyncio.sleep(0)
        if writes(transport):
            break
    await asyncio.sleep(0)
    sent = writes(transport)
    assert len(sent) == 1, sent  # status line, headers and body together
    head, _, body = sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status)
    length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert length and int(length[0].split(b":")[1]) == len(body) > 0
    protocol.connection_lost(None)
