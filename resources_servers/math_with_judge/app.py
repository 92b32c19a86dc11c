"""math_with_judge: answer a math question; math-verify checks the answer, an optional LLM judge rescues misses.

No tools. `verify` parses the prediction from all assistant output text (LaTeX and plain
expressions) and compares it symbolically with `expected_answer` (wrapped in `\\boxed{}` when it is
not already). The library evaluates what it parses, so it runs confined, in the sandbox, with a
deadline per answer: warm sandboxed interpreters here, or sandboxed Ray tasks on the cluster when
the server runs on Ray (see `grading.py`, `scoring.py`, `nemo_gym.compute`).

When `should_use_judge` is set and the library reward is <= 0.5, a judge model compares the two
answers twice, once in each order (position bias is real); both verdicts must be `[[A=B]]`. A judge
that cannot be reached fails the rollout (HTTP 502 from /verify) rather than scoring it 0: a broken
judge is not evidence that the answer was wrong.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from nemo_gym.compute import ComputeSettings, ConfinedScorer
from nemo_gym.openai_types import JSONDict, output_text
from nemo_gym.servers.agent import ModelServerRef
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from resources_servers.math_with_judge.grading import grade, open_grader


class MathWithJudgeConfig(BaseResourcesServerConfig):
    verification_workers: int = Field(2, ge=1)
    """Default 2. Gradings at once: warm sandboxed interpreters for math-verify, or Ray tasks in flight
    when the server runs on Ray; each grading holds one for its duration."""
    verification_timeout_s: float = Field(10.0, gt=0)
    """Default 10 s. Deadline (wall and CPU time) for parsing and comparing one answer; past it the
    reward is 0 and the process grading it is killed."""
    verification_memory_mb: int = Field(2048, gt=0)
    """Default 2 GB. Memory of one sandboxed grading interpreter, so a sympy blow-up cannot take the host down."""
    should_use_judge: bool = False
    """Default False: math-verify alone decides, and the environment runs fully offline."""
    judge_model_server: ModelServerRef | None = None
    """The model server asked when the library says no and `should_use_judge` is set."""
    judge_responses_create_params: JSONDict = Field(default_factory=dict)
    """Extra Responses parameters for judge calls (e.g. temperature, max_output_tokens)."""


class MathVerifyRequest(BaseVerifyRequest):
    question: str = ""
    expected_answer: str


class JudgeEvaluation(BaseModel):
    responses_create_params: JSONDict
    response: JSONDict


class MathVerifyResponse(BaseVerifyResponse):
    expected_answer: str
    extracted_answer: str | None
    library_reward: float
    library_error: str | None = None
    """Why the library could not grade (timeout, crash, unparsable gold); None normally."""
    judge_evaluations: list[JudgeEvaluation] | None = None


JUDGE_SYSTEM_PROMPT = """\
You compare two answers to the same math problem and decide whether they state the same final result.

Look only at the final results, not at the reasoning that led to them. Two results are the same when \
they are mathematically equivalent: differences in notation (LaTeX or plain text), equivalent \
fractions, decimals that equal the fraction exactly, reordered terms, or an omitted unit the problem \
already implies do not matter. A result that is only approximately equal, or that is incomplete \
(one of several required values missing), is different. If an answer gives no final result, it is \
different.

Explain your comparison in a few sentences, then end with exactly one verdict:
[[A=B]] if the final results are the same,
[[A!=B]] if they are different."""

JUDGE_USER_TEMPLATE = "<|Problem|>\n{question}\n\n<|Answer A|>\n{first}\n\n<|Answer B|>\n{second}"

EQUAL_LABEL, UNEQUAL_LABEL = "[[A=B]]", "[[A!=B]]"


def judge_says_equal(text: str) -> bool:
    """The first verdict label in the judge's text wins; no label at all counts as 'different'."""
    equal_at, unequal_at = text.find(EQUAL_LABEL), text.find(UNEQUAL_LABEL)
    if equal_at < 0:
        return False
    return unequal_at < 0 or equal_at < unequal_at


class MathWithJudgeServer(SimpleResourcesServer):
    config: MathWithJudgeConfig
    grading: ConfinedScorer | None = None

    async def on_startup(self) -> None:
        if self.config.should_use_judge and self.config.judge_model_server is None:
            raise ValueError("math_with_judge: should_use_judge is true but judge_model_server is not set")
        settings = ComputeSettings(
            max_concurrent=self.config.verification_workers,
            timeout_s=self.config.verification_timeout_s,
            memory_mb=self.config.verification_memory_mb,
        )
        self.grading = open_grader(settings)
        await self.grading.start()

    async def on_shutdown(self) -> None:
        if self.grading is not None:
            await self.grading.aclose()

    async def verify(self, body: MathVerifyRequest) -> MathVerifyResponse:
        generated = output_text(body.response.output)
        assert self.grading is not None
        graded = await grade(self.grading, body.expected_answer, generated)
        reward = graded.reward
        evaluations: list[JudgeEvaluation] | None = None
        if self.config.should_use_judge and graded.reward <= 0.5:
            reward, evaluations = await self._judge(body.question, body.expected_answer, generated)
        return MathVerifyResponse(
            **body.model_dump(),
            reward=reward,
            extracted_answer=graded.extracted_answer,
            library_reward=graded.reward,
            library_error=graded.error,
            judge_evaluations=evaluations,
        )

    async def _judge(self, question: str, expected: str, generated: str) -> tuple[float, list[JudgeEvaluation]]:
        evaluations: list[JudgeEvaluation] = []
        for first, second in ((expected, generated), (generated, expected)):
            evaluation = await self._ask_judge(question, first, second)
            evaluations.append(evaluation)
            if not judge_says_equal(output_text(evaluation.response.get("output") or [])):
                return 0.0, evaluations  # one "different" settles it; skip the second call
        return 1.0, evaluations

    async def _ask_judge(self, question: str, first: str, second: str) -> JudgeEvaluation:
        assert self.config.judge_model_server is not None
        params: JSONDict = {
            **self.config.judge_responses_create_params,
            "input": [
                {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                {"role": "user", "content": JUDGE_USER_TEMPLATE.format(question=question, first=first, second=second)},
            ],
        }
        result = await self.server_client.post(self.config.judge_model_server.name, "/v1/responses", json=params)
        result.raise_for_status()
        return JudgeEvaluation(responses_create_params=params, response=result.json())


if __name__ == "__main__":
    MathWithJudgeServer.run_webserver()
