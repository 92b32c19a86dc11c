"""The progress line of a collection, written for a person watching it.

    Collecting rollouts:  40%|████      | 4/10 [00:31<00:47, 0.13 rollouts/s, 1 failed, mean reward 0.667]

Rate, failures and the running mean reward appear from the first finished rollout. Until then a
heartbeat keeps the elapsed time moving, and if nothing has finished after `first_notice_s` a
single line says why a first rollout can take long (it is a whole episode: several model calls,
tools and verify; a CPU model serves only a couple of requests at once), so a quick start on the
local model never sits silently at 0/N.

The output stream and the clock are injected, so tests render into a StringIO with a fake clock.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm  # type: ignore[import-untyped]

from nemo_gym.rollouts.metrics import RunningStats

__all__ = ["RolloutProgress"]

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class RolloutProgress:
    """A tqdm bar told about each finished rollout. It has the collection-progress shape
    (`start(total, already_done)`, `advance(outcome)`, `close()`); `add_row` / `add_failure` are the
    same without an outcome object. While a bar is open inside an event loop, a heartbeat task
    refreshes it every `heartbeat_s`."""

    def __init__(
        self,
        *,
        file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        first_notice_s: float = 20.0,
        concurrency: int | None = None,
        heartbeat_s: float = 1.0,
        desc: str = "Collecting rollouts",
    ):
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.first_notice_s = first_notice_s
        self.concurrency = concurrency
        self.heartbeat_s = heartbeat_s
        self.desc = desc
        self.total = 0
        self.started = clock()
        self.failures = 0
        self.rewards = RunningStats()
        self.noticed = False
        self.bar: tqdm[Any] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # ---- the collection-progress shape -------------------------------------------------------
    def start(self, total: int, already_done: int = 0) -> None:
        self.total, self.started = total, self.clock()
        self.bar = tqdm(
            total=total,
            desc=self.desc,
            file=self.file,
            dynamic_ncols=True,
            bar_format=BAR_FORMAT,
            mininterval=0.5,
            postfix=self.postfix(),
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): the bar moves only when rollouts finish
        self._heartbeat = loop.create_task(self._beat())

    def advance(self, outcome: Any) -> None:
        """`outcome` is a RolloutOutcome: a row (with its reward) or a failure."""
        if outcome.row is not None:
            self.add_row(float(outcome.row["reward"]))
        else:
            self.add_failure()

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.close()
            self.bar = None

    # ---- counting ------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return self.rewards.count + self.failures

    def postfix(self) -> str:
        if not self.done:
            return "waiting for the first rollout"
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        # Below one a second, "0.01 rollouts/s" says little; the seconds per rollout say it plainly.
        speed = f"{rate:.2f} rollouts/s" if rate >= 1 else f"{rate:.2f} rollouts/s, one per {1 / rate:.0f} s"
        parts = [speed, f"{self.failures} failed"]
        if self.rewards.count:
            parts.append(f"mean reward {self.rewards.mean:.3f}")
        return ", ".join(parts)

    def add_row(self, reward: float) -> None:
        self.rewards.add(reward)
        self._advance()

    def add_failure(self) -> None:
        self.failures += 1
        self._advance()

    def _advance(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.update(1)

    def tick(self) -> None:
        """Keep the elapsed time moving, and explain a slow first rollout once."""
        if self.bar is None:
            return
        waited = self.clock() - self.started
        if not self.done and not self.noticed and waited >= self.first_notice_s:
            self.noticed = True
            running = ""
            if self.concurrency is not None:
                running = f"{min(self.concurrency, self.total)} rollouts are running; "
            self.bar.write(
                f"No rollout has finished after {waited:.0f} s: {running}each is a whole episode "
                f"(model calls, tools, verify), and a local CPU model answers only a few requests at a time. "
                f"Rows are written as each rollout finishes.",
                file=self.file,
            )
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        self.bar.refresh()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.tick()

    def __enter__(self) -> RolloutProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
