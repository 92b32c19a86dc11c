"""long_context: find the needles RULER-style, in a haystack whose length is set in the config.

Trains exact retrieval from long inputs: 7-digit "magic numbers" for named keys hidden among
filler sentences and distractor needles (`haystack.py`). No tools; the last assistant message is
graded. Task rows are written by `generate_tasks.py`, which reads the context length from this
environment's config (`context_words`).
"""

from __future__ import annotations

import re

from pydantic import Field

from nemo_gym.openai_types import last_assistant_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from resources_servers.long_context.haystack import KINDS, Kind

VALUE = re.compile(r"(?<!\d)\d{7}(?!\d)")


class LongContextConfig(BaseResourcesServerConfig):
    context_words: int = Field(800, ge=50)
    """Haystack length, in words, of the tasks `generate_tasks.py` writes (RULER sizes: 4k-128k tokens
    is roughly 3,000-96,000 words). The example data uses the default so the embedded model fits it."""
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS))
    """Task kinds `generate_tasks.py` cycles through."""
    distractors: int = Field(3, ge=0, le=7)
    """Extra needles per task (other keys, or extra values for the multivalue kind)."""


class LongContextVerifyRequest(BaseVerifyRequest):
    expected_values: list[str] = Field(min_length=1)
    distractor_values: list[str] = Field(default_factory=list)
    kind: Kind | None = None
    context_words: int | None = None


class LongContextVerifyResponse(LongContextVerifyRequest, BaseVerifyResponse):
    found_values: list[str]
    """Every 7-digit number in the reply, in order."""
    recall: float
    """Share of the expected values the reply contains."""
    distractor_hit: bool
    """The reply named a value that belongs to a key that was not asked for."""


class LongContextServer(SimpleResourcesServer):
    config: LongContextConfig

    async def verify(self, body: LongContextVerifyRequest) -> LongContextVerifyResponse:
        found = VALUE.findall(last_assistant_text(body.response.output))
        recall = sum(value in found for value in body.expected_values) / len(body.expected_values)
        distractor_hit = any(value in found for value in body.distractor_values)
        # Exact retrieval: every asked value and nothing from the distractors (listing every number
        # in the context must not pay).
        reward = 1.0 if recall == 1.0 and not distractor_hit else 0.0
        return LongContextVerifyResponse(
            **body.model_dump(), reward=reward, found_values=found, recall=recall, distractor_hit=distractor_hit
        )


if __name__ == "__main__":
    LongContextServer.run_webserver()
