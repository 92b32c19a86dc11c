"""HttpClient against real loopback servers: bounded retries, Retry-After, timeouts, translated errors."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import tracemalloc

import pytest

from nemo_gym.client import HttpClient, PoolLimits, RetryPolicy, Timeouts, dumps, http_url, parse_retry_after
from nemo_gym.errors import HTTPStatusError, RequestTimeoutError, ResponseTooLargeError, ServerUnreachableError
from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, huge_answer

BODY = {"input": "hi"}


async def post(url: str, policy: RetryPolicy, timeouts: Timeouts = Timeouts()):
    client = HttpClient(retry=policy, timeouts=timeouts)
    try:
        return await client.request("POST", url, json=BODY)
    finally:
        await client.aclose()


def test_a_server_that_always_fails_is_tried_exactly_max_attempts_times():
    with ScriptedOpenAI(fault_every=1, fault_status=503) as upstream:
        policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02)
        result = asyncio.run(post(f"{upstream.url}/responses", policy))
    assert result.status == 503 and len(upstream.requests) == 3
    with pytest.raises(HTTPStatusError) as raised:
        result.raise_for_status()
    assert raised.value.status_code == 503 and "503" in str(raised.value)


def test_retry_after_is_honoured():
    with ScriptedOpenAI(fault_every=2, fault_status=429, retry_after_s=0.3) as upstream:
        policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.0, backoff_max_s=5)
        started = time.monotonic()
        asyncio.run(post(f"{upstream.url}/responses", policy))  # request 1 ok
        result = asyncio.run(post(f"{upstream.url}/responses", policy))  # request 2 -> 429, then ok
        elapsed = time.monotonic() - started
    assert result.status == 200 and elapsed >= 0.3


def test_retry_after_is_honoured_up_to_the_policy_cap():
    assert RetryPolicy(max_retry_after_s=2).delay(1, retry_after=3600) == 2
    assert RetryPolicy(backoff_max_s=1).delay(1, retry_after=3) == 3  # longer than our own backoff: honoured
    # Equal jitter: never immediate, never above the doubled ceiling (1 s * 2**2 at attempt 3).
    assert all(2 <= RetryPolicy(backoff_initial_s=1, backoff_max_s=10).delay(3) <= 4 for _ in range(100))


def test_parse_retry_after_accepts_seconds_and_dates():
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.001  # in the past -> 0


def test_a_refused_connection_is_a_clear_error_after_bounded_attempts():
    port = free_port()
    policy = RetryPolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02)
    with pytest.raises(ServerUnreachableError, match=rf"127.0.0.1:{port}.*after 2 attempts"):
        asyncio.run(post(f"http://127.0.0.1:{port}/x", policy))


def test_a_peer_that_never_answers_hits_the_read_timeout():
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            asyncio.run(post(url, RetryPolicy(max_attempts=1), Timeouts(connect_s=1, read_s=0.3)))
    assert time.monotonic() - started < 5


def test_a_server_url_brackets_an_ipv6_host_and_leaves_others_alone():
    assert http_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert http_url("node-3.cluster", 80) == "http://node-3.cluster:80"
    assert http_url("fd00::12", 8000) == "http://[fd00::12]:8000"
    assert http_url("[fd00::12]", 8000) == "http://[fd00::12]:8000"


@pytest.mark.parametrize("with_content_length", [True, False], ids=["content-length", "chunked"])
def test_an_answer_over_the_cap_is_refused_once_naming_the_url_and_the_cap(with_content_length):
    async def twice(url: str) -> tuple[BaseException | None, int]:
        client = HttpClient(
            retry=RetryPolicy(max_attempts=3, backoff_initial_s=0.01), limits=PoolLimits(max_response_bytes=1 << 20)
        )
        try:
            try:
                await client.request("POST", url, json=BODY)
                refused = None
            except ResponseTooLargeError as error:
                refused = error
            upstream.answer_with = None
            return refused, (await client.request("POST", url, json=BODY)).status
        finally:
            await client.aclose()

    with ScriptedOpenAI() as upstream:
        upstream.answer_with = huge_answer(300 << 20, with_content_length=with_content_length)
        url = f"{upstream.url}/responses"
        refused, next_status = asyncio.run(twice(url))
        assert len(upstream.requests) == 2  # the oversized answer was not asked for again
    assert isinstance(refused, ResponseTooLargeError) and refused.limit_bytes == 1 << 20
    assert str(refused).startswith(f"POST {url}: the answer is ")
    assert "over the 1 MiB response cap" in str(refused)
    assert ("refused unread" if with_content_length else "stopped reading at") in str(refused)
    assert next_status == 200  # the client goes on


@pytest.mark.parametrize("text_chars", [300, 20_000])
def test_an_encoded_request_body_holds_its_own_size_not_the_encoders_buffer(text_chars):
    # A body lives as long as its call: a collector holds one per rollout in flight (16k of them at once),
    # an agent one per model call. orjson hands back its whole buffer: 4 KiB for a 500-byte row, 260 KB
    # for a 20 KB text.
    row = {"responses_create_params": {"input": [{"role": "user", "content": "x" * text_chars}]}, "task_id": 7}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        bodies = [dumps(row) for _ in range(50)]
        held = (tracemalloc.get_traced_memory()[0] - before) / len(bodies)
    finally:
        tracemalloc.stop()
    assert (
        bodies[0]
        == b'{"responses_create_params":{"input":[{"role":"user","content":"' + b"x" * text_chars + b'"}]},"task_id":7}'
    )
    assert held < 1.2 * len(bodies[0]) + 200, (held, len(bodies[0]))


def test_a_url_the_lean_transport_leaves_to_aiohttp_is_still_served():
    """aiohttp is imported on first use; a URL with userinfo (and https://) still goes through it,
    answers and per-call timeouts included."""
    with ScriptedOpenAI() as upstream:
        url = upstream.url.replace("http://", "http://user:secret@") + "/responses"
        result = asyncio.run(post(url, RetryPolicy(max_attempts=1)))
    assert result.status == 200 and "output" in result.json() and len(upstream.requests) == 1

    async def post_with_own_timeouts(url: str):
        client = HttpClient(retry=RetryPolicy(max_attempts=1))
        try:
            return await client.request("POST", url, json=BODY, timeouts=Timeouts(connect_s=1, read_s=0.3))
        finally:
            await client.aclose()

    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://user:secret@127.0.0.1:{listener.getsockname()[1]}/x"
        with pytest.raises(RequestTimeoutError, match="no byte for 0.3 s"):
            asyncio.run(post_with_own_timeouts(url))


def test_plain_http_requests_never_import_aiohttp():
    """Every hop between our processes is plain http://, served by `http11`: a collector must not pay
    aiohttp's import (a subprocess, so modules other tests imported do not count)."""
    client_only = (
        "import asyncio, sys\n"
        "from nemo_gym.client import HttpClient\n"
        "async def main(url):\n"
        "    client = HttpClient()\n"
        "    try:\n"
        "        return await client.request('POST', url, json={'input': 'hi'})\n"
        "    finally:\n"
        "        await client.aclose()\n"
        "result = asyncio.run(main(sys.argv[1]))\n"
        "print(result.status, 'aiohttp' in sys.modules)\n"
    )
    with ScriptedOpenAI() as upstream:
        done = subprocess.run(
            [sys.executable, "-c", client_only, upstream.url + "/responses"], capture_output=True, text=True, check=True
        )
    assert done.stdout.split() == ["200", "False"], done.stdout + done.stderr
