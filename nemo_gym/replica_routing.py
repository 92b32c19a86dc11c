"""Which replica of a server takes a request: spread new rollouts, keep a rollout on its replica.

A server started with `num_replicas: N` is N processes under one name, each holding its own
per-rollout state (a stateful environment's counters, a sandbox's files). So:

  * a call that starts a rollout (no pin yet) goes to the next live replica in turn, and the reply
    carries a cookie `nemo_gym_replica___<server>=<index>`. Agents already thread a server's
    cookies from `/seed_session` through every tool call to `/verify`, so that cookie pins the
    whole rollout to its replica with no change to any agent;
  * a call that carries the cookie goes to that replica and nowhere else: another replica would
    not know the rollout's session (its signing secret differs, so it would silently start a new one);
  * a replica that refuses a connection gets no new rollouts for `DOWN_RECHECK_S`, then is tried
    again (it may have been restarted). A refused connection delivered nothing, so an unpinned
    call moves on to the next replica at once.

Nothing here runs for a server with one replica: the client's hot path checks one dict and goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

REPLICA_COOKIE_PREFIX = "nemo_gym_replica___"
DOWN_RECHECK_S = 5.0
"""How long a replica that refused a connection gets no new rollouts before it is tried again."""


def replica_cookie_name(server_name: str) -> str:
    return f"{REPLICA_COOKIE_PREFIX}{server_name}"


class ReplicaSet:
    """The replicas of one server (index -> URL) and which of them recently refused connections."""

    __slots__ = ("name", "urls", "gone", "cookie_name", "_turn", "_down_until")

    def __init__(self, name: str, urls: Sequence[tuple[int, str]], gone: Sequence[int] = ()):
        self.name = name
        self.urls = dict(sorted(urls))
        """replica index -> base URL, every replica the registry lists"""
        self.gone = frozenset(gone) if len(set(gone)) < len(self.urls) else frozenset()
        """Replicas the launcher reports dead (unhealthy in the registry): never picked while another lives,
        and a rollout pinned to one fails at once."""
        self.cookie_name = replica_cookie_name(name)
        self._turn = 0
        self._down_until: dict[int, float] = {}

    def pinned(self, cookies: object) -> int | None:
        """The replica a rollout is pinned to by its cookies, if any (a forged or stale value: None)."""
        if not isinstance(cookies, dict):
            return None
        value = cookies.get(self.cookie_name)
        # isascii first: str.isdigit() accepts '²', on which int() raises (a cookie of odd bytes was a 500).
        if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) in self.urls:
            return int(value)
        return None

    def order(self) -> list[int]:
        """Replicas to try for a new rollout: live ones in rotation first, then the ones that refused lately."""
        indexes = [index for index in self.urls if index not in self.gone]
        start = self._turn % len(indexes)
        self._turn += 1
        rotated = indexes[start:] + indexes[:start]
        now = time.monotonic()
        live = [index for index in rotated if self._down_until.get(index, 0.0) <= now]
        return live + [index for index in rotated if index not in live]

    def mark_down(self, index: int) -> None:
        self._down_until[index] = time.monotonic() + DOWN_RECHECK_S

    def mark_up(self, index: int) -> None:
        self._down_until.pop(index, None)

    def live_count(self) -> int:
        now = time.monotonic()
        return sum(1 for index in self.urls if index not in self.gone and self._down_until.get(index, 0.0) <= now)
