"""echo_word: say one given word and nothing else; a dense reward for the share of the reply that is the word.

The easiest task family we have, made for checking that a training loop learns on a tiny model on the
CPU: SmolLM2-135M-Instruct says the word with chatter around it about as often as it says it alone, so a
group of samples nearly always holds different rewards, and the reward says how far each reply was
from the target rather than only whether it hit it. The reply graded is the last assistant message,
normalized (case folded, whitespace collapsed, quotes, markdown marks and edge punctuation dropped):
  * exactly the word: 1.0;
  * the word among other words: the word's share of the reply's characters, len(word) / len(reply),
    so "Banana." scores 1.0, "The word is banana" 0.33, a paragraph close to 0;
  * the word absent (or only inside another word): 0.0.
No tools; one model turn per episode.
"""

from __future__ import annotations

import re

from nemo_gym.openai_types import last_assistant_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)

# Dropped wherever they stand: quotes and markdown emphasis a model puts around a word.
DECORATION = re.compile(r"[\"'`*_“”‘’]")
EDGE_PUNCTUATION = " \t\n.,;:!?()[]{}<>-"


class EchoWordConfig(BaseResourcesServerConfig):
    pass


class EchoWordVerifyRequest(BaseVerifyRequest):
    word: str
    """The word the reply must be."""


class EchoWordVerifyResponse(EchoWordVerifyRequest, BaseVerifyResponse):
    exact: bool
    """The reply, normalized, is the word and nothing else."""
    reply_chars: int
    """Length of the normalized reply."""


def normalize(text: str) -> str:
    return " ".join(DECORATION.sub("", text).split()).strip(EDGE_PUNCTUATION).casefold()


def echo_reward(reply: str, word: str) -> float:
    """1.0 for the word alone; its share of the reply's characters when other text surrounds it; else 0."""
    reply, word = normalize(reply), normalize(word)
    if not word or not reply:
        return 0.0
    if reply == word:
        return 1.0
    if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", reply) is None:
        return 0.0
    return round(len(word) / len(reply), 4)


class EchoWordServer(SimpleResourcesServer):
    config: EchoWordConfig

    async def verify(self, body: EchoWordVerifyRequest) -> EchoWordVerifyResponse:
        reply = last_assistant_text(body.response.output)
        reward = echo_reward(reply, body.word)
        return EchoWordVerifyResponse(
            **body.model_dump(), reward=reward, exact=reward == 1.0, reply_chars=len(normalize(reply))
        )


if __name__ == "__main__":
    EchoWordServer.run_webserver()
