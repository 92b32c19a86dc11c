"""Calls to one of our servers' direct-handler routes without its middleware stack: in memory, and served.

A co-located collection (`nemo_gym.colocated`) calls the agent and resources servers in memory
(`nemo_gym.asgi_transport`). Through the app, each call passes eight middleware layers on its way in
and sends its answer back through them as ASGI messages: inside a collection that was ~50 us of a
small call's ~56 us (`benchmarks/inmemory_call_costs.py`). The calls every rollout makes go to routes
with a direct handler (`nemo_gym.servers.lean_app`); `DirectCalls` serves those with the app's own
parts, asked directly instead of stacked:

  * the request guard is asked about the same scope (`RequestGuard.refusal`), and the body's size is
    held against the server's cap; a call either would refuse is not served here but through the app,
    which answers it exactly as it does over HTTP;
  * the session comes from the app's `SessionIdMiddleware` (`resolve`), and its cookie is on the answer;
  * the route's direct handler runs in the caller's task, with a Request on that scope, so cancelling
    the caller cancels it;
  * an exception is answered by the app's own error layers, copied around the exception: its
    `ServerErrorMiddleware` (the app's 500 handler), its session cookie and its `ExceptionMiddleware`
    (the app's handlers: our errors, validation, HTTPException). The answers are those of the app;
  * a plain Response's status, headers and body are taken as they are; any other kind (streaming, a
    background task) is sent through the same error layers, as the app would.

Served on a socket, a request with a declared body length that the app admits goes the same way
(`nemo_gym.servers.lean_app`), inside its own `CancelOnDisconnect`; ~6 us of a served server's ~57 us of CPU
per small request.

An app with middleware besides our own machinery (an environment that added some), FastAPI's
telemetry switched on or an app-wide body limit is always called through the app.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from nemo_gym.servers.disconnect import CancelOnDisconnect
from nemo_gym.servers.request_guard import RequestGuard, Scope
from nemo_gym.servers.request_limits import BodySizeLimitMiddleware
from nemo_gym.servers.session import SESSION_ID_KEY, SessionIdMiddleware

OUR_MIDDLEWARE = frozenset({RequestGuard, CancelOnDisconnect, BodySizeLimitMiddleware, SessionIdMiddleware})
"""What `SimpleServer.install_server_machinery` adds: an app with any other middleware is called through ASGI."""


class Answer(NamedTuple):
    """An in-memory call's answer: status, raw headers, body, and the cookies it sets when they are known
    without parsing its `Set-Cookie` headers (None: parse them)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    cookies: dict[str, str] | None = None


Target = tuple[APIRoute, Callable[[Request], Any]]
"""A route with a direct handler and that handler, as resolved (once) for one (method, path)."""


