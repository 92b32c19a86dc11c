"""Read deadlines for a served server: uvicorn's httptools protocol, closing a connection that does not
deliver its request in time (see `nemo_gym.servers.request_limits` for both request limits).

Its own module because it subclasses uvicorn's protocol: only a server process serving a socket
(`SimpleServer.run_webserver`, the test harness) needs it, and a co-located collection, whose servers are
called in memory, then never imports uvicorn (~25 ms of its start-up).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nemo_gym.servers.coalesced_writes import CoalescedWrites
from nemo_gym.servers.request_limits import (
    DEFAULT_REQUEST_BODY_TIMEOUT_S,
    DEFAULT_REQUEST_HEAD_TIMEOUT_S,
    MAX_REQUEST_HEAD_BYTES,
    error_json,
    human_bytes,
)


class _Phase:
    IDLE, HEAD, BODY = 0, 1, 2


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for receiving each request (see module docstring), and
    each answer's writes sent together (`nemo_gym.servers.coalesced_writes`).

    Configure through `deadline_protocol`; the class attributes are its defaults.
    """

    head_timeout_s: float = DEFAULT_REQUEST_HEAD_TIMEOUT_S
    body_timeout_s: float = DEFAULT_REQUEST_BODY_TIMEOUT_S
    max_head_bytes: int = MAX_REQUEST_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._phase = _Phase.IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase = _Phase.IDLE
        self._head_bytes = 0

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # One send per answer instead of uvicorn's two (head, then body): see `coalesced_writes`.
        super().connection_made(CoalescedWrites(transport, self.loop))
        # A connection that never sends a byte must not be held forever either.
        self._arm(_Phase.HEAD, self.head_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._phase == _Phase.HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._answer_and_close(
                    431,
                    "Request Header Fields Too Large",
                    "RequestHeadTooLarge",
                    f"request head over {human_bytes(self.max_head_bytes)}",
                )
                return
        super().data_received(data)
        # Arm or drop the deadline once per read, not per parser event: a request that arrived
        # whole in this read costs no timer at all.
        phase = self._phase
        if phase != self._deadline_phase:
            if phase == _Phase.IDLE:
                self._disarm()
            elif phase == _Phase.HEAD:
                self._arm(phase, self.head_timeout_s)
            else:
                self._arm(phase, self.body_timeout_s)
        elif phase == _Phase.IDLE and self._deadline is not None:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # ---- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _Phase.HEAD
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = _Phase.BODY

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = _Phase.IDLE

    # ---- deadline ------------------------------------------------------------------------------
    def _arm(self, phase: int, timeout_s: float) -> None:
        self._disarm()
        self._deadline_phase = phase
        self._deadline = self.loop.call_later(timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._deadline_phase = _Phase.IDLE

    def _expired(self) -> None:
        self._deadline = None
        phase, self._deadline_phase = self._deadline_phase, _Phase.IDLE
        if self.transport.is_closing():
            return
        if phase == _Phase.BODY:
            what = f"request body not received within {self.body_timeout_s:g} s (request_body_timeout_s)"
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()  # the app already answered; nothing more to say
                return
        else:
            what = f"request head not received within {self.head_timeout_s:g} s (request_head_timeout_s)"
        self._answer_and_close(408, "Request Timeout", "RequestTimeout", what)

    def _answer_and_close(self, status: int, reason: str, error_type: str, message: str) -> None:
        body = error_json(error_type, message)
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode("latin-1")
        self.transport.write(head + body)
        self.transport.close()  # connection_lost then tells a running app that the client is gone


def deadline_protocol(
    head_timeout_s: float, body_timeout_s: float, max_head_bytes: int = MAX_REQUEST_HEAD_BYTES
) -> type[DeadlineHttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`) for these deadlines."""
    return type(
        "ConfiguredDeadlineHttpToolsProtocol",
        (DeadlineHttpToolsProtocol,),
        {
            "head_timeout_s": head_timeout_s,
            "body_timeout_s": body_timeout_s,
            "max_head_bytes": max_head_bytes,
        },
    )
