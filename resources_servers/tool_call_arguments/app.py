"""tool_call_arguments: single-step function calling, graded BFCL-style against one expected call.

Trains picking the right function from several and filling its arguments correctly: numbers,
enums, optional parameters and lists (see `matching.py` for the comparison rules). The model's
call is acknowledged by a catch-all tool route (nothing is executed: the call itself is the
answer); `verify` grades the function calls in the response.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from nemo_gym.openai_types import function_calls
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from resources_servers.tool_call_arguments.matching import arguments_match


class ToolCallArgumentsConfig(BaseResourcesServerConfig):
    allow_extra_calls: bool = False
    """False (BFCL's simple category): the response must hold exactly one function call. True: the
    first call is graded and any later ones are ignored."""


class ExpectedCall(BaseModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallVerifyRequest(BaseVerifyRequest):
    expected_call: ExpectedCall
    ordered_params: list[str] = Field(default_factory=list)
    """Array parameters whose order matters; every other list is compared order-free."""


class ToolCallVerifyResponse(ToolCallVerifyRequest, BaseVerifyResponse):
    called_name: str | None
    called_arguments: dict[str, Any] | None
    mismatches: list[str]
    """Why the call is wrong, one sentence each (empty when reward is 1)."""


def tool_schema(tools: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for tool in tools:
        spec = tool.get("function", tool)
        if spec.get("name") == name:
            return spec.get("parameters") or {}
    return None


def grade_calls(
    calls: list[dict[str, Any]],
    expected: ExpectedCall,
    tools: list[dict[str, Any]],
    ordered_params: set[str],
    allow_extra_calls: bool,
) -> tuple[str | None, dict[str, Any] | None, list[str]]:
    """(called name, parsed arguments, mismatches) for the response's function calls."""
    if not calls:
        return None, None, ["no function call was made"]
    first = calls[0]
    name = first.get("name")
    try:
        arguments = json.loads(first.get("arguments") or "{}")
    except json.JSONDecodeError as error:
        return name, None, [f"arguments are not valid JSON ({error.msg})"]
    if not isinstance(arguments, dict):
        return name, None, ["arguments are not a JSON object"]
    problems = []
    if len(calls) > 1 and not allow_extra_calls:
        problems.append(f"{len(calls)} function calls, expected exactly one")
    if name != expected.name:
        problems.append(f"called {name!r}, expected {expected.name!r}")
        return name, arguments, problems
    schema = tool_schema(tools, expected.name) or {}
    problems.extend(arguments_match(arguments, expected.arguments, schema, ordered_params))
    return name, arguments, problems


class ToolCallArgumentsServer(SimpleResourcesServer):
    config: ToolCallArgumentsConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        # Registered after /seed_session and /verify, so those keep their own handlers.
        app.post("/{tool_name}")(self.record_call)
        return app

    async def record_call(self, request: Request) -> dict[str, Any]:
        return {
            "status": "recorded",
            "function": request.path_params["tool_name"],
            "note": "The call was recorded; it is not executed in this environment.",
        }

    async def verify(self, body: ToolCallVerifyRequest) -> ToolCallVerifyResponse:
        name, arguments, problems = grade_calls(
            function_calls(body.response.output),
            body.expected_call,
            body.responses_create_params.tools,
            set(body.ordered_params),
            self.config.allow_extra_calls,
        )
        return ToolCallVerifyResponse(
            **body.model_dump(),
            reward=0.0 if problems else 1.0,
            called_name=name,
            called_arguments=arguments,
            mismatches=problems,
        )


if __name__ == "__main__":
    ToolCallArgumentsServer.run_webserver()
