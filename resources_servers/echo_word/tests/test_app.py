"""echo_word: the reward on hand-made replies, over HTTP, and the task split the learning curve relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from resources_servers.echo_word.app import EchoWordConfig, EchoWordServer, EchoWordVerifyRequest, echo_reward
from resources_servers.echo_word.tasks import PHRASINGS, WORDS, split, tasks

DATA = Path(__file__).resolve().parents[1] / "data" / "example.jsonl"


def make_server() -> EchoWordServer:
    return EchoWordServer(config=EchoWordConfig(name="echo_word", domain="other"), server_client=registry_client({}))


def reply(*texts: str) -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": t, "annotations": []}]}
        for t in texts
    ]


def request(output: list[dict[str, Any]], word: str = "banana") -> EchoWordVerifyRequest:
    return EchoWordVerifyRequest.model_validate(
        {
            "responses_create_params": {"input": [{"role": "user", "content": f"Say the word {word}."}]},
            "response": {"id": "resp_1", "output": output},
            "word": word,
        }
    )


@pytest.mark.parametrize(
    ("text", "reward"),
    [
        ("banana", 1.0),
        ("Banana.", 1.0),
        ('  "**BANANA**"!  ', 1.0),
        ("The word is banana", round(6 / 18, 4)),
        ("banana banana", round(6 / 13, 4)),  # the word twice is not the word alone
        ("Sure! Here is the word you asked for: banana. Let me know if you need anything else.", round(6 / 83, 4)),
        ("bananas", 0.0),  # inside another word: absent
        ("apple", 0.0),
        ("", 0.0),
    ],
)
def test_reward_is_the_share_of_the_reply_that_is_the_word(text: str, reward: float) -> None:
    assert echo_reward(text, "banana") == reward


def test_a_chattier_reply_scores_lower_so_a_group_ranks_its_members() -> None:
    replies = ["banana", "Banana is the word.", "The word you asked me to say is banana.", "I like fruit."]
    rewards = [echo_reward(text, "banana") for text in replies]
    assert rewards == sorted(rewards, reverse=True) and len(set(rewards)) == 4


async def test_only_the_last_assistant_message_is_graded() -> None:
    row = (await make_server().verify(request(reply("Let me think.", "banana")))).model_dump()
    assert row["reward"] == 1.0 and row["exact"] is True and row["reply_chars"] == 6 and row["word"] == "banana"


def test_verify_over_http_and_a_row_without_word() -> None:
    with ThreadedServer(make_server().setup_webserver()) as server:
        body = request(reply("It is banana")).model_dump(mode="json")
        row = httpx.post(f"{server.url}/verify", json=body).json()
        assert row["reward"] == 0.5 and row["exact"] is False
        missing = httpx.post(f"{server.url}/verify", json={k: v for k, v in body.items() if k != "word"})
        assert missing.status_code == 422 and "word" in missing.text


def test_example_data_is_what_the_task_module_writes() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert rows == tasks(["apple", "river", "candle", "planet", "violin"], seed=5)
    for row in rows:
        assert row["word"] in row["responses_create_params"]["input"][0]["content"]


def test_the_split_keeps_held_out_words_out_of_training_and_is_the_same_every_time() -> None:
    train, held_out = split(held_out=40, seed=0)
    assert len(held_out) == 40 and len(train) == len(WORDS) - 40 and not set(train) & set(held_out)
    assert split(held_out=40, seed=0) == (train, held_out)
    rows = tasks(held_out, seed=1)
    assert [row["word"] for row in rows] == held_out and rows == tasks(held_out, seed=1)
    assert {row["responses_create_params"]["input"][0]["content"] for row in rows} <= {
        phrasing.format(word=row["word"]) for row in rows for phrasing in PHRASINGS
    }
