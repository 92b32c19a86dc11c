"""HTTP between our processes: a pooled client with explicit limits, and name -> URL resolution.

Layers, bottom up:
  * `nemo_gym.http11` a lean HTTP/1.1 transport on asyncio for plain `http://` URLs (every hop
                   between our processes): ~4 KB of objects per request in flight instead of aiohttp's ~11 KB,
                   which is what a collector holding 16k rollouts in flight pays for.
  * `HttpClient`   one pooled client per process: `http11` for `http://`, an aiohttp session for
                   `https://` and URLs `http11` does not take (userinfo). Not httpx's default
                   transport: its pool costs O(queued requests) per request, which is what stalled
                   NeMo Gym at 16k in-flight rollouts. Foreign exceptions are translated into ours here.
  * `ServerClient` resolves a server instance name to its URL through the head server's registry.

Retries: `HttpClient.request` retries only what its `RetryPolicy` allows (`nemo_gym.retry`: one
classifier and one backoff formula for every layer), a bounded number of times, honouring
`Retry-After`. Internal hops use `CONNECT_ONLY_RETRY`: a refused connection is retried (nothing was
delivered) but a request that may have reached the server is not replayed; whole rollouts are
retried by the collector, one layer up.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import socket
import time
from collections.abc import Awaitable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field

from nemo_gym import http11
from nemo_gym.errors import (
    HTTPStatusError,
    InvalidResponseError,
    ReplicaGoneError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ServerUnreachableError,
    TransportError,
    UnknownServerError,
)
from nemo_gym.replica_routing import DOWN_RECHECK_S, ReplicaSet
from nemo_gym.retry import CONNECT_ONLY_RETRY as CONNECT_ONLY_RETRY  # re-exported: policies are named
from nemo_gym.retry import NO_RETRY as NO_RETRY  # through the client by servers and agents
from nemo_gym.retry import UPSTREAM_RETRY as UPSTREAM_RETRY
from nemo_gym.retry import RetryPolicy as RetryPolicy
from nemo_gym.retry import classify_error, classify_status

if TYPE_CHECKING:
    import aiohttp


def _aiohttp() -> ModuleType:
    """aiohttp, imported on first use: it only carries https:// and URLs `http11` does not take, and
    importing it (it builds two SSL contexts at import) was ~20% of a collector's start-up, which every
    rollout of a plain http:// stack waited for and none used."""
    import aiohttp

    return aiohttp


def _connect_timeout_error() -> type[BaseException] | tuple[()]:
    # aiohttp >= 3.10 tells a connect timeout from a read timeout; older versions never claim one.
    return getattr(_aiohttp(), "ConnectionTimeoutError", ())


class Timeouts(BaseModel):
    """Deadlines for one HTTP request. Every request has them: a dead peer must surface as an error."""

    model_config = ConfigDict(frozen=True)

    connect_s: float = Field(30.0, gt=0)
    """Time to open a connection (TCP connect, and TLS for https). A refused connection fails at once; this
    only bounds a peer that is black-holed or so saturated it cannot accept for 30 s. Waiting for a free
    connection under `PoolLimits.max_connections_per_host` is not part of it: that queue is the client's
    own, and a request waits there as it would for an answer, up to `read_s` (and `total_s`)."""
    read_s: float = Field(900.0, gt=0)
    """Time between bytes of the response. 900 s: a long generation or a slow verifier answers late
    but must not hang forever."""
    total_s: float | None = Field(None, gt=0)
    """Deadline for one attempt, from sending the request to the last byte of the answer (None = no
    such deadline, `read_s` alone). Bounds a peer that trickles bytes, which `read_s` never cuts."""
    body_idle_s: float | None = Field(None, gt=0)
    """Once the answer's head is in, the longest silence between two pieces of its body (None =
    `read_s`). Shorter than `read_s` for an upstream that is silent while it generates (its head comes
    last) but should never stall halfway through a body; keepalive bytes reset it."""


DEFAULT_MAX_RESPONSE_BYTES = 128 * 1024 * 1024


