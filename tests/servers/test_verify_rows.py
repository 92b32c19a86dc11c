"""`/verify` takes rows as NeMo Gym writes them: nullable request fields set to null, and stored rollout
rows that already hold the fields the last verify added. `ng_reverify` says when a stored row stands
in for a task it cannot find."""

from __future__ import annotations

from typing import Any

import httpx

from nemo_gym.rollouts.reverify import Reverifier, RewardChanges
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.testing.inprocess import ThreadedServer, registry_client


class EchoVerifyRequest(BaseVerifyRequest):
    expected: str


class EchoVerifyResponse(EchoVerifyRequest, BaseVerifyResponse):
    said: str | None = None


class EchoServer(SimpleResourcesServer):
    """Reward 1 iff the reply's text is the task's `expected`; the verify response adds `said`."""

    async def verify(self, body: EchoVerifyRequest) -> EchoVerifyResponse:
        said = next(
            (part.get("text") for item in body.response.output for part in item.get("content") or []),
            None,
        )
        return EchoVerifyResponse(**body.model_dump(), reward=float(said == body.expected), said=said)


def echo_server() -> EchoServer:
    return EchoServer(config=BaseResourcesServerConfig(name="echo"), server_client=registry_client({}))


def reply(text: str) -> dict[str, Any]:
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    return {"id": "resp_1", "output": [message]}


# The request half of a row as NeMo Gym stores it: every optional Responses field present, most null.
NULLABLE_PARAMS = {
    "input": [{"role": "user", "content": "Say yes."}],
    "tools": [],
    "tool_choice": None,
    "parallel_tool_calls": None,
    "background": None,
    "include": None,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": None,
    "model": None,
    "previous_response_id": None,
    "prompt": None,
    "reasoning": None,
    "service_tier": None,
    "store": None,
    "temperature": None,
    "text": None,
    "top_logprobs": None,
    "top_p": None,
    "truncation": None,
    "user": None,
    "stream": None,
}
NULLABLE_RESPONSE = reply("yes") | {
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": None,
    "previous_response_id": None,
    "prompt": None,
    "reasoning": None,
    "status": None,
    "temperature": None,
    "text": None,
    "tool_choice": None,
    "top_p": None,
    "usage": None,
    "user": None,
}


def test_null_tool_choice_and_the_other_nullable_fields_are_accepted_and_kept():
    with ThreadedServer.of(echo_server()) as server:
        answer = httpx.post(
            f"{server.url}/verify",
            json={"responses_create_params": NULLABLE_PARAMS, "response": NULLABLE_RESPONSE, "expected": "yes"},
        )
    assert answer.status_code == 200, answer.text
    row = answer.json()
    assert row["reward"] == 1.0
    assert row["responses_create_params"]["tool_choice"] is None
    assert row["responses_create_params"]["parallel_tool_calls"] is None


def test_a_stored_row_posted_back_scores_as_its_task_plus_response():
    stored = {
        "responses_create_params": NULLABLE_PARAMS,
        "response": reply("no"),
        "expected": "no",
        "reward": 0.0,  # stale: the row was scored before the task was fixed
        "said": "something else",
        "kept_task_note": "a task field nobody declared",
    }
    with ThreadedServer.of(echo_server()) as server:
        answer = httpx.post(f"{server.url}/verify", json=stored)
    assert answer.status_code == 200, answer.text
    row = answer.json()
    assert (row["reward"], row["said"], row["kept_task_note"]) == (1.0, "no", "a task field nobody declared")


async def test_reverify_says_when_the_stored_row_stands_in_for_a_task_it_cannot_match():
    with ThreadedServer.of(echo_server()) as server:
        client = registry_client({"echo": ("resources_servers", server.url)})
        try:
            reverifier = Reverifier(client, lambda row: "echo", task_rows=None, replay_tool_calls=False)
            row = {
                "responses_create_params": NULLABLE_PARAMS,
                "response": reply("yes"),
                "expected": "yes",
                "reward": 0.0,
            }
            outcomes = [outcome async for outcome in reverifier.stream([(1, row)])]
        finally:
            await client.aclose()
    assert outcomes[0].ok and outcomes[0].new_reward == 1.0 and outcomes[0].task_fallback
    changes = RewardChanges()
    changes.add(outcomes[0])
    assert "1 of 1 rows matched no task row and were verified from the stored row" in changes.report()
    assert "+tasks_jsonl_fpath=" in changes.report()