class DirectCalls:
    """Serves in-memory calls to the direct-handler routes of one of our servers' apps (module docstring)."""

    def __init__(
        self,
        app: FastAPI,
        resolve: Callable[[Scope], Target | None],
        *,
        server_errors: ServerErrorMiddleware,
        guard: RequestGuard,
        body_limit: BodySizeLimitMiddleware,
        session: SessionIdMiddleware,
        exceptions: ExceptionMiddleware,
    ):
        self.app = app
        self._resolve = resolve
        self.server_errors = server_errors
        self.guard = guard
        self.body_cap = body_limit.max_body_bytes
        self.session = session
        self.exceptions = exceptions

    @classmethod
    def of(cls, app: FastAPI, layers: list[Any], resolve: Callable[[Scope], Target | None]) -> DirectCalls | None:
        """The direct calls of `app`, whose middleware instances are `layers` (outermost first, down to its
        `ExceptionMiddleware`); None when the app has anything this path would skip over."""
        if {middleware.cls for middleware in app.user_middleware} - OUR_MIDDLEWARE:
            return None
        if getattr(app, "max_body_size", None) is not None:
            return None
        found: dict[type, Any] = {}
        for layer in layers:
            for kind in (ServerErrorMiddleware, RequestGuard, BodySizeLimitMiddleware, SessionIdMiddleware):
                if isinstance(layer, kind):
                    if kind in found:
                        return None  # twice: not the stack install_server_machinery builds
                    found[kind] = layer
        if len(found) != 4 or not layers or not isinstance(layers[-1], ExceptionMiddleware):
            return None
        if layers[0] is not found[ServerErrorMiddleware]:
            return None
        return cls(
            app,
            resolve,
            server_errors=found[ServerErrorMiddleware],
            guard=found[RequestGuard],
            body_limit=found[BodySizeLimitMiddleware],
            session=found[SessionIdMiddleware],
            exceptions=layers[-1],
        )

    def target(self, scope: Scope) -> Target | None:
        """The direct-handler route of this request's method and path, if it has one."""
        return self._resolve(scope)

    def admits(self, scope: Scope, body_size: int) -> bool:
        """Whether the app would let this request through to its route: a request it refuses before any
        route (the guard's checks, the body cap) is not served here; the caller calls the app, which
        answers it as it always does."""
        return body_size <= self.body_cap and self.guard.refusal(scope) is None

    async def serve(self, target: Target, scope: Scope, receive: Receive) -> Answer | ASGIApp:
        """Serve one request the app admits (`admits`) to `target` (`scope` as the transport built it,
        `receive` handing over its body). The answer; or an ASGI app to send it with (the call raised, or
        answered with a kind of response that must be sent, e.g. streamed)."""
        session = self.session.resolve(scope["headers"])
        scope["session"] = {SESSION_ID_KEY: session.session_id}
        # What the app's entry, the router and the route put in the scope on the ASGI path.
        scope["app"] = self.app
        scope["router"] = self.app.router
        route, handler = target
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        scope["route"] = route
        try:
            response = await handler(Request(scope, receive))
        except Exception as error:  # noqa: BLE001 - answered by the app's own handlers, as on the ASGI path
            return self._answer_through_error_layers(_Raise(error), scope, session.set_cookie)
        if type(response).__call__ is not Response.__call__ or response.background is not None:
            return self._answer_through_error_layers(response, scope, session.set_cookie)
        raw_headers = list(response.raw_headers)
        # The session's cookie is known: the caller need not parse it back, unless the endpoint set cookies too.
        cookies: dict[str, str] | None = {self.session.cookie_name: session.value}
        for key, _ in raw_headers:
            if key == b"set-cookie":
                cookies = None
                break
        raw_headers.append((b"set-cookie", session.set_cookie))
        body = response.body
        return Answer(response.status_code, raw_headers, body if isinstance(body, bytes) else bytes(body), cookies)

    def _answer_through_error_layers(self, inner: ASGIApp, scope: Scope, cookie: bytes) -> ASGIApp:
        """`inner` wrapped in copies of the app's error layers and session middleware, in the app's order:
        what it sends, or the answer to what it raises, is what the app would have sent."""
        exceptions = copy.copy(self.exceptions)
        exceptions.app = inner
        session: Any = copy.copy(self.session)  # its own ASGI typing (plain dicts); Starlette's is looser
        session.app = exceptions
        server_errors = copy.copy(self.server_errors)
        server_errors.app = session
        # The session middleware resolves the session again from the headers: hand it the cookie of the
        # session the handler ran in (a new one is not in the request yet).
        # First, so that a forged cookie of the same name further on is not the one read.
        scope["headers"] = [(b"cookie", cookie.partition(b";")[0]), *scope["headers"]]

        async def answer(_scope: AsgiScope, receive: Receive, send: Send) -> None:
            await server_errors(scope, receive, send)

        return answer


class _Raise:
    """An ASGI app that raises the exception a direct handler raised, for the app's handlers to answer."""

    def __init__(self, error: Exception):
        self.error = error

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        raise self.error