class PoolLimits(BaseModel):
    """Connection pool sizing and the largest answer read. Keep-alive is shorter than the servers'
    (30 s) so we never reuse a socket the server has already closed."""

    model_config = ConfigDict(frozen=True)

    max_connections: int = Field(100_000, ge=1)
    """Total pooled connections. Large on purpose: concurrency is bounded by the collector, not by
    a hidden pool cap (aiohttp's default of 100 silently throttled NeMo Gym users)."""
    max_connections_per_host: int = Field(4096, ge=0)
    """Connections open to one server (host:port) at once; more requests wait for one to free up (0 = no
    cap). 4096 is Linux's default listen queue (`net.core.somaxconn`): a server that receives more new
    connections at once than its queue holds has the kernel drop the rest, and their clients retry
    1, 3, 7... s later. With 16,384 rollouts in flight that cost ~6% of the rollouts (connect timeouts) and a
    quarter of the throughput; queued in the pool instead, every one succeeds."""
    keepalive_s: float = Field(15.0, gt=0)
    max_response_bytes: int = Field(DEFAULT_MAX_RESPONSE_BYTES, ge=1)
    """Largest response body read (128 MiB). A longer one fails that call with `ResponseTooLargeError`
    (not retried): refused from its Content-Length when it has one, else reading stops at the cap, so
    a runaway peer costs at most this much memory per call. Model servers cap their upstream's answers
    at 64 MiB, so a legitimate answer between our servers (a rollout row with every turn) stays well
    under it."""


class HttpResult:
    """A fully read HTTP response."""

    __slots__ = ("status", "body", "headers", "cookies", "url")

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str], cookies: dict[str, str], url: str):
        self.status, self.body, self.headers, self.cookies, self.url = status, body, headers, cookies, url

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as error:
            raise InvalidResponseError(
                f"{self.url} answered {self.status} with a body that is not JSON: {self.text[:200]!r}"
            ) from error

    def raise_for_status(self) -> HttpResult:
        if not self.ok:
            raise HTTPStatusError(
                f"{self.url} answered HTTP {self.status}: {error_excerpt(self.body)}",
                status_code=self.status,
                body=self.text,
                retry_after=parse_retry_after(self.headers.get("Retry-After")),
            )
        return self


