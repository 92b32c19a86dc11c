"""The environment's own tests, written as NeMo Gym authors write them (typed items built by hand,
`verify` awaited directly, the module imported as `resources_servers.capital_quiz.app`), with a
scripted judge on loopback instead of a mocked client. Run from this folder by ng_test."""

import asyncio

from resources_servers.capital_quiz.app import CapitalQuizConfig, CapitalQuizServer, CapitalQuizVerifyRequest

from nemo_gym.config_types import ModelServerRef
from nemo_gym.openai_utils import (
    NeMoGymEasyInputMessage,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
)
from nemo_gym.server_utils import ServerClient
from nemo_gym.testing import ScriptedOpenAI, Turn, registry_client


def make_server(judge_url: str = "http://127.0.0.1:9") -> CapitalQuizServer:
    config = CapitalQuizConfig(
        host="0.0.0.0",
        port=8080,
        entrypoint="",
        name="capital_quiz",
        judge_model_server=ModelServerRef(type="responses_api_models", name="judge"),
        judge_responses_create_params=NeMoGymResponseCreateParamsNonStreaming(input=[], temperature=0.0),
    )
    client = ServerClient.from_client(registry_client({"judge": ("responses_api_models", judge_url)}))
    return CapitalQuizServer(config=config, server_client=client)


def make_request(text: str, city: str = "Tokyo") -> CapitalQuizVerifyRequest:
    return CapitalQuizVerifyRequest(
        responses_create_params=NeMoGymResponseCreateParamsNonStreaming(
            input=[NeMoGymEasyInputMessage(role="user", content="What is the capital of Japan?")]
        ),
        response=NeMoGymResponse(
            id="resp_1",
            created_at=0.0,
            model="policy",
            object="response",
            output=[
                NeMoGymResponseOutputMessage(id="msg_1", content=[NeMoGymResponseOutputText(text=text, annotations=[])])
            ],
            parallel_tool_calls=False,
            tool_choice="auto",
            tools=[],
        ),
        question="What is the capital of Japan?",
        expected_answer=city,
        region="asia",
    )


def judge_says(verdict: str):
    return lambda body: Turn(text=f"Thinking it over... {verdict}")


class TestApp:
    def test_sanity(self) -> None:
        make_server()

    def test_the_expected_city_scores_one_without_the_judge(self) -> None:
        # The judge's address refuses connections: asking it would fail the call.
        result = asyncio.run(make_server().verify(make_request("It is Tokyo.")))
        assert result.reward == 1.0 and result.judge_verdict is None
        assert result.extracted_answer == "It is Tokyo."

    def test_another_answer_goes_to_the_judge(self) -> None:
        for verdict, reward in (("[[A=B]]", 1.0), ("[[A!=B]]", 0.0)):
            with ScriptedOpenAI(judge_says(verdict)) as judge:
                result = asyncio.run(make_server(judge.url.removesuffix("/v1")).verify(make_request("Edo")))
            assert result.reward == reward and result.judge_verdict == verdict
            [asked] = judge.requests
            assert "Candidate answer: Edo" in asked["input"][0]["content"] and asked["temperature"] == 0.0

    def test_metrics_hooks(self) -> None:
        tasks = [
            [
                {"reward": 1.0, "extracted_answer": "Paris", "region": "europe"},
                {"reward": 1.0, "extracted_answer": "Paris"},
            ],
            [
                {"reward": 0.0, "extracted_answer": "Sydney", "region": "oceania"},
                {"reward": 1.0, "extracted_answer": "Canberra"},
            ],
        ]
        server = make_server()
        metrics = server.compute_metrics(tasks)
        assert metrics["pass@1[avg-of-2]/accuracy"] == 75.0 and metrics["oceania/pass@2/accuracy"] == 100.0
        assert server.get_key_metrics(metrics | {"mean/reward": 0.75}) == {
            "pass@1[avg-of-2]/accuracy": 75.0,
            "mean/reward": 0.75,
        }
