"""Which failures trip the collector's circuit breaker, and which server it names."""

from __future__ import annotations

import json

from nemo_gym.errors import HTTPStatusError, RequestTimeoutError, ServerUnreachableError
from nemo_gym.rollouts.circuit_breaker import CircuitBreaker, describe_server, unreachable_origin

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


def test_the_innermost_unreachable_server_is_the_one_named():
    error = agent_reports(f"cannot connect to {RESOURCES}/seed_session: [Errno 111] Connect call failed")
    assert unreachable_origin(error) == RESOURCES
    assert (
        unreachable_origin(ServerUnreachableError(f"connection to {AGENT}/run failed: ServerDisconnectedError"))
        == AGENT
    )
    assert unreachable_origin(RequestTimeoutError(f"POST {AGENT}/run timed out")) is None
    assert unreachable_origin(HTTPStatusError("upstream answered HTTP 400", status_code=400, body="bad")) is None


def test_only_an_unbroken_run_of_connection_failures_trips_it():
    breaker = CircuitBreaker(threshold=3)
    refused = ServerUnreachableError(f"cannot connect to {RESOURCES}/verify: refused")
    assert not breaker.record_failure(refused) and not breaker.record_failure(refused)
    breaker.record_success()  # one rollout got through: the server is alive
    assert not breaker.record_failure(refused) and not breaker.record_failure(refused)
    breaker.record_failure(HTTPStatusError("bad task", status_code=422, body=""))  # a different failure breaks the run
    assert not breaker.record_failure(refused) and not breaker.record_failure(refused)
    assert breaker.record_failure(agent_reports(f"cannot connect to {RESOURCES}/tool: refused"))
    assert breaker.tripped and breaker.gone_origin() == RESOURCES


def test_the_server_is_named_from_the_registry_or_by_its_address():
    urls = {"example_single_tool_call": "http://localhost:40001", "agent": AGENT}
    assert describe_server(RESOURCES, urls) == f"server 'example_single_tool_call' ({RESOURCES})"
    assert describe_server("https://api.example.com", urls) == "the server at https://api.example.com"
