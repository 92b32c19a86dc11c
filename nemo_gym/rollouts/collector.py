"""The collection engine: run rollout jobs through an agent with bounded concurrency, retries and
deadlines, and hand back outcomes as they finish.

This is the Python API an RL trainer calls in-process (the CLI is a thin shell over it):

    async with RolloutCollector.connect(head_url, "my_agent", CollectionPolicy(concurrency=64)) as collector:
        async for outcome in collector.stream(expand_jobs(enumerate(rows), num_repeats=4)):
            if outcome.ok:
                train_on(outcome.row)

Only `policy.concurrency` jobs are pulled from the job iterator at a time, so a million-row
input costs no more memory than a ten-row one. A failed rollout is data: it is retried up to
`policy.max_attempts` times with exponential backoff and jitter, then reported as a failure with
its error; it is never scored as reward 0. One rollout's failure never stops the others, but a
server that is gone does: a circuit breaker (see `circuit_breaker`) ends the stream with
ServerGoneError after a run of refused connections, without attempting the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.client import CONNECT_ONLY_RETRY, HttpClient, PoolLimits, ServerClient, Timeouts
from nemo_gym.errors import (
    AgentReportedFailureError,
    InputDataError,
    InvalidResponseError,
    NemoGymError,
    ServerGoneError,
    TransportError,
    UnknownServerError,
)
from nemo_gym.retry import RetryPolicy, classify_error
from nemo_gym.rollouts.circuit_breaker import CircuitBreaker, describe_server
from nemo_gym.rollouts.tasks import (
    AGENT_REF_FIELD,
    FAILURE_CLASS_FIELD,
    FAILURE_TERMINAL_FIELD,
    NO_PERSIST_FIELD,
    ROLLOUT_INDEX_FIELD,
    TASK_INDEX_FIELD,
    RolloutJob,
    agent_of,
)

AGENT_SERVER_TYPE = "responses_api_agents"


class CollectionPolicy(BaseModel):
    """How hard the collector pushes and how it treats failures."""

    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(256, ge=1)
    """Rollouts in flight at once (`num_samples_in_parallel`). 256 keeps a local stack busy without
    queueing; raise it for slow remote models."""
    max_attempts: int = Field(3, ge=1)
    """Attempts per rollout for retryable failures (5xx, 408/429, timeouts, lost connections)."""
    rollout_timeout_s: float | None = Field(None, gt=0)
    """Deadline for one attempt of one rollout end to end, from when it is sent to its agent: a rollout waiting
    for the client to carry it (`RolloutCollector._reading_gate`, `_parking_for`) has not started (None = only
    the HTTP read timeout)."""
    initial_window: int = Field(32, ge=1)
    """Rollouts admitted at first; each finished rollout admits one more, up to `concurrency` (TCP-style
    slow start: the window doubles per rollout time). Admitting 16k rollouts at once puts every one of
    them in lockstep behind the others, so none finishes for a long time; ramping up gets first results
    out in about one rollout time. A small first window keeps that first rollout from queueing behind a
    big first batch on every server (128 at once added ~0.1-0.2 s to it on 2 cores). Growing faster
    than doubling was tried and is worse: more new connections per finished rollout overflow the
    servers' accept queues (dropped SYNs wait 1 s to be resent), which cost throughput at 16k."""
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    max_connection_failures_in_a_row: int | None = Field(32, ge=1)
    """Circuit breaker: after this many rollout attempts in a row had their connection refused by a
    server (the agent, or one the agent reports it cannot reach), stop dispatching and raise
    ServerGoneError. 32 is well above what a restart blip causes and well below a dead server's
    flood; resets and timeouts (overload) are not counted. None = never trip."""

    @property
    def retry(self) -> RetryPolicy:
        """Whole-rollout retries in the shared vocabulary (`nemo_gym.retry`)."""
        return RetryPolicy(
            max_attempts=self.max_attempts, backoff_initial_s=self.backoff_initial_s, backoff_max_s=self.backoff_max_s
        )


@dataclass(slots=True)
class RolloutFailure:
    error_type: str
    message: str
    status_code: int | None = None
    markers: dict[str, Any] | None = None
    """The agent's own `_ng_failure*` fields, when the agent reported the failure (kept in the record)."""
    persist: bool = True
    """False for a rollout the agent said was killed (`_ng_no_persist`): no record is written."""


