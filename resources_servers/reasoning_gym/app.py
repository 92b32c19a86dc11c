"""reasoning_gym: every task generator of the `reasoning-gym` package behind one resources server.

Trains verifiable reasoning across 100+ procedural task families (arithmetic, algebra, logic
puzzles, graphs, games, cognition). Rows come from `prepare_data.py`; `verify` reads the answer
from the last `<answer>...</answer>` of the reply (the package's own extraction and prompt) and
scores it with that generator's own `score_answer`, so reward semantics are the package's.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import Field, PrivateAttr
from reasoning_gym import create_dataset
from reasoning_gym.factory import DATASETS
from reasoning_gym.utils import extract_answer

from nemo_gym.errors import InputDataError
from nemo_gym.openai_types import last_assistant_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


class ReasoningGymConfig(BaseResourcesServerConfig):
    scoring_timeout_s: float = Field(10.0, gt=0)
    """A scorer still running after this long counts as reward 0 (a few scorers simulate or search)."""


class ReasoningGymVerifyRequest(BaseVerifyRequest):
    question: str
    answer: str | None
    metadata: dict[str, Any]
    dataset_name: str
    dataset_config: dict[str, Any] = Field(default_factory=dict)


class ReasoningGymVerifyResponse(ReasoningGymVerifyRequest, BaseVerifyResponse):
    extracted_answer: str | None
    scoring_error: str | None = None


class ReasoningGymServer(SimpleResourcesServer):
    config: ReasoningGymConfig
    _scorers: dict[str, Any] = PrivateAttr(default_factory=dict)

    def scorer(self, name: str, config: dict[str, Any]) -> Any:
        """The generator's own `score_answer`, built once per (generator, config)."""
        key = json.dumps([name, config], sort_keys=True)
        if key not in self._scorers:
            if name not in DATASETS:
                raise InputDataError(f"dataset_name: unknown reasoning-gym generator {name!r}")
            try:
                self._scorers[key] = create_dataset(name, size=1, seed=0, **config).score_answer
            except (TypeError, ValueError, AssertionError) as error:
                raise InputDataError(f"dataset_config for {name}: {error}") from None
        return self._scorers[key]

    async def verify(self, body: ReasoningGymVerifyRequest) -> ReasoningGymVerifyResponse:
        score = self.scorer(body.dataset_name, body.dataset_config)
        answer = extract_answer(last_assistant_text(body.response.output))
        entry = {"question": body.question, "answer": body.answer, "metadata": body.metadata}
        error = None
        try:
            # Scorers are synchronous and some are CPU-heavy: keep them off the event loop.
            reward = float(
                await asyncio.wait_for(asyncio.to_thread(score, answer, entry), self.config.scoring_timeout_s)
            )
        except TimeoutError:
            reward, error = 0.0, f"scoring took longer than {self.config.scoring_timeout_s:g} s"
        except Exception as exc:  # a scorer crashing on odd model output is that answer's failure, not the server's
            reward, error = 0.0, f"{type(exc).__name__}: {exc}"
        return ReasoningGymVerifyResponse(
            **body.model_dump(), reward=reward, extracted_answer=answer, scoring_error=error
        )


if __name__ == "__main__":
    ReasoningGymServer.run_webserver()
