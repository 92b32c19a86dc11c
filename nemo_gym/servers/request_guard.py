"""Servers answer our clients, not web pages: one pure ASGI guard in front of every server and the viewer.

A page open in the user's browser can send requests to any address, loopback included. Three
checks stop it from driving a server (and through a model server, spending the user's API key):

  * a POST/PUT/PATCH with a body must say `Content-Type: application/json` (415 otherwise). A page
    can send `text/plain` or a form cross-site without asking; `application/json` needs a CORS
    preflight, which no server here answers. Our clients (aiohttp in `nemo_gym.client`, httpx,
    the OpenAI SDK) always send `application/json`.
  * a request with an `Origin` header (browsers add it; our clients never do) must come from the
    server's own origin: the `Host` it was reached by, or an allowed host name on the server's own
    port, or a name listed in `allowed_hosts` (403 otherwise). The viewer's own page passes.
  * the `Host` header must name this server (421 otherwise): the host it was bound as, the address
    the connection arrived on (so a Ray node's address, whatever the binding), loopback names when
    bound to loopback or to every interface (0.0.0.0 / ::), the machine's host name and addresses
    when not bound to loopback, or an entry of `allowed_hosts` (`*` accepts any). Otherwise a
    DNS-rebinding page (evil.example resolving to 127.0.0.1) is a same-origin page to the browser
    and can read every answer. A request without Host (HTTP/1.0) passes: browsers always send one.

Hot path: one pass over the request's header list and, for a Host seen before, one set lookup;
nothing is allocated for a request that passes.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]  # what ASGI servers hand over (a dict), as Starlette types it
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_JSON = b"application/json"
_MAX_REMEMBERED_HOSTS = 256
"""Host header values accepted before are remembered (raw bytes) so the next request with the same
one costs a set lookup; the bound keeps a client cycling through ports from growing the set."""


def host_name(value: str) -> str:
    """The host part of a `Host` header or an `allowed_hosts` entry, lower case, without port,
    brackets or a trailing dot: `[::1]:8000` -> `::1`, `Node-1.:80` -> `node-1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.cache
def machine_names() -> frozenset[str]:
    """This machine's host name and the addresses it resolves to. Looked up once, and only when a
    Host header names something else than the server's own address (a resolver can be slow)."""
    hostname = socket.gethostname()
    names = {host_name(hostname)}
    try:
        for *_, sockaddr in socket.getaddrinfo(hostname, None):
            names.add(host_name(str(sockaddr[0]).partition("%")[0]))
    except OSError:
        pass  # a host name that does not resolve: the name alone
    return frozenset(names)


def accepted_host_names(bound_host: str, allowed_hosts: Iterable[str] = ()) -> frozenset[str]:
    """The names a `Host` header may carry for a server bound to `bound_host`, besides the address a
    connection arrived on and (unless bound to loopback) `machine_names()`."""
    bound = host_name(bound_host)
    names = {bound} | {host_name(entry) for entry in allowed_hosts}
    if bound in WILDCARD_HOSTS or _is_loopback(bound):
        names |= LOOPBACK_NAMES
    return frozenset(names - {""})


def _error_response(status: int, error_type: str, message: str) -> tuple[Message, Message]:
    body = orjson.dumps({"error": {"type": error_type, "message": message}})
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


def _origin_parts(origin: str) -> tuple[str, str, int | None]:
    """(scheme, host name, port or None when absent) of an `Origin` header value."""
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return "", "", None
    authority = rest.partition("/")[0].lower()
    port: int | None = None
    head, colon, tail = authority.rpartition(":")
    if colon and tail.isdigit() and (not head.startswith("[") or head.endswith("]")):
        authority, port = head, int(tail)
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme.lower())
    return scheme.lower(), host_name(authority), port


class RequestGuard:
    """Refuses requests that our clients never send (see the module docstring); passes the rest on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        bound_host: str,
        allowed_hosts: Iterable[str] = (),
        setting: str = "this server's allowed_hosts",
    ):
        """`setting` says where a user lists further names (`allowed_hosts` of which config block)."""
        self.app = app
        allowed = [entry for entry in allowed_hosts if entry]
        self.any_host = "*" in allowed
        self.host_names = accepted_host_names(bound_host, [entry for entry in allowed if entry != "*"])
        self.origin_names = frozenset(host_name(entry) for entry in allowed if entry != "*")
        # A server reachable from other machines also answers to this machine's name (a Ray node's
        # host name): a rebinding page cannot have the browser send it, its origin is its own name.
        self.by_machine_name = not _is_loopback(host_name(bound_host))
        self.setting = setting
        self._accepted: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await send(refusal[0])
        await send(refusal[1])

    def refusal(self, scope: Scope) -> tuple[Message, Message] | None:
        """The answer (start and body messages) refusing this HTTP request, or None when it passes.
        In-memory direct calls (`nemo_gym.servers.direct_calls`) ask it too, with the scope they build."""
        host = origin = content_type = None
        has_body = False
        for key, value in scope["headers"]:
            if key == b"host":
                host = value
            elif key == b"content-type":
                content_type = value
            elif key == b"content-length":
                has_body = value != b"0"
            elif key == b"origin":
                origin = value
            elif key == b"transfer-encoding":
                has_body = True
        if host is not None and host not in self._accepted and not self._host_ok(host, scope):
            return _error_response(
                421,
                "UnknownHostError",
                f"Host {host.decode('latin-1')!r} is not a name this server answers to (a DNS-rebinding page?); "
                f"if it is one, list it in {self.setting}",
            )
        if origin is not None and not self._origin_ok(origin, host, scope):
            return _error_response(
                403,
                "ForeignOriginError",
                f"requests from web pages of {origin.decode('latin-1')!r} (another site) are refused; "
                f"to allow that origin, list its host in {self.setting}",
            )
        if has_body and content_type != _JSON and scope["method"] in _METHODS_WITH_BODY:
            if content_type is None or content_type.partition(b";")[0].strip().lower() != _JSON:
                shown = "none" if content_type is None else repr(content_type.decode("latin-1"))
                return _error_response(
                    415,
                    "UnsupportedMediaTypeError",
                    f"{scope['method']} {scope['path']} takes a JSON body with Content-Type: application/json "
                    f"(got {shown})",
                )
        return None

    def _names_this_server(self, name: str, scope: Scope) -> bool:
        if name in self.host_names:
            return True
        server = scope.get("server")
        if server is not None and name == host_name(str(server[0])):
            return True  # the address the connection arrived on
        return self.by_machine_name and name in machine_names()

    def _host_ok(self, host: bytes, scope: Scope) -> bool:
        ok = self.any_host or self._names_this_server(host_name(host.decode("latin-1")), scope)
        if ok and len(self._accepted) < _MAX_REMEMBERED_HOSTS:
            self._accepted.add(host)
        return ok

    def _origin_ok(self, origin: bytes, host: bytes | None, scope: Scope) -> bool:
        text = origin.decode("latin-1")
        scheme, name, port = _origin_parts(text)
        if scheme not in ("http", "https"):
            return False  # `null` (a sandboxed frame, a file:// page) or something unparseable
        if host is not None and text.partition("://")[2].lower() == host.decode("latin-1").lower():
            return True  # the page was served by this server, reached by a Host already checked
        if name in self.origin_names:
            return True
        server = scope.get("server")
        return server is not None and port == server[1] and self._names_this_server(name, scope)
