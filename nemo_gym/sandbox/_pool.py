"""SessionPool: persistent interpreters keyed by the caller's id (a rollout), bounded in number and idle time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from nemo_gym.sandbox._models import ExecutionResult, SandboxLimits
from nemo_gym.sandbox._sandbox import PythonSession, Sandbox

_EVICTED = "it was closed to make room for other sessions (max_sessions)"
_REAPED = "it was closed after {idle:g} s without a call"
_CANCELLED = "it was closed when a call was given up before its cell finished"


@dataclass
class _Live:
    opening: asyncio.Task[PythonSession]
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    lost_state: str | None = None
    """Why an earlier session under this key was closed; told to the first cell of this one."""


class SessionPool:
    """One `PythonSession` per key, opened on first use, at most `max_sessions` alive.

    Opening one more closes the least recently used idle session; a session without a call for
    `idle_timeout_s` is closed too (an abandoned rollout cannot leak an interpreter). The key of a
    session closed this way is remembered (the last `remembered_keys` of them), and the next
    `execute` for it runs in a fresh interpreter whose result says the earlier state was lost and
    why, instead of failing later with a puzzling NameError. `close(key)` is for a caller that is
    done with its session: the key is forgotten, and a later call simply starts afresh. A call
    that is cancelled (its HTTP request was given up) kills its cell and closes its session at once;
    a later call for the key is told so.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        max_sessions: int,
        idle_timeout_s: float,
        limits: SandboxLimits | None = None,
        remembered_keys: int = 100_000,
    ):
        if max_sessions < 1 or idle_timeout_s <= 0:
            raise ValueError("max_sessions must be at least 1 and idle_timeout_s positive")
        self._sandbox = sandbox
        self._limits = limits
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self._live: dict[str, _Live] = {}
        self._lost: OrderedDict[str, str] = OrderedDict()
        self._remembered_keys = remembered_keys
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()

    @property
    def live_sessions(self) -> int:
        return len(self._live)

    async def execute(self, key: str, code: str) -> ExecutionResult:
        """Run one cell in `key`'s interpreter (opened now if it has none)."""
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_idle())
        entry = self._live.get(key)
        if entry is None:
            await self._make_room()
            opening = asyncio.ensure_future(self._sandbox.open_session(self._limits))
            entry = _Live(opening, lost_state=self._lost.pop(key, None))
            self._live[key] = entry
        entry.busy += 1
        try:
            session = await entry.opening
            if entry.lost_state is not None:
                session.mark_state_lost(entry.lost_state)
                entry.lost_state = None
            return await session.execute(code)
        except asyncio.CancelledError:
            # The caller gave up on this rollout (its request was cancelled): close its session now
            # rather than after idle_timeout_s, unless another call of the same key is using it.
            if entry.busy == 1 and self._live.get(key) is entry:
                closing = asyncio.ensure_future(self._close(key, _CANCELLED))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
                await asyncio.shield(closing)
            raise
        finally:
            entry.busy -= 1
            entry.last_used = time.monotonic()

    async def close(self, key: str) -> None:
        """The caller is done with `key`: close its interpreter and forget the key."""
        self._lost.pop(key, None)
        await self._close(key)

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for key in list(self._live):
            await self._close(key)

    async def _close(self, key: str, lost_because: str | None = None) -> None:
        entry = self._live.pop(key, None)
        if entry is None:
            return
        if lost_because is not None:
            self._lost[key] = lost_because
            while len(self._lost) > self._remembered_keys:
                self._lost.popitem(last=False)
        with contextlib.suppress(Exception):  # a session that failed to open has nothing to close
            session = await entry.opening
            await session.aclose()

    async def _make_room(self) -> None:
        while len(self._live) >= self.max_sessions:
            idle = [(entry.last_used, key) for key, entry in self._live.items() if not entry.busy]
            if not idle:
                return  # every session is mid-cell; let this one in rather than kill running work
            await self._close(min(idle)[1], _EVICTED)

    async def _reap_idle(self) -> None:
        interval = min(30.0, self.idle_timeout_s / 4)
        reason = _REAPED.format(idle=self.idle_timeout_s)
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self.idle_timeout_s
            for key, entry in list(self._live.items()):
                if not entry.busy and entry.last_used < deadline:
                    await self._close(key, reason)
