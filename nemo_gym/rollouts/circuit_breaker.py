"""Stop a collection when a server of the stack is gone, instead of failing every remaining rollout.

A dead server makes every rollout fail the same way, fast: without a breaker a collection keeps
dispatching and writes thousands of identical failure records. The breaker counts rollout attempts
whose connection was *refused*, whether the collector could not reach the agent or the agent reports
(in its 5xx body) that it could not reach a server behind it. A refused connection means nothing
listens on that port any more; it is not what an overloaded server does (a full accept queue drops
or resets connections, which is why resets, disconnects and timeouts neither count nor break the
run: at 16,384 rollouts in flight a live agent resets dozens of connections in a row). A success or
any other failure (an HTTP error, a bad body) breaks the run. After `threshold` in a row it trips,
naming the server most of them could not reach.

The server is named from the innermost "cannot connect to <url>: ... refused" in the error (what our
HttpClient says), matched against the head server's registry; a URL outside the stack (the model's
upstream API) is named by its address. A remote host that is down shows up as connect timeouts,
which this breaker does not count: those rollouts fail by their own retry budget.
"""

from __future__ import annotations

import errno
import os
import re
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit

from nemo_gym.errors import HTTPStatusError, ServerUnreachableError, TransportError

# What HttpClient says when a connection is refused, at whatever depth of nesting the 5xx bodies put it.
_REFUSED = re.compile(
    r"cannot connect to (https?://[^\s/\"'\\]+)[^\n\"]{0,160}?"
    rf"(?:Errno {errno.ECONNREFUSED}\b|{re.escape(os.strerror(errno.ECONNREFUSED))}|Connection refused)"
)
_TRANSPORT_TROUBLE = ("connection to ", "timed out", "cannot connect to ")

COUNTS, NEUTRAL, BREAKS = "counts", "neutral", "breaks"


def refused_origin(error: BaseException) -> str | None:
    """`http://host:port` of the server that refused the connection of a failed attempt, or None."""
    if isinstance(error, ServerUnreachableError):
        text = str(error)
    elif isinstance(error, HTTPStatusError) and error.status_code >= 500:  # the agent's report of a server behind it
        text = error.body or str(error)
    else:
        return None
    found = _REFUSED.findall(text)
    return found[-1] if found else None


def classify(error: BaseException) -> tuple[str, str | None]:
    """(COUNTS, origin) for a refused connection; NEUTRAL for other transport trouble (resets,
    disconnects, timeouts: an overloaded server, or the first sign of one dying); BREAKS otherwise."""
    origin = refused_origin(error)
    if origin is not None:
        return COUNTS, origin
    if isinstance(error, (TransportError, TimeoutError)):
        return NEUTRAL, None
    if isinstance(error, HTTPStatusError) and any(marker in (error.body or "") for marker in _TRANSPORT_TROUBLE):
        return NEUTRAL, None
    return BREAKS, None


class CircuitBreaker:
    """Counts consecutive connection failures; `tripped` once `threshold` come in a row."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self._run: Counter[str] = Counter()
        self._count = 0
        self.tripped = False
        self.last_error = ""

    def record_success(self) -> None:
        if self._count:
            self._count = 0
            self._run.clear()

    def record_failure(self, error: BaseException) -> bool:
        """Count one failed attempt; returns True when it trips the breaker."""
        kind, origin = classify(error)
        if kind == BREAKS:
            self.record_success()  # the path to the servers works: the run of refusals is broken
        if origin is None:
            return self.tripped
        self._count += 1
        self._run[origin] += 1
        self.last_error = str(error)
        if self._count >= self.threshold:
            self.tripped = True
        return self.tripped

    @property
    def failures_in_a_row(self) -> int:
        return self._count

    def gone_origin(self) -> str:
        return self._run.most_common(1)[0][0] if self._run else "unknown"


def describe_server(origin: str, urls_by_name: Mapping[str, str]) -> str:
    """`server 'policy_model' (http://127.0.0.1:8001)` when `origin` is in the registry, else the address."""
    wanted = _host_port(origin)
    for name, url in urls_by_name.items():
        if _host_port(url) == wanted:
            return f"server {name!r} ({origin})"
    return f"the server at {origin}"


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in ("localhost", "::1"):
        host = "127.0.0.1"
    return host, parts.port
