"""Tokens sampled under a grammar (`generation_constrained`, local_model's forced tool call) are not trained
on by default: their recorded log probs are the unconstrained model's, not those of the distribution the
tokens were drawn from (issue 18 part 5). Every token format masks them; an option keeps them."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from nemo_gym.training import ExportOptions, export_file, to_nemo_rl, to_skyrl, to_trl, to_verl
from nemo_gym.training.turns import TokenDataError
from tests.training.rows import BOUNDARIES, FULL_SEQUENCE, MODEL_POSITIONS, make_row

PROMPT_LENGTH = BOUNDARIES[0][0]
RESPONSE_POSITIONS = range(PROMPT_LENGTH, len(FULL_SEQUENCE))
FIRST_CALL = range(*BOUNDARIES[0])
TRAINED_WHEN_FIRST_IS_MASKED = MODEL_POSITIONS - set(FIRST_CALL)

# Each token format's (token ids after the first prompt, their mask), read from its record.
MASKS = {
    "trl": (to_trl, lambda record: (record["completion_ids"], record["env_mask"])),
    "verl": (to_verl, lambda record: (record["response_ids"], record["response_mask"])),
    "skyrl": (to_skyrl, lambda record: (record["response_ids"], record["loss_masks"])),
}


def constrained_first_call(**row_options: Any) -> dict[str, Any]:
    row = make_row(**row_options)
    row["response"]["output"][0]["generation_constrained"] = True
    return row


def expected_mask(trained: set[int]) -> list[int]:
    return [int(position in trained) for position in RESPONSE_POSITIONS]


@pytest.mark.parametrize("name", MASKS)
def test_a_constrained_call_gets_mask_zero_in_every_token_format(name):
    convert, read = MASKS[name]
    ids, mask = read(convert(constrained_first_call()))
    assert ids == FULL_SEQUENCE[PROMPT_LENGTH:]  # the tokens stay: the sequence is still one sequence
    assert mask == expected_mask(TRAINED_WHEN_FIRST_IS_MASKED)


@pytest.mark.parametrize("name", MASKS)
def test_train_constrained_keeps_them_trained(name):
    convert, read = MASKS[name]
    _, mask = read(convert(constrained_first_call(), train_constrained=True))
    assert mask == expected_mask(MODEL_POSITIONS)


def test_nemo_rl_carries_a_constrained_call_as_untrained_context():
    record = to_nemo_rl(constrained_first_call())
    trained = [
        token for message in record["message_log"] if message["role"] == "assistant" for token in message["token_ids"]
    ]
    assert trained == [FULL_SEQUENCE[position] for position in sorted(TRAINED_WHEN_FIRST_IS_MASKED)]
    assert [token for message in record["message_log"] for token in message["token_ids"]] == FULL_SEQUENCE
    kept = to_nemo_rl(constrained_first_call(), train_constrained=True)
    assert [message["role"] for message in kept["message_log"]] == ["user", "assistant"] * 3


def test_a_row_whose_only_call_is_constrained_trains_nothing_in_nemo_rl():
    row = constrained_first_call()
    row["response"]["output"] = row["response"]["output"][:1]
    record = to_nemo_rl(row)
    assert [message["role"] for message in record["message_log"]] == ["user"]
    assert record["message_log"][0]["token_ids"] == FULL_SEQUENCE[: BOUNDARIES[0][1]]


def test_a_constrained_flag_that_is_not_a_boolean_is_refused_naming_the_field():
    row = constrained_first_call()
    row["response"]["output"][0]["generation_constrained"] = "yes"
    with pytest.raises(TokenDataError, match=r"response\.output\[0\]\.generation_constrained"):
        to_trl(row)


def test_export_masks_by_default_and_keeps_with_the_option(tmp_path):
    source = tmp_path / "run.jsonl"
    source.write_text(json.dumps(constrained_first_call()) + "\n")
    export_file(source, tmp_path / "masked.jsonl", ExportOptions(format="verl"))
    export_file(source, tmp_path / "kept.jsonl", ExportOptions(format="verl", train_constrained_tokens=True))
    masked = json.loads((tmp_path / "masked.jsonl").read_text())
    kept = json.loads((tmp_path / "kept.jsonl").read_text())
    assert masked["response_mask"] == expected_mask(TRAINED_WHEN_FIRST_IS_MASKED)
    assert kept["response_mask"] == expected_mask(MODEL_POSITIONS)


def test_the_command_takes_train_constrained_tokens(tmp_path):
    source = tmp_path / "run.jsonl"
    source.write_text(json.dumps(constrained_first_call()) + "\n")
    for option, trained in (("false", TRAINED_WHEN_FIRST_IS_MASKED), ("true", MODEL_POSITIONS)):
        target = tmp_path / f"out_{option}.jsonl"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "nemo_gym.cli.export_training_data",
                f"+input_jsonl_fpath={source}",
                f"+output_jsonl_fpath={target}",
                "+format=skyrl",
                f"+train_constrained_tokens={option}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(target.read_text())["loss_masks"] == expected_mask(trained)
