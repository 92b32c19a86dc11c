"""The environment's own tests, written as NeMo Gym authors write them: typed items built by hand,
the server constructed with a mocked client, `verify` awaited directly."""

from unittest.mock import MagicMock

from app import LuckyNumberConfig, LuckyNumberServer, LuckyNumberVerifyRequest

from nemo_gym.openai_utils import (
    NeMoGymEasyInputMessage,
    NeMoGymFunctionCallOutput,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseFunctionToolCall,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
    NeMoGymResponseReasoningItem,
)
from nemo_gym.server_utils import ServerClient


def make_server() -> LuckyNumberServer:
    config = LuckyNumberConfig(host="0.0.0.0", port=8080, entrypoint="", name="")
    return LuckyNumberServer(config=config, server_client=MagicMock(spec=ServerClient))


def make_response(text: str, with_tool: bool = True) -> NeMoGymResponse:
    output = [NeMoGymResponseReasoningItem(id="rs_1", summary=[{"type": "summary_text", "text": "think"}])]
    if with_tool:
        output.append(NeMoGymResponseFunctionToolCall(call_id="call_1", name="check_guess", arguments='{"guess": 7}'))
        output.append(NeMoGymFunctionCallOutput(call_id="call_1", output='{"verdict": "a guess"}'))
    output.append(
        NeMoGymResponseOutputMessage(id="msg_1", content=[NeMoGymResponseOutputText(text=text, annotations=[])])
    )
    return NeMoGymResponse(
        id="resp_1",
        created_at=0.0,
        model="test-model",
        object="response",
        output=output,
        parallel_tool_calls=False,
        tool_choice="auto",
        tools=[],
    )


def make_request(text: str, secret: int = 7, with_tool: bool = True) -> LuckyNumberVerifyRequest:
    return LuckyNumberVerifyRequest(
        responses_create_params=NeMoGymResponseCreateParamsNonStreaming(
            input=[NeMoGymEasyInputMessage(role="user", content="Guess my number.")]
        ),
        response=make_response(text, with_tool),
        secret=secret,
    )


class TestApp:
    def test_sanity(self) -> None:
        make_server()

    async def test_right_number_scores_one(self) -> None:
        result = await make_server().verify(make_request("My answer is 7."))
        assert result.reward == 1.0
        assert result.extracted_answer == 7
        assert result.used_tool is True
        assert result.response.output_text == "My answer is 7."

    async def test_wrong_number_scores_zero(self) -> None:
        result = await make_server().verify(make_request("It is 8", secret=7, with_tool=False))
        assert result.reward == 0.0
        assert result.used_tool is False

    def test_metrics_hooks(self) -> None:
        server = make_server()
        tasks = [
            [{"reward": 1.0, "extracted_answer": 7, "difficulty": "easy"}, {"reward": 0.0, "extracted_answer": 8}],
            [{"reward": 0.0, "extracted_answer": None, "difficulty": "hard"}, {"reward": 0.0, "extracted_answer": 3}],
        ]
        metrics = server.compute_metrics(tasks)
        assert metrics["pass@1[avg-of-2]/accuracy"] == 25.0
        assert metrics["pass@2/accuracy"] == 50.0
        assert metrics["easy/pass@2/accuracy"] == 100.0
        assert server.get_key_metrics(metrics) == {"pass@1[avg-of-2]/accuracy": 25.0}
