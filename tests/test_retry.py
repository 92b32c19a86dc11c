"""One retry vocabulary: the classifier every layer uses, the policy's backoff, and the layers agreeing."""

from __future__ import annotations

import asyncio

import pytest

from nemo_gym.client import HttpClient
from nemo_gym.errors import HTTPStatusError, InvalidResponseError, RequestTimeoutError, ServerUnreachableError
from nemo_gym.retry import CONNECT_ONLY_RETRY, FailureKind, RetryPolicy, classify_error, classify_status
from nemo_gym.rollouts.collector import CollectionPolicy
from nemo_gym.servers.base import status_for
from nemo_gym.testing.scripted_openai import ScriptedOpenAI


@pytest.mark.parametrize("status", [408, 429, 500, 501, 502, 503, 504, 599])
def test_408_429_and_every_5xx_are_retryable(status):
    assert classify_status(status).kind is FailureKind.STATUS


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422, 424])
def test_every_other_4xx_is_permanent(status):
    assert not classify_status(status).retryable


def test_errors_are_classified_by_what_may_have_been_delivered():
    assert classify_error(ServerUnreachableError("refused", connect_failed=True)).kind is FailureKind.CONNECT
    assert classify_error(ServerUnreachableError("reset mid-way")).kind is FailureKind.TRANSPORT
    assert classify_error(RequestTimeoutError("read deadline")).kind is FailureKind.TRANSPORT
    assert classify_error(TimeoutError()).kind is FailureKind.TRANSPORT
    assert classify_error(HTTPStatusError("x", status_code=429, retry_after=3.0)).retry_after == 3.0
    assert not classify_error(InvalidResponseError("no reward")).retryable


def test_a_server_answers_a_status_the_classifier_agrees_with():
    # A model server's failure reaches the collector as the status its error handler picks; the
    # collector's classifier must come to the same verdict as the model server's did.
    for upstream_status in (400, 401, 404, 408, 429, 500, 503):
        error = HTTPStatusError("upstream failed", status_code=upstream_status)
        relayed = status_for(error)
        assert classify_status(relayed).retryable == classify_status(upstream_status).retryable


def test_policies_say_which_kinds_they_retry_and_stop_at_max_attempts():
    refused = classify_error(ServerUnreachableError("refused", connect_failed=True))
    dropped = classify_error(ServerUnreachableError("reset"))
    assert CONNECT_ONLY_RETRY.should_retry(refused, 1) and not CONNECT_ONLY_RETRY.should_retry(dropped, 1)
    assert not CONNECT_ONLY_RETRY.should_retry(classify_status(503), 1)
    assert RetryPolicy(max_attempts=3).should_retry(classify_status(503), 2)
    assert not RetryPolicy(max_attempts=3).should_retry(classify_status(503), 3)
    collector = CollectionPolicy(max_attempts=2, backoff_initial_s=1, backoff_max_s=1).retry
    assert collector.max_attempts == 2 and 0.5 <= collector.delay(1) <= 1


def test_the_http_client_sends_a_401_once_and_a_408_max_attempts_times():
    async def post(url: str) -> int:
        client = HttpClient(retry=RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02))
        try:
            return (await client.request("POST", url, json={"input": "hi"})).status
        finally:
            await client.aclose()

    for status, expected_calls in ((401, 1), (408, 3)):
        with ScriptedOpenAI(fault_every=1, fault_status=status) as upstream:
            assert asyncio.run(post(f"{upstream.url}/responses")) == status
            assert len(upstream.requests) == expected_calls
