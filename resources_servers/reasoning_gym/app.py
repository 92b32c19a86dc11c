"""reasoning_gym: every task generator of the `reasoning-gym` package behind one resources server.

Trains verifiable reasoning across 100+ procedural task families (arithmetic, algebra, logic
puzzles, graphs, games, cognition). Rows come from `prepare_data.py`; `verify` reads the answer
from the last `<answer>...</answer>` of the reply (the package's own extraction and prompt), else,
as NeMo Gym does, the first `\\boxed{...}`, else the whole reply, and scores it with that
generator's own `score_answer`, so reward semantics are the package's. The generator is the row's
`dataset_name`, or NeMo Gym's `metadata.source_dataset`.

Scoring runs confined (`scoring.py` in the sandbox): several of the package's scorers evaluate the
answer or the task's metadata with sympy or `eval`, so an answer such as
`__import__("os").system(...)` must meet nothing worth taking. A scorer past its limit is killed
and the row says why in `scoring_error`, with reward 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr
from reasoning_gym.factory import DATASETS
from reasoning_gym.utils import extract_answer

from nemo_gym.compute import ComputeSettings, ConfinedScorer, open_confined_scorer
from nemo_gym.errors import ComputeError, InputDataError
from nemo_gym.openai_types import output_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


class ReasoningGymConfig(BaseResourcesServerConfig):
    scoring_timeout_s: float = Field(10.0, gt=0)
    """Default 10 s. A scorer still running after this long (wall or CPU time) is killed and the
    answer scores 0 with the reason in `scoring_error` (a few scorers simulate or search)."""
    scoring_workers: int = Field(2, ge=1)
    """Default 2. Answers scored at once: warm sandboxed interpreters, each forking once per answer."""
    scoring_memory_mb: int = Field(2048, gt=0)
    """Default 2 GB. Memory of one sandboxed scoring interpreter and the answer it is scoring."""
    answer_fallbacks: bool = True
    """Default true, as NeMo Gym: a reply with no `<answer>` tag is read from its first `\\boxed{...}`,
    else whole. False: the tag is required (no tag scores 0, `extracted_answer` null)."""


class ReasoningGymVerifyRequest(BaseVerifyRequest):
    question: str
    answer: str | None
    metadata: dict[str, Any]
    dataset_name: str | None = None
    """The generator; None = the row's `metadata.source_dataset` (where NeMo Gym's rows name it)."""
    dataset_config: dict[str, Any] = Field(default_factory=dict)


class ReasoningGymVerifyResponse(ReasoningGymVerifyRequest, BaseVerifyResponse):
    extracted_answer: str | None
    scoring_error: str | None = None


class ReasoningGymServer(SimpleResourcesServer):
    config: ReasoningGymConfig
    _scoring: ConfinedScorer | None = PrivateAttr(None)

    async def on_startup(self) -> None:
        await self.scoring()

    async def on_shutdown(self) -> None:
        if self._scoring is not None:
            await self._scoring.aclose()

    async def scoring(self) -> ConfinedScorer:
        """The sandboxed scorers, started on first use (on_startup, or a direct call in tests)."""
        if self._scoring is None:
            settings = ComputeSettings(
                max_concurrent=self.config.scoring_workers,
                timeout_s=self.config.scoring_timeout_s,
                memory_mb=self.config.scoring_memory_mb,
            )
            self._scoring = open_confined_scorer(Path(__file__).with_name("scoring.py"), settings, warmup="warm_up")
        await self._scoring.start()
        return self._scoring

    async def verify(self, body: ReasoningGymVerifyRequest) -> ReasoningGymVerifyResponse:
        dataset_name = body.dataset_name or body.metadata.get("source_dataset")
        if not dataset_name:
            raise InputDataError("dataset_name: missing (name the generator here or in metadata.source_dataset)")
        if dataset_name not in DATASETS:
            raise InputDataError(f"dataset_name: unknown reasoning-gym generator {dataset_name!r}")
        answer = self.read_answer(output_text(body.response.output))
        entry = {"question": body.question, "answer": body.answer, "metadata": body.metadata}
        scoring = await self.scoring()
        reward, error = 0.0, None
        try:
            outcome = await scoring.call("score", dataset_name, body.dataset_config, answer, entry)
        except ComputeError as exc:  # killed past its limits, or crashed on odd output: that answer's failure
            error = str(exc)
        else:
            if "config_error" in outcome:
                raise InputDataError(f"dataset_config for {dataset_name}: {outcome['config_error']}")
            reward = float(outcome["reward"])
        return ReasoningGymVerifyResponse(
            **body.model_dump(), reward=reward, extracted_answer=answer, scoring_error=error
        )

    def read_answer(self, text: str) -> str | None:
        """The answer in a reply's text (all its assistant messages, joined as NeMo Gym joins them).
        Regex work only: the text is evaluated, if at all, by the confined scorer."""
        tagged = extract_answer(text)
        if tagged is not None or not self.config.answer_fallbacks:
            return tagged
        boxed = FIRST_BOXED.search(text)
        if boxed:
            return boxed.group(1).strip()
        return text.strip()


# The first \boxed{...} whose content has no closing brace (NeMo Gym's fallback reads no nesting).
FIRST_BOXED = re.compile(r"\\boxed\{([^}]+)\}")


if __name__ == "__main__":
    ReasoningGymServer.run_webserver()
