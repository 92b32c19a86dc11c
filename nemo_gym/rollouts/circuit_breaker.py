"""Stop a collection when a server of the stack is gone, instead of failing every remaining rollout.

A dead server makes every rollout fail the same way, fast: without a breaker a collection keeps
dispatching and writes thousands of identical failure records. The breaker counts rollout attempts
that failed to *connect*, whether the collector could not reach the agent or the agent reports (in
its 502 body) that it could not reach a server behind it. Any other outcome, success or a different
error, resets the count: one slow model or one bad task never trips it. After `threshold` in a row it
trips, naming the server most of them could not reach.

The server is named from the innermost "cannot connect to <url>" / "connection to <url> failed" in
the error (what our HttpClient says), matched against the head server's registry; a URL outside
the stack (the model's upstream API) is named by its address.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit

from nemo_gym.errors import HTTPStatusError, ServerUnreachableError

# What HttpClient says when a connection fails, at whatever depth of nesting the 502 bodies put it.
_CONNECTION_FAILURE = re.compile(r"(?:cannot connect to|connection to) (https?://[^\s/\"'\\]+)")


def unreachable_origin(error: BaseException) -> str | None:
    """`http://host:port` of the server a failed attempt could not connect to, or None when the
    attempt failed some other way (an HTTP error status, a timeout, a bad body)."""
    if isinstance(error, ServerUnreachableError):
        text = str(error)
    elif isinstance(error, HTTPStatusError) and error.status_code >= 500:  # the agent's report of a server behind it
        text = error.body or str(error)
    else:
        return None
    found = _CONNECTION_FAILURE.findall(text)
    return found[-1] if found else None


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
        origin = unreachable_origin(error)
        if origin is None:
            self.record_success()  # not a connection failure: the run of them is broken
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
