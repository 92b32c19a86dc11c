"""The collection progress line, rendered into a buffer with a fake clock."""

from __future__ import annotations

import asyncio
import io

from nemo_gym.rollouts.progress import RolloutProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def last_line(buffer: io.StringIO) -> str:
    return buffer.getvalue().replace("\r", "\n").strip().splitlines()[-1]


def test_rate_failures_and_mean_reward_show_from_the_first_finished_rollout():
    buffer, clock = io.StringIO(), FakeClock()
    with RolloutProgress(file=buffer, clock=clock) as progress:
        progress.start(4)
        assert "waiting for the first rollout" in last_line(buffer)
        clock.now = 2.0
        progress.add_row(1.0)
        assert progress.postfix() == "0.50 rollouts/s, one per 2 s, 0 failed, mean reward 1.000"
        clock.now = 4.0
        progress.add_failure()
        progress.add_row(0.0)
        assert progress.postfix() == "0.75 rollouts/s, one per 1 s, 1 failed, mean reward 0.500"
        progress.add_row(1.0)
        assert progress.postfix() == "1.00 rollouts/s, 1 failed, mean reward 0.667"
    final = last_line(buffer)
    assert "4/4" in final and "1 failed" in final and "mean reward 0.667" in final


def test_a_slow_first_rollout_is_explained_once():
    buffer, clock = io.StringIO(), FakeClock()
    with RolloutProgress(file=buffer, clock=clock, first_notice_s=20, concurrency=5) as progress:
        progress.start(10)
        clock.now = 19.0
        progress.tick()
        assert "No rollout has finished" not in buffer.getvalue()
        clock.now = 21.0
        progress.tick()
        progress.tick()
    assert buffer.getvalue().count("No rollout has finished after 21 s: 5 rollouts are running") == 1


async def test_the_heartbeat_ticks_while_nothing_finishes():
    buffer, clock = io.StringIO(), FakeClock()
    with RolloutProgress(file=buffer, clock=clock, first_notice_s=0, heartbeat_s=0.01) as progress:
        progress.start(2)  # inside a running loop: the heartbeat starts by itself
        while not progress.noticed:
            await asyncio.sleep(0.01)
    assert "No rollout has finished after 0 s: " in buffer.getvalue()
    assert progress._heartbeat is None  # closing stopped it
