"""workplace_assistant: tools over real HTTP, goal-state grading (any path counts), wrong, malformed
and empty episodes, and end to end."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.workplace_assistant.app import WorkplaceAssistantServer, WorkplaceConfig
from resources_servers.workplace_assistant.company import TOOLS, call_tool, comparable, fresh_state, tool_schemas
from tests.e2e.env_rollouts import environment_stack, example_tasks, items_of, user_text

TASKS = example_tasks("workplace_assistant")


def test_ten_or_more_tools_and_tasks_declare_them_all():
    assert len(TOOLS) >= 10
    assert all(task["responses_create_params"]["tools"] == tool_schemas() for task in TASKS)


def test_grading_view_ignores_generated_ids_case_and_attendee_order():
    one, two = fresh_state(), fresh_state()
    call_tool(
        one,
        "create_calendar_event",
        {
            "title": "Lunch",
            "date": "2026-07-20",
            "start_time": "12:00",
            "duration_minutes": 60,
            "attendees": ["hannah.lee@acme.example", "marco.rossi@acme.example"],
        },
    )
    call_tool(
        two,
        "create_calendar_event",
        {"title": "x", "date": "2026-07-20", "start_time": "12:00", "duration_minutes": 60, "attendees": []},
    )
    call_tool(two, "cancel_calendar_event", {"event_id": "ev-5"})
    call_tool(
        two,
        "create_calendar_event",
        {
            "title": " LUNCH ",
            "date": "2026-07-20",
            "start_time": "12:00",
            "duration_minutes": 60,
            "attendees": ["Marco.Rossi@acme.example", "hannah.lee@acme.example"],
        },
    )
    assert comparable(one) == comparable(two)  # ev-5 vs ev-6, case, spaces and order do not matter


@pytest.fixture
def served():
    server = WorkplaceAssistantServer(
        config=WorkplaceConfig(name="wa", domain="agent", max_sessions=3), server_client=registry_client({})
    )
    with ThreadedServer(server.setup_webserver()) as http:
        yield server, http.url


def episode(
    url: str, task: dict[str, Any], calls: list[tuple[str, dict[str, Any]]]
) -> tuple[list[Any], dict[str, Any]]:
    with httpx.Client() as rollout:
        rollout.post(f"{url}/seed_session", json=task).raise_for_status()
        results = [rollout.post(f"{url}/{name}", json=arguments) for name, arguments in calls]
        row = rollout.post(f"{url}/verify", json=task | {"response": {"id": "r", "output": []}})
        assert row.status_code == 200, row.text
        return results, row.json()


@pytest.mark.parametrize("index", range(5))
def test_gold_calls_reach_the_goal(served, index):
    server, url = served
    task = TASKS[index]
    _, row = episode(url, task, [(c["name"], c["arguments"]) for c in task["gold_calls"]])
    assert row["reward"] == 1.0 and row["state_differences"] == [] and row["tool_errors"] == 0
    assert server.databases == {}


def test_a_different_path_to_the_goal_counts(served):
    _, url = served
    refund = TASKS[4]  # Blue Harbor: latest order refunded, tier standard
    calls = [
        ("search_customers", {"query": "blue harbor"}),
        ("list_orders", {"customer_id": "c-2"}),
        ("get_order", {"order_id": "O-9999"}),  # a refused lookup changes nothing
        ("update_customer", {"customer_id": "c-2", "tier": "gold"}),
        ("update_order_status", {"order_id": "O-1003", "status": "cancelled"}),
        ("update_customer", {"customer_id": "c-2", "tier": "standard"}),
        ("update_order_status", {"order_id": "O-1003", "status": "refunded"}),
    ]
    results, row = episode(url, refund, calls)
    assert [o["id"] for o in results[1].json()["orders"]] == ["O-1001", "O-1003"]
    assert results[2].json() == {"error": "no order with id 'O-9999'"}
    assert row["reward"] == 1.0 and row["tool_errors"] == 1


def test_wrong_record_or_extra_change_scores_zero(served):
    _, url = served
    task = TASKS[1]  # O-1004 delivered, Nordwind active
    _, wrong_order = episode(
        url,
        task,
        [
            ("update_order_status", {"order_id": "O-1002", "status": "delivered"}),
            ("update_customer", {"customer_id": "c-1", "status": "active"}),
        ],
    )
    assert wrong_order["reward"] == 0.0 and wrong_order["state_differences"] == ["orders: O-1002, O-1004 differ"]
    extra = [(c["name"], c["arguments"]) for c in task["gold_calls"]] + [
        ("send_email", {"to": ["priya.shah@acme.example"], "subject": "hi", "body": "done"})
    ]
    _, too_much = episode(url, task, extra)
    assert too_much["reward"] == 0.0 and too_much["state_differences"][0].startswith("sent_emails")


def test_malformed_calls_are_refused_and_change_nothing(served):
    _, url = served
    task = TASKS[0]
    calls = [
        (
            "create_calendar_event",
            {
                "title": "Q3 budget review",
                "date": "14/07/2026",
                "start_time": "10:00",
                "duration_minutes": 30,
                "attendees": ["priya.shah@acme.example"],
            },
        ),
        (
            "create_calendar_event",
            {
                "title": "Q3 budget review",
                "date": "2026-07-14",
                "start_time": "10:00",
                "duration_minutes": 30,
                "attendees": ["priya@acme.example"],
            },
        ),
        ("update_order_status", {"order_id": "O-1001", "status": "lost"}),
    ]
    results, row = episode(url, task, calls)
    assert results[0].status_code == 422 and "date" in results[0].text
    assert "unknown email address(es): priya@acme.example" in results[1].json()["error"]
    assert results[2].status_code == 422 and "status" in results[2].text
    assert row["reward"] == 0.0 and row["state_differences"] == ["events: 4 records, goal has 5 (or contents differ)"]


def test_empty_and_unseeded_episodes_score_zero(served):
    _, url = served
    _, empty = episode(url, TASKS[3], [])
    assert empty["reward"] == 0.0 and empty["state_differences"]
    with httpx.Client() as rollout:
        assert "never seeded" in rollout.post(f"{url}/list_orders", json={"customer_id": "c-1"}).json()["error"]
        unseeded = rollout.post(f"{url}/verify", json=TASKS[3] | {"response": {"id": "r", "output": []}}).json()
        assert unseeded["reward"] == 0.0


def test_sessions_are_separate_and_bounded(served):
    server, url = served
    with httpx.Client() as first, httpx.Client() as second:
        first.post(f"{url}/seed_session", json=TASKS[0])
        second.post(f"{url}/seed_session", json=TASKS[0])
        first.post(f"{url}/cancel_calendar_event", json={"event_id": "ev-1"})
        assert len(second.post(f"{url}/list_calendar_events", json={}).json()["events"]) == 4
        assert len(first.post(f"{url}/list_calendar_events", json={}).json()["events"]) == 3
    for task in TASKS:
        with httpx.Client() as abandoned:
            abandoned.post(f"{url}/seed_session", json=task)
    assert len(server.databases) == 3


def test_broken_gold_calls_are_an_error_naming_them(served):
    _, url = served
    response = httpx.post(
        f"{url}/verify",
        json=TASKS[3]
        | {
            "gold_calls": [{"name": "get_order", "arguments": {"order_id": "nope"}}],
            "response": {"id": "r", "output": []},
        },
    )
    assert response.status_code == 400 and "gold_calls[0] (get_order)" in response.json()["error"]["message"]
    unknown = httpx.post(
        f"{url}/verify",
        json=TASKS[3] | {"gold_calls": [{"name": "fire_everyone"}], "response": {"id": "r", "output": []}},
    )
    assert unknown.status_code == 422 and "unknown tool 'fire_everyone'" in unknown.text


# ---- end to end ------------------------------------------------------------------------------------


def policy(mode: str, body: dict[str, Any]) -> Turn:
    """Look the records up first (as a real assistant would), then make the gold calls; "wrong"
    makes the first change on a neighbouring record."""
    task = next(t for t in TASKS if user_text(t["responses_create_params"]) == user_text(body))
    plan = [("list_calendar_events", {})] + [(c["name"], dict(c["arguments"])) for c in task["gold_calls"]]
    if mode == "wrong":
        name, arguments = plan[1]
        for key, value in arguments.items():
            if key.endswith("_id"):
                arguments[key] = {"ev-1": "ev-3", "ev-2": "ev-4", "O-1004": "O-1002", "O-1003": "O-1001"}.get(
                    value, value
                )
        arguments.update({"date": "2026-07-15"} if name == "create_calendar_event" else {})
    made = len(items_of(body, "function_call"))
    if made < len(plan):
        name, arguments = plan[made]
        return Turn(tool_calls=[(name, json.dumps(arguments))])
    return Turn(text="All done.")


@pytest.mark.slow
def test_end_to_end_right_and_wrong_policies(tmp_path):
    with environment_stack("workplace_assistant", policy, tmp_path) as stack:
        right, stdout = stack.collect("correct")
        wrong, _ = stack.collect("wrong")
    assert [row["reward"] for row in right] == [1.0] * 5, [row["state_differences"] for row in right]
    assert "mean/reward 1.0000" in stdout
    assert [row["reward"] for row in wrong] == [0.0] * 5, [row["state_differences"] for row in wrong]
    assert all(row["state_differences"] for row in wrong)


def test_a_row_of_nemo_gym_s_other_workplace_task_is_refused_naming_its_field():
    # Modelled by hand on NeMo Gym's rows: WorkBench tools and a `ground_truth` list of calls, no `gold_calls`.
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": "Cancel my 3pm meeting."}]},
        "response": {"id": "r", "output": []},
        "ground_truth": [{"name": "calendar_delete_event", "arguments": '{"event_id": "00000012"}'}],
        "category": "calendar",
        "environment_name": "workbench",
    }
    server = WorkplaceAssistantServer(
        config=WorkplaceConfig(name="workplace_assistant"), server_client=registry_client({})
    )
    with ThreadedServer(server.setup_webserver()) as http:
        answer = httpx.post(f"{http.url}/verify", json=row)
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "NeMo Gym's workplace_assistant task" in message and "(field `ground_truth`)" in message
