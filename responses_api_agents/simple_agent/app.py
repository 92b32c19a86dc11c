"""simple_agent: seed the session, loop model <-> tools until the model answers, then verify.

Per rollout: POST resources `/seed_session` (the whole task row) -> [model `/v1/responses` ->
resources `/<tool>` for each function call]* -> resources `/verify`. The resources-server cookies
from seed are threaded through every tool call and verify, which is how stateful environments key
their per-rollout state.

Safety rules for tool calls, each turned into a tool output the model sees, never a crash:
  * only tools the task declared in `responses_create_params.tools` are dispatched (so a model cannot
    reach `/verify` or `/seed_session` by naming them);
  * arguments that are not a JSON object are rejected;
  * a tool route answering an HTTP error yields its body as the output.
The episode ends when a model turn has no function call, when the model reports
`incomplete_details` (max_output_tokens or context_limit), after `max_steps` model calls, or at the
episode deadline (`episode_timeout_s`); the `/run` row says which in `episode_end`. A step (one
model call and its tool calls) counts only once finished, so an episode cut off by the deadline
holds whole steps. A caller that disconnects cancels the episode (see nemo_gym.servers.disconnect).

Token-exact turns: once a model call returns token ids (`return_token_id_information`), every next
call carries `required_prefix_token_ids` (that call's prompt + generation ids) and the row says in
`token_prefix_invariant` whether every prompt kept it (see nemo_gym.token_prefix).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request
from pydantic import ConfigDict
from starlette.responses import Response as StarletteResponse

from nemo_gym.base_resources_server import BaseRunRequest, BaseVerifyRequest, BaseVerifyResponse
from nemo_gym.client import CONNECT_ONLY_RETRY
from nemo_gym.errors import InvalidResponseError, RequestTimeoutError
from nemo_gym.openai_types import JSONDict, ResponseCreateParams, add_usage
from nemo_gym.servers.agent import (
    EPISODE_END_FIELD,
    AgentRunRequest,
    BaseResponsesAPIAgentConfig,
    EpisodeEnd,
    ModelServerRef,
    ResourcesServerRef,
    SimpleResponsesAPIAgent,
)
from nemo_gym.servers.aggregate_metrics import AggregateMetricsRequest
from nemo_gym.servers.base import JSONBytesResponse
from nemo_gym.servers.resources import RESERVED_RESOURCES_PATHS
from nemo_gym.token_prefix import TOKEN_PREFIX_FIELD, PrefixInvariant, PrefixVerdict

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class SimpleAgentConfig(BaseResponsesAPIAgentConfig):
    resources_server: ResourcesServerRef
    model_server: ModelServerRef


# NeMo Gym's names, for agents written against its simple agent: they subclass `SimpleAgent`, take a
# `SimpleAgentRunRequest` and post-process the `SimpleAgentVerifyResponse` that `super().run()` returns.
class SimpleAgentRunRequest(BaseRunRequest):
    model_config = ConfigDict(extra="allow")


class SimpleAgentVerifyRequest(BaseVerifyRequest):
    model_config = ConfigDict(extra="allow")


class SimpleAgentVerifyResponse(BaseVerifyResponse):
    model_config = ConfigDict(extra="allow")


def tool_error(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


def with_json_fields(body: bytes, fields: dict[str, str]) -> bytes:
    """`body` (a JSON object) with `fields` appended, without decoding it: the verify body is the
    row, and re-encoding every row was measurable CPU per rollout. Appended last, so they win over
    same-named keys that verify echoed from the input."""
    stripped = body.strip()
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        raise InvalidResponseError(f"verify returned a body that is not a JSON object: {body[:200]!r}")
    head = stripped[:-1].rstrip()
    for key, value in fields.items():
        separator = b"" if head == b"{" else b","
        head += separator + orjson.dumps(key) + b":" + orjson.dumps(value)
    return head + b"}"


@dataclass
class EpisodeSoFar:
    """The finished steps of an episode: what is returned if it is cut off mid-step."""

    items: list[JSONDict] = field(default_factory=list)
    usage: JSONDict | None = None
    last: JSONDict = field(default_factory=dict)
    steps: int = 0
    prefix: PrefixInvariant = field(default_factory=PrefixInvariant)
    """Token-exact continuation: the prefix the next model call must keep, and whether all kept it."""

    def commit(self, step_items: list[JSONDict], response: JSONDict) -> None:
        self.items.extend(step_items)
        self.usage = add_usage(self.usage, response.get("usage"))
        self.last = response
        self.steps += 1

    def response(self) -> JSONDict:
        return self.last | {"output": self.items, "usage": self.usage}


class SimpleAgent(SimpleResponsesAPIAgent):
    config: SimpleAgentConfig

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        resources_cookies = dict(request.cookies)
        model_cookies = dict(request.cookies)
        response, _, _ = await self._episode(body.model_dump(exclude_unset=True), resources_cookies, model_cookies)
        reply = JSONBytesResponse(response)
        for name, value in {**model_cookies, **resources_cookies}.items():
            reply.set_cookie(name, value)
        return reply

    async def aggregate_metrics(self, request: Request, body: AggregateMetricsRequest) -> Any:
        """Asked of the resources server, whose `compute_metrics` knows the environment (as NeMo Gym's
        simple agent does); its answer, error status included, is relayed as it is. With
        `skip_verification` the environment never scored these rows: the base answer (empty)."""
        if self.config.skip_verification:
            return await super().aggregate_metrics(request, body)
        answer = await self.server_client.post(
            self.config.resources_server.name,
            "/aggregate_metrics",
            json=body.model_dump(mode="json"),
            retry=CONNECT_ONLY_RETRY,
        )
        return StarletteResponse(answer.body, status_code=answer.status, media_type="application/json")

    async def run(self, request: Request, body: AgentRunRequest) -> Any:
        row = body.model_dump(mode="json", exclude_unset=True)
        resources = self.config.resources_server.name

        seeded = await self.server_client.post(
            resources, "/seed_session", json=row, cookies=dict(request.cookies), retry=CONNECT_ONLY_RETRY
        )
        seeded.raise_for_status()
        resources_cookies = dict(request.cookies) | seeded.cookies

        response, end, prefix = await self._episode(row["responses_create_params"], resources_cookies, {})

        if self.config.skip_verification:
            skipped = row | {
                "response": response,
                "reward": float(self.config.skip_verification_reward),
                "verification_skipped": True,
                EPISODE_END_FIELD: end,
            }
            if prefix is not None:
                skipped[TOKEN_PREFIX_FIELD] = prefix
            if self._run_is_overridden():
                return SimpleAgentVerifyResponse.model_validate(skipped)
            return JSONBytesResponse(skipped)

        verified = await self.server_client.post(
            resources, "/verify", json=row | {"response": response}, cookies=resources_cookies, retry=CONNECT_ONLY_RETRY
        )
        verified.raise_for_status()
        # The verify body is the rollout row; pass its bytes through instead of re-encoding them.
        fields: dict[str, str] = {EPISODE_END_FIELD: end}
        if prefix is not None:
            fields[TOKEN_PREFIX_FIELD] = prefix
        row = with_json_fields(verified.body, fields)
        if self._run_is_overridden():
            return SimpleAgentVerifyResponse.model_validate_json(row)
        return StarletteResponse(row, media_type="application/json")

    def _run_is_overridden(self) -> bool:
        """A subclass with its own `run` (NeMo Gym's agents) reads what `super().run()` returns as
        NeMo Gym's model; the route itself keeps passing the verified row's bytes through."""
        return type(self).run is not SimpleAgent.run

    async def _episode(
        self, params: JSONDict, resources_cookies: dict[str, str], model_cookies: dict[str, str]
    ) -> tuple[JSONDict, EpisodeEnd, PrefixVerdict | None]:
        """Run the model <-> tools loop within the episode deadline; returns the last model response
        with `output` holding every new item (model items interleaved with tool outputs) and `usage`
        summed over all model calls, how the episode ended, and whether the token prefix held
        (None when the model returned no token ids)."""
        episode = EpisodeSoFar()
        deadline = asyncio.timeout(self.config.episode_timeout_s)
        try:
            async with deadline:
                end = await self._steps(params, resources_cookies, model_cookies, episode)
        except TimeoutError:
            if not deadline.expired():
                raise
            if not episode.steps:
                raise RequestTimeoutError(
                    f"agent {self.config.name!r}: no model step finished within the episode deadline "
                    f"(episode_timeout_s={self.config.episode_timeout_s:g})"
                ) from None
            end = "deadline"
        return episode.response(), end, episode.prefix.verdict()

    async def _steps(
        self, params: JSONDict, resources_cookies: dict[str, str], model_cookies: dict[str, str], episode: EpisodeSoFar
    ) -> EpisodeEnd:
        conversation = params["input"]
        if isinstance(conversation, str):
            conversation = [{"role": "user", "content": conversation, "type": "message"}]
        declared_tools = {
            tool.get("name") for tool in params.get("tools") or [] if tool.get("type", "function") == "function"
        }

        while True:
            result = await self.server_client.post(
                self.config.model_server.name,
                "/v1/responses",
                json=params | {"input": conversation + episode.items} | episode.prefix.request_fields(),
                cookies=model_cookies,
                retry=CONNECT_ONLY_RETRY,
            )
            result.raise_for_status()
            model_cookies.update(result.cookies)
            response = result.json()
            output = response.get("output") if isinstance(response, dict) else None
            if not isinstance(output, list):
                raise InvalidResponseError(
                    f"model server {self.config.model_server.name!r} returned a response without an output list"
                )
            episode.prefix.observe(output, episode.steps + 1)

            step_items = list(output)
            incomplete = response.get("incomplete_details")
            calls = [item for item in output if item.get("type") == "function_call"]
            if incomplete or not calls:
                episode.commit(step_items, response)
                reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
                if reason == "context_limit":  # the prompt filled the context (nemo_gym.conversion)
                    return "context_limit"
                return "max_output_tokens" if reason == "max_output_tokens" else "completed"
            for call in calls:
                text = await self._call_tool(call, declared_tools, resources_cookies)
                step_items.append({"type": "function_call_output", "call_id": call.get("call_id"), "output": text})
            episode.commit(step_items, response)
            if episode.steps >= self.config.max_steps:
                return "max_steps"

    async def _call_tool(self, call: JSONDict, declared_tools: set[str], cookies: dict[str, str]) -> str:
        name = call.get("name") or ""
        if name not in declared_tools or name in RESERVED_RESOURCES_PATHS or not TOOL_NAME_PATTERN.match(name):
            available = ", ".join(sorted(n for n in declared_tools if n)) or "none"
            return tool_error(f"Tool {name!r} is not available. Available tools: {available}.")
        try:
            arguments = orjson.loads(call.get("arguments") or "{}")
        except orjson.JSONDecodeError as error:
            return tool_error(f"Invalid tool call arguments for {name!r}: not valid JSON ({error}).")
        if not isinstance(arguments, dict):
            return tool_error(f"Invalid tool call arguments for {name!r}: expected a JSON object.")

        result = await self.server_client.post(
            self.config.resources_server.name, f"/{name}", json=arguments, cookies=cookies, retry=CONNECT_ONLY_RETRY
        )
        cookies.update(result.cookies)
        return result.text


if __name__ == "__main__":
    SimpleAgent.run_webserver()
