"""Which failures trip the collector's circuit breaker, and which server it names."""

from __future__ import annotations

import json

from nemo_gym.errors import HTTPStatusError, RequestTimeoutError, ServerUnreachableError
from nemo_gym.rollouts.circuit_breaker import CircuitBreaker, describe_server, refused_origin

RESOURCES = "http://127.0.0.1:40001"
AGENT = "http://127.0.0.1:40002"


def agent_reports(inner: str) -> HTTPStatusError:
    """What the collector sees when the agent could not reach a server behind it: a 502 whose body
    nests the agent's error, which nests the model server's, as JSON strings."""
    body = json.dumps(
        {
            "error": {
                "type": "HTTPStatusError",
                "message": f"{AGENT}/v1/responses answered HTTP 502: "
                + json.dumps({"error": {"type": "ServerUnreachableError", "message": inner}}),
            }
        }
    )
    return HTTPStatusError(f"{AGENT}/run answered HTTP 502: {body[:500]}", status_code=502, body=body)


def test_the_innermost_refusing_server_is_the_one_named():
    error = agent_reports(f"cannot connect to {RESOURCES}/seed_session: [Errno 111] Connect call failed")
    assert refused_origin(error) == RESOURCES
    assert (
        refused_origin(ServerUnreachableError(f"cannot connect to {AGENT}/run: [Errno 111] Connection refused"))
        == AGENT
    )
    # A reset or a timeout is what an overloaded server does, not a dead one.
    assert (
        refused_origin(ServerUnreachableError(f"connection to {AGENT}/run failed: ClientOSError: [Errno 104]")) is None
    )
    assert refused_origin(RequestTimeoutError(f"POST {AGENT}/run timed out")) is None
    assert refused_origin(HTTPStatusError("upstream answered HTTP 400", status_code=400, body="bad")) is None


def test_only_an_unbroken_run_of_refused_connections_trips_it():
    breaker = CircuitBreaker(threshold=3)
    refused = ServerUnreachableError(f"cannot connect to {RESOURCES}/verify: [Errno 111] Connection refused")
    assert not breaker.record_failure(refused) and not breaker.record_failure(refused)
    breaker.record_success()  # one rollout got through: the server is alive
    assert not breaker.record_failure(refused) and not breaker.record_failure(refused)
    breaker.record_failure(HTTPStatusError("bad task", status_code=422, body=""))  # a different failure breaks the run
    assert not breaker.record_failure(refused) and not breaker.record_failure(refused)
    # Resets and timeouts (a server dying, or just overloaded) neither count nor break the run.
    for _ in range(10):
        assert not breaker.record_failure(ServerUnreachableError(f"connection to {AGENT}/run failed: reset"))
        assert not breaker.record_failure(RequestTimeoutError(f"POST {AGENT}/run timed out"))
    assert breaker.record_failure(agent_reports(f"cannot connect to {RESOURCES}/tool: [Errno 111] Connect call failed"))
    assert breaker.tripped and breaker.gone_origin() == RESOURCES


def test_an_overloaded_agent_resetting_connections_never_trips_it():
    breaker = CircuitBreaker(threshold=3)
    reset = ServerUnreachableError(
        f"connection to {AGENT}/run failed: ClientOSError: [Errno 104] Connection reset by peer"
    )
    assert not any(breaker.record_failure(reset) for _ in range(1000))


def test_the_server_is_named_from_the_registry_or_by_its_address():
    urls = {"example_single_tool_call": "http://localhost:40001", "agent": AGENT}
    assert describe_server(RESOURCES, urls) == f"server 'example_single_tool_call' ({RESOURCES})"
    assert describe_server("https://api.example.com", urls) == "the server at https://api.example.com"