@dataclass(slots=True)
class RolloutOutcome:
    """A finished job: the scored row, or the failure that survived every attempt."""

    job: RolloutJob
    row: dict[str, Any] | None
    failure: RolloutFailure | None
    attempts: int
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.row is not None

    def failure_record(self, agent_name: str) -> dict[str, Any]:
        assert self.failure is not None
        return self.job.stamp(
            {
                "agent_ref": {"type": AGENT_SERVER_TYPE, "name": agent_name},
                "error_type": self.failure.error_type,
                "message": self.failure.message,
                "status_code": self.failure.status_code,
                "attempts": self.attempts,
                "duration_s": round(self.duration_s, 3),
                **(self.failure.markers or {}),
            }
        )


class RolloutCollector:
    """Runs jobs through an agent's `/run`: the one each row's `agent_ref` names, else `agent_name`
    (NeMo Gym's rule). Holds no rows: results stream out as they finish."""

    def __init__(
        self, server_client: ServerClient, agent_name: str | None, policy: CollectionPolicy = CollectionPolicy()
    ):
        self.server_client = server_client
        self.agent_name = agent_name
        self.policy = policy
        self._retry: tuple[CollectionPolicy, RetryPolicy] | None = None
        self._breaker = self._new_breaker()
        self._parking: dict[str, asyncio.Semaphore | None] = {}

    def _new_breaker(self) -> CircuitBreaker | None:
        threshold = self.policy.max_connection_failures_in_a_row
        return CircuitBreaker(threshold) if threshold is not None else None

    @classmethod
    def connect(
        cls,
        head_url: str,
        agent_name: str | None,
        policy: CollectionPolicy = CollectionPolicy(),
        timeouts: Timeouts = Timeouts(),
        limits: PoolLimits = PoolLimits(),
    ) -> RolloutCollector:
        """A collector with its own pooled HTTP client; use `async with` to close it. `limits` caps the
        size of a rollout row the agent may answer (`PoolLimits.max_response_bytes`, 128 MiB)."""
        return cls(ServerClient(head_url, HttpClient(timeouts=timeouts, limits=limits)), agent_name, policy)

    async def __aenter__(self) -> RolloutCollector:
        try:
            await self.check_agent()
        except BaseException:
            await self.server_client.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server_client.aclose()

    async def check_agent(self) -> None:
        """Fail fast, with the list of agents, if `agent_name` is not a running agent."""
        if self.agent_name is not None:
            await self.check_agents({self.agent_name})

    async def check_agents(self, names: set[str] | frozenset[str]) -> None:
        """Fail fast, with the list of agents, if one of `names` is not a running agent."""
        registry = await self.server_client.registry()
        if any(name not in registry for name in names):
            try:
                registry = await self.server_client.registry(refresh=True)
            except TransportError:
                if not registry:
                    raise
        agents = sorted(name for name, row in registry.items() if row.server_type == AGENT_SERVER_TYPE)
        for name in sorted(names):
            info = registry.get(name)
            if info is None or info.server_type != AGENT_SERVER_TYPE:
                import difflib

                close = difflib.get_close_matches(name, agents, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise UnknownServerError(
                    f"unknown agent {name!r}: the running agents are {', '.join(agents) or 'none'}.{hint}"
                )

    def agent_for(self, job: RolloutJob) -> str:
        """The agent that runs `job`: the row's `agent_ref.name`, else this collector's `agent_name`."""
        agent = agent_of(job.row, self.agent_name)
        if agent is None:
            raise InputDataError(
                f"task {job.task_index} names no agent: give the row an agent_ref or pass +agent_name=<agent>",
                field=AGENT_REF_FIELD,
            )
        return agent

    async def run_one(self, job: RolloutJob) -> RolloutOutcome:
        """One rollout with its retry budget. Never raises for a rollout-level failure."""
        started = time.monotonic()
        agent = self.agent_for(job)  # a row without an agent is bad input: it ends the stream, never retried
        retry = self._retry_policy()
        attempt = 0
        breaker = self._breaker
        while True:
            attempt += 1
            if breaker is not None and breaker.tripped:
                raise await self._server_gone(breaker)  # no new attempt once a server is known to be gone
            try:
                row = await self._attempt(job, agent)
                if breaker is not None:
                    breaker.record_success()
                return RolloutOutcome(job, row, None, attempt, time.monotonic() - started)
            except UnknownServerError:
                raise
            except (TimeoutError, NemoGymError) as error:
                if breaker is not None and breaker.record_failure(error):
                    raise await self._server_gone(breaker) from None
                decision = classify_error(error)
                if not retry.should_retry(decision, attempt):
                    failure = RolloutFailure(
                        type(error).__name__,
                        str(error) or f"rollout exceeded rollout_timeout_s={self.policy.rollout_timeout_s}",
                        getattr(error, "status_code", None),
                    )
                    if isinstance(error, AgentReportedFailureError):
                        failure.markers, failure.persist = error.markers, error.persist
                    return RolloutOutcome(job, None, failure, attempt, time.monotonic() - started)
            await asyncio.sleep(retry.delay(attempt, decision.retry_after))

    def _retry_policy(self) -> RetryPolicy:
        """`policy.retry`, built once per policy: it is a validated model, and building one per rollout
        was measurable CPU and memory per in-flight rollout."""
        cached = self._retry
        if cached is None or cached[0] is not self.policy:
            cached = self._retry = (self.policy, self.policy.retry)
        return cached[1]

    async def _server_gone(self, breaker: CircuitBreaker) -> ServerGoneError:
        try:
            urls = {name: info.url for name, info in (await self.server_client.registry()).items()}
        except NemoGymError:
            urls = {}  # the head server may be gone too; the address alone still says where to look
        server = describe_server(breaker.gone_origin(), urls)
        return ServerGoneError(
            f"{server} is gone: {breaker.failures_in_a_row} rollout attempts in a row had their connection refused "
            f"(last: {breaker.last_error[:300]}); stopped dispatching rollouts",
            server=server,
        )

    async def _attempt(self, job: RolloutJob, agent: str) -> dict[str, Any]:
        gate = self._parking.get(agent)
        if gate is None and agent not in self._parking:
            gate = await self._parking_for(agent)
        if gate is None:
            return await self._run_on_agent(job, agent)
        async with gate:
            return await self._run_on_agent(job, agent)

    async def _parking_for(self, agent: str) -> asyncio.Semaphore | None:
        """Where rollouts wait when more are in flight than the client carries to `agent` at once
        (`ServerClient.request_cap`: 4,096 connections per server by default). Parked here a rollout holds
        its job and three small frames; queued in the connection pool it held its request body and the
        client's whole call chain (~5 KB more: ~60 MB at 16,384 in flight). Its `rollout_timeout_s` starts
        when it leaves. None when every rollout in flight fits."""
        cap = await self.server_client.request_cap(agent)
        gate = asyncio.Semaphore(cap) if cap is not None and cap < self.policy.concurrency else None
        return self._parking.setdefault(agent, gate)  # two first rollouts racing here share the first gate

    async def _reading_gate(self) -> asyncio.Semaphore | None:
        """How many rollouts may hold a job at once: what the client carries to every running agent
        together (`ServerClient.request_cap`), when that is fewer than `policy.concurrency`. A rollout
        beyond it waits before its job is read, holding no task row (~2.2 KB parsed: ~27 MB of the
        collector's memory with 16,384 in flight and 4,096 carried); one that can never be sent at once
        gains nothing by reading ahead. With several agents the sum can exceed what one of them takes, and
        `_parking_for` still parks the rest per agent. None when every rollout in flight fits, or the
        registry cannot say (the rollouts then report what is wrong)."""
        try:
            registry = await self.server_client.registry()
            agents = [name for name, info in registry.items() if info.server_type == AGENT_SERVER_TYPE]
            caps = [await self.server_client.request_cap(name) for name in agents]
        except NemoGymError:
            return None
        if not caps or None in caps:
            return None
        total = sum(cap for cap in caps if cap is not None)
        return asyncio.Semaphore(total) if total < self.policy.concurrency else None

    async def _run_on_agent(self, job: RolloutJob, agent: str) -> dict[str, Any]:
        call = self.server_client.post(agent, "/run", json=job.run_body(), retry=CONNECT_ONLY_RETRY)
        if self.policy.rollout_timeout_s is not None:
            result = await asyncio.wait_for(call, self.policy.rollout_timeout_s)
        else:
            result = await call
        result.raise_for_status()
        row = result.json()
        if isinstance(row, dict) and (row.get(FAILURE_CLASS_FIELD) is not None or row.get(NO_PERSIST_FIELD)):
            raise _reported_failure(agent, row)
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("reward"), (int, float))
            or isinstance(row.get("reward"), bool)
        ):
            raise InvalidResponseError(f"agent {agent!r} returned a row without a numeric reward")
        for key in (TASK_INDEX_FIELD, ROLLOUT_INDEX_FIELD):
            if key not in job.row:
                # Echoed from the /run body by verify: `stamp` writes it last, where rows always had it.
                row.pop(key, None)
        row[AGENT_REF_FIELD] = {"type": AGENT_SERVER_TYPE, "name": agent}  # the agent that ran it
        return job.stamp(row)

    async def stream(self, jobs: Iterable[RolloutJob] | AsyncIterable[RolloutJob]) -> AsyncIterator[RolloutOutcome]:
        """Run `jobs` with at most `policy.concurrency` in flight; yield outcomes in completion order."""
        source = _as_async_iterator(jobs)
        self._breaker = self._new_breaker()  # each stream starts with a closed breaker
        breaker = self._breaker
        pull_lock = asyncio.Lock()
        # Bounded: when the consumer is slow (say, writing to a slow disk), workers wait instead of
        # piling finished rows up in memory.
        outcomes: asyncio.Queue[RolloutOutcome | BaseException | None] = asyncio.Queue(self.policy.concurrency)
        workers: list[asyncio.Task[None]] = []
        active = 0
        exhausted = False
        reading = await self._reading_gate()

        async def next_outcome() -> RolloutOutcome | None:
            nonlocal exhausted
            async with pull_lock:
                job = await anext(source, None)
            if job is None:
                exhausted = True
                return None
            return await self.run_one(job)

        async def worker() -> None:
            nonlocal active, exhausted
            try:
                while True:
                    if breaker is not None and breaker.tripped:
                        raise await self._server_gone(breaker)  # stop dispatching: nothing more is pulled
                    if reading is None:
                        outcome = await next_outcome()
                    else:
                        async with reading:
                            outcome = await next_outcome()
                    if outcome is None:
                        return
                    await outcomes.put(outcome)
                    del outcome  # waiting at the gate for its next job, a worker must not keep this row alive
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # a fatal error (unknown agent, bad input) ends the stream
                exhausted = True
                await outcomes.put(error)
            finally:
                active -= 1
                if active == 0:
                    await outcomes.put(None)

        def admit() -> None:
            nonlocal active
            active += 1
            workers.append(asyncio.create_task(worker()))

        for _ in range(min(self.policy.initial_window, self.policy.concurrency)):
            admit()
        try:
            while True:
                item = await outcomes.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                if not exhausted and len(workers) < self.policy.concurrency:
                    admit()  # slow start: one more worker per finished rollout
                yield item
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


def _reported_failure(agent: str, row: dict[str, Any]) -> AgentReportedFailureError:
    """The error for a row whose agent says the rollout failed: NeMo Gym's agents mark a failed
    rollout's row instead of answering with an error status, and its collector files such rows as
    failures. Taking one as a scored row would train on a reward the rollout never earned."""
    markers = {key: value for key, value in row.items() if key.startswith("_ng_failure") or key == NO_PERSIST_FIELD}
    kind = row.get(FAILURE_CLASS_FIELD)
    said = f"failure class {kind!r}" if kind is not None else "the rollout was killed (_ng_no_persist)"
    reason = next((str(row[key]) for key in ("_ng_failure_reason", "_ng_failure_message", "error") if row.get(key)), "")
    return AgentReportedFailureError(
        f"agent {agent!r} reported {said}" + (f": {reason[:500]}" if reason else ""),
        markers=markers,
        terminal=bool(row.get(FAILURE_TERMINAL_FIELD)),
        persist=not row.get(NO_PERSIST_FIELD),
    )


async def _as_async_iterator(jobs: Iterable[RolloutJob] | AsyncIterable[RolloutJob]) -> AsyncIterator[RolloutJob]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job
