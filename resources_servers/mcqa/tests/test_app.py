"""mcqa: `verify` on hand-made replies in every grading mode, the row regex, and over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from resources_servers.mcqa.app import (
    MCQAConfig,
    MCQAServer,
    MCQAVerifyRequest,
    boxed_contents,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "example.jsonl"
OPTIONS = [{"A": "Oxygen"}, {"B": "Nitrogen"}, {"C": "Argon"}, {"D": "Carbon dioxide"}]


def make_server() -> MCQAServer:
    return MCQAServer(config=MCQAConfig(name="mcqa", domain="knowledge"), server_client=registry_client({}))


def reply(*texts: str) -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": t, "annotations": []}]}
        for t in texts
    ]


def request(output: list[dict[str, Any]], mode: str, expected: str = "B", **extra: Any) -> MCQAVerifyRequest:
    return MCQAVerifyRequest.model_validate(
        {
            "responses_create_params": {"input": [{"role": "user", "content": "Which gas ...?"}]},
            "response": {"id": "resp_1", "output": output},
            "options": OPTIONS,
            "expected_answer": expected,
            "grading_mode": mode,
            "uuid": "u-1",
            **extra,
        }
    )


async def verify(output: list[dict[str, Any]], mode: str, **extra: Any) -> dict[str, Any]:
    return (await make_server().verify(request(output, mode, **extra))).model_dump()


CASES = [
    # strict: exactly one letter in the last box
    ("strict_single_letter_boxed", "Nitrogen is about 78%. \\boxed{B}", "B"),
    ("strict_single_letter_boxed", "\\boxed{ b }", None),  # NeMo Gym's strict rule takes capitals only
    ("strict_single_letter_boxed", "First \\boxed{B}, no wait: \\boxed{A}", "A"),
    ("strict_single_letter_boxed", "\\boxed{(B)}", "B"),  # one capital set off by non-letters, as NeMo Gym
    ("strict_single_letter_boxed", "\\boxed{{B}}", "B"),  # NeMo Gym's template answers double the braces
    ("strict_single_letter_boxed", "\\boxed{B or C}", None),
    ("strict_single_letter_boxed", "\\boxed{Nitrogen}", None),
    ("strict_single_letter_boxed", "\\boxed{E}", None),  # not an option
    ("strict_single_letter_boxed", "The answer is B.", None),
    ("strict_single_letter_boxed", "\\boxed{B", None),  # unclosed box
    ("strict_single_letter_boxed", "\\boxed{B} then \\boxed{C", None),  # the last box is unclosed
    # NeMo Gym's strict rule: `\\text{}` peeled; a leading letter with a label mark, its option text ignored
    ("strict_single_letter_boxed", "\\boxed{\\text{B}}", "B"),
    ("strict_single_letter_boxed", "\\boxed{\n B: Nitrogen makes up most of the air.\n}", "B"),
    ("strict_single_letter_boxed", "\\boxed{\\text{B) Nitrogen}}", "B"),
    ("strict_single_letter_boxed", "\\boxed{B is my answer}", None),  # no label mark after the letter
    ("strict_single_letter_boxed", "\\boxed{\\mathrm{B}}", None),  # only \\text{} is peeled
    # lenient boxed: letters in any dress, or one option's text
    ("lenient_boxed", "\\boxed{\\text{B}}", "B"),
    ("lenient_boxed", "\\boxed{(B)}", "B"),
    ("lenient_boxed", "\\boxed{B: Nitrogen}", "B"),
    ("lenient_boxed", "\\boxed{nitrogen}", "B"),
    ("lenient_boxed", "\\boxed{\\text{Carbon Dioxide}}", "D"),
    ("lenient_boxed", "\\boxed{Oxygen or Nitrogen}", None),  # two options fit: ambiguous
    ("lenient_boxed", "\\boxed{Helium}", None),
    # answer colon
    ("lenient_answer_colon", "Most of the air is N2.\nAnswer: B", "B"),
    ("lenient_answer_colon", "**Answer:** (B) Nitrogen", "B"),
    ("lenient_answer_colon", "answer: b", "B"),
    ("lenient_answer_colon", "Answer: Nitrogen", "B"),
    ("lenient_answer_colon", "Answer: A\nOn reflection...\nFinal answer: C", "C"),
    ("lenient_answer_colon", "Answer: a gas made of N2 molecules", None),  # lowercase article, not a letter
    ("lenient_answer_colon", "Answer: I am not sure", None),
    ("lenient_answer_colon", "Nitrogen", "B"),  # the reply is exactly one option's text
    ("lenient_answer_colon", "I think it is Nitrogen", None),  # no answer line and not exactly an option
    ("lenient_answer_colon", "\\boxed{B}", None),
]


@pytest.mark.parametrize(("mode", "text", "extracted"), CASES)
async def test_letter_extraction(mode, text, extracted):
    row = await verify(reply(text), mode)
    assert row["extracted_answer"] == extracted
    assert row["reward"] == (1.0 if extracted == "B" else 0.0)
    assert row["expected_answer"] == "B" and row["uuid"] == "u-1"


async def test_expected_answer_is_compared_uppercased():
    row = (
        await make_server().verify(request(reply("\\boxed{C}"), "strict_single_letter_boxed", expected=" c"))
    ).model_dump()
    assert row["reward"] == 1.0 and row["extracted_answer"] == "C"


@pytest.mark.parametrize(
    "output",
    [
        [],
        reply(""),
        reply("   "),
        [{"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "\\boxed{B}"}]}],
    ],
)
@pytest.mark.parametrize("mode", ["strict_single_letter_boxed", "lenient_boxed", "lenient_answer_colon"])
async def test_empty_replies_score_zero(output, mode):
    row = await verify(output, mode)
    assert row["reward"] == 0.0 and row["extracted_answer"] is None


async def test_only_the_last_assistant_message_is_graded():
    row = await verify(reply("\\boxed{B}", "Actually I am unsure."), "strict_single_letter_boxed")
    assert row["reward"] == 0.0 and row["extracted_answer"] is None


TEMPLATE = {"output_regex": r"final choice:\s*\[([A-D])\]"}


@pytest.mark.parametrize(
    ("text", "extracted"),
    [
        ("Final choice: [B]", "B"),
        ("FINAL CHOICE: [a] ... final choice: [B]", "B"),  # case-insensitive, last match wins
        ("final choice: [C] but \\boxed{B}", "C"),  # the regex takes priority over the box
        ("no template answer, \\boxed{B}", "B"),  # no regex match: falls back to grading_mode
    ],
)
async def test_row_regex_takes_priority(text, extracted):
    row = await verify(reply(text), "strict_single_letter_boxed", template_metadata=TEMPLATE)
    assert row["extracted_answer"] == extracted and row["template_metadata"]["output_regex"] == TEMPLATE["output_regex"]


# NeMo Gym's template rows (shape modelled by hand): the template asks for \\boxed{{X}} and its regex
# wants a bare letter inside one pair of braces, so the doubled braces fall through to grading_mode.
NEMO_GYM_TEMPLATE = {"template_id": "t-1", "output_regex": "\\\\boxed\\{\\s*([A-Za-z])\\s*\\}"}


async def test_a_nemo_gym_template_answer_in_doubled_braces_is_read():
    row = await verify(
        reply("PCR is the direct test.\n\nAnswer: \\boxed{{B}}"),
        "strict_single_letter_boxed",
        template_metadata=NEMO_GYM_TEMPLATE,
    )
    assert (row["extracted_answer"], row["reward"]) == ("B", 1.0)


async def test_output_regex_may_be_a_list_and_a_match_that_names_no_option_falls_through():
    template = {"output_regex": [r"Choice:\s*([A-Z])", r"Pick\s*([A-Z])"]}
    assert (await verify(reply("Pick B"), "lenient_answer_colon", template_metadata=template))[
        "extracted_answer"
    ] == "B"
    # "Choice: Z" names no option, so the next pattern and then grading_mode get their turn
    row = await verify(reply("Choice: Z\n\\boxed{B}"), "strict_single_letter_boxed", template_metadata=template)
    assert row["extracted_answer"] == "B"


def test_nemo_gym_row_with_the_option_text_in_the_box_scores_as_nemo_gym_scores_it():
    """The shape of NeMo Gym's mcqa example rollout 3 (typed items, nulls): the box holds the letter and
    its option's text. NeMo Gym's strict rule reads C (since its boxed-extraction fix; the row's stored
    0.0 came from the single-regex rule it replaced)."""
    options = [{"A": "A newborn is tested."}, {"B": "An adult is tested."}, {"C": "An individual decides to test."}]
    prompt = "You should output your final response letter inside \\boxed{} ...\n" + "\n".join(
        f"{letter}: {text}" for option in options for letter, text in option.items()
    )
    text = "The classic case is **C**.\n\n\\[\n\\boxed{\nC: An individual decides to test.\n}\n\\]"
    row = {
        "responses_create_params": {
            "input": [{"content": prompt, "role": "user", "type": "message"}],
            "tools": [],
            "parallel_tool_calls": None,
            "tool_choice": None,
            "temperature": None,
        },
        "response": {
            "id": "resp_3",
            "object": "response",
            "created_at": 1.0,
            "model": "gpt-4.1",
            "output": [
                {
                    "id": "msg_3",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        },
        "options": options,
        "expected_answer": "C",
        "grading_mode": "strict_single_letter_boxed",
        "uuid": "4c36b177",
        "reward": 0.0,
        "extracted_answer": None,
    }
    with ThreadedServer(make_server().setup_webserver()) as server:
        answer = httpx.post(f"{server.url}/verify", json=row)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["reward"], answer.json()["extracted_answer"]) == (1.0, "C")


def test_a_stored_row_posted_back_is_scored_again():
    stored = request(reply("\\boxed{B}"), "strict_single_letter_boxed").model_dump(mode="json")
    stored |= {"reward": 0.0, "extracted_answer": "D"}  # what an older verifier wrote into the row
    with ThreadedServer(make_server().setup_webserver()) as server:
        answer = httpx.post(f"{server.url}/verify", json=stored)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["reward"], answer.json()["extracted_answer"]) == (1.0, "B")


async def test_row_regex_without_groups_uses_the_whole_match():
    row = await verify(
        reply("I pick (B) and then (D)"), "strict_single_letter_boxed", template_metadata={"output_regex": r"\([A-D]\)"}
    )
    assert row["extracted_answer"] == "D"


def test_boxed_contents_balances_nested_braces():
    assert boxed_contents("\\boxed{\\text{B}} and \\boxed{{x}}y") == ["\\text{B}", "{x}"]


def test_verify_over_http_and_a_bad_row():
    with ThreadedServer(make_server().setup_webserver()) as server:
        body = request(reply("Answer: B"), "lenient_answer_colon").model_dump(mode="json")
        row = httpx.post(f"{server.url}/verify", json=body).json()
        assert row["reward"] == 1.0 and row["options"] == OPTIONS and row["grading_mode"] == "lenient_answer_colon"
        unknown_mode = httpx.post(f"{server.url}/verify", json=body | {"grading_mode": "vibes"})
        assert unknown_mode.status_code == 422 and "grading_mode" in unknown_mode.text
        bad_regex = httpx.post(f"{server.url}/verify", json=body | {"template_metadata": {"output_regex": "(["}})
        # A broken task is an error naming the field, never a silent reward 0.
        assert bad_regex.status_code >= 400 and "template_metadata.output_regex" in bad_regex.json()["error"]["message"]


def test_example_data_covers_every_mode():
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert len(rows) == 5
    assert {row["grading_mode"] for row in rows} == {
        "strict_single_letter_boxed",
        "lenient_boxed",
        "lenient_answer_colon",
    }
    assert any(row.get("template_metadata", {}).get("output_regex") for row in rows)
    for row in rows:
        letters = [letter for option in row["options"] for letter in option]
        assert row["expected_answer"] in letters
        prompt = row["responses_create_params"]["input"][-1]["content"]
        assert all(f"{letter}: {text}" in prompt for option in row["options"] for letter, text in option.items())