def error_excerpt(body: bytes, limit: int = 500) -> str:
    """A short, readable account of an error body: the `error.message` of an OpenAI-style or
    nemo_gym error body (so errors relayed across several servers do not nest JSON in JSON),
    else the start of the body."""
    message: object = None
    if body[:1] == b"{":
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
    text = message if isinstance(message, str) and message else body.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def http_url(host: str, port: int) -> str:
    """The base URL of a server listening on host:port; an IPv6 literal is bracketed (RFC 3986), else the
    port would read as part of the address (a Ray node may report an IPv6 address)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def dumps(payload: Any) -> bytes:
    """JSON-encode a request body; pydantic models are dumped with their own serializer."""
    if isinstance(payload, BaseModel):
        return payload.model_dump_json(exclude_unset=True).encode()
    encoded = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    # orjson hands back its whole write buffer: 4 KiB for a 500-byte row, ~10x the length for text-heavy
    # bodies. A request body lives as long as its call (a collector's /run: the whole rollout), so keep an
    # exact-size copy (~1.5 us): at 16k rollouts in flight the buffers alone were ~60 MB of the collector.
    return memoryview(encoded).tobytes()


def _enable_tcp_keepalive(sock: socket.socket) -> None:
    # OS-level liveness: a silently dropped peer is detected in ~90 s instead of never.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class HttpClient:
    """One pooled async HTTP client. Create it inside a running event loop; close it with `aclose`."""

    def __init__(
        self,
        *,
        timeouts: Timeouts = Timeouts(),
        limits: PoolLimits = PoolLimits(),
        retry: RetryPolicy = CONNECT_ONLY_RETRY,
    ):
        self.timeouts, self.limits, self.retry = timeouts, limits, retry
        self._pool: http11.ConnectionPool | None = None
        """The lean transport's pool, made on first use (it belongs to the running loop)."""
        self._session: aiohttp.ClientSession | None = None
        """The aiohttp session for what `http11` does not carry, made on first use (see `_aiohttp`)."""

    def request_cap(self, url: str) -> int | None:
        """How many requests to the server at `url` this client carries at once (one per connection, up to
        `limits.max_connections_per_host`); None = no cap. Any more wait in the pool for a connection."""
        return self.limits.max_connections_per_host or None

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            aiohttp = _aiohttp()
            limits = self.limits
            connector_kwargs: dict[str, Any] = dict(
                limit=limits.max_connections,
                limit_per_host=limits.max_connections_per_host,
                keepalive_timeout=limits.keepalive_s,
                ttl_dns_cache=None,
            )
            if "socket_factory" in inspect.signature(aiohttp.TCPConnector).parameters:
                connector_kwargs["socket_factory"] = _keepalive_socket_factory
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**connector_kwargs),
                # Cookies are threaded by hand (per rollout), never shared through a jar.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=_client_timeout(self.timeouts),
                json_serialize=lambda obj: dumps(obj).decode(),
                auto_decompress=True,
            )
        return session

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> HttpResult:
        """Send one request, retrying per `retry`; returns the response even when it is an error status
        that the policy does not retry (call `raise_for_status`)."""
        policy = retry or self.retry
        data = None if json is None else dumps(json)
        send_headers = {"Content-Type": "application/json"} if data is not None else {}
        if headers:
            send_headers.update(headers)
        if cookies:
            send_headers["Cookie"] = "; ".join([f"{key}={value}" for key, value in cookies.items()])
        deadlines = timeouts or self.timeouts
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self._send_once(method, url, data, send_headers, params, timeouts, deadlines)
            except TransportError as error:
                if not policy.should_retry(classify_error(error), attempt):
                    if attempt > 1:
                        error.args = (f"{error.args[0]} (after {attempt} attempts)",)
                    raise
                await asyncio.sleep(policy.delay(attempt))
                continue
            if result.status >= 300:  # the 2xx hot path classifies nothing
                decision = classify_status(result.status, parse_retry_after(result.headers.get("Retry-After")))
                if policy.should_retry(decision, attempt):
                    await asyncio.sleep(policy.delay(attempt, decision.retry_after))
                    continue
            return result

    def _send_once(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
        timeouts: Timeouts | None,
        deadlines: Timeouts,
    ) -> Awaitable[HttpResult]:
        """One attempt (`timeouts`: this call's own, None = the client's; `deadlines`: those in force).
        A plain function handing back the transport's coroutine: a frame of its own would be held for
        the whole call (a collector's /run: the whole rollout) for every request in flight."""
        if url.startswith("http://"):
            target = _lean_target(url, params)
            if target is not None:
                return http11.request(
                    self._pool or self._lean_pool(),
                    method,
                    url,
                    target,
                    _request_head(method, target[2], target[3], headers, data),
                    data,
                    deadlines,
                    self.limits.max_response_bytes,
                    _lean_result,
                )
        return self._send_aiohttp(method, url, data, headers, params, timeouts, deadlines)

    async def _send_aiohttp(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
        timeouts: Timeouts | None,
        deadlines: Timeouts,
    ) -> HttpResult:
        session = self._aiohttp_session()
        aiohttp = _aiohttp()
        kwargs: dict[str, Any] = {"data": data, "headers": headers, "params": params}
        if timeouts is not None:
            kwargs["timeout"] = _client_timeout(timeouts)
        try:
            async with session.request(method, url, **kwargs) as response:
                length = response.content_length
                if (
                    length is not None
                    and length <= self.limits.max_response_bytes
                    and "Content-Encoding" not in response.headers
                    and (deadlines.body_idle_s is None or response.content.is_eof())
                ):
                    # The hot path: a known, small, uncompressed body (already all in, when a body idle
                    # timeout is set: on loopback the head and a small body arrive together).
                    body = await response.read()
                else:
                    body = await self._read_bounded(response, method, url, length, deadlines.body_idle_s)
                cookies = {key: morsel.value for key, morsel in response.cookies.items()}
                return HttpResult(response.status, body, response.headers, cookies, url)
        except aiohttp.ClientConnectorError as error:
            raise ServerUnreachableError(
                f"cannot connect to {url}: {error.os_error or error}", connect_failed=True
            ) from error
        except (TimeoutError, aiohttp.ServerTimeoutError) as error:
            raise RequestTimeoutError(
                f"{method} {url} timed out: {_which_deadline(error, deadlines)}",
                connect_timed_out=isinstance(error, _connect_timeout_error()),
            ) from error
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
            raise ServerUnreachableError(f"connection to {url} failed: {type(error).__name__}: {error}") from error
        except aiohttp.ClientError as error:
            raise ServerUnreachableError(f"{method} {url} failed: {type(error).__name__}: {error}") from error

    def _lean_pool(self) -> http11.ConnectionPool:
        pool = self._pool
        if pool is None:
            limits = self.limits
            pool = self._pool = http11.ConnectionPool(
                max_connections=limits.max_connections,
                max_per_host=limits.max_connections_per_host,
                keepalive_s=limits.keepalive_s,
            )
        return pool

    async def _read_bounded(
        self, response: aiohttp.ClientResponse, method: str, url: str, length: int | None, idle_s: float | None
    ) -> bytes:
        """The body, read piece by piece: refused at once if its Content-Length is over the cap, else
        reading stops at the cap (a decompressed body is counted as it expands); with `idle_s`, a
        silence that long between two pieces fails the call."""
        cap = self.limits.max_response_bytes
        if length is not None and length > cap:
            raise ResponseTooLargeError(
                f"{method} {url}: the answer is {length} bytes (Content-Length), over the {_size(cap)} "
                "response cap; refused unread",
                url=url,
                limit_bytes=cap,
            )
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = asyncio.timeout(idle_s)
        try:
            async with deadline:
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > cap:
                        raise ResponseTooLargeError(
                            f"{method} {url}: the answer is over the {_size(cap)} response cap; "
                            f"stopped reading at {size} bytes",
                            url=url,
                            limit_bytes=cap,
                        )
                    chunks.append(chunk)
                    if idle_s is not None:
                        deadline.reschedule(loop.time() + idle_s)
        except TimeoutError:
            if not deadline.expired():
                raise  # the attempt's own deadline (`total_s`), reported by the caller
            raise RequestTimeoutError(
                f"{method} {url} timed out: no byte for {idle_s:g} s after the first {size} bytes of the answer "
                "(read idle timeout)"
            ) from None
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._session is not None:
            await self._session.close()


