"""wordle: the feedback rule, per-session games over HTTP, verify on solved, unsolved, malformed and empty games, end to end."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.wordle.app import WordleConfig, WordleServer
from resources_servers.wordle.game import Mark, feedback
from tests.e2e.env_rollouts import environment_stack, example_tasks, items_of

TASKS = example_tasks("wordle")
G, Y, X = Mark.green, Mark.yellow, Mark.gray


@pytest.mark.parametrize(
    ("guess", "target", "marks"),
    [
        ("crane", "crane", [G, G, G, G, G]),
        ("react", "crane", [Y, Y, G, Y, X]),
        ("speed", "abide", [X, X, Y, X, Y]),  # one E in the target: only the first unmatched E is yellow
        ("geese", "sheep", [X, Y, G, Y, X]),
        ("allee", "eagle", [Y, Y, X, Y, G]),  # the last E is green; the target's other E makes the first E yellow
        ("lolly", "hello", [X, Y, G, G, X]),  # both target L's are matched green, so the first L is gray
        ("lllll", "hello", [X, X, G, G, X]),
    ],
)
def test_feedback_follows_the_official_duplicate_letter_rule(guess, target, marks):
    assert feedback(guess, target) == marks


@pytest.fixture
def served():
    server = WordleServer(
        config=WordleConfig(name="wordle", domain="games", max_sessions=3), server_client=registry_client({})
    )
    with ThreadedServer(server.setup_webserver()) as http:
        yield server, http.url


def seed(client: httpx.Client, url: str, task: dict[str, Any]) -> None:
    client.post(f"{url}/seed_session", json=task).raise_for_status()


def verify(client: httpx.Client, url: str, task: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{url}/verify", json=task | {"response": {"id": "r", "output": []}})
    assert response.status_code == 200, response.text
    return response.json()


def test_solving_scores_one_and_frees_the_game(served):
    server, url = served
    with httpx.Client() as rollout:
        seed(rollout, url, TASKS[0])  # plant
        first = rollout.post(f"{url}/guess", json={"word": "SLATE"}).json()
        assert first["pattern"] == "-GGY-" and first["guesses_left"] == 5 and not first["solved"]
        assert first["feedback"][1] == {"letter": "L", "mark": "green"}
        final = rollout.post(f"{url}/guess", json={"word": "plant"}).json()
        assert final["solved"] and final["game_over"] and final["pattern"] == "GGGGG"
        row = verify(rollout, url, TASKS[0])
        assert (
            row["reward"] == 1.0 and row["solved"] and row["guesses"] == ["slate", "plant"] and row["target"] == "plant"
        )
    assert server.games == {}


def test_wrong_guesses_until_game_over_score_zero(served):
    _, url = served
    with httpx.Client() as rollout:
        seed(rollout, url, TASKS[4])  # brick, 4 guesses
        for word in ["fuzzy", "mound", "slate", "pouch"]:
            result = rollout.post(f"{url}/guess", json={"word": word}).json()
        assert result["game_over"] and not result["solved"] and result["guesses_left"] == 0
        late = rollout.post(f"{url}/guess", json={"word": "brick"}).json()
        assert "game is over" in late["error"]
        row = verify(rollout, url, TASKS[4])
        assert row["reward"] == 0.0 and not row["solved"] and row["guesses_used"] == 4


def test_malformed_guesses_are_explained_and_cost_no_turn(served):
    _, url = served
    with httpx.Client() as rollout:
        seed(rollout, url, TASKS[1])
        for word in ["cran", "cranes", "cr4ne", "créme", ""]:
            result = rollout.post(f"{url}/guess", json={"word": word}).json()
            assert "exactly 5 letters" in result["error"] and result["guesses_left"] == 6
        missing = rollout.post(f"{url}/guess", json={"guess": "crane"})
        assert missing.status_code == 422 and "word" in missing.text
        assert rollout.post(f"{url}/guess", json={"word": "crane"}).json()["solved"]


def test_empty_and_unseeded_games_score_zero(served):
    _, url = served
    with httpx.Client() as rollout:
        seed(rollout, url, TASKS[2])
        assert verify(rollout, url, TASKS[2]) | {} == verify(rollout, url, TASKS[2]) | {
            "guesses": [],
            "reward": 0.0,
            "solved": False,
        }
    with httpx.Client() as rollout:
        assert "never seeded" in rollout.post(f"{url}/guess", json={"word": "ghost"}).json()["error"]


def test_sessions_are_separate_and_bounded(served):
    server, url = served
    with httpx.Client() as first, httpx.Client() as second:
        seed(first, url, TASKS[0])
        seed(second, url, TASKS[1])
        assert first.post(f"{url}/guess", json={"word": "crane"}).json()["solved"] is False
        assert second.post(f"{url}/guess", json={"word": "crane"}).json()["solved"] is True
    for task in TASKS:
        with httpx.Client() as abandoned:
            seed(abandoned, url, task)
    assert len(server.games) == 3


def test_bad_target_is_rejected_with_the_field_named(served):
    _, url = served
    response = httpx.post(f"{url}/seed_session", json=TASKS[0] | {"target": "apples"})
    assert response.status_code == 422 and "target" in response.text


async def test_scaled_reward_counts_guesses():
    server = WordleServer(
        config=WordleConfig(name="w", domain="games", reward_scaling="guesses"), server_client=registry_client({})
    )
    from resources_servers.wordle.game import Game

    game = Game(target="plant", max_guesses=6)
    for word in ["slate", "flank", "plant"]:
        game.play(word)
    assert server.reward(game) == pytest.approx(4 / 6)
    assert server.reward(Game(target="plant", max_guesses=6, guesses=["plant"])) == 1.0


# ---- end to end: a solver that uses the feedback, and a policy that ignores it --------------------------

WORDS = [
    "slate",
    "crane",
    "fuzzy",
    "plant",
    "ghost",
    "lemon",
    "brick",
    "flame",
    "chord",
    "pouch",
    "mound",
    "blank",
    "plank",
    "giant",
    "ghoul",
    "lemur",
    "prick",
    "trick",
    "brisk",
    "demon",
    "melon",
    "crate",
    "trace",
    "grace",
]


def consistent(word: str, history: list[tuple[str, str]]) -> bool:
    codes = {"G": G, "Y": Y, "-": X}
    return all(feedback(guess, word) == [codes[c] for c in pattern] for guess, pattern in history)


def policy(mode: str, body: dict[str, Any]) -> Turn:
    results = [json.loads(item["output"]) for item in items_of(body, "function_call_output")]
    if results and (results[-1].get("solved") or results[-1].get("game_over")):
        return Turn(text="Done." if results[-1].get("solved") else "Out of guesses.")
    if mode == "wrong":
        return Turn(tool_calls=[("guess", json.dumps({"word": "fuzzy"}))])
    history = [(r["guess"].lower(), r["pattern"]) for r in results]
    word = next(w for w in WORDS if consistent(w, history) and w not in dict(history))
    return Turn(tool_calls=[("guess", json.dumps({"word": word}))])


@pytest.mark.slow
def test_end_to_end_right_and_wrong_policies(tmp_path):
    with environment_stack("wordle", policy, tmp_path) as stack:
        right, stdout = stack.collect("correct")
        wrong, _ = stack.collect("wrong")
    assert [row["reward"] for row in right] == [1.0] * 5, [row["guesses"] for row in right]
    assert all(row["guesses"][-1] == task["target"] for row, task in zip(right, TASKS))
    assert any(len(row["guesses"]) > 1 for row in right)  # the solver really used the feedback
    assert "mean/reward 1.0000" in stdout
    assert [row["reward"] for row in wrong] == [0.0] * 5
    assert [row["guesses_used"] for row in wrong] == [task["max_guesses"] for task in TASKS]
