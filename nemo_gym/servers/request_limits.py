"""Bounded requests: a body-size cap and read deadlines, so one client cannot pin a server's memory
or its connections.

Two pieces, because they act at two levels:

  * `BodySizeLimitMiddleware` (pure ASGI, any server) answers 413 to a body over
    `max_request_body_bytes`: at once from `Content-Length`, and while streaming a chunked body
    (the count is checked on every chunk, so at most one chunk past the cap is ever held).
    Before it, a 200 MB POST to /verify grew a resources server to 2.7 GB.
  * `deadline_protocol(...)` (`nemo_gym.servers.read_deadlines`: a uvicorn protocol class, what
    `run_webserver` serves with, kept apart so that in-memory servers never import uvicorn) closes a
    connection that does not deliver its request in time: the head (request line + headers) within
    `request_head_timeout_s` of its first byte, or of the connection opening; the body within
    `request_body_timeout_s` of the head. It answers 408 when nothing has been answered yet, and
    431 when a head grows past `MAX_REQUEST_HEAD_BYTES`. uvicorn has no such deadline of its own:
    `timeout_keep_alive` is armed only after a response, so a client that opens a connection and
    trickles a header byte now and then held it (and a file descriptor) forever.

Hot path: small requests arrive whole in one read, so neither piece arms a timer or wraps a
`receive` for them; the middleware's cost is one scan of the request's header list. Measured in
CPU time per request through uvicorn's protocol: 17.9 us bare, +1.4 us with the deadlines, +3 us
with both pieces.

Why not FastAPI's own `max_body_size` (Starlette's `RequestBodyLimitMiddleware`): it exists only
in FastAPI releases far above our floor, wraps `receive` and `send` on every request (about 3.5x the
cost of this middleware, measured), answers in plain text rather than our error JSON, and keeps the
connection open, so the rest of an oversized body is still read off the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect

from nemo_gym.errors import RequestTooLargeError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_REQUEST_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_REQUEST_HEAD_TIMEOUT_S = 10.0
DEFAULT_REQUEST_BODY_TIMEOUT_S = 60.0
MAX_REQUEST_HEAD_BYTES = 1024 * 1024
"""Request line + headers. Generous (nginx allows 32 KiB); it only stops a header flood, which
uvicorn's httptools parser would otherwise buffer without bound."""


def human_bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"


def too_large_error(path: str, limit: int, size: int | None = None) -> RequestTooLargeError:
    size_text = f" of {human_bytes(size)}" if size is not None else ""
    return RequestTooLargeError(
        f"request body{size_text} to {path} is over this server's limit of {human_bytes(limit)} "
        "(max_request_body_bytes)",
        limit_bytes=limit,
    )


def error_json(error_type: str, message: str) -> bytes:
    return orjson.dumps({"error": {"type": error_type, "message": message}})


async def send_too_large(send: Send, error: RequestTooLargeError) -> None:
    """A 413 that also closes the connection: the rest of the body is not worth reading."""
    body = error_json(type(error).__name__, str(error))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimitMiddleware:
    """413 for request bodies over `max_body_bytes`. Self-contained: add it anywhere in the stack.

    It also ends quietly a request whose client went away while its body was being read (the
    deadline protocol's 408 does exactly that): nobody is left to answer, and it is not a server
    error worth a traceback in the log.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        if declared is not None and declared.isdigit():
            # The parser stops the body at Content-Length, so the declared size is the size.
            size = int(declared)
            if size > self.max_body_bytes:
                await send_too_large(send, too_large_error(scope["path"], self.max_body_bytes, size))
                return
            try:
                await self.app(scope, receive, send)
            except ClientDisconnect:
                pass
            return
        await self._call_counting(scope, receive, send)

    async def _call_counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A body of unknown length (chunked): count it as it arrives."""
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise too_large_error(scope["path"], self.max_body_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except ClientDisconnect:
            pass
        except RequestTooLargeError as error:
            # Raised from `receive` inside the app; an app that maps NemoGymErrors to responses has
            # already answered (413, see base.py), else we do.
            if response_started:
                return
            await send_too_large(send, error)
