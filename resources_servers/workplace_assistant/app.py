"""workplace_assistant: carry out office requests with 12 tools over a small company database.

Trains stateful, multi-step tool use: look people, events, emails, customers and orders up, then
change the right records. Every rollout gets its own copy of the database (`company.py`), keyed
by the session id the agent carries from `/seed_session` through every tool call to `/verify`.
The reward compares the final database with the goal state, which is the starting database with
the task's gold calls replayed on it, so any sequence of calls that gets there counts.

NeMo Gym has a different task under the same name (27 WorkBench tools, scored against a row's
`ground_truth`); its rows are refused at `/verify` with a 400 naming `ground_truth`, never scored
here as if they were this task.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, field_validator, model_validator

from nemo_gym.errors import InputDataError
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.servers.session import SESSION_ID_KEY
from resources_servers.workplace_assistant.company import (
    TOOLS,
    ToolError,
    call_tool,
    comparable,
    differences,
    fresh_state,
)


class WorkplaceConfig(BaseResourcesServerConfig):
    max_sessions: int = Field(100_000, ge=1)
    """Most databases held at once; a rollout that never reaches verify would otherwise leak one."""


class GoldCall(BaseModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def known_tool(cls, name: str) -> str:
        if name not in TOOLS:
            raise ValueError(f"unknown tool {name!r}")
        return name


class WorkplaceVerifyRequest(BaseVerifyRequest):
    gold_calls: list[GoldCall]
    """Calls that reach the goal state from the starting database (one valid way, not the required one)."""

    @model_validator(mode="before")
    @classmethod
    def refuse_nemo_gym_rows(cls, data: Any) -> Any:
        if isinstance(data, dict) and "gold_calls" not in data and "ground_truth" in data:
            # InputDataError (not ValueError) passes through validation as a 400 naming the field.
            raise InputDataError(
                "this row is NeMo Gym's workplace_assistant task (27 WorkBench tools, scored against "
                "`ground_truth`), not this environment's (12 tools, scored against `gold_calls`); run it with "
                "NeMo Gym's workplace_assistant environment",
                field="ground_truth",
            )
        return data


class WorkplaceVerifyResponse(WorkplaceVerifyRequest, BaseVerifyResponse):
    state_differences: list[str]
    """Tables and records where the final database differs from the goal (empty when reward is 1)."""
    tool_errors: int
    """Tool calls in this rollout that were refused (bad ids, unknown people, invalid arguments)."""


def goal_state(gold_calls: list[GoldCall]) -> dict[str, Any]:
    state = fresh_state()
    for number, call in enumerate(gold_calls):
        try:
            call_tool(state, call.name, call.arguments)
        except (ToolError, ValueError) as error:
            # A broken task is an error naming the field, never a silent reward 0.
            raise InputDataError(
                f"gold_calls[{number}] ({call.name}) fails on the starting database: {error}"
            ) from None
    return comparable(state)


class WorkplaceAssistantServer(SimpleResourcesServer):
    config: WorkplaceConfig
    databases: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """session id -> that rollout's database. Handlers never await between read and write."""
    errors: dict[str, int] = Field(default_factory=dict)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        for name in TOOLS:
            app.post(f"/{name}")(self._endpoint(name))
        return app

    def _endpoint(self, name: str) -> Any:
        tool = TOOLS[name]

        async def endpoint(request: Request, body: BaseModel) -> dict[str, Any]:
            session = request.session[SESSION_ID_KEY]
            state = self.databases.get(session)
            if state is None:
                return {"error": "no database in this session (it was never seeded or is already scored)"}
            try:
                return tool.run(state, body)
            except ToolError as error:
                self.errors[session] = self.errors.get(session, 0) + 1
                return {"error": str(error)}

        # The body model per tool: FastAPI validates the arguments and answers 422 naming the field.
        endpoint.__annotations__ = {"request": Request, "body": tool.arguments, "return": dict[str, Any]}
        endpoint.__name__ = name
        return endpoint

    async def seed_session(self, request: Request, body: BaseSeedSessionRequest) -> BaseSeedSessionResponse:
        self.databases[request.session[SESSION_ID_KEY]] = fresh_state()
        while len(self.databases) > self.config.max_sessions:
            self.errors.pop(next(iter(self.databases)), None)
            del self.databases[next(iter(self.databases))]
        return BaseSeedSessionResponse()

    async def verify(self, request: Request, body: WorkplaceVerifyRequest) -> WorkplaceVerifyResponse:
        session = request.session[SESSION_ID_KEY]
        goal = goal_state(body.gold_calls)
        final = comparable(self.databases.pop(session) if session in self.databases else fresh_state())
        problems = differences(final, goal)
        return WorkplaceVerifyResponse(
            **body.model_dump(),
            reward=0.0 if problems else 1.0,
            state_differences=problems,
            tool_errors=self.errors.pop(session, 0),
        )


if __name__ == "__main__":
    WorkplaceAssistantServer.run_webserver()
