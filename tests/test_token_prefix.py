"""The `required_prefix_token_ids` contract: where the new input starts, and the per-rollout verdict."""

from __future__ import annotations

from nemo_gym.token_prefix import PrefixInvariant, new_items


def _bundle(prompt: list[int], generation: list[int]) -> dict:
    return {
        "prompt_token_ids": prompt,
        "generation_token_ids": generation,
        "generation_log_probs": [-1.0] * len(generation),
    }


def test_new_items_are_those_after_the_last_model_generated_run():
    conversation = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"type": "reasoning", "summary": []},
        {"type": "function_call", "call_id": "a", "name": "t", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "t", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": "1"},
        {"type": "function_call_output", "call_id": "b", "output": "2"},
    ]
    boundary, new = new_items(conversation)
    assert boundary == 5
    assert [item["call_id"] for item in new] == ["a", "b"]
    # An assistant message is model output too; a first call has no model turn to build on.
    assert new_items([*conversation, {"role": "assistant", "content": "x", "type": "message"}]) == (8, [])
    assert new_items([{"role": "user", "content": "u"}]) == (0, [{"role": "user", "content": "u"}])


def test_the_verdict_holds_only_while_every_prompt_extends_the_previous_sequence():
    kept = PrefixInvariant()
    assert kept.request_fields() == {} and kept.verdict() is None
    kept.observe([{"type": "function_call"} | _bundle([1, 2], [3])], 1)
    assert kept.request_fields() == {"required_prefix_token_ids": [1, 2, 3]}
    kept.observe([{"type": "message"} | _bundle([1, 2, 3, 4], [5])], 2)
    assert kept.verdict() == "held"

    broken = PrefixInvariant()
    broken.observe([_bundle([1, 2], [3])], 1)
    broken.observe([_bundle([1, 2, 7, 4], [5])], 2)  # the model's token 3 came back re-tokenized as 7
    assert broken.verdict() == "broken" and broken.broken_at_call == 2

    stopped = PrefixInvariant()
    stopped.observe([_bundle([1], [2])], 1)
    stopped.observe([{"type": "message"}], 2)  # ids stopped arriving: the sequence has a gap
    assert stopped.verdict() == "broken"
