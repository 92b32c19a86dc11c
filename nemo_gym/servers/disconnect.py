"""Cancel a request's handler when its client goes away.

ASGI servers tell an application that the client disconnected only when it asks (`receive()`
returns `http.disconnect`); a handler busy awaiting something else never asks, so a request
whose caller gave up (a collector's rollout deadline, Ctrl+C, a killed trainer) kept running to
the end: an agent kept calling its model and tools, a model server kept its upstream request open.

`CancelOnDisconnect` watches the connection once the request body has been read and cancels the
handler's task the moment the client disconnects. The cancellation travels down the handler's
awaits, so in-flight outgoing requests are cancelled too; their connections close, which the
next server sees as its own client going away. An agent's episode, its model call and the model
server's upstream request stop as one chain.

A handler cancelled this way ends quietly (nobody is left to read an answer or a traceback).
Cost: one small task per request that has a body, created after the body is read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_DISCONNECT: Message = {"type": "http.disconnect"}


class _RequestWatch:
    """One request's view of its connection: the app's receive/send, and the watcher task."""

    __slots__ = (
        "_handler",
        "_receive",
        "_send",
        "_watcher",
        "_client_gone",
        "body_read",
        "response_sent",
        "client_disconnected",
    )

    def __init__(self, handler: asyncio.Task[Any], receive: Receive, send: Send):
        self._handler, self._receive, self._send = handler, receive, send
        self._watcher: asyncio.Task[None] | None = None
        self._client_gone: asyncio.Event | None = None
        self.body_read = False
        self.response_sent = False
        self.client_disconnected = False

    async def receive(self) -> Message:
        if self.body_read:
            # From here on the watcher owns the connection's receive channel (two readers would race
            # for the one disconnect message); the app hears about a disconnect from it.
            if self._client_gone is None:
                self._client_gone = asyncio.Event()
            await self._client_gone.wait()
            return _DISCONNECT
        message = await self._receive()
        if message["type"] == "http.request":
            if not message.get("more_body", False):
                self.body_read = True
                self._watcher = asyncio.get_running_loop().create_task(self._watch())
        elif message["type"] == "http.disconnect":
            self.client_disconnected = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.response_sent = True
        await self._send(message)

    async def _watch(self) -> None:
        # The server answers this call when the client disconnects, or once the response is complete.
        await self._receive()
        if self.response_sent:
            return
        self.client_disconnected = True
        if self._client_gone is not None:
            self._client_gone.set()
        self._handler.cancel()

    def stop(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()


class CancelOnDisconnect:
    """Pure-ASGI middleware: a client that disconnects before its response is complete cancels
    the handler (and everything it awaits)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = asyncio.current_task()
        assert handler is not None
        watch = _RequestWatch(handler, receive, send)
        try:
            await self.app(scope, watch.receive, watch.send)
        except asyncio.CancelledError:
            if not watch.client_disconnected or handler.cancelling() > 1:
                raise  # someone else (a server shutting down) cancelled us as well
            handler.uncancel()  # we asked for this cancellation and it has done its job
        finally:
            watch.stop()
