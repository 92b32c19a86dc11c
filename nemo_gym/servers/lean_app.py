"""The lean twin of one of our servers' FastAPI apps: the same middleware, routes resolved once per path.

FastAPI's path from its `ExceptionMiddleware` to an endpoint tries every route's regex in turn, then
wraps the call in three exit stacks and its form limits, for every request. Our servers' routes are
`GymRoute`s whose endpoint mostly has a direct handler (`nemo_gym.servers.base._direct_handler`: one
pydantic body, parsed by pydantic's core), and their paths never change once the server is up; so the
lean twin looks a path up once, remembers its route, and calls that direct handler under the app's own
exception handling. Everything above is the app's own `build_middleware_stack()`: the same classes,
settings and exception handlers. A path whose route has no direct handler (path parameters, a route
body limit, FastAPI's dependencies), a 404 or a 405 goes down FastAPI's usual chain.

Most requests to a direct handler skip even the middleware stack: the app's own parts are asked instead
(`nemo_gym.servers.direct_calls`). Two callers, one difference:
  * uvicorn serves it (`SimpleServer.run_webserver`): the stack is kept whole, `CancelOnDisconnect`
    included (a handler whose client went away is cancelled). A request with a declared body length
    (not chunked) to a direct-handler route that the app admits is served directly, inside its own
    `CancelOnDisconnect`; its answer is sent as two ASGI messages. Middleware was ~16% of a served
    server's CPU;
  * in-memory calls (co-located collection, `nemo_gym.asgi_transport`) drop `CancelOnDisconnect`: the
    handler runs in the caller's task, so the caller's cancellation reaches it directly.
Measured per in-memory call in a tight loop: ~75 us through the whole app, ~30 us through this one. Inside
a co-located collection a small call costs about twice that (`benchmarks/inmemory_call_costs.py`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from nemo_gym.servers.direct_calls import Answer, DirectCalls
from nemo_gym.servers.disconnect import CancelOnDisconnect


class LeanApp:
    """One of our servers' apps, with routes resolved once per path (see the module docstring)."""

    _MAX_PATHS = 1024
    """Paths whose resolution is remembered; beyond that, new paths are resolved on every call."""

    def __init__(
        self,
        app: FastAPI,
        stack: ASGIApp,
        direct_calls: DirectCalls | None = None,
        *,
        served_directly: DirectCalls | None = None,
    ):
        self.app = app
        self.stack = stack
        self.direct_calls = direct_calls
        """In memory: the calls that skip the ASGI round trip (`nemo_gym.servers.direct_calls`), if any."""
        self.served_directly = served_directly
        """Served on a socket: the requests that skip the middleware stack, if any (module docstring)."""
        self._watched_direct = None if served_directly is None else CancelOnDisconnect(_ServedDirectly(served_directly))

    @classmethod
    def of(cls, app: ASGIApp, *, in_memory: bool) -> ASGIApp:
        """The lean twin of one of our servers' FastAPI apps; any other app (or one with FastAPI's
        telemetry switched on, or a root path) as it is. `in_memory`: called in the caller's task, not
        served on a socket (drops `CancelOnDisconnect`)."""
        if not (isinstance(app, FastAPI) and getattr(app.state, "nemo_gym_server_machinery", False)):
            return app
        telemetry = getattr(app, "_native_telemetry", None)
        if (telemetry is not None and telemetry.enabled()) or app.root_path:
            return app
        stack = app.build_middleware_stack()
        above: Any = None
        node: Any = stack
        layers: list[Any] = []
        while not isinstance(node, ExceptionMiddleware):
            if not hasattr(node, "app"):
                return app  # a middleware we cannot see through: serve through the whole app
            if in_memory and isinstance(node, CancelOnDisconnect) and above is not None:
                above.app = node.app
            else:
                above = node
                layers.append(node)
            node = node.app
        if above is None or node.app is None:
            return app
        layers.append(node)
        # Below the app's own ExceptionMiddleware, in the router's place: errors of a direct handler are
        # answered by that middleware's handlers, as they are for any route.
        routes = node.app = _DirectRoutes(node.app, app.router)
        direct_calls = DirectCalls.of(app, layers, routes.resolve)
        if in_memory:
            return cls(app, stack, direct_calls)
        return cls(app, stack, served_directly=direct_calls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app  # as Starlette's own entry does (the lifespan and `request.app` read it)
        direct = self.served_directly
        if direct is not None and scope["type"] == "http" and not scope.get("root_path"):
            size = declared_body_size(scope["headers"])
            if size is not None and direct.target(scope) is not None and direct.admits(scope, size):
                await self._watched_direct(scope, receive, send)  # type: ignore[misc]
                return
        await self.stack(scope, receive, send)


def declared_body_size(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body length a request declares (0 without a body), or None for a chunked or unreadable one."""
    size = 0
    for key, value in headers:
        if key == b"content-length":
            try:
                size = int(value)
            except ValueError:
                return None
        elif key == b"transfer-encoding":
            return None
    return size


class _ServedDirectly:
    """The ASGI app of a served request that `LeanApp` checked can be served directly: the route's direct
    handler through `DirectCalls`, and its answer sent."""

    def __init__(self, direct: DirectCalls):
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Resolved a moment ago in the same step (nothing ran in between): the same route.
        target = self.direct.target(scope)
        assert target is not None
        outcome = await self.direct.serve(target, scope, receive)
        if isinstance(outcome, Answer):
            await send({"type": "http.response.start", "status": outcome.status, "headers": outcome.headers})
            await send({"type": "http.response.body", "body": outcome.body})
        else:
            await outcome(scope, receive, send)


class _DirectRoutes:
    """Serves the paths whose route has a direct handler (see `LeanApp`); the rest goes to `fallback`
    (what sat below the app's `ExceptionMiddleware`: the router)."""

    def __init__(self, fallback: ASGIApp, router: APIRouter):
        self.fallback = fallback
        self.router = router
        self._routes: dict[tuple[str, str], tuple[APIRoute, Any] | None] = {}
        self._route_count = -1

    def resolve(self, scope: Scope) -> tuple[APIRoute, Any] | None:
        if len(self.router.routes) != self._route_count:  # routes added since: resolve afresh
            self._routes.clear()
            self._route_count = len(self.router.routes)
        key = (scope["method"], scope["path"])
        if key in self._routes:
            return self._routes[key]
        found = None
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                handler = getattr(route, "direct_handler", None)
                if (
                    handler is not None
                    and isinstance(route, APIRoute)
                    and not route.param_convertors
                    and getattr(route, "max_body_size", None) is None
                ):
                    found = (route, handler)
                break
        if len(self._routes) < LeanApp._MAX_PATHS:
            self._routes[key] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.resolve(scope) if scope["type"] == "http" and not scope.get("root_path") else None
        if target is None:
            await self.fallback(scope, receive, send)
            return
        route, handler = target
        # What the router and the route put in the scope on this path.
        scope.setdefault("router", self.router)
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        scope["route"] = route
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)