_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def _lean_result(status: int, headers: http11.ResponseHeaders, body: bytes, url: str) -> HttpResult:
    cookies = http11.parse_set_cookies(headers.getall("Set-Cookie")) if "Set-Cookie" in headers else {}
    return HttpResult(status, body, headers, cookies, url)


def _lean_target(url: str, params: Mapping[str, str] | None) -> tuple[str, int, str, str] | None:
    """(host, port, request target, Host header) of a plain http:// URL, or None for one the lean
    transport leaves to aiohttp (userinfo in it, or one that does not parse)."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        return None
    host = parts.hostname
    if not host or "@" in parts.netloc:
        return None
    path = parts.path or "/"
    if not path.isascii() or " " in path:
        path = quote(path, safe=_PATH_SAFE)
    query = parts.query
    if params:
        query = f"{query}&{urlencode(params)}" if query else urlencode(params)
    if query:
        path = f"{path}?{query}"
    bracketed = f"[{host}]" if ":" in host else host
    return host, port, path, bracketed if port == 80 else f"{bracketed}:{port}"


def _request_head(method: str, path: str, host_header: str, headers: Mapping[str, str], data: bytes | None) -> bytes:
    """The request line and headers. No Accept-Encoding: between our processes an identity body costs
    least, and a compressed answer is still decoded."""
    lines = [f"{method} {path} HTTP/1.1\r\n"]
    have_host = False
    for key, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in key or "\r" in key or ":" in key:
            raise ValueError(f"invalid HTTP header {key!r}: {value!r}")
        lower = key.lower()
        if lower == "content-length":
            continue  # ours is the body's length
        if lower == "host":
            have_host = True
        lines.append(f"{key}: {value}\r\n")
    if not have_host:
        lines.insert(1, f"Host: {host_header}\r\n")
    if data is not None:
        lines.append(f"Content-Length: {len(data)}\r\n\r\n")
    elif method in _BODYLESS_METHODS:
        lines.append("\r\n")
    else:
        lines.append("Content-Length: 0\r\n\r\n")
    return "".join(lines).encode("utf-8")


def _which_deadline(error: BaseException, deadlines: Timeouts) -> str:
    if isinstance(error, _connect_timeout_error()):
        return f"no connection within {deadlines.connect_s:g} s"
    if isinstance(error, _aiohttp().ServerTimeoutError):
        return f"no byte for {deadlines.read_s:g} s"
    if deadlines.total_s is not None:
        return f"no complete answer within {deadlines.total_s:g} s"
    return type(error).__name__


def _client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    # aiohttp's `connect` also covers the wait for a pooled connection: as in our own pool (`nemo_gym.http11`),
    # that wait is bounded like an answer (read_s), the connect itself by `sock_connect`.
    return _aiohttp().ClientTimeout(
        total=timeouts.total_s,
        connect=max(timeouts.read_s, timeouts.connect_s),
        sock_connect=timeouts.connect_s,
        sock_read=timeouts.read_s,
    )


def _size(n: int) -> str:
    """A byte count as people say it: 64 MiB, 512 KiB, 1000 bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _undelivered(error: TransportError) -> bool:
    """A failure that happened before the request could reach the server (refused, or no connection in time)."""
    if isinstance(error, ServerUnreachableError):
        return error.connect_failed
    return isinstance(error, RequestTimeoutError) and error.connect_timed_out


