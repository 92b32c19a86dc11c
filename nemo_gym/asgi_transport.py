"""Call a server's ASGI app in memory instead of over HTTP: the transport of co-located collection.

A co-located stack (`nemo_gym.colocated`) runs the agent and resources servers inside the collector's
process. Their registry rows carry an `inproc://<name>` URL; `ColocatedHttpClient` is the one place
that decides how a request travels: a URL of an app living in this process is served in memory,
anything else goes over HTTP as before. In memory, a call to a route with a direct handler (every call
a rollout makes) is served by `nemo_gym.servers.direct_calls` with the app's own guard, session and
error layers, without the ASGI round trip; any other call goes through the app (scope built here, body
handed over whole, start/body messages collected). Everything above `_send_once` (retry policy, `HttpResult`, status
errors, cookies threaded by hand, replica routing) is shared with the HTTP path, so both behave
alike; what differs is only what a socket and an HTTP parser would have done:

  * no socket: a `Host` header naming the server's own address is sent (its request guard checks it);
  * the answer's `Set-Cookie` headers are parsed into `HttpResult.cookies` as aiohttp does;
  * deadlines: the attempt must finish within `total_s` (else `read_s`), as one read of a body that
    arrives at once; a late answer is a `RequestTimeoutError` with the HTTP path's wording. The timer
    is armed only once the call waits on something (most never do: a tool, /verify);
  * an exception that escapes the app (environment code that crashed) is answered as uvicorn does:
    500 if nothing was sent yet, else a broken response (`ServerUnreachableError`); it never reaches
    the caller as its own exception, so one crashed rollout never stops the collector;
  * cancellation: the app runs in the caller's task, so cancelling a rollout (its deadline, Ctrl+C)
    cancels the agent and everything it awaits, as a dropped connection does over HTTP.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Coroutine, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.types import ASGIApp, Message

from nemo_gym import http11
from nemo_gym.aio import TaskDeadline
from nemo_gym.client import (
    CONNECT_ONLY_RETRY,
    HttpClient,
    HttpResult,
    PoolLimits,
    RetryPolicy,
    Timeouts,
    _size,
)
from nemo_gym.errors import (
    NemoGymError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ServerStartupError,
    ServerUnreachableError,
)
from nemo_gym.servers.direct_calls import Answer, DirectCalls
from nemo_gym.servers.lean_app import LeanApp

_T = TypeVar("_T")
INPROC_SCHEME = "inproc://"
"""Registry URLs of servers whose app lives in this process: `inproc://<instance name>`."""


def inproc_url(name: str) -> str:
    return f"{INPROC_SCHEME}{name}"


@dataclass(eq=False)
class LocalApp:
    """One server's ASGI app, and the address it would listen on (for its Host guard and `scope["server"]`).

    Requests go to `handler`: the app's lean twin (`LeanApp`) when it is one of our servers' apps,
    else the app itself; the lifespan always goes to `app`."""

    name: str
    app: ASGIApp
    host: str = "127.0.0.1"
    port: int = 0
    host_header: bytes = field(init=False)
    handler: ASGIApp = field(init=False)
    direct_calls: DirectCalls | None = field(init=False)
    """The calls served without the ASGI round trip (`nemo_gym.servers.direct_calls`); None: all go to `handler`."""

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        self.host_header = f"{host}:{self.port}".encode("latin-1")
        self.handler = LeanApp.of(self.app, in_memory=True)
        self.direct_calls = self.handler.direct_calls if isinstance(self.handler, LeanApp) else None


class LocalApps:
    """The apps served in this process, by instance name, and their lifespans (startup/shutdown)."""

    def __init__(self) -> None:
        self.apps: dict[str, LocalApp] = {}
        self._lifespans: list[_Lifespan] = []

    def add(self, local: LocalApp) -> None:
        self.apps[local.name] = local

    async def start(self) -> None:
        """Run each app's startup (its `on_startup`) in order; when one fails, `stop` ends the ones started."""
        for local in self.apps.values():
            lifespan = _Lifespan(local)
            await lifespan.start()
            self._lifespans.append(lifespan)

    async def stop(self) -> None:
        """Run each started app's shutdown, last started first."""
        while self._lifespans:
            await self._lifespans.pop().stop()


class _Lifespan:
    """Drives the ASGI lifespan protocol of one app on its own task, as uvicorn does."""

    def __init__(self, local: LocalApp):
        self.local = local
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._failure = ""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lifespan-{self.local.name}")
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started

    async def stop(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), 30)
        except (TimeoutError, NemoGymError):
            pass  # a server that cannot shut down cleanly must not keep the collector from ending
        finally:
            if not self._task.done():
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                _resolve(self._started)
            elif kind == "lifespan.startup.failed":
                self._failure = message.get("message", "")  # the error itself is re-raised just after
            elif kind == "lifespan.shutdown.complete":
                _resolve(self._stopped)
            elif kind == "lifespan.shutdown.failed":
                _resolve(self._stopped)

        try:
            await self.local.app(scope, self._inbox.get, send)
        except BaseException as error:
            # Starlette re-raises a startup error after reporting it: hand the error itself to `start`.
            for future in (self._started, self._stopped):
                if not future.done():
                    if isinstance(error, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            _fail(self._started, self._failure, self.local.name)
            _resolve(self._stopped)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None], message: str, name: str) -> None:
    if not future.done():
        future.set_exception(ServerStartupError(f"server {name!r} did not start: {message or 'its lifespan ended'}"))


