"""What every server process shares: config, the FastAPI app, errors as JSON, health, sessions, startup.

A server is a pydantic model holding its typed `config` and a `ServerClient` (as in NeMo Gym, so
environment code ports with import changes only). `setup_webserver()` builds the app;
`run_webserver()` is the process entry point used by `ng_run`.

Hot-path choices, each measured on NeMo Gym's CPU profile per rollout:
  * routes return pre-serialized JSON (`JSONBytesResponse`), so FastAPI's response-model
    re-validation and `jsonable_encoder` walk never run;
  * middleware is pure ASGI only (request guard, session id, body-size cap, cancel-on-disconnect;
    no `BaseHTTPMiddleware` layers);
  * uvicorn runs with httptools and uvloop.

Requests come from our clients, not web pages (`request_guard`): a JSON body needs
`Content-Type: application/json` (415), a browser's foreign `Origin` gets 403, a `Host` that is not
this server's (DNS rebinding) gets 421; `allowed_hosts` lists further names.

Requests are bounded (`request_limits`): a body cap (413), and deadlines for a request's head and
body (408), each configurable per server instance.

Errors become JSON `{"error": {"type", "message"}}` in one place (`_nemo_gym_error_handler`): bad
input 400 (413 for a body over the cap), a failure of something we called 502 when another attempt
may succeed (the `nemo_gym.retry` classifier), 424 when it will not (an upstream 4xx, or an answer
over a size cap: retrying the rollout would fail the same way), our own bug 500. Validation errors
name each field and quote at most a short excerpt of what was sent, never the body itself.
"""

from __future__ import annotations

import functools
import gc
import inspect
import os
import re
import reprlib
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from nemo_gym.aio import raise_open_file_limit
from nemo_gym.client import ServerClient, ServerInfo
from nemo_gym.errors import (
    ConfigError,
    HTTPStatusError,
    InputError,
    InvalidResponseError,
    NemoGymError,
    RequestTooLargeError,
    ResponseTooLargeError,
    TransportError,
)
from nemo_gym.retry import is_retryable_status
from nemo_gym.servers.disconnect import CancelOnDisconnect
from nemo_gym.servers.launcher_link import NotLaunchedError, read_bootstrap
from nemo_gym.servers.lean_app import LeanApp
from nemo_gym.servers.request_guard import RequestGuard
from nemo_gym.servers.request_limits import (
    DEFAULT_MAX_REQUEST_BODY_BYTES,
    DEFAULT_REQUEST_BODY_TIMEOUT_S,
    DEFAULT_REQUEST_HEAD_TIMEOUT_S,
    BodySizeLimitMiddleware,
)
from nemo_gym.servers.session import SessionIdMiddleware
from nemo_gym.unknown_keys import describe_unknown_keys, find_unknown_keys

# The instance name, in an environment variable as NeMo Gym does. The config itself comes through a
# pipe (nemo_gym.servers.launcher_link), never the environment: /proc/<pid>/environ would show its keys.
INSTANCE_NAME_ENV = "NEMO_GYM_CONFIG_PATH"

# A server whose config block is wrong prints one line starting with this and exits 2; the
# launcher turns that line into the command's own one-line error (a config mistake, not a crash).
CONFIG_ERROR_PREFIX = "nemo_gym config error: "

# Keys of a server block that the launcher and tools read (README tables, data preparation), not
# the server's config class; the check of a server's config accepts them besides its own fields.
# NeMo Gym's catalogue metadata (`verified`, `verified_url`, `description`, `value`) has no effect
# on a run here, as there; `datasets` entries are checked by the config loader (nemo_gym.config).
SERVER_BLOCK_METADATA_KEYS = frozenset(
    {"domain", "datasets", "verified", "description", "value", "dataset_name", "verified_url"}
)

_SECRET_NAME = re.compile(r"key|token|secret|password|passwd|credential", re.IGNORECASE)

SERVER_KEEPALIVE_S = 30  # longer than the client's 15 s, so clients never reuse a closed socket
SERVER_LISTEN_BACKLOG = 16384
"""Connections a server's socket queues before it accepts them (the kernel caps it at net.core.somaxconn)."""

