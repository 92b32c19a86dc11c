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
`incomplete_details` (e.g. it hit max_output_tokens), or after `max_steps` model calls.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response as StarletteResponse

from nemo_gym.client import CONNECT_ONLY_RETRY
from nemo_gym.errors import InvalidResponseError
from nemo_gym.openai_types import JSONDict, ResponseCreateParams, add_usage
from nemo_gym.servers.agent import (
    AgentRunRequest,
    BaseResponsesAPIAgentConfig,
    ModelServerRef,
    ResourcesServerRef,
    SimpleResponsesAPIAgent,
)
from nemo_gym.servers.base import JSONBytesResponse
from nemo_gym.servers.resources import RESERVED_RESOURCES_PATHS

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class SimpleAgentConfig(BaseResponsesAPIAgentConfig):
    resources_server: ResourcesServerRef
    model_server: ModelServerRef
    max_steps: int | None = None
    """Most model calls per episode; None = until the model stops calling tools."""


def tool_error(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


class SimpleAgent(SimpleResponsesAPIAgent):
    config: SimpleAgentConfig

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        resources_cookies = dict(request.cookies)
        model_cookies = dict(request.cookies)
        response = await self._episode(body.model_dump(exclude_unset=True), resources_cookies, model_cookies)
        reply = JSONBytesResponse(response)
        for name, value in {**model_cookies, **resources_cookies}.items():
            reply.set_cookie(name, value)
        return reply

    async def run(self, request: Request, body: AgentRunRequest) -> Any:
        row = body.model_dump(mode="json", exclude_unset=True)
        resources = self.config.resources_server.name

        seeded = await self.server_client.post(resources, "/seed_session", json=row, cookies=dict(request.cookies),
                                               retry=CONNECT_ONLY_RETRY)
        seeded.raise_for_status()
        resources_cookies = dict(request.cookies) | seeded.cookies

        response = await self._episode(row["responses_create_params"], resources_cookies, {})

        verified = await self.server_client.post(resources, "/verify", json=row | {"response": response},
                                                 cookies=resources_cookies, retry=CONNECT_ONLY_RETRY)
        verified.raise_for_status()
        # The verify body is the rollout row; pass its bytes through instead of re-encoding them.
        return StarletteResponse(verified.body, media_type="application/json")

    async def _episode(self, params: JSONDict, resources_cookies: dict[str, str],
                       model_cookies: dict[str, str]) -> JSONDict:
        """Run the model <-> tools loop; returns the last model response with `output` holding every
        new item (model items interleaved with tool outputs) and `usage` summed over all model calls."""
        conversation = params["input"]
        if isinstance(conversation, str):
            conversation = [{"role": "user", "content": conversation, "type": "message"}]
        declared_tools = {tool.get("name") for tool in params.get("tools") or [] if tool.get("type", "function") == "function"}

        new_items: list[JSONDict] = []
        usage: JSONDict | None = None
        last: JSONDict = {}
        steps = 0
        while True:
            steps += 1
            result = await self.server_client.post(
                self.config.model_server.name, "/v1/responses",
                json=params | {"input": conversation + new_items}, cookies=model_cookies, retry=CONNECT_ONLY_RETRY,
            )
            result.raise_for_status()
            model_cookies.update(result.cookies)
            last = result.json()
            output = last.get("output") if isinstance(last, dict) else None
            if not isinstance(output, list):
                raise InvalidResponseError(f"model server {self.config.model_server.name!r} returned a response without an output list")
            new_items.extend(output)
            usage = add_usage(usage, last.get("usage"))

            calls = [item for item in output if item.get("type") == "function_call"]
            if last.get("incomplete_details") or not calls:
                break
            for call in calls:
                text = await self._call_tool(call, declared_tools, resources_cookies)
                new_items.append({"type": "function_call_output", "call_id": call.get("call_id"), "output": text})
            if self.config.max_steps and steps >= self.config.max_steps:
                break

        return last | {"output": new_items, "usage": usage}

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

        result = await self.server_client.post(self.config.resources_server.name, f"/{name}", json=arguments,
                                               cookies=cookies, retry=CONNECT_ONLY_RETRY)
        cookies.update(result.cookies)
        return result.text


if __name__ == "__main__":
    SimpleAgent.run_webserver()
