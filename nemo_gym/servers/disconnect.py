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
Cost: two set operations per request; only a request still running after `WATCH_AFTER_S` gets a
watcher task.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_DISCONNECT: Message = {"type": "http.disconnect"}

WATCH_AFTER_S = 0.5
"""A request is watched only once it has run at least this long (at most twice this). Nearly every
request finishes sooner and then costs two set operations; a task or a timer per request cost ~35 us
and ~13 us of CPU (a small request is ~50 us). A disconnect is noticed within 2 x this delay."""


class _Sweeper:
    """The requests in flight on one event loop, in two generations. Each tick (while any request is
    in flight) starts watching every request of the older generation, which has lived through a
    whole tick, and makes the younger one the older."""

    __slots__ = ("loop", "_young", "_old", "_ticking")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._young: set[_RequestWatch] = set()
        self._old: set[_RequestWatch] = set()
        self._ticking = False

    def add(self, watch: _RequestWatch) -> None:
        self._young.add(watch)
        if not self._ticking:
            self._ticking = True
            self.loop.call_later(WATCH_AFTER_S, self._tick)

    def discard(self, watch: _RequestWatch) -> None:
        self._young.discard(watch)
        self._old.discard(watch)

    def _tick(self) -> None:
        for watch in self._old:
            watch.due()
        self._old, self._young = self._young, set()
        if self._old:
            self.loop.call_later(WATCH_AFTER_S, self._tick)
        else:
            self._ticking = False


class _RequestWatch:
    """One request's view of its connection: the app's receive/send, and once due, a watcher task."""

    __slots__ = (
        "_handler",
        "_receive",
        "_send",
        "_due",
        "_watcher",
        "_client_gone",
        "body_read",
        "response_sent",
        "client_disconnected",
    )

    def __init__(self, handler: asyncio.Task[Any], receive: Receive, send: Send):
        self._handler, self._receive, self._send = handler, receive, send
        self._due = False
        self._watcher: asyncio.Task[None] | None = None
        self._client_gone: asyncio.Event | None = None
        self.body_read = False
        self.response_sent = False
        self.client_disconnected = False

    def due(self) -> None:
        self._due = True
        # Only once the app has the whole body: until then the body's messages are the app's to read.
        if self.body_read and not self.response_sent:
            self._watcher = self._handler.get_loop().create_task(self._watch())

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
                if self._due:
                    self._watcher = self._handler.get_loop().create_task(self._watch())
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
        # A sent response has already woken the watcher, which returns on its own; cancelling it
        # would only cost an exception's trip through the server's receive.
        if self._watcher is not None and not self.response_sent and not self._watcher.done():
            self._watcher.cancel()


class CancelOnDisconnect:
    """Pure-ASGI middleware: a client that disconnects before its response is complete cancels
    the handler (and everything it awaits)."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._sweeper: _Sweeper | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = asyncio.current_task()
        assert handler is not None
        sweeper = self._sweeper
        if sweeper is None or sweeper.loop is not handler.get_loop():
            sweeper = self._sweeper = _Sweeper(handler.get_loop())
        watch = _RequestWatch(handler, receive, send)
        sweeper.add(watch)
        try:
            await self.app(scope, watch.receive, watch.send)
        except asyncio.CancelledError:
            if not watch.client_disconnected or handler.cancelling() > 1:
                raise  # someone else (a server shutting down) cancelled us as well
            handler.uncancel()  # we asked for this cancellation and it has done its job
        finally:
            sweeper.discard(watch)
            watch.stop()