SERVER_GC_THRESHOLDS = (100_000, 10, 10)
"""The garbage collector's thresholds in a server process (CPython's default is (700, 10, 10)). A server holds
the objects of every request in flight, and a young collection walks every live object allocated since the
last one: with thousands of rollouts in flight the agent and model servers walked them again and again and
freed little, so their CPU per rollout grew with concurrency. Measured on the HTTP stack, settings alternated
(`benchmarks/stack_throughput.py --mode http`): at 4,096 in flight stack CPU 1.82-1.99 -> 1.52-1.57 ms per
rollout and 840-927 -> 1,082-1,129 rollouts/s; at 16 in flight 1.37-1.53 -> 1.35-1.40 ms. Cyclic garbage
waits for at most this many allocations (a few MB). A co-located collection tunes its own process the same
way, scaled to its rollouts in flight (`nemo_gym.colocated.collection_gc`)."""


def freeze_start_up_heap() -> None:
    """Free the young generations' garbage, then freeze every object alive now (imports, the servers just
    built) out of every later collection. Only the young generations: a full collection walks the whole heap
    (~50 ms for the benchmark's 87k objects, far more in a trainer's); what is already old is frozen as it
    is, and is collectable again after `gc.unfreeze()`."""
    gc.collect(1)
    gc.freeze()


def tune_server_gc() -> None:
    """For a server process about to serve: its start-up heap is frozen (`freeze_start_up_heap`) and
    collections run less often."""
    freeze_start_up_heap()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