def _keepalive_socket_factory(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setblocking(False)
    try:
        _enable_tcp_keepalive(sock)
    except OSError:
        pass
    return sock


class ServerInfo(BaseModel):
    """One row of the head server's registry. Holds no config values.

    A server started with `num_replicas: N` has N rows with the same `name`, `replica` 0..N-1."""

    name: str
    server_type: str
    implementation: str
    url: str
    pid: int | None = None
    healthy: bool | None = None
    replica: int = 0
    """Which copy of the server this row is (0 for a server with one replica)."""
    node: str | None = None
    """The cluster node the replica runs on (its address), when it runs on Ray; None for a local process."""


class ServerClient:
    """Talks to server instances by name; names are resolved through the head server.

    `ServerClient(head_url, http)`; the registry is fetched once and refreshed on an unknown name.
    A name with several replicas is routed by `nemo_gym.replica_routing`: new rollouts are spread,
    every later call of a rollout goes to the replica that took its first call.
    """

    def __init__(
        self,
        head_url: str,
        http: HttpClient | None = None,
        registry: Mapping[str, ServerInfo] | Sequence[ServerInfo] | None = None,
        *,
        limits: PoolLimits = PoolLimits(),
    ):
        self.head_url = head_url.rstrip("/")
        self._http = http
        self._limits = limits
        """For the client made on first use when `http` is not given (servers make it inside their loop)."""
        self._registry: dict[str, ServerInfo] = {}
        self._replicas: dict[str, ReplicaSet] = {}
        """Only names with more than one replica: a single-replica server never looks here twice."""
        self._single_shot: dict[RetryPolicy, RetryPolicy] = {}
        self._refresh_lock: asyncio.Lock | None = None
        self._last_down_refresh = float("-inf")
        self._down_refresh: asyncio.Future[None] | None = None
        self._pinned: list[ServerInfo] = []
        if registry:
            self._set_rows(list(registry.values()) if isinstance(registry, Mapping) else list(registry))

    def pin_servers(self, http: HttpClient, rows: Sequence[ServerInfo]) -> None:
        """Send every request through `http`, and resolve the names of `rows` to them whatever the head
        server's registry says: the servers of a co-located stack (`nemo_gym.colocated`), whose apps
        `http` calls in memory, or its worker processes (`nemo_gym.colocated_workers`)."""
        self._http = http
        self._pinned = list(rows)
        self._set_rows(list(self._registry.values()))

    def _set_rows(self, rows: list[ServerInfo]) -> None:
        if self._pinned:
            pinned = {row.name for row in self._pinned}
            rows = [row for row in rows if row.name not in pinned] + self._pinned
        by_name: dict[str, list[ServerInfo]] = {}
        for row in rows:
            by_name.setdefault(row.name, []).append(row)
        # The lowest replica stands for the server where one URL is asked for (`registry()`, `url_of`).
        self._registry = {name: min(group, key=lambda row: row.replica) for name, group in by_name.items()}
        self._replicas = {
            name: ReplicaSet(
                name,
                [(row.replica, row.url) for row in group],
                gone=[row.replica for row in group if row.healthy is False],
            )
            for name, group in by_name.items()
            if len(group) > 1
        }

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(limits=self._limits)
        return self._http

    async def registry(self, refresh: bool = False) -> dict[str, ServerInfo]:
        """name -> its row (replica 0's row for a replicated server); see `replicas` for all of them."""
        if refresh or not self._registry:
            if self._refresh_lock is None:
                self._refresh_lock = asyncio.Lock()
            async with self._refresh_lock:
                result = await self.http.request("GET", f"{self.head_url}/server_instances", retry=CONNECT_ONLY_RETRY)
                result.raise_for_status()
                self._set_rows([ServerInfo.model_validate(row) for row in result.json()])
        return self._registry

    def replicas(self, server_name: str) -> ReplicaSet | None:
        """The replica set of a server with more than one replica (None otherwise), as last fetched."""
        return self._replicas.get(server_name)

    async def url_of(self, server_name: str) -> str:
        info = self._registry.get(server_name)
        if info is None:
            registry = await self.registry(refresh=True)
            info = registry.get(server_name)
            if info is None:
                known = ", ".join(sorted(registry)) or "none"
                raise UnknownServerError(f"no server instance named {server_name!r} is running (running: {known})")
        return info.url

    async def request_cap(self, server_name: str) -> int | None:
        """How many requests to `server_name` (all its replicas together) this client carries at once; None =
        no cap (see `HttpClient.request_cap`)."""
        base = await self.url_of(server_name)
        replicas = self._replicas.get(server_name)
        caps = [self.http.request_cap(url) for url in (replicas.urls.values() if replicas is not None else [base])]
        return None if None in caps else sum(cap for cap in caps if cap is not None)

    async def request(self, server_name: str, url_path: str, method: str = "POST", **kwargs: Any) -> HttpResult:
        info = self._registry.get(server_name)  # known, as for every call but a server's first
        base = info.url if info is not None else await self.url_of(server_name)
        replicas = self._replicas.get(server_name)
        if replicas is not None:
            return await self._request_replicated(replicas, url_path, method, kwargs)
        return await self.http.request(method, f"{base}/{url_path.lstrip('/')}", **kwargs)

    async def _request_replicated(
        self, replicas: ReplicaSet, url_path: str, method: str, kwargs: dict[str, Any]
    ) -> HttpResult:
        path = "/" + url_path.lstrip("/")
        policy: RetryPolicy = kwargs.pop("retry", None) or self.http.retry
        # A refused connection moves on to a sibling at once instead of backing off on a dead replica.
        single_shot = self._single_shot.get(policy)
        if single_shot is None:
            single_shot = policy.model_copy(update={"retry_connect_errors": False})
            if policy.retry_transport_errors:  # CONNECT is also retried as a transport error: stop that too
                single_shot = single_shot.model_copy(update={"max_attempts": 1})
            self._single_shot[policy] = single_shot
        pinned = replicas.pinned(kwargs.get("cookies"))
        if pinned is not None:
            url = replicas.urls[pinned]
            try:
                if pinned in replicas.gone:
                    raise ServerUnreachableError(f"replica {pinned} is gone", connect_failed=True)
                return await self.http.request(method, url + path, retry=single_shot, **kwargs)
            except (ServerUnreachableError, RequestTimeoutError) as error:
                if not _undelivered(error):
                    raise
                self._replica_down(replicas, pinned)
                if replicas.live_count() == 0:
                    raise  # no replica left: the server is gone, and the circuit breaker should see it
                # Never another replica: it would not know this rollout's session. The rollout starts over.
                raise ReplicaGoneError(
                    f"replica {pinned} of server {replicas.name!r} refused the connection to {url}{path}; "
                    f"{replicas.live_count()} other replica(s) take new rollouts, this one must start again",
                    connect_failed=True,
                ) from None
        for index in replicas.order():
            try:
                result = await self.http.request(method, replicas.urls[index] + path, retry=single_shot, **kwargs)
            except (ServerUnreachableError, RequestTimeoutError) as error:
                if not _undelivered(error):
                    raise
                self._replica_down(replicas, index)
                continue
            replicas.mark_up(index)
            result.cookies[replicas.cookie_name] = str(index)
            return result
        # Every replica refused: one last try with the caller's own policy (it backs off), so a
        # restart blip of the whole server is ridden out as it is for a server with one replica.
        index = replicas.order()[0]
        result = await self.http.request(method, replicas.urls[index] + path, retry=policy, **kwargs)
        replicas.mark_up(index)
        result.cookies[replicas.cookie_name] = str(index)
        return result

    def _replica_down(self, replicas: ReplicaSet, index: int) -> None:
        """Keep new rollouts off a replica that did not take a connection, and ask the head server (once
        per DOWN_RECHECK_S) whether the launcher knows it is gone for good."""
        replicas.mark_down(index)
        now = time.monotonic()
        if now - self._last_down_refresh >= DOWN_RECHECK_S:
            self._last_down_refresh = now
            self._down_refresh = asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.registry(refresh=True)
        except (TransportError, HTTPStatusError, InvalidResponseError):
            pass  # the head server is unreachable: routing goes on with what it knew

    async def post(self, server_name: str, url_path: str, **kwargs: Any) -> HttpResult:
        return await self.request(server_name, url_path, "POST", **kwargs)

    async def get(self, server_name: str, url_path: str, **kwargs: Any) -> HttpResult:
        return await self.request(server_name, url_path, "GET", **kwargs)

    async def aclose(self) -> None:
        if self._down_refresh is not None and not self._down_refresh.done():
            self._down_refresh.cancel()
            await asyncio.gather(self._down_refresh, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
