"""A lean HTTP/1.1 client transport on asyncio for plain `http://` hops between our processes.

Why not aiohttp here: every rollout in flight is one long POST /run from the collector to the agent, and
aiohttp spends ~11 KB of Python objects on each open request (response, connection, protocol, stream
reader, buffers, timers; counted with tracemalloc in tests/test_http11.py). Here it is ~4 KB: one
`_Connection` (an `asyncio.Protocol` with slots), its transport and socket, one future and one timer
handle; the answer's bytes are only allocated once they arrive. It also costs about half the CPU.

What it does, and nothing more: a keep-alive pool (total and per-host caps, idle expiry), TCP
keepalive, the `Timeouts` of `nemo_gym.client` (connect incl. pool wait, between bytes, whole attempt,
body idle), Content-Length, chunked and read-until-close bodies, gzip/deflate answers, `Connection:
close`, and a response cap. `HttpClient` sends anything else (https, userinfo in the URL) to aiohttp.

Errors are ours (`nemo_gym.errors`), with the messages `HttpClient` gives over aiohttp. A pooled
connection found closed when taken is dropped unused (nothing was sent on it); one the server closes
after we wrote and before any byte of the answer is retried once on a fresh connection for idempotent
methods only, as aiohttp does: a POST may have been delivered, and only the caller's `RetryPolicy`
may replay it.
"""

from __future__ import annotations

import asyncio
import contextvars
import http.cookies
import socket
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from nemo_gym.aio import TaskDeadline
from nemo_gym.errors import RequestTimeoutError, ResponseTooLargeError, ServerUnreachableError

if TYPE_CHECKING:
    from nemo_gym.client import Timeouts

T = TypeVar("T")
_NO_CONTEXT = contextvars.Context()
"""Timer callbacks here read no context variables: one shared empty context instead of a copy per timer."""
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_MAX_HEAD_BYTES = 64 * 1024
"""Longest status line + headers read; a longer head is a malformed answer, not a reason to buffer more."""

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ResponseHeaders(Mapping[str, str]):
    """An answer's headers, case-insensitive (the first value of a repeated name; `getall` for every one)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]]):
        self._items = items
        """(name as sent, value) in the order received."""

    def __getitem__(self, name: str) -> str:
        wanted = name.lower()
        for key, value in self._items:
            if key.lower() == wanted:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def getall(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self._items if key.lower() == wanted]

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._items!r})"


class _Failure(Exception):
    """Raised inside the protocol and turned into our error by `request` (it knows the URL and method)."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


