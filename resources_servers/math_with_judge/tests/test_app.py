"""math_with_judge over real HTTP: math-verify in worker processes, deadlines, and the two-order judge."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from resources_servers.math_with_judge.app import (
    MathWithJudgeConfig,
    MathWithJudgeServer,
    judge_says_equal,
)

QUESTION = "A fair coin is flipped three times. What is the probability of getting exactly two heads?"


def serve(upstream_url: str | None = None, **config: Any) -> ThreadedServer:
    port = free_port()
    servers = {"judge": ("responses_api_models", upstream_url)} if upstream_url else {}
    server = MathWithJudgeServer(
        config=MathWithJudgeConfig(name="math_with_judge", port=port, **config), server_client=registry_client(servers)
    )
    return ThreadedServer(server.setup_webserver(), port=port).start()


def assistant(*texts: str) -> dict[str, Any]:
    return {
        "id": "resp_test",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "id": f"msg_{i}",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
            for i, text in enumerate(texts)
        ],
    }


def verify(url: str, expected: str, response: dict[str, Any]) -> dict[str, Any]:
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": QUESTION}]},
        "question": QUESTION,
        "expected_answer": expected,
        "response": response,
    }
    reply = httpx.post(f"{url}/verify", json=row, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def library_only():
    server = serve(verification_workers=1)
    yield server.url
    server.stop()


@pytest.mark.parametrize(
    "expected, text",
    [
        ("\\frac{3}{8}", "Two heads out of three flips: C(3,2)/8, so the answer is \\boxed{\\frac{3}{8}}."),
        ("\\frac{3}{8}", "\\boxed{0.375}"),  # a decimal equal to the fraction
        ("3/8", "The probability is $\\frac{6}{16}$."),  # gold without LaTeX, unreduced prediction, no box
        ("5\\sqrt{2}", "\\boxed{\\sqrt{50}}"),
        ("\\boxed{720}", "So the total is 720 degrees: \\boxed{720}"),  # gold already boxed
    ],
)
def test_equivalent_answers_score_one(library_only, expected, text):
    row = verify(library_only, expected, assistant(text))
    assert row["reward"] == 1.0 and row["library_reward"] == 1.0
    assert row["extracted_answer"] is not None and row["expected_answer"] == expected
    assert row["judge_evaluations"] is None and row["library_error"] is None


def test_answer_split_over_two_messages_is_read_as_one_text(library_only):
    row = verify(library_only, "720", assistant("The sum is ", "\\boxed{720}."))
    assert row["reward"] == 1.0 and row["extracted_answer"] == "720"


@pytest.mark.parametrize("text", ["\\boxed{\\frac{3}{7}}", "It is 0.4", "\\boxed{-3/8}"])
def test_wrong_answers_score_zero(library_only, text):
    row = verify(library_only, "\\frac{3}{8}", assistant(text))
    assert row["reward"] == 0.0 and row["library_reward"] == 0.0
    assert row["extracted_answer"] is not None


@pytest.mark.parametrize(
    "response",
    [
        assistant("\\boxed{"),  # malformed LaTeX
        assistant("I am not sure how to solve this."),  # no answer at all
        assistant(""),  # empty text
        {"id": "resp_empty", "output": []},  # no message
        {"id": "resp_tool_only", "output": [{"type": "function_call", "name": "x", "arguments": "{}", "call_id": "c"}]},
    ],
)
def test_malformed_or_empty_answers_score_zero_without_error(library_only, response):
    row = verify(library_only, "\\frac{3}{8}", response)
    assert row["reward"] == 0.0 and row["extracted_answer"] is None and row["library_error"] is None


def test_task_fields_and_request_are_kept_in_the_row(library_only):
    row = verify(library_only, "720", assistant("\\boxed{720}"))
    assert row["question"] == QUESTION
    assert row["responses_create_params"]["input"][0]["content"] == QUESTION
    assert row["response"]["output"][0]["content"][0]["text"] == "\\boxed{720}"


def test_an_answer_that_hangs_the_library_times_out_and_the_server_recovers():
    server = serve(verification_workers=1, verification_timeout_s=1.0)
    try:
        # 9^(9^(9^9)) cannot be evaluated; sympy would grind on it far past the deadline.
        row = verify(server.url, "2", assistant("\\boxed{9^{9^{9^{9}}}}"))
        assert row["reward"] == 0.0 and row["library_reward"] == 0.0
        assert "timed out after 1 s" in row["library_error"]
        assert httpx.get(f"{server.url}/health").status_code == 200
        # The hung worker was killed and replaced: a normal answer is graded again.
        assert verify(server.url, "2", assistant("\\boxed{2}"))["reward"] == 1.0
    finally:
        server.stop()


def test_first_verdict_label_wins():
    assert judge_says_equal("They match. [[A=B]]")
    assert not judge_says_equal("Different. [[A!=B]]")
    assert not judge_says_equal("[[A!=B]] although one could argue [[A=B]]")
    assert judge_says_equal("[[A=B]] not [[A!=B]]")
    assert not judge_says_equal("no verdict given")


class Judge:
    """A scripted judge model that answers each call with the next verdict."""

    def __init__(self, *verdicts: str):
        self.verdicts = list(verdicts)
        self.upstream = ScriptedOpenAI(self.answer).start()

    def answer(self, body: dict[str, Any]) -> Turn:
        return Turn(text=f"Comparing the final results. {self.verdicts.pop(0)}")


@pytest.fixture
def judged():
    def make(*verdicts: str):
        judge = Judge(*verdicts)
        server = serve(
            f"http://127.0.0.1:{judge.upstream.port}",
            verification_workers=1,
            should_use_judge=True,
            judge_model_server={"type": "responses_api_models", "name": "judge"},
            judge_responses_create_params={"temperature": 0.0},
        )
        started.append((judge, server))
        return judge, server.url

    started: list[tuple[Judge, ThreadedServer]] = []
    yield make
    for judge, server in started:
        server.stop()
        judge.upstream.stop()


def test_judge_rescues_an_answer_the_library_missed_only_if_both_orders_agree(judged):
    judge, url = judged("[[A=B]]", "[[A=B]]")
    row = verify(url, "\\frac{3}{8}", assistant("three eighths"))
    assert row["library_reward"] == 0.0 and row["reward"] == 1.0
    evaluations = row["judge_evaluations"]
    assert len(evaluations) == 2
    first, second = (e["responses_create_params"]["input"][1]["content"] for e in evaluations)
    assert first.index("\\frac{3}{8}") < first.index("three eighths")  # gold is answer A first...
    assert second.index("three eighths") < second.index("\\frac{3}{8}")  # ...then answer B
    assert evaluations[0]["responses_create_params"]["temperature"] == 0.0
    assert "[[A=B]]" in evaluations[1]["response"]["output"][0]["content"][0]["text"]
    assert len(judge.upstream.requests) == 2


def test_judge_saying_different_in_the_first_order_settles_it(judged):
    judge, url = judged("[[A!=B]]")
    row = verify(url, "\\frac{3}{8}", assistant("three sevenths"))
    assert row["reward"] == 0.0 and len(row["judge_evaluations"]) == 1
    assert len(judge.upstream.requests) == 1


def test_judge_disagreeing_with_itself_across_orders_scores_zero(judged):
    _, url = judged("[[A=B]]", "[[A!=B]]")
    row = verify(url, "\\frac{3}{8}", assistant("three eighths"))
    assert row["reward"] == 0.0 and len(row["judge_evaluations"]) == 2


def test_judge_is_not_asked_when_the_library_already_agrees(judged):
    judge, url = judged()
    row = verify(url, "\\frac{3}{8}", assistant("\\boxed{3/8}"))
    assert row["reward"] == 1.0 and row["judge_evaluations"] is None
    assert judge.upstream.requests == []