class BaseServerConfig(BaseModel):
    """Fields every server instance has; implementation-specific keys are allowed and typed by subclasses."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    entrypoint: str = "app.py"
    max_request_body_bytes: int = Field(DEFAULT_MAX_REQUEST_BODY_BYTES, ge=1)
    """Largest request body accepted (64 MiB); a larger one gets 413. Rollout rows are kilobytes to
    a few megabytes; the cap stops one request from exhausting the server's memory."""
    request_head_timeout_s: float = Field(DEFAULT_REQUEST_HEAD_TIMEOUT_S, gt=0)
    """Time a client has to send a request's line and headers (10 s), counted from its first byte
    or from the connection opening; then 408 and the connection is closed."""
    request_body_timeout_s: float = Field(DEFAULT_REQUEST_BODY_TIMEOUT_S, gt=0)
    """Time a client has to send a request's body once the headers are in (60 s: 64 MiB at about
    1 MB/s); then 408 and the connection is closed."""
    num_workers: int | None = Field(None, ge=1)
    """NeMo Gym's uvicorn worker count, accepted so its configs load, and ignored: a server here is one
    process per replica (a second worker would split per-rollout sessions across processes). For
    more throughput use `num_replicas`, which keeps each rollout on one copy."""
    num_replicas: int = Field(1, ge=1)
    """Copies of this server that ng_run starts under its one name (read by the launcher; a server
    sees it only for its own information). Clients spread rollouts over them and keep each rollout
    on one copy. On a Ray cluster the copies go to distinct nodes where there are enough."""
    ray_resources: dict[str, float] = Field(default_factory=dict)
    """What one replica needs from a Ray cluster (`ng_run +ray_address=...`), in Ray's resource
    names: `num_cpus`, `num_gpus`, `memory` (bytes) or a custom resource (`{my_node_tag: 1}`).
    Ignored without Ray."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Further names this server answers to, besides the host it is bound as, the address a
    connection arrives on, loopback names (when bound to loopback, 0.0.0.0 or ::) and this
    machine's host name and addresses (when not bound to loopback): a request whose `Host` header
    names anything else gets 421, and one from a web page (an `Origin` header) of another origin
    gets 403. List the names clients use to reach it through DNS, a
    proxy or a tunnel, e.g. `[gym-node-3.cluster.local]`; `*` accepts any Host (it switches off
    the protection against DNS rebinding)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__} as JSON")


_JSON_TYPE = b"application/json"
_NO_LENGTH = frozenset({*range(100, 200), 204, 304})
"""Statuses whose answer carries no Content-Length (Starlette's rule)."""


class JSONBytesResponse(Response):
    """JSON rendered by orjson or pydantic's Rust serializer, without a Python-level walk."""

    media_type = "application/json"

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        # What Starlette's generic version builds for a JSON answer without headers of its own, in one step
        # (a server renders one per request).
        if headers is None and self.media_type == "application/json" and self.status_code not in _NO_LENGTH:
            self.raw_headers = [(b"content-length", str(len(self.body)).encode()), (b"content-type", _JSON_TYPE)]
        else:
            super().init_headers(headers)

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        if isinstance(content, BaseModel):
            return content.__pydantic_serializer__.to_json(content)
        return orjson.dumps(content, default=_json_default)


MAX_ERROR_MESSAGE_CHARS = 2000
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxdict, _EXCERPT.maxlist, _EXCERPT.maxstring, _EXCERPT.maxother = 2, 4, 4, 80, 80


def excerpt(value: Any) -> Any:
    """`value` if it is a small scalar, else a short repr: enough to recognise what was sent, never
    a copy of a large body (reprlib stops walking at its limits, so this is cheap on any size)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and len(value) <= 80:
        return value
    return _EXCERPT.repr(value)


def _bounded(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[:MAX_ERROR_MESSAGE_CHARS] + f"... [{len(message) - MAX_ERROR_MESSAGE_CHARS} more characters]"


def error_body(error: BaseException) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type(error).__name__, "message": _bounded(str(error))}
    if isinstance(error, HTTPStatusError):
        body["status_code"] = error.status_code
    return {"error": body}


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

    direct_handler: Callable[[Request], Any] | None = None
    """The handler when it is a direct one (`_direct_handler`): a co-located caller may call it below
    FastAPI's routing (`nemo_gym.servers.lean_app.LeanApp`); None when FastAPI's full handler serves."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        direct = _direct_handler(self.endpoint)
        self.direct_handler = direct
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
    # An endpoint that is handed the Request may read the body again (Starlette caches it); one that is
    # not, is the only reader, and the body is taken off the ASGI messages directly.
    read_body = _receive_body if not request_names else Request.body

    async def call_with_body(request: Request) -> Response:
        raw = await read_body(request)
        try:
            body = body_model.model_validate_json(raw or b"{}")
        except ValidationError as error:
            problems = [dict(item, loc=("body", *item["loc"])) for item in error.errors(include_url=False)]
            raise RequestValidationError(problems, body=raw) from None
        return await endpoint(**{body_name: body}, **{name: request for name in request_names})

    return call_with_body


async def _receive_body(request: Request) -> bytes:
    """The request body, read off `request.receive` once (Starlette's `Request.body` goes through an
    async generator and `aclosing` for every request: ~3 us of a ~30 us in-memory call)."""
    message = await request.receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        return message.get("body", b"")  # the whole body at once: every in-memory call, most socket ones
    chunks: list[bytes] = []
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await request.receive()


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
    # An endpoint may take FastAPI's `response: Response` to set cookies or headers on the answer (as
    # NeMo Gym agents pass a model server's cookies back); they are carried onto the answer we build.
    sub_response_names = [
        p.name
        for p in signature.parameters.values()
        if inspect.isclass(p.annotation) and issubclass(p.annotation, Response)
    ]

    def answer(result: Any, kwargs: dict[str, Any]) -> Response:
        response = _as_response(result)
        for name in sub_response_names:
            sub_response = kwargs.get(name)
            if isinstance(sub_response, Response) and sub_response is not response:
                response.headers.raw.extend(sub_response.headers.raw)
                if sub_response.status_code:
                    response.status_code = sub_response.status_code
        return response

    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            return answer(await endpoint(*args, **kwargs), kwargs)
    else:

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            return answer(await run_in_threadpool(endpoint, *args, **kwargs), kwargs)

    wrapper.__signature__ = signature.replace(return_annotation=inspect.Signature.empty)  # type: ignore[attr-defined]
    wrapper.__gym_wrapped__ = True  # type: ignore[attr-defined]
    return wrapper


def status_for(error: BaseException) -> int:
    """The HTTP status a server answers for one of our errors."""
    if isinstance(error, RequestTooLargeError):
        return 413
    if isinstance(error, InputError):
        return 400
    if isinstance(error, HTTPStatusError):
        # Something we called answered an error. Retryable (408/429/5xx): a bad gateway, try again.
        # Not retryable (another 4xx, e.g. an upstream 401): 424 Failed Dependency, a status the
        # classifier does not retry either, so the collector gives up after one attempt.
        return 502 if is_retryable_status(error.status_code) else 424
    if isinstance(error, ResponseTooLargeError):
        return 424  # another attempt gets the same body: like an upstream 4xx, not worth retrying
    if isinstance(error, (TransportError, InvalidResponseError)):
        return 502  # failures of something we called are a bad gateway, not our bug
    return 500


async def _nemo_gym_error_handler(request: Request, error: Exception) -> Response:
    status = status_for(error)
    headers = {"connection": "close"} if status == 413 else None  # the rest of the body is not worth reading
    return JSONBytesResponse(error_body(error), status_code=status, headers=headers)


async def _unexpected_error_handler(request: Request, error: Exception) -> Response:
    return JSONBytesResponse(error_body(error), status_code=500)


MAX_VALIDATION_PROBLEMS = 20


async def _validation_error_handler(request: Request, error: RequestValidationError) -> Response:
    # Each problem keeps FastAPI's shape (loc, msg, type, input) but `input` is only an excerpt:
    # echoing the input made a 200 MB request answer with a 600 MB 422.
    errors = error.errors()
    problems, detail = [], []
    for item in errors[:MAX_VALIDATION_PROBLEMS]:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{location or 'body'}: {_bounded(str(item.get('msg')))}")
        detail.append(
            {
                "loc": list(item.get("loc", ())),
                "msg": _bounded(str(item.get("msg"))),
                "type": item.get("type"),
                "input": excerpt(item.get("input")),
            }
        )
    more = f" (and {len(errors) - MAX_VALIDATION_PROBLEMS} more)" if len(errors) > MAX_VALIDATION_PROBLEMS else ""
    message = f"invalid request to {request.url.path}: " + "; ".join(problems) + more
    body = {"error": {"type": "RequestValidationError", "message": message}, "detail": detail}
    return JSONBytesResponse(body, status_code=422)


class ServerBootstrap(BaseModel):
    """What ng_run passes a child: its own resolved config, the head server and the registry."""

    name: str
    config: dict[str, Any]
    head_url: str
    registry: list[ServerInfo] = []
    config_key: str = ""
    """Dotted path of this server's block in the global config (`<instance>.<type>.<impl>`), for messages."""
    listen_fd: int | None = None
    """A listening socket the launcher bound to the server's address and passed down, which the server
    serves instead of binding the port itself (None: bind it, as on a Ray node)."""


class SimpleServer(BaseModel):
    """Base of every server. Subclasses declare `config: <TheirConfig>` and add routes in `setup_webserver`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: BaseServerConfig
    server_client: ServerClient

    server_kind: ClassVar[str] = "server"
    unknown_config_keys: ClassVar[str] = "error"
    """What a key of the server's YAML block that its config class does not declare does: "error"
    (a ConfigError naming it, most likely a typo) or "warn" (one warning line on stderr, then the key is
    ignored: NeMo Gym's own config classes ignore undeclared keys, and its environments' YAMLs rely on it)."""

    @property
    def session_cookie_name(self) -> str:
        # One cookie name per server instance, so cookies from different servers never collide.
        return f"{type(self).__name__}___{self.config.name}"

    _own_process: bool = False
    """True when `run_webserver` serves it as its process's one server: a ConfigError from
    `on_startup` then ends the process with exit 2 (in a test's thread it is raised as it is)."""

    async def on_startup(self) -> None:
        """Acquire resources (pools, models). Called once inside the server's event loop; a ConfigError
        it raises is reported by the launcher as one line naming the setting."""

    async def on_shutdown(self) -> None:
        """Release what `on_startup` acquired."""

    def setup_webserver(self) -> FastAPI:
        app = new_app(title=f"{type(self).__name__} {self.config.name}")
        self.install_server_machinery(app)
        return app

    def install_server_machinery(self, app: FastAPI) -> None:
        """What every server's app has: the lifespan (`on_startup`/`on_shutdown`, the client closed),
        sessions, request limits, cancel-on-disconnect, the Host guard, our error answers and
        `/health`. Done once per app (a second call does nothing), so it can also be given an app an
        environment built itself with `FastAPI()` (NeMo Gym's `setup_session_middleware`)."""
        if getattr(app.state, "nemo_gym_server_machinery", False):
            return
        app.state.nemo_gym_server_machinery = True

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            try:
                await self.on_startup()
            except ConfigError as error:
                if not self._own_process:
                    raise
                # A bad setting found while starting (a model file that is not there): one line for
                # the launcher to report, exit 2, and not uvicorn's traceback of the lifespan.
                print(f"{CONFIG_ERROR_PREFIX}{error}", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(2)
            try:
                yield
            finally:
                await self.on_shutdown()
                await self.server_client.aclose()

        app.router.lifespan_context = lifespan
        app.add_middleware(SessionIdMiddleware, cookie_name=self.session_cookie_name)
        app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=self.config.max_request_body_bytes)
        app.add_middleware(CancelOnDisconnect)  # a caller that gives up stops the work it asked for
        # Outermost: a request from a web page is refused before any work (or a session) is spent on it.
        app.add_middleware(
            RequestGuard,
            bound_host=self.config.host,
            allowed_hosts=self.config.allowed_hosts,
            setting=f"allowed_hosts of server {self.config.name!r}",
        )
        app.add_exception_handler(NemoGymError, _nemo_gym_error_handler)
        app.add_exception_handler(RequestValidationError, _validation_error_handler)  # type: ignore[arg-type]
        app.add_exception_handler(Exception, _unexpected_error_handler)

        # The process id lets a launcher tell its own child from whatever else answers on that port:
        # a port another process took between being picked and our child binding it answers too.
        health = {"status": "ok", "name": self.config.name, "kind": self.server_kind, "pid": os.getpid()}

        async def health_check() -> dict[str, Any]:
            return health

        app.get("/health")(health_check)
        app.get("/")(health_check)

    def setup_session_middleware(self, app: FastAPI) -> None:
        """NeMo Gym's name for giving an app its session cookie; here it installs all of
        `install_server_machinery`, which an app made with a plain `FastAPI()` would otherwise lack."""
        self.install_server_machinery(app)

    @classmethod
    def config_class(cls) -> type[BaseServerConfig]:
        return cls.model_fields["config"].annotation  # type: ignore[return-value]

    @classmethod
    def from_bootstrap(cls, bootstrap: ServerBootstrap) -> SimpleServer:
        config = cls.checked_config(bootstrap)
        return cls(config=config, server_client=ServerClient(bootstrap.head_url, registry=bootstrap.registry))

    @classmethod
    def checked_config(cls, bootstrap: ServerBootstrap) -> BaseServerConfig:
        """The server's config, validated; ConfigError (one line) for a key its config class does not
        declare, most likely a typo, or a value of the wrong type. Only this class knows its fields."""
        config_class = cls.config_class()
        values = bootstrap.config | {"name": bootstrap.name}
        unknown = find_unknown_keys(
            config_class, values, prefix=bootstrap.config_key, also_known=SERVER_BLOCK_METADATA_KEYS
        )
        if unknown and cls.unknown_config_keys != "warn":
            raise ConfigError(describe_unknown_keys(unknown))
        if unknown:
            print(f"warning: {describe_unknown_keys(unknown)} (ignored)", file=sys.stderr, flush=True)
        try:
            return config_class.model_validate(values)
        except ValidationError as error:
            problems = []
            for item in error.errors(include_url=False):
                path = ".".join([bootstrap.config_key, *map(str, item["loc"])]).lstrip(".")
                value = item.get("input")
                # Echo only a plain value, never a whole block or anything under a secret-looking name.
                shown = isinstance(value, (str, int, float, bool)) and not _SECRET_NAME.search(path.rpartition(".")[2])
                problems.append(f"{path}: {item['msg']}" + (f" (got {value!r:.80})" if shown else ""))
            raise ConfigError("; ".join(problems)) from None

    @classmethod
    def run_webserver(cls) -> None:
        """Process entry point: read the bootstrap ng_run gave us, build the app, serve until signalled."""
        import uvicorn

        try:
            bootstrap = ServerBootstrap.model_validate_json(read_bootstrap())  # also: exit when the launcher does
        except NotLaunchedError as error:
            sys.exit(f"error: {cls.__name__} must be started by ng_run ({error})")
        raise_open_file_limit()
        try:
            server = cls.from_bootstrap(bootstrap)
        except ConfigError as error:
            print(f"{CONFIG_ERROR_PREFIX}{error}", file=sys.stderr, flush=True)
            sys.exit(2)
        server._own_process = True
        app = server.setup_webserver()
        config = uvicorn.Config(
            LeanApp.of(app, in_memory=False),
            host=server.config.host,
            port=server.config.port,
            loop="uvloop",
            timeout_graceful_shutdown=2,
            access_log=False,
            log_level=os.environ.get("NEMO_GYM_LOG_LEVEL", "warning"),
            backlog=SERVER_LISTEN_BACKLOG,
            **uvicorn_protocol_options(server.config),
        )
        served = uvicorn.Server(config)
        listener = None if bootstrap.listen_fd is None else [socket.socket(fileno=bootstrap.listen_fd)]
        tune_server_gc()
        served.run(sockets=listener)
        if not served.started:
            sys.exit(3)  # as uvicorn.run does when the server never started (its STARTUP_FAILURE)


def uvicorn_protocol_options(config: BaseServerConfig) -> dict[str, Any]:
    """uvicorn settings of the HTTP protocol every server runs with (tests serve with them too):
    httptools with our request deadlines, and keep-alive longer than our clients'."""
    from nemo_gym.servers.read_deadlines import deadline_protocol  # uvicorn: only for a served socket

    return {
        "http": deadline_protocol(config.request_head_timeout_s, config.request_body_timeout_s),
        "timeout_keep_alive": SERVER_KEEPALIVE_S,
    }
