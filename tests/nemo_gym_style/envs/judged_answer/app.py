"""An answer scored by an LLM judge, written the way NeMo Gym's judge environments are (`call_judge`
on a `judge_model_server`, over `/v1/responses` or `/v1/chat/completions`). Part of our tests: their
own tests hand `verify` a mocked client whose response is read as aiohttp's is."""

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.config_types import ModelServerRef
from nemo_gym.judge import call_judge
from nemo_gym.openai_utils import (
    NeMoGymChatCompletion,
    NeMoGymEasyInputMessage,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
)

JUDGE_PROMPT = (
    "Reference answer: {expected}\nCandidate answer: {given}\n"
    "Reply [[A=B]] if they state the same result, otherwise [[A!=B]]."
)


class JudgedAnswerConfig(BaseResourcesServerConfig):
    judge_model_server: ModelServerRef
    judge_responses_create_params: NeMoGymResponseCreateParamsNonStreaming
    use_chat_completions: bool = False


class JudgedAnswerVerifyRequest(BaseVerifyRequest):
    expected_answer: str


class JudgedAnswerVerifyResponse(BaseVerifyResponse):
    judge_text: str


class JudgedAnswerServer(SimpleResourcesServer):
    config: JudgedAnswerConfig

    async def ask_judge(self, prompt: str) -> str:
        if self.config.use_chat_completions:
            completion = await call_judge(
                self.server_client,
                server_name=self.config.judge_model_server.name,
                url_path="/v1/chat/completions",
                json={"model": "judge", "messages": [{"role": "user", "content": prompt}]},
                response_model=NeMoGymChatCompletion,
            )
            return completion.choices[0].message.content or ""
        params = self.config.judge_responses_create_params.model_copy(deep=True)
        params.input = [NeMoGymEasyInputMessage(role="user", content=prompt)]
        response = await call_judge(
            self.server_client,
            server_name=self.config.judge_model_server.name,
            url_path="/v1/responses",
            json=params,
            response_model=NeMoGymResponse,
        )
        return response.output_text

    async def verify(self, body: JudgedAnswerVerifyRequest) -> JudgedAnswerVerifyResponse:
        given = body.response.output_text
        judge_text = await self.ask_judge(JUDGE_PROMPT.format(expected=body.expected_answer, given=given))
        reward = 1.0 if "[[A=B]]" in judge_text else 0.0
        return JudgedAnswerVerifyResponse(**body.model_dump(), reward=reward, judge_text=judge_text)


if __name__ == "__main__":
    JudgedAnswerServer.run_webserver()
