"""The in-process Python API: bounded concurrency, lazy job pulling, failures as data."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from fastapi import Request

from nemo_gym.client import HttpClient, PoolLimits, ServerClient, ServerInfo
from nemo_gym.errors import InputDataError, UnknownServerError
from nemo_gym.rollouts import CollectionPolicy, RolloutCollector, jobs_from_rows
from nemo_gym.servers.agent import AgentRunRequest, BaseResponsesAPIAgentConfig, SimpleResponsesAPIAgent
from nemo_gym.testing.inprocess import ThreadedServer, registry_client


class CountingAgent(SimpleResponsesAPIAgent):
    """An agent whose /run sleeps, counts how many runs overlap, and fails on request."""

    config: BaseResponsesAPIAgentConfig
    in_flight: int = 0
    peak: int = 0
    calls: int = 0
    delay_s: float = 0.02

    async def run(self, request: Request, body: AgentRunRequest) -> Any:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            row = body.model_dump(mode="json")
            if row.get("fail") == "always":
                raise RuntimeError("environment exploded")
            if row.get("fail") == "first" and self.calls == 1:
                raise RuntimeError("transient hiccup")
            return row | {"response": {"id": "r", "output": []}, "reward": 1.0}
        finally:
            self.in_flight -= 1


@pytest.fixture
def agent():
    server = CountingAgent(config=BaseResponsesAPIAgentConfig(name="agent"), server_client=registry_client({}))
    with ThreadedServer(server.setup_webserver()) as running:
        yield server, registry_client({"agent": ("responses_api_agents", running.url)})


def rows(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"responses_create_params": {"input": f"task {i}"}, **extra} for i in range(count)]


async def drain(collector: RolloutCollector, jobs) -> list:
    try:
        return [outcome async for outcome in collector.stream(jobs)]
    finally:
        await collector.server_client.aclose()


def test_concurrency_is_bounded_and_every_pair_comes_back(agent):
    server, client = agent
    collector = RolloutCollector(client, "agent", CollectionPolicy(concurrency=4))
    outcomes = asyncio.run(drain(collector, jobs_from_rows(rows(10), num_repeats=3)))
    assert len(outcomes) == 30 and all(outcome.ok for outcome in outcomes)
    assert sorted(outcome.job.key for outcome in outcomes) == [(t, r) for t in range(10) for r in range(3)]
    assert server.peak == 4
    assert outcomes[0].row["_ng_task_index"] == outcomes[0].job.task_index
    assert outcomes[0].row["agent_ref"] == {"type": "responses_api_agents", "name": "agent"}


def test_jobs_are_pulled_lazily_so_memory_does_not_grow_with_the_input(agent):
    _, client = agent
    pulled = 0

    def endless():
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield from jobs_from_rows([{"responses_create_params": {"input": f"t{i}"}}])

    async def first_five() -> int:
        collector = RolloutCollector(client, "agent", CollectionPolicy(concurrency=8))
        stream = collector.stream(endless())
        async for _ in _take(stream, 5):
            pass
        await stream.aclose()
        await collector.server_client.aclose()
        return pulled

    # in flight (8) + finished but not yet consumed (8) + consumed (5) + the one being pulled
    assert asyncio.run(first_five()) <= 8 + 8 + 5 + 1


class GatedAgent(SimpleResponsesAPIAgent):
    """An agent whose runs wait until the test lets them finish, one `release` at a time."""

    config: BaseResponsesAPIAgentConfig
    started: int = 0
    released: int = 0

    async def run(self, request: Request, body: AgentRunRequest) -> Any:
        self.started += 1
        while self.released <= 0:
            await asyncio.sleep(0.005)
        self.released -= 1
        return body.model_dump(mode="json") | {"response": {"id": "r", "output": []}, "reward": 1.0}


def test_the_collector_starts_with_a_small_window_that_grows_by_one_per_finished_rollout():
    """Slow start: 32 rollouts go out first (so the first comes back in about one rollout time, not
    behind a big first batch on every server); each finished one lets one more in, up to concurrency."""
    server = GatedAgent(config=BaseResponsesAPIAgentConfig(name="agent"), server_client=registry_client({}))

    async def settled(count: int) -> int:
        while server.started < count:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # nothing more arrives
        return server.started

    async def ramp(client) -> list[int]:
        collector = RolloutCollector(client, "agent", CollectionPolicy(concurrency=1000))
        stream = collector.stream(jobs_from_rows(rows(1000)))
        consumer = asyncio.ensure_future(_take(stream, 1).__anext__())
        seen = [await settled(32)]
        server.released = 1
        await consumer
        seen.append(await settled(34))
        server.released = 10**6  # let the rest finish
        await stream.aclose()
        await collector.server_client.aclose()
        return seen

    with ThreadedServer(server.setup_webserver()) as running:
        client = registry_client({"agent": ("responses_api_agents", running.url)})
        # 32 at first; one finished: its worker takes the next job and one more is admitted.
        assert asyncio.run(ramp(client)) == [32, 34]


async def _take(stream, count):
    taken = 0
    async for item in stream:
        yield item
        taken += 1
        if taken == count:
            return


def test_a_failing_rollout_is_retried_then_reported_and_never_scored(agent):
    server, client = agent
    policy = CollectionPolicy(concurrency=2, max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02)
    collector = RolloutCollector(client, "agent", policy)
    outcomes = asyncio.run(drain(collector, jobs_from_rows(rows(2, fail="always") + rows(1))))
    failed = [outcome for outcome in outcomes if not outcome.ok]
    assert len(failed) == 2 and all(outcome.row is None and outcome.attempts == 3 for outcome in failed)
    record = failed[0].failure_record("agent")
    assert record["status_code"] == 500 and "environment exploded" in record["message"]
    assert [outcome.ok for outcome in outcomes].count(True) == 1


def test_a_transient_failure_is_retried_to_success(agent):
    server, client = agent
    policy = CollectionPolicy(concurrency=1, max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02)
    outcomes = asyncio.run(drain(RolloutCollector(client, "agent", policy), jobs_from_rows(rows(1, fail="first"))))
    # Only the first /run fails; the second attempt sometimes meets the keep-alive connection the server
    # closed after its 500 and is spent on it (seen on bcb57d3 too, about 1 run in 4), so the third succeeds.
    assert outcomes[0].ok and outcomes[0].attempts in (2, 3)
    assert server.calls <= outcomes[0].attempts  # a spent attempt never runs the rollout twice


def test_rollout_timeout_bounds_one_attempt(agent):
    _, client = agent
    policy = CollectionPolicy(concurrency=1, max_attempts=1, rollout_timeout_s=0.001)
    outcomes = asyncio.run(drain(RolloutCollector(client, "agent", policy), jobs_from_rows(rows(1))))
    assert not outcomes[0].ok and outcomes[0].failure.error_type == "TimeoutError"
    assert "rollout_timeout_s" in outcomes[0].failure.message


def test_unknown_agent_is_a_clear_error_with_a_suggestion(agent):
    _, client = agent

    async def check() -> None:
        try:
            await RolloutCollector(client, "agnt").check_agent()
        finally:
            await client.aclose()

    with pytest.raises(UnknownServerError, match="Did you mean 'agent'"):
        asyncio.run(check())


def test_bad_rows_are_rejected_with_their_position():
    with pytest.raises(InputDataError, match="<rows>:2: missing required field"):
        list(jobs_from_rows([{"responses_create_params": {"input": "a"}}, {"input": "b"}]))


def test_rollouts_beyond_what_the_client_carries_to_the_agent_wait_parked_and_time_only_their_run():
    # The client carries 2 requests to the agent at once; 16 rollouts of ~0.1 s are in flight. The rest
    # wait in the collector, holding no request, and rollout_timeout_s (0.5 s) starts when one leaves: the
    # last ones wait ~0.7 s, which queued in the connection pool counted against it.
    server = CountingAgent(config=BaseResponsesAPIAgentConfig(name="agent"), server_client=registry_client({}))
    server.delay_s = 0.1
    with ThreadedServer(server.setup_webserver()) as running:
        row = ServerInfo(name="agent", server_type="responses_api_agents", implementation="test", url=running.url)
        client = ServerClient(
            "http://127.0.0.1:9", HttpClient(limits=PoolLimits(max_connections_per_host=2)), registry=[row]
        )
        policy = CollectionPolicy(concurrency=16, max_attempts=1, rollout_timeout_s=0.5)
        outcomes = asyncio.run(drain(RolloutCollector(client, "agent", policy), jobs_from_rows(rows(16))))
    assert [outcome.ok for outcome in outcomes] == [True] * 16, [o.failure for o in outcomes if not o.ok]
    assert server.peak == 2


def test_rollouts_beyond_what_the_client_carries_wait_before_their_task_row_is_read():
    # 16 in flight, 2 carried to the only agent at once: the other 14 wait without a job, so the source is
    # never more than 2 rows ahead of the runs the agent finished (a parsed row is ~2.2 KB).
    server = CountingAgent(config=BaseResponsesAPIAgentConfig(name="agent"), server_client=registry_client({}))
    server.delay_s = 0.05
    ahead: list[int] = []

    async def collect() -> list:
        row = ServerInfo(name="agent", server_type="responses_api_agents", implementation="test", url=running.url)
        client = ServerClient(
            "http://127.0.0.1:9", HttpClient(limits=PoolLimits(max_connections_per_host=2)), registry=[row]
        )
        collector = RolloutCollector(client, "agent", CollectionPolicy(concurrency=16, initial_window=16))

        def jobs():
            for pulled, job in enumerate(jobs_from_rows(rows(12)), start=1):
                ahead.append(pulled - (server.calls - server.in_flight))
                yield job

        return await drain(collector, jobs())

    with ThreadedServer(server.setup_webserver()) as running:
        outcomes = asyncio.run(collect())
    assert [outcome.ok for outcome in outcomes] == [True] * 12
    assert max(ahead) <= 2, ahead
    assert server.peak == 2
