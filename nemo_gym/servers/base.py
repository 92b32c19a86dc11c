"""What every server process shares: config, the FastAPI app, errors as JSON, health, sessions, startup.

A server is a pydantic model holding its typed `config` and a `ServerClient` (as in NeMo Gym, so
environment code ports with import changes only). `setup_webserver()` builds the app;
`run_webserver()` is the process entry point used by `ng_run`.

Hot-path choices, each measured on NeMo Gym's CPU profile per rollout:
  * routes return pre-serialized JSON (`JSONBytesResponse`), so FastAPI's response-model
    re-validation and `jsonable_encoder` walk never run;
  * the only middleware is the pure-ASGI session-id one (no `BaseHTTPMiddleware` layers);
  * uvicorn runs with httptools and uvloop.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nemo_gym.aio import raise_open_file_limit
from nemo_gym.client import ServerClient, ServerInfo
from nemo_gym.errors import HTTPStatusError, InputError, InvalidResponseError, NemoGymError, TransportError
from nemo_gym.servers.session import SessionIdMiddleware

# Environment variables through which ng_run hands a child its own config (never the whole stack's).
BOOTSTRAP_ENV = "NEMO_GYM_SERVER_BOOTSTRAP"
INSTANCE_NAME_ENV = "NEMO_GYM_CONFIG_PATH"

SERVER_KEEPALIVE_S = 30  # longer than the client's 15 s, so clients never reuse a closed socket


class BaseServerConfig(BaseModel):
    """Fields every server instance has; implementation-specific keys are allowed and typed by subclasses."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    entrypoint: str = "app.py"


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__} as JSON")


