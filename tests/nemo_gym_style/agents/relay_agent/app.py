"""A tool-calling agent written the way NeMo Gym's agent folders are written (its import paths, its
`self.server_client.post(server_name=..., url_path=...)` call shape, typed requests and responses,
session cookies threaded by hand, a self-call to its own `/v1/responses`). Part of our tests: it
shows that such a folder under `responses_api_agents/` is started by `ng_run` and driven by
`ng_collect_rollouts` here unchanged."""

import json

from fastapi import Request
from pydantic import ConfigDict

from nemo_gym.base_resources_server import BaseRunRequest, BaseVerifyRequest, BaseVerifyResponse
from nemo_gym.base_responses_api_agent import BaseResponsesAPIAgentConfig, Body, SimpleResponsesAPIAgent
from nemo_gym.config_types import ModelServerRef, ResourcesServerRef
from nemo_gym.openai_utils import (
    NeMoGymEasyInputMessage,
    NeMoGymFunctionCallOutput,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
)
from nemo_gym.server_utils import get_response_json, raise_for_status


class RelayAgentConfig(BaseResponsesAPIAgentConfig):
    resources_server: ResourcesServerRef
    model_server: ModelServerRef
    max_turns: int = 4


class RelayAgentRunRequest(BaseRunRequest):
    model_config = ConfigDict(extra="allow")


class RelayAgentVerifyResponse(BaseVerifyResponse):
    model_config = ConfigDict(extra="allow")


class RelayAgent(SimpleResponsesAPIAgent):
    config: RelayAgentConfig

    async def responses(
        self, request: Request, body: NeMoGymResponseCreateParamsNonStreaming = Body()
    ) -> NeMoGymResponse:
        """Model <-> tools until the model answers in text; the tools are the resources server's routes."""
        conversation = (
            list(body.input)
            if not isinstance(body.input, str)
            else [NeMoGymEasyInputMessage(role="user", content=body.input)]
        )
        new_items = []
        for _ in range(self.config.max_turns):
            model_response = await self.server_client.post(
                server_name=self.config.model_server.name,
                url_path=self.url_path_for_request("/v1/responses", request),
                json=body.model_copy(update={"input": conversation + new_items}),
            )
            await raise_for_status(model_response)
            response = NeMoGymResponse.model_validate(await get_response_json(model_response))
            new_items.extend(response.output)
            calls = [item for item in response.output if item.type == "function_call"]
            if not calls:
                break
            for call in calls:
                tool_response = await self.server_client.post(
                    server_name=self.config.resources_server.name,
                    url_path=f"/{call.name}",
                    json=json.loads(call.arguments),
                    cookies=request.cookies,
                )
                new_items.append(
                    NeMoGymFunctionCallOutput(
                        type="function_call_output", call_id=call.call_id, output=(await tool_response.read()).decode()
                    )
                )
        response.output = new_items
        return response

    async def run(self, request: Request, body: RelayAgentRunRequest = Body()) -> RelayAgentVerifyResponse:
        seed = await self.server_client.post(
            server_name=self.config.resources_server.name,
            url_path="/seed_session",
            json=body.model_dump(),
            cookies=request.cookies,
        )
        await raise_for_status(seed)
        cookies = seed.cookies

        response = await self.server_client.post(
            server_name=self.config.name,
            url_path=self.url_path_for_run("/v1/responses", body),
            json=body.responses_create_params,
            cookies=cookies,
        )
        await raise_for_status(response)

        verify_request = BaseVerifyRequest.model_validate(body.model_dump() | {"response": await response.json()})
        verified = await self.server_client.post(
            server_name=self.config.resources_server.name,
            url_path="/verify",
            json=verify_request.model_dump(),
            cookies=cookies,
        )
        await raise_for_status(verified)
        row = await verified.json()
        return RelayAgentVerifyResponse.model_validate(row)


if __name__ == "__main__":
    RelayAgent.run_webserver()
