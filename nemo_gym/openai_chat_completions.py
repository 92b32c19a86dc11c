"""NeMo Gym's chat completion models (`nemo_gym.openai_utils.NeMoGymChatCompletion` and its parts), on the
OpenAI SDK's own. Kept apart so that `nemo_gym.openai_utils` imports the SDK only when one is used."""

from __future__ import annotations

from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice

from nemo_gym.openai_utils import TokenIDLogProbMixin


class NeMoGymChatCompletionMessage(ChatCompletionMessage):
    """The message of a chat completion choice (`.content`, `.tool_calls`), under NeMo Gym's name."""


class NeMoGymChatCompletionMessageForTraining(NeMoGymChatCompletionMessage, TokenIDLogProbMixin):
    """A chat completion message with the token ids and log probs a trainer needs (NeMo Gym's name)."""


class NeMoGymChoice(Choice):
    message: NeMoGymChatCompletionMessage


class NeMoGymChatCompletion(ChatCompletion):
    """A `/v1/chat/completions` answer (the OpenAI SDK's model: `.choices[0].message.content`)."""

    choices: list[NeMoGymChoice]  # type: ignore[assignment]