class JSONBytesResponse(Response):
    """JSON rendered by orjson or pydantic's Rust serializer, without a Python-level walk."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        if isinstance(content, BaseModel):
            return content.__pydantic_serializer__.to_json(content)
        return orjson.dumps(content, default=_json_default)


def error_body(error: BaseException) -> dict[str, Any]:
    return {"error": {"type": type(error).__name__, "message": str(error)}}


def _as_response(result: Any) -> Response:
    return result if isinstance(result, Response) else JSONBytesResponse(result)


class OrjsonRequest(Request):
    """A Request whose JSON body is parsed by orjson (stdlib json was ~5% of a server's CPU)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class GymRoute(APIRoute):
    """An APIRoute that parses bodies with orjson and serializes the endpoint's result directly
    (no response-model validation)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        kwargs["response_model"] = None
        kwargs.setdefault("response_class", JSONBytesResponse)
        super().__init__(path, _wrap_endpoint(endpoint), **kwargs)

    def get_route_handler(self) -> Callable[[Request], Any]:
        direct = _direct_handler(self.endpoint)
        if direct is not None:
            return direct
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return orjson_handler


def _direct_handler(endpoint: Callable[..., Any]) -> Callable[[Request], Any] | None:
    """A handler that skips FastAPI's dependency machinery for the signatures every server here
    uses: an optional `Request` plus at most one pydantic body model. The body is parsed and
    validated in one step by pydantic's Rust core. Other signatures get FastAPI's full handler.

    FastAPI's per-request dependency solving was about a quarter of a server's CPU per rollout.
    """
    parameters = list(inspect.signature(endpoint).parameters.values())
    request_names = [p.name for p in parameters if p.annotation is Request]
    models = [p for p in parameters if inspect.isclass(p.annotation) and issubclass(p.annotation, BaseModel)]
    if len(request_names) + len(models) != len(parameters) or len(models) > 1:
        return None
    if any(p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.default is not p.empty for p in parameters):
        return None

    if not models:
        async def call_without_body(request: Request) -> Response:
            return await endpoint(**{name: request for name in request_names})

        return call_without_body

    body_name, body_model = models[0].name, models[0].annotation

    async def call_with_body(request: Request) -> Response:
        raw = await request.body()
        try:
            body = body_model.model_validate_json(raw or b"{}")
        except ValidationError as error:
            problems = [dict(item, loc=("body", *item["loc"])) for item in error.errors(include_url=False)]
            raise RequestValidationError(problems, body=raw) from None
        return await endpoint(**{body_name: body}, **{name: request for name in request_names})

    return call_with_body


def new_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app with our route class, and FastAPI's per-request telemetry probe switched off
    (it looked up tracer providers on every request: ~3-5% of a server's CPU)."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        kwargs.setdefault("telemetry", {"tracing": False, "metrics": False, "logs": False})
    app = FastAPI(default_response_class=JSONBytesResponse, **kwargs)
    app.router.route_class = GymRoute
    return app


def _wrap_endpoint(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(endpoint, "__gym_wrapped__", False):
        return endpoint
    # Evaluate string annotations in the endpoint's own module: FastAPI would otherwise look them
    # up in this module's globals through the wrapper.
    signature = inspect.signature(endpoint, eval_str=True)
    if inspect.iscoroutinefunction(endpoint):
        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            return _as_response(await endpoint(*args, **kwargs))
    else:
        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            return _as_response(await run_in_threadpool(endpoint, *args, **kwargs))
    wrapper.__signature__ = signature.replace(return_annotation=inspect.Signature.empty)  # type: ignore[attr-defined]
    wrapper.__gym_wrapped__ = True  # type: ignore[attr-defined]
    return wrapper


async def _nemo_gym_error_handler(request: Request, error: Exception) -> Response:
    # Failures of something we called (model upstream, another server) are a bad gateway, not our bug.
    if isinstance(error, InputError):
        status = 400
    elif isinstance(error, (HTTPStatusError, TransportError, InvalidResponseError)):
        status = 502
    else:
        status = 500
    return JSONBytesResponse(error_body(error), status_code=status)


async def _unexpected_error_handler(request: Request, error: Exception) -> Response:
    return JSONBytesResponse(error_body(error), status_code=500)


async def _validation_error_handler(request: Request, error: RequestValidationError) -> Response:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{location or 'body'}: {item.get('msg')}")
    message = f"invalid request to {request.url.path}: " + "; ".join(problems)
    body = {"error": {"type": "RequestValidationError", "message": message}, "detail": error.errors()}
    return JSONBytesResponse(orjson.loads(orjson.dumps(body, default=str)), status_code=422)


class ServerBootstrap(BaseModel):
    """What ng_run passes a child: its own resolved config, the head server and the registry."""

    name: str
    config: dict[str, Any]
    head_url: str
    registry: list[ServerInfo] = []


class SimpleServer(BaseModel):
    """Base of every server. Subclasses declare `config: <TheirConfig>` and add routes in `setup_webserver`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: BaseServerConfig
    server_client: ServerClient

    server_kind: ClassVar[str] = "server"

    @property
    def session_cookie_name(self) -> str:
        # One cookie name per server instance, so cookies from different servers never collide.
        return f"{type(self).__name__}___{self.config.name}"

    async def on_startup(self) -> None:
        """Acquire resources (pools, models). Called once inside the server's event loop."""

    async def on_shutdown(self) -> None:
        """Release what `on_startup` acquired."""

    def setup_webserver(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            await self.on_startup()
            try:
                yield
            finally:
                await self.on_shutdown()
                await self.server_client.aclose()

        app = new_app(title=f"{type(self).__name__} {self.config.name}", lifespan=lifespan)
        app.add_middleware(SessionIdMiddleware, cookie_name=self.session_cookie_name)
        app.add_exception_handler(NemoGymError, _nemo_gym_error_handler)
        app.add_exception_handler(RequestValidationError, _validation_error_handler)  # type: ignore[arg-type]
        app.add_exception_handler(Exception, _unexpected_error_handler)

        health = {"status": "ok", "name": self.config.name, "kind": self.server_kind}

        async def health_check() -> dict[str, Any]:
            return health

        app.get("/health")(health_check)
        app.get("/")(health_check)
        return app

    @classmethod
    def config_class(cls) -> type[BaseServerConfig]:
        return cls.model_fields["config"].annotation  # type: ignore[return-value]

    @classmethod
    def from_bootstrap(cls, bootstrap: ServerBootstrap) -> SimpleServer:
        config = cls.config_class().model_validate(bootstrap.config | {"name": bootstrap.name})
        registry = {info.name: info for info in bootstrap.registry}
        return cls(config=config, server_client=ServerClient(bootstrap.head_url, registry=registry))

    @classmethod
    def run_webserver(cls) -> None:
        """Process entry point: read the bootstrap ng_run gave us, build the app, serve until signalled."""
        import uvicorn

        raw = os.environ.get(BOOTSTRAP_ENV)
        if not raw:
            sys.exit(f"error: {cls.__name__} must be started by ng_run ({BOOTSTRAP_ENV} is not set)")
        bootstrap = ServerBootstrap.model_validate(json.loads(raw))
        os.environ.pop(BOOTSTRAP_ENV, None)  # the config may hold secrets; children of ours don't need it
        raise_open_file_limit()
        server = cls.from_bootstrap(bootstrap)
        app = server.setup_webserver()
        uvicorn.run(
            app,
            host=server.config.host,
            port=server.config.port,
            loop="uvloop",
            http="httptools",
            timeout_keep_alive=SERVER_KEEPALIVE_S,
            timeout_graceful_shutdown=2,
            access_log=False,
            log_level=os.environ.get("NEMO_GYM_LOG_LEVEL", "warning"),
            backlog=16384,
        )
