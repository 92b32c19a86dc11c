"""The policy being trained, served on loopback with vLLM's token-in surface, so rollouts are on-policy.

    server = PolicyServer(model, tokenizer).start()      # model: a transformers causal LM (torch)
    ng_run ... vllm_model_for_training.yaml +policy_base_url=<server.url> ...
    ... GRPOTrainer(model=model, rollout_func=NemoGymRolloutFunc(...)) ...
    server.stop()

A GRPO step only moves the weights towards better answers if the next rollouts are sampled from the
moved weights. The embedded `local_model` serves a GGUF file loaded once, so a trainer updating its own
copy never changes what the stack samples. This server holds the trainer's model object itself: every
optimizer step is seen by the next rollout, with no weight copy, and our stack (`vllm_model` ->
agent -> environment) runs the rollouts unchanged.

It answers what `vllm_model` asks of vLLM with `return_token_id_information` (token-exact turns):
  * `POST /tokenize`: `messages` (+ `tools`, `chat_template_kwargs`, `add_generation_prompt`) rendered
    with the tokenizer's chat template, or a `prompt` string; answers `tokens`, `count`, `max_model_len`.
  * `POST /v1/completions`: `prompt` as token ids (or a string), `max_tokens`, `temperature` (0 = greedy),
    `top_p`, `seed`; the choice carries `text` (special tokens skipped), `token_ids` (the end-of-turn
    token included when sampled), `prompt_token_ids`, and `logprobs.token_logprobs`.

Log probabilities are those of the distribution each token was drawn from (the logits divided by the
temperature, after the top-p cut), so an importance ratio against them is exact; greedy turns report
the model's own log probabilities. Requests that arrive together with the same sampling settings (a
GRPO batch, an evaluation's tasks) are sampled as one left-padded batch. Generation runs in one worker
thread under `torch.no_grad()`; the caller must not step the optimizer while a rollout is running (TRL's
`rollout_func` is synchronous, so it never does).

torch and transformers are imported by the caller; this module imports torch only when it generates.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

JSONDict = dict[str, Any]
BATCH_GAP_SECONDS = 0.1
BATCH_WINDOW_SECONDS = 1.0
"""After a request arrives, the worker waits for more while they keep coming (at most BATCH_GAP_SECONDS
apart, BATCH_WINDOW_SECONDS in all), then samples them together: a GRPO batch or an evaluation's tasks
reach the server within milliseconds of each other, and one padded batch costs little more than one row."""
MAX_BATCH_ROWS = 64


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    future: Future[JSONDict] = field(default_factory=Future)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        # A fixed seed is a request of its own: batching it would tie its draw to its neighbours'.
        alone = (id(self),) if self.seed is not None else ()
        return (self.max_tokens, self.temperature, self.top_p, *alone)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


class PolicyServer:
    """A transformers model behind `/tokenize` and `/v1/completions` on 127.0.0.1, in background threads.

    `url` ends in `/v1` (what `vllm_model`'s `base_url` wants); `served` counts completed turns.
    """

    def __init__(self, model: Any, tokenizer: Any, *, port: int = 0, max_model_len: int = 2048, name: str = "policy"):
        self.model, self.tokenizer, self.max_model_len, self.name = model, tokenizer, max_model_len, name
        self._port = port
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        eos = tokenizer.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos])
        self.served = 0

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> PolicyServer:
        worker = threading.Thread(target=self._generate_forever, name=f"{self.name}-generate", daemon=True)
        server = threading.Thread(target=self._serve, name=f"{self.name}-http", daemon=True)
        self._threads = [worker, server]
        worker.start()
        server.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"policy server did not start: {self._failure}")
        return self

    def stop(self) -> None:
        self._queue.put(None)
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        try:
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self._port)
            loop.run_until_complete(site.start())
            self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        except BaseException as error:  # noqa: BLE001 - reported by start()
            self._failure = error
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    # ---- endpoints ---------------------------------------------------------------------------
    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "messages" in body:
            messages = [{**message, "content": _text(message.get("content"))} for message in body["messages"]]
            text = self.tokenizer.apply_chat_template(
                messages,
                tools=body.get("tools") or None,
                add_generation_prompt=body.get("add_generation_prompt", True),
                tokenize=False,
                **(body.get("chat_template_kwargs") or {}),
            )
        else:
            text = str(body.get("prompt", ""))
        tokens = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return web.json_response({"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens})

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompt = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if not isinstance(prompt, list) or not prompt or not all(isinstance(token, int) for token in prompt):
            return web.json_response({"error": {"message": "prompt must be token ids or a string"}}, status=400)
        max_tokens = int(body.get("max_tokens") or 16)
        if len(prompt) + max_tokens > self.max_model_len:
            message = (
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the messages, {max_tokens} in the completion)."
            )
            return web.json_response({"error": {"message": message, "code": 400}}, status=400)
        temperature = body.get("temperature")
        item = _Request(
            prompt_ids=prompt,
            max_tokens=max_tokens,
            temperature=1.0 if temperature is None else float(temperature),
            top_p=float(body.get("top_p") if body.get("top_p") is not None else 1.0),
            seed=body.get("seed"),
        )
        self._queue.put(item)
        choice = await asyncio.wrap_future(item.future)
        self.served += 1
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": len(choice["token_ids"]),
            "total_tokens": len(prompt) + len(choice["token_ids"]),
        }
        return web.json_response(
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": str(body.get("model") or self.name),
                "choices": [choice],
                "usage": usage,
            }
        )

    # ---- generation --------------------------------------------------------------------------
    def _generate_forever(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + BATCH_WINDOW_SECONDS
            while len(batch) < MAX_BATCH_ROWS and (left := deadline - time.monotonic()) > 0:
                try:
                    item = self._queue.get(timeout=min(left, BATCH_GAP_SECONDS))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            groups: dict[tuple[Any, ...], list[_Request]] = {}
            for item in batch:
                groups.setdefault(item.batch_key, []).append(item)
            for group in groups.values():
                try:
                    choices = self.sample(group)
                except BaseException as error:  # noqa: BLE001 - handed to the waiting requests
                    for item in group:
                        item.future.set_exception(error)
                    continue
                for item, choice in zip(group, choices, strict=True):
                    item.future.set_result(choice)

    def sample(self, requests: list[_Request]) -> list[JSONDict]:
        """One completion per request, all sampled together with a KV cache (prompts left-padded);
        the requests share max_tokens, temperature and top_p."""
        import torch

        spec, rows = requests[0], len(requests)
        device = next(self.model.parameters()).device
        generator = None
        if spec.seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(spec.seed))
        width = max(len(request.prompt_ids) for request in requests)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(self.stop_ids))
        ids = torch.tensor(
            [[pad] * (width - len(r.prompt_ids)) + list(r.prompt_ids) for r in requests],
            dtype=torch.long,
            device=device,
        )
        mask = torch.tensor(
            [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests],
            dtype=torch.long,
            device=device,
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        sampled: list[list[int]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        finished = [False] * rows
        past = None
        with torch.no_grad():
            for _ in range(spec.max_tokens):
                out = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                if spec.temperature <= 0:
                    log_dist = torch.log_softmax(logits, dim=-1)
                    tokens = log_dist.argmax(dim=-1)
                else:
                    log_dist = torch.log_softmax(logits / spec.temperature, dim=-1)
                    if spec.top_p < 1.0:
                        log_dist = _top_p(log_dist, spec.top_p)
                    tokens = torch.multinomial(log_dist.exp(), 1, generator=generator).squeeze(-1)
                chosen = log_dist.gather(-1, tokens[:, None]).squeeze(-1)
                for row in range(rows):
                    if finished[row]:
                        continue
                    token = int(tokens[row])
                    sampled[row].append(token)
                    logprobs[row].append(float(chosen[row]))
                    finished[row] = token in self.stop_ids
                if all(finished):
                    break
                ids = tokens[:, None]
                positions = positions[:, -1:] + 1
                mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=-1)
        return [
            {
                "index": 0,
                "text": self.tokenizer.decode(sampled[row], skip_special_tokens=True),
                "finish_reason": "stop" if finished[row] else "length",
                "logprobs": {
                    "tokens": [f"token_id:{token}" for token in sampled[row]],
                    "token_logprobs": logprobs[row],
                },
                "token_ids": sampled[row],
                "prompt_token_ids": list(request.prompt_ids),
            }
            for row, request in enumerate(requests)
        ]


def _top_p(log_dist: Any, top_p: float) -> Any:
    """The distribution cut to its smallest set of tokens holding `top_p` of the mass, renormalized."""
    import torch

    ordered, order = torch.sort(log_dist, descending=True, dim=-1)
    mass_before = torch.cumsum(ordered.exp(), dim=-1) - ordered.exp()
    ordered = ordered.masked_fill(mass_before > top_p, float("-inf"))
    cut = torch.full_like(log_dist, float("-inf")).scatter(-1, order, ordered)
    return torch.log_softmax(cut, dim=-1)