def _crashed() -> Answer:
    """What uvicorn answers when the app raised before sending anything."""
    return Answer(500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error")


def _http_scope(
    local: LocalApp, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": (local.host, local.port),
        "state": {},
    }


class _RequestBody:
    """The `receive` of one in-memory request: its whole body at once, then (asked again, by a disconnect
    watcher) a wait until the call ends: the caller is there until then, as a live connection is; a caller
    that goes away cancels its task, and the app with it."""

    __slots__ = ("body", "delivered", "ended", "finished")

    def __init__(self, body: bytes):
        self.body = body
        self.delivered = False
        self.ended = False
        self.finished: asyncio.Future[None] | None = None

    async def receive(self) -> Message:
        if not self.delivered:
            self.delivered = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if not self.ended:
            if self.finished is None:
                self.finished = asyncio.get_running_loop().create_future()
            await self.finished
        return {"type": "http.disconnect"}

    def end(self) -> None:
        self.ended = True
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)


async def call_local(
    local: LocalApp,
    method: str,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> Answer:
    """One request to `local`, in the caller's task: (status, raw headers, body). A call to a route with a
    direct handler is served without the ASGI round trip (`nemo_gym.servers.direct_calls`), any other
    through the app (`call_app`); the answers are the same."""
    direct = local.direct_calls
    if direct is None or query:
        return await call_app(local, method, path, query, headers, body)
    scope = _http_scope(local, method, path, query, headers)
    target = direct.target(scope)
    if target is None:
        return await call_app(local, method, path, query, headers, body)
    if not direct.admits(scope, len(body)):  # the app refuses it before any route: let it answer
        return await call_app(local, method, path, query, headers, body)
    request_body = _RequestBody(body)
    try:
        outcome = await direct.serve(target, scope, request_body.receive)
    except Exception as error:  # noqa: BLE001 - the app's crash is answered, never the collector's
        _log_crash(local.name, method, path, error)
        return _crashed()
    finally:
        request_body.end()
    if isinstance(outcome, Answer):
        return outcome
    return await _serve(local, outcome, scope, _RequestBody(body), method, path)


async def call_app(
    local: LocalApp,
    method: str,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> Answer:
    """One request to `local`'s app (its lean twin), in the caller's task: (status, raw headers, body)."""
    scope = _http_scope(local, method, path, query, headers)
    return await _serve(local, local.handler, scope, _RequestBody(body), method, path)


async def _serve(
    local: LocalApp, app: ASGIApp, scope: dict[str, Any], request_body: _RequestBody, method: str, path: str
) -> Answer:
    """Run `app` on one request and collect its answer.

    An exception escaping the app after its answer was complete is dropped (Starlette re-raises
    what its error handler already answered, for servers to log); before any answer it becomes a
    500, as uvicorn sends; halfway through an answer it is a broken connection."""
    status = 0
    response_headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []
    complete = False

    async def send(message: Message) -> None:
        nonlocal status, response_headers, complete
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
            response_headers = list(message.get("headers", ()))
        elif kind == "http.response.body":
            piece = message.get("body", b"")
            if piece:
                chunks.append(piece)
            if not message.get("more_body", False):
                complete = True

    try:
        await app(scope, request_body.receive, send)
    except Exception as error:  # noqa: BLE001 - the app's crash is answered, never the collector's
        if not complete:
            if status:
                raise ServerUnreachableError(
                    f"connection to {INPROC_SCHEME}{local.name}{path} failed: the server broke off its answer "
                    f"({type(error).__name__}: {error})"
                ) from error
            _log_crash(local.name, method, path, error)
            return _crashed()
        if status >= 500:
            _log_crash(local.name, method, path, error)
    finally:
        request_body.end()
    if not complete:
        raise ServerUnreachableError(
            f"connection to {INPROC_SCHEME}{local.name}{path} failed: the server sent no complete answer"
        )
    return Answer(status, response_headers, chunks[0] if len(chunks) == 1 else b"".join(chunks))


_JSON_HEADER = ("Content-Type", "application/json")
_JSON_CONTENT_TYPE = (b"content-type", b"application/json")  # what `HttpClient.request` sends with every body


def _raw_header(key: str, value: str) -> tuple[bytes, bytes]:
    return key.lower().encode("latin-1"), value.encode("latin-1")


def _log_crash(name: str, method: str, path: str, error: BaseException) -> None:
    # The co-located twin of a server's own log line: the collector's stderr, one line, no traceback.
    print(f"({name}) exception in {method} {path}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


def parse_set_cookies(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """`name -> value` of every `Set-Cookie` of an ASGI header list (see `http11.parse_set_cookies`)."""
    return http11.parse_set_cookies([value.decode("latin-1") for key, value in headers if key.lower() == b"set-cookie"])


class RawHeaders(Mapping[str, str]):
    """An answer's headers as a case-insensitive mapping read straight off the ASGI list (the first
    value of a repeated name), built only when looked at: most answers are never asked for a header."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for key, value in self._raw:
            if key.lower() == wanted:
                return value.decode("latin-1")
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (key.decode("latin-1") for key, _ in self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def getall(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [value.decode("latin-1") for key, value in self._raw if key.lower() == wanted]


@types.coroutine
def _resume(call: Coroutine[Any, Any, _T], waiting_on: Any) -> Generator[Any, Any, _T]:
    """Await the rest of `call`, a coroutine whose first step already ran and is waiting on `waiting_on`:
    what `await` does with a coroutine, from its second step on (each value it waits on goes up to the task,
    each result or exception, a cancellation included, goes back down to it)."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            call.close()
            raise
        except BaseException as error:  # noqa: BLE001 - thrown into the task (cancellation): `call` decides
            try:
                waiting_on = call.throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = call.send(sent)
            except StopIteration as done:
                return done.value


class ColocatedHttpClient(HttpClient):
    """An `HttpClient` that serves `inproc://<name>` URLs by calling that server's app in memory."""

    def __init__(
        self,
        local: LocalApps,
        *,
        timeouts: Timeouts = Timeouts(),
        limits: PoolLimits = PoolLimits(),
        retry: RetryPolicy = CONNECT_ONLY_RETRY,
    ):
        super().__init__(timeouts=timeouts, limits=limits, retry=retry)
        self.local = local

    def request_cap(self, url: str) -> int | None:
        return None if url.startswith(INPROC_SCHEME) else super().request_cap(url)  # in memory: no connection

    async def _until_deadline(
        self,
        call: Coroutine[Any, Any, Answer],
        waiting_on: Any,
        deadline: float,
        method: str,
        url: str,
        deadlines: Timeouts,
    ) -> Answer:
        """The rest of an in-memory `call` that waits on something, ended when `deadline` (loop time) passes."""
        timer = TaskDeadline(deadline, asyncio.get_running_loop())
        try:
            return await _resume(call, waiting_on)
        except asyncio.CancelledError:
            if timer.fired():
                limit_s = deadlines.total_s if deadlines.total_s is not None else deadlines.read_s
                which = "no complete answer" if deadlines.total_s is not None else "no byte"
                raise RequestTimeoutError(f"{method} {url} timed out: {which} for {limit_s:g} s") from None
            raise
        finally:
            timer.cancel()

    async def _send_once(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
        timeouts: Timeouts | None,
        deadlines: Timeouts,
    ) -> HttpResult:
        if not url.startswith(INPROC_SCHEME):
            return await super()._send_once(method, url, data, headers, params, timeouts, deadlines)
        name, slash, path = url[len(INPROC_SCHEME) :].partition("/")
        path = slash + path if slash else "/"
        path, _, query = path.partition("?")
        local = self.local.apps.get(name)
        if local is None:
            raise ServerUnreachableError(
                f"cannot connect to {url}: no server {name!r} in this process", connect_failed=True
            )
        body = data or b""
        raw = [(b"host", local.host_header), (b"content-length", str(len(body)).encode())]
        for key, value in headers.items():
            raw.append(_JSON_CONTENT_TYPE if (key, value) == _JSON_HEADER else _raw_header(key, value))
        query_bytes = query.encode("latin-1")
        if params:
            query_bytes += (b"&" if query_bytes else b"") + urlencode(params).encode("latin-1")
        limit_s = deadlines.total_s if deadlines.total_s is not None else deadlines.read_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        call = call_local(local, method, path, query_bytes, raw, body)
        # Run the call's first step here: most in-memory calls (a tool, /verify) never wait on anything and
        # end within it, and a call that does not wait cannot be interrupted by a timer anyway. Only one
        # that waits gets its deadline timer (from the call's start): ~3 us of a ~19 us call saved.
        try:
            waiting_on = call.send(None)
        except StopIteration as done:
            status, answer_headers, answer, cookies = done.value
        else:
            status, answer_headers, answer, cookies = await self._until_deadline(
                call, waiting_on, deadline, method, url, deadlines
            )
        cap = self.limits.max_response_bytes
        if len(answer) > cap:
            raise ResponseTooLargeError(
                f"{method} {url}: the answer is {len(answer)} bytes, over the {_size(cap)} response cap",
                url=url,
                limit_bytes=cap,
            )
        header_map = RawHeaders(answer_headers)
        if cookies is None:
            cookies = parse_set_cookies(answer_headers)
        return HttpResult(status, answer, header_map, cookies, url)
