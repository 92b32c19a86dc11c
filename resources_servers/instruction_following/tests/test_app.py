"""instruction_following: every checker on a following and a violating text, strict vs loose, reward modes, end to end."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.instruction_following.app import (
    InstructionFollowingConfig,
    InstructionFollowingServer,
    InstructionVerifyRequest,
)
from resources_servers.instruction_following.checkers import CHECKERS, check_arguments, follows
from resources_servers.instruction_following.ifbench import split_sentences, tokens
from tests.e2e.env_rollouts import environment_stack, example_tasks, user_text

TASKS = example_tasks("instruction_following")

# instruction id -> (kwargs, a text that follows it, a text that does not)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "count:lowercase_counting": ({"N": 3}, "Only THREE words here, OK?", "Far too many lowercase words here"),
    "letters:letter_counting": ({"N": 10, "relation": "less than"}, "Tiny one.", "This reply has more letters"),
    "paragraphs:paragraphs": ({}, "First part.\n***\nSecond part.", "First.\n***\n***\nSecond."),
    "first_word:first_word_sent": ({"first_word": "Well"}, "Well yes. well 3.5 is fine!", "Well yes. No."),
    "last_word:last_word_answer": ({"last_word": "contest"}, "We entered the Contest!", "The contest was fun."),
    "letters:letter_counting2": (
        {"letter": "e", "let_frequency": 3, "let_relation": "at least"},
        "Three e's: eel, bee.",
        "Only one: hello",
    ),
    "count:counting_composition": (
        {"n_sent": 2, "n_words": 3},
        "Cats purr.  Dogs bark.\n***\nBirds sing. Fish swim.\n***\nCows moo. Frogs croak.",
        "Cats purr loudly. Dogs bark.\n***\nBirds sing. Fish swim.\n***\nCows moo. Frogs croak.",
    ),
    "count:count_unique": ({}, "Every word here differs!", "Every word, every one, differs."),
    "count:count_increment_word": (
        {"keyword1": "tea", "keyword2": "cake"},
        "Tea with cake, then more cake.",
        "Tea with cake, then more tea.",
    ),
    "paragraphs:paragraphs2": ({}, "First part.\n\nSecond part.", "One.\n\nTwo.\n\nThree."),
    "first_word:first_word_answer": ({"first_word": "Indeed"}, "indeed it works. Yes.", "Yes. Indeed it works."),
    "last_word:last_word_sent": ({"last_word": "now"}, "Go now. Stop right NOW!", "Go now. Then stop."),
    "copy:copy": ({"prompt_to_repeat": "Write a poem."}, "  write a POEM. ", "Write a poem. Roses are red."),
    "copy:copying_simple": ({"prompt_to_repeat": "Name a fruit."}, "Name a fruit.", "Apple."),
    "copy:copying_multiple": (
        {"prompt_to_repeat": "Name a fruit.", "N": 2},
        "Name a fruit.\n******\nName a fruit.",
        "Name a fruit.\n******\nName a fruit.\n******\nName a fruit.",
    ),
    "new:copy_span_idx": (
        {"prompt_to_repeat": "Summarise the history of tea.", "n_start": 4, "n_end": 19},
        "arise the histo",
        "Summarise the history",
    ),
    "copy:repeat_phrase": (
        {"phrase": "Time flies when having fun", "small_n": 2},
        "Time runs when having fun, and Time goes when having fun.",
        "Time flies when having fun, Time flies when having fun.",
    ),
    "detectable_format:sentence_hyphens": ({}, "I came.-I saw.-I won.", "I came. - I saw. - I won."),
    "detectable_format:square_brackets": ({}, "[Every] [word] [boxed.]", "[Every] word [boxed.]"),
    "detectable_format:bigram_wrapping": ({}, "<<I am>> <<at home>> <<now>>", "<<I am>> at home"),
    "punctuation:punctuation_dot": ({}, "No dots here!", "One dot here."),
    "punctuation:punctuation_exclamation": ({}, "Calm words.", "Loud words!"),
    "keywords:no_adjacent_consecutive": ({}, "Zebras eat grass.", "A big zebra."),
    "keywords:word_once": ({"keyword": "moon"}, "The Moon rises.", "The moon, the moon."),
    "keywords:word_count_different_numbers": (
        {"keyword": "rain", "frequency": 2, "relation": "at least"},
        "Rain, more rain.",
        "Some rain.",
    ),
    "keywords:exclude_word_harder": (
        {"keyword": "blue", "instruction": "Describe the sky without the colour."},
        "The sky is azure.",
        "The sky is blue today.",
    ),
    "keywords:palindrome": ({}, "We saw a racecar.", "No such words here."),
    "keywords:keyword_specific_position": (
        {"keyword": "green", "n": 2, "m": 3},
        "Hello there. I like green tea.",
        "Hello there. I like tea, green tea.",
    ),
    "keywords:start_end": ({}, "Hello, world, hello", "Hello, world, hello."),
    "length_constraints:number_words": (
        {"num_words": 5, "relation": "less than"},
        "Only four words here.",
        "This has six words in it.",
    ),
    "length_constraints:number_sentences": (
        {"num_sentences": 2, "relation": "exactly"},
        "One. Two!",
        "One. Two? Three.",
    ),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2},
        "First part.\n\nSecond part.",
        "Just one paragraph.",
    ),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "Start here.\n\nThen finish.",
        "Start here.\n\nNow finish.",
    ),
    "keywords:existence": ({"keywords": ["river", "stone"]}, "A stone by the river.", "A stone by the lake."),
    "keywords:frequency": (
        {"keyword": "tea", "frequency": 2, "relation": "at least"},
        "Tea, then more tea.",
        "Tea? No, teapots.",
    ),
    "keywords:forbidden_words": ({"forbidden_words": ["very"]}, "Every day is fine.", "It is very fine."),
    "keywords:letter_frequency": ({"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "Zig zag.", "Zag."),
    "detectable_format:json_format": ({}, '```json\n{"a": 1}\n```', "{a: 1}"),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* one\n- two", "* one\n* two\n* three"),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, "*one* and *two*", "*one* and two"),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nhi\nSECTION 2\nbye",
        "Section 1\nhi",
    ),
    "detectable_format:title": ({}, "<<A Title>>\nbody", "A Title\nbody"),
    "detectable_format:constrained_response": ({}, "My answer is maybe.", "Maybe."),
    "startend:start_checker": ({"start_phrase": "Dear team"}, "Dear team, hello.", "Hello, dear team."),
    "startend:end_checker": (
        {"end_phrase": "Any questions?"},
        "That is all. Any questions?",
        "Any questions? That is all.",
    ),
    "startend:quotation": ({}, '"Wrapped."', 'Not "wrapped".'),
    "change_case:english_lowercase": ({}, "all quiet here.", "All quiet here."),
    "change_case:english_capital": ({}, "ALL LOUD HERE.", "ALL LOUD HERe."),
    "change_case:capital_word_frequency": (
        {"capital_frequency": 2, "capital_relation": "at most"},
        "ONE loud word.",
        "THREE LOUD WORDS.",
    ),
    "punctuation:no_comma": ({}, "No commas at all.", "Well, a comma."),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        "Meet at [place] on [date].",
        "Meet at [place] today.",
    ),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Bye.\nP.S. Bring snacks.", "Bye. Bring snacks."),
    "combination:repeat_prompt": ({"prompt_to_repeat": "Say hi."}, "Say hi. Hi!", "Hi! Say hi."),
    "combination:two_responses": ({}, "First answer.\n******\nSecond answer.", "Only one answer."),
    "language:response_language": (
        {"language": "de"},
        "Das ist ein kurzer Satz auf Deutsch über das Wetter.",
        "This is a short sentence in English about the weather.",
    ),
}


def test_at_least_twenty_kinds_all_covered_here():
    assert len(CHECKERS) >= 20
    assert set(CASES) == set(CHECKERS)


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_each_checker_on_following_violating_and_empty_text(instruction_id):
    kwargs, good, bad = CASES[instruction_id]
    assert check_arguments(instruction_id, kwargs) is None
    assert follows(instruction_id, kwargs, good, loose=False) is True
    assert follows(instruction_id, kwargs, bad, loose=False) is False
    assert follows(instruction_id, kwargs, "", loose=True) is False  # an empty reply follows nothing


def test_nth_paragraph_first_word_reads_the_whole_first_token_as_ifeval_does():
    kwargs = {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "crash"}
    assert (
        follows("length_constraints:nth_paragraph_first_word", kwargs, "One.\n\nCrash—emotion rises.", False) is False
    )
    assert follows("length_constraints:nth_paragraph_first_word", kwargs, 'One.\n\n"Crash," it said.', False) is True


def test_argument_problems_are_named():
    assert check_arguments("keywords:exist", {}).startswith("unknown instruction id 'keywords:exist'")
    assert check_arguments("keywords:existence", {}) == "keywords:existence: missing argument(s) keywords"
    assert check_arguments("punctuation:no_comma", {"x": 1}) == "punctuation:no_comma: unknown argument(s) x"


def test_loose_grading_forgives_a_preamble_and_markdown_emphasis():
    text = "Sure! Here is my answer:\nall lower case now."
    assert not follows("change_case:english_lowercase", {}, text, loose=False)
    assert follows("change_case:english_lowercase", {}, text, loose=True)
    assert not follows("detectable_format:constrained_response", {}, "**My answer is yes.**", loose=False)
    assert follows("detectable_format:constrained_response", {}, "**My answer is yes.**", loose=True)


def reply(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
    ]


async def verify(task: dict[str, Any], output: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    server = InstructionFollowingServer(
        config=InstructionFollowingConfig(name="if", domain="instruction_following", **config),
        server_client=registry_client({}),
    )
    body = InstructionVerifyRequest.model_validate(task | {"response": {"id": "r", "output": output}})
    return (await server.verify(body)).model_dump()


CORRECT = [
    "Have you seen a grey cat named Miso? She went missing on Friday near the park. Please call me if you see her. Thank you!",
    "* better health from daily movement\n* no traffic stress\n* money saved on fuel",
    "<<The Keeper's Light>>\nThe lighthouse stands on a black rock.\n\nIts beam sweeps the sea every night.\nP.S. It still works.",
    '{"name": "Golden Gate Bridge", "year": 1937}',
    "Write a reminder to back up files. PLEASE back up your laptop on [date]. It is IMPORTANT.",
]
WRONG = [
    "Hello neighbour, our cat is lost, please help.",  # a comma and no end phrase
    "* Better health\n* Fresh air",  # two bullets, capitals
    "A lighthouse is tall.",  # one paragraph, no title, no P.S.
    "The famous Golden Gate Bridge opened in 1937.",  # not JSON, forbidden word
    "Back up your files on Friday.",  # no repeat, no capitals, no placeholder
]


@pytest.mark.parametrize("index", range(5))
async def test_example_tasks_correct_and_wrong_answers(index):
    right = await verify(TASKS[index], reply(CORRECT[index]))
    assert right["reward"] == 1.0 and all(right["follow_instruction_list"]), right["follow_instruction_list"]
    wrong = await verify(TASKS[index], reply(WRONG[index]))
    assert wrong["reward"] == 0.0 and not wrong["prompt_level_strict"]


async def test_fraction_mode_and_loose_mode():
    half = "Our cat is lost. Thank you!"  # follows word count and no-comma, and ends right: 3/3
    assert (await verify(TASKS[0], reply(half), reward_mode="fraction"))["reward"] == 1.0
    two_of_three = "Our cat, Miso, is lost. Thank you!"
    row = await verify(TASKS[0], reply(two_of_three), reward_mode="fraction")
    assert row["reward"] == pytest.approx(2 / 3) and row["follow_instruction_list"] == [True, False, True]
    preamble = "Sure, here is the note:\nOur cat is lost. Thank you!"
    strict = await verify(TASKS[0], reply(preamble))
    loose = await verify(TASKS[0], reply(preamble), grading="loose")
    assert strict["reward"] == 0.0 and loose["reward"] == 1.0 and loose["prompt_level_strict"] is False


@pytest.mark.parametrize("output", [[], reply(""), reply("   ")])
async def test_empty_replies_score_zero(output):
    row = await verify(TASKS[0], output, reward_mode="fraction", grading="loose")
    assert row["reward"] == 0.0 and row["follow_instruction_list_loose"] == [False, False, False]


def test_malformed_tasks_are_rejected_with_the_instruction_named():
    server = InstructionFollowingServer(
        config=InstructionFollowingConfig(name="if", domain="instruction_following"), server_client=registry_client({})
    )
    with ThreadedServer(server.setup_webserver()) as http:
        body = TASKS[0] | {"response": {"id": "r", "output": reply("x")}}
        unknown = httpx.post(
            f"{http.url}/verify", json=body | {"instruction_id_list": ["nope:nothing"], "kwargs": [{}]}
        )
        assert unknown.status_code == 422 and "unknown instruction id 'nope:nothing'" in unknown.text
        short = httpx.post(f"{http.url}/verify", json=body | {"kwargs": [{}]})
        assert short.status_code == 422 and "kwargs has 1 entries for 3 instructions" in short.text
        ok = httpx.post(f"{http.url}/verify", json=body)
        assert ok.status_code == 200 and ok.json()["reward"] == 0.0


# A task as NeMo Gym writes it, made by hand: fields under verifier_metadata, a null kwargs entry,
# null arguments, IFBench ids, and NeMo Gym's grading_mode.
NEMO_GYM_TASK = {
    "responses_create_params": {"input": [{"role": "user", "content": "Describe a kite. Finish with 'sky'."}]},
    "verifier_metadata": {
        "instruction_id_list": ["detectable_format:title", "last_word:last_word_answer", "count:lowercase_counting"],
        "kwargs": [None, {"last_word": "sky", "unused": None}, {"N": 6}],
        "prompt": "Describe a kite. Finish with 'sky'.",
        "grading_mode": "fraction",
    },
}


async def test_a_nemo_gym_row_with_verifier_metadata_null_kwargs_and_ifbench_ids_is_graded():
    row = await verify(NEMO_GYM_TASK, reply("<<Kite>>\nA kite climbs the sky."))
    assert row["follow_instruction_list"] == [True, True, True] and row["reward"] == 1.0
    two_of_three = await verify(NEMO_GYM_TASK, reply("<<Kite>>\nA red kite climbs high into the bright sky."))
    assert two_of_three["follow_instruction_list"] == [True, True, False]
    assert two_of_three["reward"] == pytest.approx(2 / 3)  # the row's grading_mode, not the server's "all"


# IFEval's language row as NeMo Gym stores it: every IFEval argument named, the unused ones null.
NEMO_GYM_LANGUAGE_TASK = {
    "responses_create_params": {"input": [{"role": "user", "content": "Describe Mysore in Kannada only."}]},
    "verifier_metadata": {
        "instruction_id_list": ["language:response_language"],
        "kwargs": [{"language": "kn", "num_sentences": None, "relation": None, "keywords": None}],
        "prompt": "Describe Mysore in Kannada only.",
    },
}


async def test_a_nemo_gym_row_asking_for_a_response_language_is_graded_by_the_language_of_the_reply():
    kannada = await verify(NEMO_GYM_LANGUAGE_TASK, reply("ಮೈಸೂರು ಕರ್ನಾಟಕದ ಒಂದು ಸುಂದರ ನಗರ. ಇಲ್ಲಿ ಅರಮನೆ ಇದೆ."))
    assert kannada["follow_instruction_list"] == [True] and kannada["reward"] == 1.0
    english = await verify(NEMO_GYM_LANGUAGE_TASK, reply("Mysore is a beautiful city in Karnataka with a palace."))
    assert english["follow_instruction_list"] == [False] and english["reward"] == 0.0
    # A reply langdetect finds no letters in counts as followed, as IFEval counts it.
    assert (await verify(NEMO_GYM_LANGUAGE_TASK, reply("1956 - 2024 !!!")))["reward"] == 1.0


def test_every_ifbench_id_of_the_verifiable_instructions_package_is_graded():
    # The package's 29 IFBench ids beyond IFEval's (its registry, the one NeMo Gym grades with).
    ifbench_ids = {
        "copy:repeat_phrase", "copy:copy", "new:copy_span_idx", "detectable_format:sentence_hyphens",
        "keywords:no_adjacent_consecutive", "detectable_format:square_brackets", "keywords:word_once",
        "keywords:word_count_different_numbers", "keywords:exclude_word_harder", "paragraphs:paragraphs",
        "paragraphs:paragraphs2", "first_word:first_word_sent", "first_word:first_word_answer",
        "last_word:last_word_sent", "last_word:last_word_answer", "detectable_format:bigram_wrapping",
        "copy:copying_simple", "copy:copying_multiple", "punctuation:punctuation_dot",
        "punctuation:punctuation_exclamation", "count:lowercase_counting", "letters:letter_counting",
        "letters:letter_counting2", "count:counting_composition", "count:count_unique",
        "count:count_increment_word", "keywords:palindrome", "keywords:keyword_specific_position",
        "keywords:start_end",
    }  # fmt: skip
    assert len(ifbench_ids) == 29 and ifbench_ids <= set(CHECKERS)


def test_ifbench_tokens_and_sentences_follow_the_package_conventions():
    assert tokens('"Hi," she said. I can\'t, e.g. 3.5 times...') == [
        "``", "Hi", ",", "''", "she", "said", ".", "I", "ca", "n't", ",", "e.g.", "3.5", "times", "...",
    ]  # fmt: skip
    assert split_sentences("Mr. Smith paid 3.5 dollars. He left! Why? \"Fine.\" Bye") == [
        "Mr. Smith paid 3.5 dollars.", "He left!", "Why?", '"Fine".', "Bye",
    ]  # fmt: skip
    # Keywords are patterns matched anywhere, as the package matches them; a broken pattern follows nothing.
    assert follows("keywords:word_once", {"keyword": "cat"}, "A category.", loose=False) is True
    assert follows("keywords:word_once", {"keyword": "c(at"}, "A c(at.", loose=False) is False


def test_an_unknown_ifbench_id_is_refused_naming_it():
    server = InstructionFollowingServer(
        config=InstructionFollowingConfig(name="if", domain="instruction_following"), server_client=registry_client({})
    )
    task = NEMO_GYM_TASK | {
        "verifier_metadata": {"instruction_id_list": ["count:counting_compose"], "kwargs": [None], "prompt": "x"}
    }
    with ThreadedServer(server.setup_webserver()) as http:
        answer = httpx.post(f"{http.url}/verify", json=task | {"response": {"id": "r", "output": reply("x")}})
    assert answer.status_code == 422 and "unknown instruction id 'count:counting_compose'" in answer.text


# ---- end to end ------------------------------------------------------------------------------------


def policy(mode: str, body: dict[str, Any]) -> Turn:
    index = next(i for i, t in enumerate(TASKS) if t["prompt"] == user_text(body))
    return Turn(text=(CORRECT if mode == "correct" else WRONG)[index])


@pytest.mark.slow
def test_end_to_end_right_and_wrong_policies(tmp_path):
    with environment_stack("instruction_following", policy, tmp_path) as stack:
        right, stdout = stack.collect("correct")
        wrong, _ = stack.collect("wrong")
    assert [row["reward"] for row in right] == [1.0] * 5
    assert "mean/reward 1.0000" in stdout
    assert [row["reward"] for row in wrong] == [0.0] * 5
    assert all(len(row["follow_instruction_list"]) == len(row["instruction_id_list"]) for row in wrong)