class _Connection(asyncio.Protocol):
    """One TCP connection and the parser of the answer it is waiting for."""

    __slots__ = (
        "pool",
        "key",
        "transport",
        "closed",
        "idle_since",
        "waiter",
        "state",
        "buffer",
        "status",
        "headers",
        "pieces",
        "size",
        "remaining",
        "keep_alive",
        "head_only",
        "decoder",
        "cap",
        "got_bytes",
        "last_data",
        "sent",
        "counted",
        "deadlines",
        "sock",
    )

    def __init__(self, pool: ConnectionPool, key: tuple[str, int]):
        self.pool, self.key = pool, key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.counted = True
        """Holds one of the pool's connection slots until `_lost`."""
        self.idle_since = 0.0
        self.waiter: asyncio.Future[None] | None = None
        self.state = _DONE
        self.buffer: bytearray | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.pieces: list[bytes] = []
        self.size = 0
        self.remaining = 0
        self.keep_alive = True
        self.head_only = False
        self.decoder: Any = None
        self.cap = 0
        self.got_bytes = False
        self.last_data = 0.0
        self.sent = False
        self.deadlines: _Deadlines | None = None
        self.sock: socket.socket | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.state == _DONE:
            # Bytes nobody asked for (or after a complete answer): the connection cannot be trusted.
            self._drop()
            return
        self.got_bytes = True
        self.last_data = self.pool.loop.time()
        try:
            self._feed(data)
        except _Failure as failure:
            self._fail(failure)
        except zlib.error as error:
            self._fail(_Failure("malformed", f"cannot decode the compressed body: {error}"))

    def eof_received(self) -> bool | None:
        if self.state == _UNTIL_CLOSE:
            self._end_at_close()
        return None  # close the transport

    def _end_at_close(self) -> None:
        """A body without framing ends when the server closes the connection."""
        self.keep_alive = False
        try:
            self._finish_body()
        except _Failure as failure:
            self._fail(failure)
        except zlib.error as error:
            self._fail(_Failure("malformed", f"cannot decode the compressed body: {error}"))
        else:
            self._complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.state == _UNTIL_CLOSE:
                self._end_at_close()
            elif not self.got_bytes:
                waiter.set_exception(_Failure("closed_before_answer", str(exc or "")))
            else:
                waiter.set_exception(_Failure("closed_mid_answer", f"after {self.size} bytes of the answer"))

    # Request lifecycle, driven by ConnectionPool.request

    def start(self, head: bytes, body: bytes | None, cap: int, head_only: bool) -> asyncio.Future[None]:
        self.state, self.buffer, self.status, self.headers = _HEAD, None, 0, []
        self.pieces, self.size, self.remaining, self.decoder = [], 0, 0, None
        self.keep_alive, self.head_only, self.cap, self.got_bytes = True, head_only, cap, False
        self.last_data = self.pool.loop.time()
        waiter = self.waiter = self.pool.loop.create_future()
        transport = self.transport
        assert transport is not None
        if body is None:
            transport.write(head)
        elif len(body) < 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        self.sent = True
        return waiter

    def still_open(self) -> bool:
        """Whether a pooled connection can carry a request: not closed, and no end of stream waiting in the
        kernel that the loop has not read yet (a busy loop learns of a server's close late)."""
        if self.closed or self.transport is None or self.transport.is_closing() or self.sock is None:
            return False
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing to read: open and quiet
        except OSError:
            return False
        return False  # b"": the server closed it; bytes: an answer nobody asked for

    def _lost(self) -> None:
        self.closed = True
        if self.counted:
            self.counted = False
            self.pool._slot_freed(self.key)

    def _drop(self) -> None:
        """Close now, without a goodbye: the connection is not going back to the pool."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._lost()

    def _fail(self, error: BaseException) -> None:
        self.state = _DONE
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self._drop()

    def _complete(self) -> None:
        self.state = _DONE
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Parsing

    def _feed(self, data: bytes) -> None:
        if self.state == _HEAD:
            if self.buffer is not None:
                self.buffer += data
                data = bytes(self.buffer)
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD_BYTES:
                    raise _Failure("malformed", f"no end of the answer's head within {_MAX_HEAD_BYTES} bytes")
                self.buffer = bytearray(data)
                return
            self.buffer = None
            rest = data[end + 4 :]
            if not self._head(data[:end]):  # an interim 1xx answer: the real one follows
                if rest:
                    self._feed(rest)
                return
            if self.deadlines is not None:
                self.deadlines.head_received()
            if self.state == _DONE:
                if rest:
                    self.keep_alive = False  # bytes past the answer: do not trust the connection again
                self._complete()
                return
            data = rest
            if not data:
                return
        self._body(data)

    def _head(self, head: bytes) -> bool:
        """Parse the status line and headers; False for a 1xx answer. Sets the body's framing."""
        lines = head.split(b"\r\n")
        status_line = lines[0]
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise _Failure("malformed", f"not an HTTP/1.x status line: {bytes(status_line[:80])!r}")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            return False
        self.status = status
        keep_alive = version == b"HTTP/1.1"
        length: int | None = None
        chunked = False
        encoding = ""
        items = self.headers
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in (b" ", b"\t"):
                raise _Failure("malformed", f"bad header line {bytes(line[:80])!r}")
            key = name.decode("latin-1")
            text = value.strip().decode("latin-1")
            items.append((key, text))
            lower = key.lower()
            if lower == "content-length":
                if not text.isdigit() or (length is not None and int(text) != length):
                    raise _Failure("malformed", f"bad Content-Length {text!r}")
                length = int(text)
            elif lower == "transfer-encoding":
                chunked = text.lower().rsplit(",", 1)[-1].strip() == "chunked"
                if not chunked:
                    raise _Failure("malformed", f"unsupported Transfer-Encoding {text!r}")
            elif lower == "connection":
                tokens = text.lower()
                if "close" in tokens:
                    keep_alive = False
                elif "keep-alive" in tokens:
                    keep_alive = True
            elif lower == "content-encoding":
                encoding = text.lower()
        self.keep_alive = keep_alive
        if encoding in ("gzip", "x-gzip"):
            self.decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self.decoder = _DeflateDecoder()
        if self.head_only or status in (204, 304):
            self.state = _DONE
        elif chunked:
            self.state = _CHUNK_SIZE
        elif length is not None:
            if length > self.cap:
                raise _Failure("too_large_length", str(length))
            self.remaining = length
            self.state = _LENGTH if length else _DONE
        else:
            self.state = _UNTIL_CLOSE
            self.keep_alive = False
        return True

    def _body(self, data: bytes) -> None:
        state = self.state
        if state == _LENGTH:
            remaining = self.remaining
            if len(data) >= remaining:
                if len(data) > remaining:
                    self.keep_alive = False
                self._piece(data[:remaining] if len(data) > remaining else data)
                self.remaining = 0
                self._finish_body()
                self._complete()
            else:
                self._piece(data)
                self.remaining = remaining - len(data)
            return
        if state == _UNTIL_CLOSE:
            self._piece(data)
            return
        self._chunked(data)

    def _chunked(self, data: bytes) -> None:
        view = data
        if self.buffer is not None:
            self.buffer += data
            view = bytes(self.buffer)
            self.buffer = None
        position, end = 0, len(view)
        while position < end and self.state != _DONE:
            state = self.state
            if state == _CHUNK_DATA:
                take = min(self.remaining, end - position)
                self._piece(view[position : position + take])
                position += take
                self.remaining -= take
                if not self.remaining:
                    self.state = _CHUNK_END
                continue
            newline = view.find(b"\r\n", position)
            if newline < 0:
                if end - position > 4096:
                    raise _Failure("malformed", "a chunk size line longer than 4096 bytes")
                self.buffer = bytearray(view[position:])
                return
            line = view[position:newline]
            position = newline + 2
            if state == _CHUNK_END:
                if line:
                    raise _Failure("malformed", "no CRLF after a chunk")
                self.state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _Failure("malformed", f"bad chunk size {bytes(size_text[:40])!r}") from None
                if size:
                    self.remaining, self.state = size, _CHUNK_DATA
                else:
                    self.state = _TRAILERS
            elif not line:  # _TRAILERS: an empty line ends the message
                if position < end:
                    self.keep_alive = False
                self._finish_body()
                self._complete()
                return

    def _piece(self, data: bytes) -> None:
        if self.decoder is not None:
            room = self.cap - self.size + 1
            data = self.decoder.decompress(data, room)
        size = self.size + len(data)
        if size > self.cap:
            self.size = size
            raise _Failure("too_large_stream")
        self.size = size
        if data:
            self.pieces.append(data)

    def _finish_body(self) -> None:
        if self.decoder is not None:
            tail = self.decoder.flush()
            if tail:
                self.decoder = None
                self._piece(tail)

    def body(self) -> bytes:
        pieces = self.pieces
        self.pieces = []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class _DeflateDecoder:
    """`Content-Encoding: deflate` is zlib-wrapped by the RFC and raw deflate from some servers: accept both."""

    __slots__ = ("_inner", "_first")

    def __init__(self) -> None:
        self._inner: Any = None
        self._first = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            raw = bool(data) and (data[0] & 0x0F) != 8  # a zlib header starts with CM=8
            self._inner = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        out: bytes = self._inner.decompress(data, max_length)
        return out

    def flush(self) -> bytes:
        return b"" if self._inner is None else self._inner.flush()


