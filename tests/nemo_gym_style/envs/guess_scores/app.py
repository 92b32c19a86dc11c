"""A guessing game scored on several objectives, written the way NeMo Gym environments are
(`BaseMultiRewardVerifyResponse`, `compute_metrics` / `get_key_metrics`, `REVERIFY_MODE`, a judge
call wrapped in `reraise_judge_errors`). Part of our tests: the hooks NeMo Gym's servers offer
answer here with NeMo Gym's shapes."""

from typing import Any

from nemo_gym.base_resources_server import (
    BaseMultiRewardVerifyResponse,
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.judge import reraise_judge_errors
from nemo_gym.reward_profile import compute_pass_majority_metrics, highest_k_metrics


class GuessScoresConfig(BaseResourcesServerConfig):
    # The judge below is asked inside the rollout's own context: its rows cannot be re-scored alone.
    REVERIFY_MODE = ReverifyMode.UNSUPPORTED


class GuessScoresVerifyRequest(BaseVerifyRequest):
    secret: int


class GuessScoresVerifyResponse(BaseMultiRewardVerifyResponse):
    correct: float
    polite: float


async def unreachable_judge() -> str:
    raise ConnectionError("judge at 127.0.0.1:9 refused the connection")


class GuessScoresServer(SimpleResourcesServer):
    config: GuessScoresConfig

    async def verify(self, body: GuessScoresVerifyRequest) -> Any:
        text = body.response.output_text
        if "ask the judge" in text:
            await reraise_judge_errors(unreachable_judge())
        if "judge already failed" in text:
            # What NeMo Gym's own failsafe answers; a verify may build it by hand.
            return body.model_dump() | {
                "reward": 0.0,
                "_ng_failure_class": "judge_failed",
                "_ng_failure_judge_error": "judge timed out",
            }
        components = {
            "correct": 1.0 if str(body.secret) in text.split() else 0.0,
            "polite": 1.0 if "please" in text.lower() else 0.0,
        }
        return GuessScoresVerifyResponse(
            **body.model_dump(), reward=sum(components.values()), reward_components=components, **components
        )

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        metrics, *_ = compute_pass_majority_metrics(
            tasks, score_fn=lambda row: {"correct": row["correct"], "polite": row["polite"]}
        )
        metrics["per_task_metrics"] = [
            {"_ng_task_index": rollouts[0]["_ng_task_index"], "solved": any(r["correct"] for r in rollouts)}
            for rollouts in tasks
        ]
        return metrics

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        return highest_k_metrics(agent_metrics, "pass@{k}") | {"mean/reward": agent_metrics["mean/reward"]}


if __name__ == "__main__":
    GuessScoresServer.run_webserver()
