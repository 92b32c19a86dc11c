"""sokoban: rules, generated levels are solvable, per-session games over HTTP, verify on solved,
unsolved, malformed and empty games, and end to end."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.sokoban.app import SokobanConfig, SokobanServer
from resources_servers.sokoban.board import Level, generate, solve
from resources_servers.sokoban.generate_tasks import task_row
from tests.e2e.env_rollouts import environment_stack, example_tasks, items_of, user_text

TASKS = example_tasks("sokoban")
TINY = ["#####", "#@$.#", "#####"]  # one push right solves it


def test_rules_push_block_and_solve():
    level = Level.parse(["######", "#@$$.#", "#  . #", "######"])
    assert level.step(level.start, "right") is None  # two boxes in a row cannot be pushed
    assert level.step(level.start, "up") is None  # wall
    down = level.step(level.start, "down")
    assert down is not None and down.player == (2, 1) and down.boxes == level.start.boxes
    tiny = Level.parse(TINY)
    pushed = tiny.step(tiny.start, "right")
    assert pushed is not None and tiny.solved(pushed) and tiny.render(pushed) == ["#####", "# @*#", "#####"]


@pytest.mark.parametrize("rows", [[], ["##", "###"], ["#@$#"], ["#@$.x#"], ["#$.#"], ["#@@$.#"]])
def test_bad_levels_are_rejected(rows):
    with pytest.raises(ValueError):
        Level.parse(rows)


@pytest.mark.parametrize("seed", range(12))
def test_generated_levels_are_solvable_and_not_trivial(seed):
    rows = generate(seed)
    level = Level.parse(rows)
    solution = solve(level)
    assert solution is not None and len(solution) >= 8
    state = level.start
    for move in solution:  # replaying the solver's answer through the rules really solves it
        state = level.step(state, move) or state
    assert level.solved(state)
    assert generate(seed) == rows  # deterministic per seed


def test_example_tasks_are_what_the_generator_writes():
    for task in TASKS:
        regenerated = task_row(task["seed"], width=7, height=7, boxes=2, min_moves=8, budget_factor=3)
        assert regenerated == task


def test_solver_reports_an_unsolvable_level():
    assert solve(Level.parse(["######", "#@ #.#", "#$ # #", "######"])) is None


@pytest.fixture
def served():
    server = SokobanServer(
        config=SokobanConfig(name="sokoban", domain="games", max_sessions=3), server_client=registry_client({})
    )
    with ThreadedServer(server.setup_webserver()) as http:
        yield server, http.url


def play(client: httpx.Client, url: str, moves: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for move in moves:
        result = client.post(f"{url}/move", json={"direction": move}).json()
    return result


def verify(client: httpx.Client, url: str, task: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{url}/verify", json=task | {"response": {"id": "r", "output": []}})
    assert response.status_code == 200, response.text
    return response.json()


def test_solving_a_generated_level_over_http_scores_one(served):
    server, url = served
    task = TASKS[0]
    with httpx.Client() as rollout:
        rollout.post(f"{url}/seed_session", json=task).raise_for_status()
        last = play(rollout, url, solve(Level.parse(task["level"])) or [])
        assert last["solved"] and last["game_over"] and last["boxes_on_goals"] == 2
        row = verify(rollout, url, task)
        assert row["reward"] == 1.0 and row["moves_used"] == task["shortest_solution_moves"]
        assert "$" not in "".join(row["final_board"])
    assert server.games == {}


def test_running_out_of_moves_scores_zero_and_blocked_moves_count(served):
    _, url = served
    task = TASKS[1] | {"max_moves": 3}
    with httpx.Client() as rollout:
        rollout.post(f"{url}/seed_session", json=task)
        moves = ["up", "up", "up"]
        last = play(rollout, url, moves)
        assert last["game_over"] and not last["solved"] and last["moves_left"] == 0
        assert "game is over" in rollout.post(f"{url}/move", json={"direction": "down"}).json()["error"]
        row = verify(rollout, url, task)
        assert row["reward"] == 0.0 and row["moves_used"] == 3


def test_malformed_moves_and_tasks_are_rejected(served):
    server, url = served
    with httpx.Client() as rollout:
        rollout.post(f"{url}/seed_session", json=TASKS[0])
        bad = rollout.post(f"{url}/move", json={"direction": "north"})
        assert bad.status_code == 422 and "direction" in bad.text
        assert rollout.post(f"{url}/move", json={}).status_code == 422
        bad_level = rollout.post(f"{url}/seed_session", json=TASKS[0] | {"level": ["#@$#"]})
        assert bad_level.status_code == 422 and "as many boxes as goals" in bad_level.text


def test_empty_and_unseeded_games_score_zero(served):
    _, url = served
    with httpx.Client() as rollout:
        rollout.post(f"{url}/seed_session", json=TASKS[2])
        row = verify(rollout, url, TASKS[2])
        assert row["reward"] == 0.0 and row["moves_used"] == 0 and row["final_board"] == TASKS[2]["level"]
    with httpx.Client() as rollout:
        assert verify(rollout, url, TASKS[2])["final_board"] is None
        assert "never seeded" in rollout.post(f"{url}/move", json={"direction": "up"}).json()["error"]


def test_sessions_are_separate_and_bounded(served):
    server, url = served
    with httpx.Client() as first, httpx.Client() as second:
        first.post(f"{url}/seed_session", json={"level": TINY, "max_moves": 5})
        second.post(f"{url}/seed_session", json={"level": TINY, "max_moves": 5})
        assert play(first, url, ["right"])["solved"] is True
        assert play(second, url, ["left"])["solved"] is False
    for task in TASKS:
        with httpx.Client() as abandoned:
            abandoned.post(f"{url}/seed_session", json=task)
    assert len(server.games) == 3


# ---- end to end ------------------------------------------------------------------------------------


def policy(mode: str, body: dict[str, Any]) -> Turn:
    task = next(t for t in TASKS if user_text(t["responses_create_params"]) == user_text(body))
    made = len(items_of(body, "function_call"))
    results = [json.loads(item["output"]) for item in items_of(body, "function_call_output")]
    if results and results[-1].get("game_over"):
        return Turn(text="Solved." if results[-1]["solved"] else "Out of moves.")
    plan = (solve(Level.parse(task["level"])) or []) if mode == "correct" else ["left", "up"] * task["max_moves"]
    return Turn(tool_calls=[("move", json.dumps({"direction": plan[made]}))])


@pytest.mark.slow
def test_end_to_end_right_and_wrong_policies(tmp_path):
    with environment_stack("sokoban", policy, tmp_path) as stack:
        right, stdout = stack.collect("correct")
        wrong, _ = stack.collect("wrong")
    assert [row["reward"] for row in right] == [1.0] * 5
    assert [row["moves_used"] for row in right] == [task["shortest_solution_moves"] for task in TASKS]
    assert "mean/reward 1.0000" in stdout
    assert [row["reward"] for row in wrong] == [0.0] * 5
    assert [row["moves_used"] for row in wrong] == [task["max_moves"] for task in TASKS]