class ConnectionPool:
    """Keep-alive connections per (host, port), with total and per-host caps and idle expiry."""

    def __init__(self, *, max_connections: int, max_per_host: int, keepalive_s: float):
        self.loop = asyncio.get_running_loop()
        self.max_connections, self.max_per_host, self.keepalive_s = max_connections, max_per_host, keepalive_s
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._open = 0
        self._per_host: dict[tuple[str, int], int] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._addresses: dict[tuple[str, int], list[tuple[int, Any]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # Slots

    def _has_slot(self, key: tuple[str, int]) -> bool:
        if self._open >= self.max_connections:
            return False
        return not self.max_per_host or self._per_host.get(key, 0) < self.max_per_host

    def _take_slot(self, key: tuple[str, int]) -> None:
        self._open += 1
        self._per_host[key] = self._per_host.get(key, 0) + 1

    def _slot_freed(self, key: tuple[str, int]) -> None:
        self._open -= 1
        left = self._per_host[key] - 1
        if left:
            self._per_host[key] = left
        else:
            del self._per_host[key]
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _acquire(
        self, key: tuple[str, int], wait_until: float, connect_s: float, total_at: float | None
    ) -> tuple[_Connection, bool]:
        """A connection to `key` (reused, or new) and whether it was reused. Raises `_Failure`: "pool_timeout"
        when no connection frees up by `wait_until` (loop time), "connect_timeout" when a new one is not
        open within `connect_s` of getting its slot (or by `total_at`)."""
        while True:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if connection.still_open():
                    return connection, True
                connection._drop()
            if self._has_slot(key):
                break
            if not self._evict_idle_elsewhere(key):
                waiter = self.loop.create_future()
                self._waiters.append(waiter)
                timer = self.loop.call_at(wait_until, _time_out, waiter, "pool_timeout")
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._wake_one()  # woken, then cancelled: the freed slot goes to the next in line
                    raise
                finally:
                    timer.cancel()
        self._take_slot(key)
        connection = _Connection(self, key)
        # The connect deadline starts with the slot: time spent queued for one is the pool's own
        # admission (`PoolLimits.max_connections_per_host`), not a server slow to accept.
        connect_at = self.loop.time() + connect_s
        try:
            await self._connect(connection, key, connect_at if total_at is None else min(connect_at, total_at))
        except BaseException:
            connection._drop()
            raise
        return connection, False

    def _evict_idle_elsewhere(self, key: tuple[str, int]) -> bool:
        """Close an idle connection to another host to make room under the total cap (not the per-host one)."""
        if self.max_per_host and self._per_host.get(key, 0) >= self.max_per_host:
            return False
        for other, idle in self._idle.items():
            if other != key and idle:
                idle.popleft()._drop()
                return True
        return False

    async def _connect(self, connection: _Connection, key: tuple[str, int], deadline: float) -> None:
        addresses = self._addresses.get(key)
        if addresses is None:
            infos = await _with_deadline(
                self.loop.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM), deadline, self.loop
            )
            addresses = self._addresses[key] = [(family, address) for family, _, _, _, address in infos]
        last_error: OSError | None = None
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                _enable_tcp_keepalive(sock)
                await _with_deadline(self.loop.sock_connect(sock, address), deadline, self.loop)
                await self.loop.create_connection(lambda: connection, sock=sock)
                connection.sock = sock
                return
            except OSError as error:
                sock.close()
                last_error = error
            except BaseException:
                sock.close()
                raise
        raise last_error or OSError(f"no address for {key[0]}")

    def release(self, connection: _Connection) -> None:
        """Back to the pool after a complete answer (or closed, when it cannot carry another)."""
        connection.waiter = None
        if not connection.keep_alive or connection.closed or self._closed:
            if not connection.closed and connection.transport is not None:
                connection.transport.close()
                connection._lost()
            return
        connection.idle_since = self.loop.time()
        idle = self._idle.get(connection.key)
        if idle is None:
            idle = self._idle[connection.key] = deque()
        idle.append(connection)
        if self._waiters:
            self._wake_one()  # it takes this connection, or closes it to open one to its own host
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.keepalive_s, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle longer than `keepalive_s` (the oldest sit at the left of each deque)."""
        self._sweeper = None
        expiry = self.loop.time() - self.keepalive_s
        pending = False
        for key in list(self._idle):
            idle = self._idle[key]
            while idle and (idle[0].idle_since <= expiry or idle[0].closed):
                idle.popleft()._drop()
            if idle:
                pending = True
            else:
                del self._idle[key]
        if pending:
            self._sweeper = self.loop.call_later(self.keepalive_s / 2, self._sweep)

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            while idle:
                idle.pop()._drop()
        self._idle.clear()

    @property
    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())


def _time_out(waiter: asyncio.Future[None], kind: str) -> None:
    if not waiter.done():
        waiter.set_exception(_Failure(kind))


async def _with_deadline(awaitable: Any, deadline: float, loop: asyncio.AbstractEventLoop) -> Any:
    """Await a connect step, failing with `_Failure("connect_timeout")` at `deadline` (loop time)."""
    timer = TaskDeadline(deadline, loop)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if timer.fired():
            raise _Failure("connect_timeout") from None
        raise
    finally:
        timer.cancel()


def _enable_tcp_keepalive(sock: socket.socket) -> None:
    # OS-level liveness: a silently dropped peer is detected in ~90 s instead of never.
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError:
        pass


class _Deadlines:
    """The one timer of a request in flight: whole-attempt deadline, silence before the head, silence
    within the body. It fires at the earliest of them and re-arms itself when bytes arrived since."""

    __slots__ = ("connection", "total_at", "read_s", "idle_s", "handle", "expired")

    def __init__(self, connection: _Connection, total_at: float | None, read_s: float, idle_s: float | None):
        self.connection, self.total_at, self.read_s, self.idle_s = connection, total_at, read_s, idle_s
        self.expired = ""
        self.handle = connection.pool.loop.call_at(self._next(), self._fire, context=_NO_CONTEXT)
        connection.deadlines = self

    def head_received(self) -> None:
        """From here on the (maybe shorter) body idle limit applies: bring the timer forward."""
        if self.idle_s is not None and self.idle_s < self.read_s:
            self.handle.cancel()
            self.handle = self.connection.pool.loop.call_at(self._next(), self._fire, context=_NO_CONTEXT)

    def _silence_limit(self) -> float:
        if self.connection.state == _HEAD or self.idle_s is None:
            return self.read_s
        return min(self.read_s, self.idle_s)

    def _next(self) -> float:
        at = self.connection.last_data + self._silence_limit()
        return at if self.total_at is None else min(at, self.total_at)

    def _fire(self) -> None:
        connection = self.connection
        now = connection.pool.loop.time()
        if self.total_at is not None and now >= self.total_at:
            self.expired = "total"
        elif now - connection.last_data >= self._silence_limit():
            in_body = connection.state != _HEAD
            self.expired = "idle" if in_body and self.idle_s is not None and self.idle_s < self.read_s else "read"
        else:
            self.handle = connection.pool.loop.call_at(self._next(), self._fire, context=_NO_CONTEXT)
            return
        connection._fail(_Failure("timeout"))

    def cancel(self) -> None:
        self.handle.cancel()
        self.connection.deadlines = None


async def request(
    pool: ConnectionPool,
    method: str,
    url: str,
    target: tuple[str, int, str, str],
    head: bytes,
    body: bytes | None,
    deadlines_of: Timeouts,
    cap: int,
    finish: Callable[[int, ResponseHeaders, bytes, str], T],
) -> T:
    """Send one request to `target` (host, port, request target, Host header); `head` is the request line
    and headers, CRLF CRLF included. Reads the whole answer and returns `finish(status, headers, body, url)`. Raises our
    `TransportError`s and `ResponseTooLargeError`."""
    loop = pool.loop
    started = loop.time()
    connect_s, total_s = deadlines_of.connect_s, deadlines_of.total_s
    total_at = None if total_s is None else started + total_s
    # Queued for a free connection, a request waits as it would for an answer: up to read_s.
    wait_until = started + deadlines_of.read_s if total_at is None else min(started + deadlines_of.read_s, total_at)
    key = target[:2]
    head_only = method == "HEAD"
    retried = False
    while True:
        try:
            connection, reused = await pool._acquire(key, wait_until, connect_s, total_at)
        except _Failure as failure:
            if total_at is not None and loop.time() >= total_at:
                raise RequestTimeoutError(
                    f"{method} {url} timed out: no complete answer within {total_s:g} s", connect_timed_out=True
                ) from None
            if failure.kind == "pool_timeout":
                raise RequestTimeoutError(
                    f"{method} {url} timed out: no free connection within {deadlines_of.read_s:g} s (every "
                    f"connection this client may open to {target[0]}:{target[1]} stayed busy)",
                    connect_timed_out=True,
                ) from None
            raise RequestTimeoutError(
                f"{method} {url} timed out: no connection within {connect_s:g} s", connect_timed_out=True
            ) from None
        except OSError as error:
            raise ServerUnreachableError(f"cannot connect to {url}: {error}", connect_failed=True) from error
        waiter = connection.start(head, body, cap, head_only)
        deadlines = _Deadlines(connection, total_at, deadlines_of.read_s, deadlines_of.body_idle_s)
        try:
            await waiter
        except _Failure as failure:
            if failure.kind.startswith("too_large"):
                raise _too_large(method, url, cap, failure, connection.size) from None
            if failure.kind == "timeout":
                which = _expired(deadlines, deadlines_of.read_s, total_s, connection)
                raise RequestTimeoutError(f"{method} {url} timed out: {which}") from None
            if failure.kind == "closed_before_answer" and reused and not retried and method in IDEMPOTENT_METHODS:
                retried = True  # the server closed a kept-alive connection as we reused it: once more, fresh
                continue
            if failure.kind == "malformed":
                raise ServerUnreachableError(
                    f"{method} {url} failed: malformed HTTP answer: {failure.detail}"
                ) from None
            if failure.kind == "closed_before_answer":
                raise ServerUnreachableError(
                    f"connection to {url} failed: the server closed the connection before answering"
                ) from None
            raise ServerUnreachableError(
                f"connection to {url} failed: the server closed the connection {failure.detail}"
            ) from None
        except BaseException:
            connection._drop()  # cancelled mid-request: the answer would arrive on a connection nobody reads
            raise
        finally:
            deadlines.cancel()
        status, headers, answer = connection.status, ResponseHeaders(connection.headers), connection.body()
        connection.headers = []
        pool.release(connection)
        return finish(status, headers, answer, url)


def parse_set_cookies(values: list[str]) -> dict[str, str]:
    """`name -> value` of `Set-Cookie` header values, as aiohttp's `response.cookies` gives them."""
    cookies: dict[str, str] = {}
    for text in values:
        name, equals, cookie = text.partition(";")[0].partition("=")
        if equals and '"' not in cookie and "\\" not in cookie:
            cookies[name.strip()] = cookie.strip()
            continue
        parsed: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        try:
            parsed.load(text)
        except http.cookies.CookieError:
            continue
        cookies.update({morsel_name: morsel.value for morsel_name, morsel in parsed.items()})
    return cookies


def _too_large(method: str, url: str, cap: int, failure: _Failure, size: int) -> ResponseTooLargeError:
    if failure.kind == "too_large_stream":
        return ResponseTooLargeError(
            f"{method} {url}: the answer is over the {_size(cap)} response cap; stopped reading at {size} bytes",
            url=url,
            limit_bytes=cap,
        )
    return ResponseTooLargeError(
        f"{method} {url}: the answer is {failure.detail} bytes (Content-Length), over the {_size(cap)} "
        "response cap; refused unread",
        url=url,
        limit_bytes=cap,
    )


def _expired(deadlines: _Deadlines, read_s: float, total_s: float | None, connection: _Connection) -> str:
    if deadlines.expired == "total":
        return f"no complete answer within {total_s:g} s"
    if deadlines.expired == "idle":
        return (
            f"no byte for {deadlines.idle_s:g} s after the first {connection.size} bytes of the answer "
            "(read idle timeout)"
        )
    return f"no byte for {read_s:g} s"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"
