"""vllm_model: the Responses API in front of one or more vLLM replicas.

`/v1/responses` converts the request to Chat Completions (`nemo_gym.conversion`), posts it to one
replica and converts the completion back, with usage and `status: incomplete` when generation hit
the token limit. `/v1/chat/completions` is a pass-through with the same request preparation.

With `return_token_id_information` (and `token_exact_turns`, the default), every turn is generated
from token ids instead (`token_in`): vLLM's `/tokenize` renders only what is new, the prompt is the
previous call's ids (`required_prefix_token_ids`, sent by the agent) followed by those tokens, and
`/v1/completions` generates from that token-id prompt. The model's own tokens are never re-rendered,
so each call's prompt begins with the previous call's prompt + generation ids (the prefix invariant
trainers assert); tool calls are parsed from the generated text (`tool_call_format`).

Choices that matter for RL rollouts:
  * Replica affinity by hashing the session id, not by remembering sessions: every turn of a
    rollout reaches the same engine (prefix-cache hits) in any worker process, with no state.
    NeMo Gym's round-robin table lived in one process and scattered turns across engines once the
    server ran several workers.
  * A replica that refuses connections is skipped: the session moves to the next replica in a
    fixed order, so a dead engine costs a few retries instead of a stuck share of the rollouts.
  * A context-length 400 becomes an empty, incomplete turn, so the agent ends the episode cleanly
    instead of failing the rollout. Other upstream errors and wrong-shaped answers are handled as in
    every upstream model server (`nemo_gym.servers.upstream`): retryable ones are retried and then
    a 502, another 4xx is a 424 the collector does not retry, a malformed answer names the field.
  * With `return_token_id_information`, token ids come inline from vLLM (`return_token_ids`, or
    `token_id:<n>` logprob tokens on older versions). Token-exact turns cost one `/tokenize` of the
    new items per turn (not of the history), deterministic for the same new items; the ids vLLM
    generated from are the ids returned. Requested but missing ids are an error, never a silent gap.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Request
from pydantic import SecretStr, field_validator

from nemo_gym.client import HttpResult
from nemo_gym.conversion import (
    chat_completion_to_response,
    context_length_exceeded,
    empty_incomplete_completion,
    responses_to_chat_params,
    think_split,
)
from nemo_gym.errors import InputError, InvalidResponseError, ServerUnreachableError
from nemo_gym.openai_types import ChatCompletionCreateParams, ResponseCreateParams
from nemo_gym.servers.model import SimpleResponsesAPIModel, UpstreamModelConfig
from nemo_gym.servers.session import SESSION_ID_KEY
from nemo_gym.servers.upstream import UpstreamClient
from nemo_gym.servers.upstream_shapes import CHAT_COMPLETION, AnswerShape
from nemo_gym.token_prefix import REQUIRED_PREFIX_KEY, new_items
from responses_api_models.vllm_model.token_in import (
    TEXT_COMPLETION,
    TOKENIZE_ANSWER,
    ToolCallFormat,
    TurnPrompts,
    completion_as_chat,
    completion_request,
    context_full_completion,
    template_options,
)

JSONDict = dict[str, Any]

# Asked of vLLM when token ids are wanted. `return_token_ids` (vLLM >= 0.10.2) puts
# `prompt_token_ids` and the choice's `token_ids` in the completion; the logprob tokens written
# as `token_id:<n>` are the fallback for older versions. No `top_logprobs`: it once made vLLM
# return no logprobs at all, which silently zeroed the training loss mask.
TOKEN_ID_REQUEST = {"logprobs": True, "return_tokens_as_token_ids": True, "return_token_ids": True}


class VLLMModelConfig(UpstreamModelConfig):
    base_url: str | list[str]
    """One replica or a list of them, each including `/v1` (e.g. http://node1:8000/v1)."""
    api_key: SecretStr = SecretStr("")
    """Sent as a bearer token when set (vLLM's `--api-key`)."""
    model: str
    """Model name sent upstream; the name the replicas serve."""
    return_token_id_information: bool = False
    """Attach prompt/generation token ids and log probs to each turn (for RL training)."""
    uses_reasoning_parser: bool = True
    """vLLM runs with a reasoning parser: `<think>` blocks in the history travel to it as
    `reasoning_content`, and its `reasoning_content`/`reasoning` comes back as a reasoning item."""
    replace_developer_role_with_system: bool = False
    """For chat templates that do not know the `developer` role."""
    token_exact_turns: bool = True
    """With `return_token_id_information`: build every prompt from token ids (vLLM's `/tokenize` of
    the new items after `required_prefix_token_ids`) and generate through token-in `/v1/completions`,
    so no turn re-tokenizes the model's own tokens. False: vLLM's chat endpoint renders each turn
    from the text, which can drift (the agent then records `token_prefix_invariant: broken`)."""
    tool_call_format: ToolCallFormat = "hermes"
    """How the model writes tool calls in its text, parsed on the token-in path (vLLM's tool parser
    only runs on chat completions): `hermes` = `<tool_call>{"name": ..., "arguments": ...}</tool_call>`
    (Qwen2.5/3, Hermes, and most chat templates that take `tools`); `none` = text only."""

    @field_validator("base_url")
    @classmethod
    def _at_least_one_replica(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("base_url lists no replica")
        return value

    @property
    def upstream_base_urls(self) -> list[str]:
        urls = [self.base_url] if isinstance(self.base_url, str) else self.base_url
        return [url.rstrip("/") for url in urls]

    @property
    def replica_urls(self) -> list[str]:
        return self.upstream_base_urls

    @property
    def upstream_api_key(self) -> SecretStr:
        return self.api_key


def metadata_extra_body(params: JSONDict) -> JSONDict:
    """NeMo Gym's per-request vLLM parameters: `metadata.extra_body`, a JSON object in a string
    (metadata values are strings), e.g. `{"seed": 3}` from `ng_collect_rollouts +num_repeats_add_seed=true`.
    They go into the body sent to vLLM, under anything the request itself sets."""
    metadata = params.get("metadata")
    text = metadata.get("extra_body") if isinstance(metadata, dict) else None
    if not text:
        return {}
    try:
        extra = json.loads(text)
    except (TypeError, ValueError):
        extra = None
    if not isinstance(extra, dict):
        raise InputError("metadata.extra_body must be a string holding a JSON object, e.g. '{\"seed\": 1}'")
    return extra


def replica_order(session_id: str, n_replicas: int) -> list[int]:
    """Replica indices to try for a session: its home replica first, then the following ones.

    The home is a stable hash of the id (blake2b, not Python's salted `hash`), so every worker
    process and every restart sends one session to the same replica.
    """
    digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
    home = int.from_bytes(digest, "big") % n_replicas
    return [(home + offset) % n_replicas for offset in range(n_replicas)]


def move_think_to_reasoning_content(messages: list[JSONDict]) -> list[JSONDict]:
    """Assistant history with `<think>` blocks moved out of `content` into `reasoning_content`.

    With a reasoning parser, vLLM's chat template renders reasoning from `reasoning_content`;
    left in `content`, the blocks would be rendered as answer text. Several blocks are joined with
    a newline. A message that already carries `reasoning_content` keeps it. Messages without
    blocks are returned as they are (same objects).
    """
    prepared = []
    for message in messages:
        if message.get("role") != "assistant":
            prepared.append(message)
            continue
        content = message.get("content")
        blocks: list[str] = []
        if isinstance(content, str):
            blocks, content = think_split(content)
        elif isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    found, text = think_split(part["text"])
                    blocks.extend(found)
                    part = {**part, "text": text}
                parts.append(part)
            content = parts
        if not blocks:
            prepared.append(message)
            continue
        moved = {**message, "content": content}
        moved.setdefault("reasoning_content", "\n".join(blocks))
        prepared.append(moved)
    return prepared


class VLLMModel(SimpleResponsesAPIModel):
    config: VLLMModelConfig

    async def on_startup(self) -> None:
        self._upstream = UpstreamClient(self.config.name, self.config)
        self._replicas = self.config.replica_urls
        self._prompts = TurnPrompts()

    async def on_shutdown(self) -> None:
        await self._upstream.aclose()

    # ---- endpoints ---------------------------------------------------------------------------
    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        params = body.model_dump(exclude_unset=True)
        # Never forwarded: vLLM does not know it; the token-in path honours it, the chat path cannot.
        required_prefix = params.pop(REQUIRED_PREFIX_KEY, None)
        token_in = self.config.token_exact_turns and (
            self.config.return_token_id_information or required_prefix is not None
        )
        chat_params = responses_to_chat_params(
            params,
            replace_developer_role_with_system=self.config.replace_developer_role_with_system,
            include_token_ids=self.config.return_token_id_information and not token_in,
        )
        chat_params = metadata_extra_body(params) | chat_params
        if token_in:
            completion = await self._complete_from_tokens(request, params, chat_params, required_prefix)
        else:
            completion = await self._complete(request, chat_params)
        return chat_completion_to_response(
            completion,
            request_params=params,
            model=self.config.model,
            include_token_ids=self.config.return_token_id_information,
        )

    async def chat_completions(self, request: Request, body: ChatCompletionCreateParams) -> Any:
        payload = body.model_dump(exclude_unset=True)
        if self.config.replace_developer_role_with_system:
            payload["messages"] = [
                {**message, "role": "system"} if message.get("role") == "developer" else message
                for message in payload["messages"]
            ]
        return await self._complete(request, payload)

    # ---- upstream ----------------------------------------------------------------------------
    async def _complete(self, request: Request, chat_params: JSONDict) -> JSONDict:
        """Send prepared chat params to the session's replica; the completion, or a synthetic empty
        one when the conversation no longer fits the context."""
        payload = self._prepare(chat_params)
        result = await self._post_to_replica(request.session[SESSION_ID_KEY], payload)
        if not result.ok and context_length_exceeded(result.status, result.text):
            return empty_incomplete_completion()
        return self._upstream.parse(self._upstream.raise_for_status(result), CHAT_COMPLETION)

    def _prepare(self, chat_params: JSONDict) -> JSONDict:
        payload = chat_params | {"model": self.config.model}
        if self.config.uses_reasoning_parser and payload.get("messages"):
            payload["messages"] = move_think_to_reasoning_content(payload["messages"])
        if self.config.return_token_id_information:
            payload.update(TOKEN_ID_REQUEST)
        return payload

    async def _complete_from_tokens(
        self, request: Request, params: JSONDict, chat_params: JSONDict, required_prefix: list[int] | None
    ) -> JSONDict:
        """Build the token-id prompt (see `token_in`), generate from it, and answer as a chat completion."""
        session_id = request.session[SESSION_ID_KEY]

        async def tokenize(body: JSONDict) -> JSONDict:
            return await self._ask(session_id, "/tokenize", body | {"model": self.config.model}, TOKENIZE_ANSWER)

        template = template_options(chat_params)
        if required_prefix is None:
            messages = chat_params["messages"]
            if self.config.uses_reasoning_parser:
                messages = move_think_to_reasoning_content(messages)
            prompt = await self._prompts.first(tokenize, messages, template)
        else:
            prompt = await self._prompts.continued(tokenize, required_prefix, self._new_messages(params), template)

        room = None if self._prompts.max_model_len is None else self._prompts.max_model_len - len(prompt)
        if room is not None and room <= 0:
            return context_full_completion(prompt)
        max_tokens = chat_params.get("max_tokens")
        if max_tokens is None:
            if room is None:
                raise InvalidResponseError(
                    f"model server {self.config.name!r}: vLLM's /tokenize did not say max_model_len, so the room left "
                    "for generation is unknown; set max_output_tokens"
                )
            max_tokens = room
        payload = completion_request(chat_params, prompt, max_tokens, self.config.model)
        result = await self._post_to_replica(session_id, payload, "/completions")
        if not result.ok and context_length_exceeded(result.status, result.text):
            return context_full_completion(prompt)
        completion = self._upstream.parse(self._upstream.raise_for_status(result), TEXT_COMPLETION)
        tool_names = [tool["function"]["name"] for tool in template.get("tools", [])]
        return completion_as_chat(completion, prompt, tool_names, self.config.tool_call_format)

    def _new_messages(self, params: JSONDict) -> list[JSONDict]:
        """The chat messages of the input items after the last model-generated run."""
        input_items = params.get("input")
        boundary, new = new_items(input_items) if isinstance(input_items, list) else (0, [])
        if boundary == 0:
            raise InputError(
                f"{REQUIRED_PREFIX_KEY} was given, but the input holds no model-generated item for it to continue"
            )
        return responses_to_chat_params(
            {"input": new}, replace_developer_role_with_system=self.config.replace_developer_role_with_system
        )["messages"]

    async def _ask(self, session_id: str, path: str, payload: JSONDict, shape: AnswerShape) -> JSONDict:
        """POST to a route at the replica's root (vLLM serves `/tokenize` outside `/v1`); the checked answer."""
        result = await self._post_to_replica(session_id, payload, path, at_root=True)
        return self._upstream.parse(self._upstream.raise_for_status(result), shape)

    async def _post_to_replica(
        self, session_id: str, payload: JSONDict, path: str = "/chat/completions", *, at_root: bool = False
    ) -> HttpResult:
        refused: list[str] = []
        for index in replica_order(session_id, len(self._replicas)):
            base = self._replicas[index]
            url = f"{base.removesuffix('/v1') if at_root else base}{path}"
            try:
                return await self._upstream.post(url, payload)
            except ServerUnreachableError as error:
                # Only a refused connection moves on: the request never reached that replica, so
                # nothing is generated twice. A replica that dropped a request mid-way is an error.
                if not error.connect_failed:
                    raise
                refused.append(str(error))
        raise ServerUnreachableError(
            "no vLLM replica accepted a connection: " + "; ".join(refused), connect_failed=True
        )


if __name__ == "__main__":
    VLLMModel.run_webserver()
