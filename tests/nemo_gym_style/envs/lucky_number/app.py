"""A guessing game written the way NeMo Gym environments are written (its import paths, typed
items, `output_text`, session state, reward_profile metrics). Part of our tests: it shows that
such a folder runs here unchanged."""

import json
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.reward_profile import compute_pass_majority_metrics, compute_subset_metrics, highest_k_metrics
from nemo_gym.server_utils import SESSION_ID_KEY


class LuckyNumberConfig(BaseResourcesServerConfig):
    REVERIFY_MODE = ReverifyMode.STATELESS
    max_hints: int = 3


class CheckGuessRequest(BaseModel):
    guess: int


class CheckGuessResponse(BaseModel):
    verdict: str
    hints_used: int


class LuckyNumberVerifyRequest(BaseVerifyRequest):
    secret: int
    difficulty: str = "easy"


class LuckyNumberVerifyResponse(BaseVerifyResponse):
    extracted_answer: int | None = None
    used_tool: bool


class LuckyNumberServer(SimpleResourcesServer):
    config: LuckyNumberConfig
    hints_by_session: dict[str, int] = {}

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/check_guess")(self.check_guess)
        return app

    async def check_guess(self, body: CheckGuessRequest, request: Request) -> CheckGuessResponse:
        session_id = request.session[SESSION_ID_KEY]
        used = self.hints_by_session.get(session_id, 0) + 1
        self.hints_by_session[session_id] = used
        if used > self.config.max_hints:
            return CheckGuessResponse(verdict="no more hints", hints_used=used)
        return CheckGuessResponse(verdict="a guess", hints_used=used)

    async def verify(self, body: LuckyNumberVerifyRequest) -> LuckyNumberVerifyResponse:
        used_tool = False
        for item in body.response.output:
            if getattr(item, "type", None) == "function_call" and item.name == "check_guess":
                json.loads(item.arguments)
                used_tool = True
        words = body.response.output_text.replace(".", " ").split()
        numbers = [int(word) for word in words if word.lstrip("-").isdigit()]
        answer = numbers[-1] if numbers else None
        reward = 1.0 if answer == body.secret else 0.0
        return LuckyNumberVerifyResponse(
            **body.model_dump(), reward=reward, extracted_answer=answer, used_tool=used_tool
        )

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        metrics, *_ = compute_pass_majority_metrics(tasks, answer_key="extracted_answer")
        metrics.update(compute_subset_metrics(tasks, subset_key="difficulty"))
        return metrics

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        return highest_k_metrics(agent_metrics, "pass@1[avg-of-{k}]", exclude_names=["no_answer"])


if __name__ == "__main__":
    LuckyNumberServer.run_webserver()
