"""A capital-city quiz judged by a model, written the way NeMo Gym environments are written (its
import paths, typed items, `output_text`, a judge call through `call_judge`, `ReverifyMode`,
reward_profile metrics). Part of our tests: tests/nemo_gym_style/test_end_to_end.py copies this
folder into a project's `resources_servers/` and runs it there with ng_run, ng_collect_rollouts,
ng_test and ng_reverify, as a NeMo Gym folder would run.

An answer naming the expected city scores 1 without asking anyone; any other answer goes to the
judge, which says `[[A=B]]` (same city) or `[[A!=B]]`."""

from typing import Any

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.config_types import ModelServerRef
from nemo_gym.judge import call_judge
from nemo_gym.openai_utils import (
    NeMoGymEasyInputMessage,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
)
from nemo_gym.reward_profile import compute_pass_majority_metrics, compute_subset_metrics, highest_k_metrics

JUDGE_PROMPT = """Question: {question}
Reference answer: {expected_answer}
Candidate answer: {answer}
Do both answers name the same city? Reply with [[A=B]] if they do, else [[A!=B]]."""


class CapitalQuizConfig(BaseResourcesServerConfig):
    # The judge is asked with temperature 0 and sees only the row: a stored row can be judged again.
    REVERIFY_MODE = ReverifyMode.STATELESS
    judge_model_server: ModelServerRef
    judge_responses_create_params: NeMoGymResponseCreateParamsNonStreaming


class CapitalQuizVerifyRequest(BaseVerifyRequest):
    question: str
    expected_answer: str
    region: str


class CapitalQuizVerifyResponse(BaseVerifyResponse):
    question: str
    expected_answer: str
    region: str
    extracted_answer: str
    judge_verdict: str | None = None


class CapitalQuizServer(SimpleResourcesServer):
    config: CapitalQuizConfig

    async def verify(self, body: CapitalQuizVerifyRequest) -> CapitalQuizVerifyResponse:
        answer = body.response.output_text.strip()
        verdict = None
        if body.expected_answer.lower() in answer.lower():
            reward = 1.0
        else:
            verdict = await self.ask_judge(body.question, body.expected_answer, answer)
            reward = 1.0 if verdict == "[[A=B]]" else 0.0
        return CapitalQuizVerifyResponse(
            **body.model_dump(), reward=reward, extracted_answer=answer, judge_verdict=verdict
        )

    async def ask_judge(self, question: str, expected_answer: str, answer: str) -> str:
        params = self.config.judge_responses_create_params.model_copy(deep=True)
        prompt = JUDGE_PROMPT.format(question=question, expected_answer=expected_answer, answer=answer)
        params.input = [NeMoGymEasyInputMessage(role="user", content=prompt)]
        judged = await call_judge(
            self.server_client,
            server_name=self.config.judge_model_server.name,
            url_path="/v1/responses",
            json=params,
            response_model=NeMoGymResponse,
        )
        text = judged.output_text
        # The first label in the judge's text decides; a reply with neither is a "not the same".
        positions = {label: text.find(label) for label in ("[[A=B]]", "[[A!=B]]") if label in text}
        return min(positions, key=positions.__getitem__) if positions else "unreadable"

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        metrics, *_ = compute_pass_majority_metrics(tasks, answer_key="extracted_answer")
        metrics.update(compute_subset_metrics(tasks, subset_key="region"))
        return metrics

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        headline = highest_k_metrics(agent_metrics, "pass@1[avg-of-{k}]", exclude_names=["no_answer"])
        return headline | {"mean/reward": agent_metrics["mean/reward"]}


if __name__ == "__main__":
    CapitalQuizServer.run_webserver()
