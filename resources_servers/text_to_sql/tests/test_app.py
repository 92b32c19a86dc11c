"""text_to_sql: result-set grading, refused writes, timeouts, malformed and empty replies, and end to end."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.text_to_sql.app import TextToSQLConfig, TextToSQLServer, extract_sql
from resources_servers.text_to_sql.build_db import DEFAULT_OUTPUT, build
from resources_servers.text_to_sql.sql_runner import QueryLimits, results_match, run_query
from tests.e2e.env_rollouts import environment_stack, example_tasks, user_text

TASKS = example_tasks("text_to_sql")


def make_server(**config: Any) -> TextToSQLServer:
    return TextToSQLServer(
        config=TextToSQLConfig(name="sql", domain="coding", **config), server_client=registry_client({})
    )


def reply(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
    ]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """One server for the module: its query workers start once (and stop when it does)."""
    with ThreadedServer.of(make_server()) as http:
        yield http.url


def verify(url: str, task: dict[str, Any], text: str | None) -> dict[str, Any]:
    output = reply(text) if text is not None else []
    response = httpx.post(f"{url}/verify", json=task | {"response": {"id": "resp_1", "output": output}}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_shipped_database_matches_a_fresh_build(tmp_path):
    fresh = build(tmp_path / "fresh.sqlite")
    dump = [list(sqlite3.connect(path).iterdump()) for path in (DEFAULT_OUTPUT, fresh)]
    assert dump[0] == dump[1] and len(dump[0]) > 50


@pytest.mark.parametrize("index", range(5))
def test_gold_query_scores_one_on_every_example(url, index):
    row = verify(url, TASKS[index], f"Here it is:\n```sql\n{TASKS[index]['gold_sql']};\n```")
    assert row["reward"] == 1.0 and row["execution_error"] is None and row["extracted_sql"] == TASKS[index]["gold_sql"]


def test_equivalent_query_scores_one_and_row_order_matters_only_when_ordered(url):
    unordered = TASKS[1]  # hired since 2022 with department
    rewritten = (
        "SELECT employees.name, departments.name FROM departments, employees WHERE employees.department_id = departments.id "
        "AND hire_date > '2021-12-31' ORDER BY employees.name DESC"
    )
    assert verify(url, unordered, rewritten)["reward"] == 1.0
    ordered = TASKS[2]  # average salary, highest first
    ascending = ordered["gold_sql"].replace("DESC", "ASC")
    assert verify(url, ordered, ascending)["reward"] == 0.0
    # AVG in another spelling, same order: float noise is rounded away.
    assert (
        verify(url, ordered, ordered["gold_sql"].replace("AVG(e.salary)", "SUM(e.salary) * 1.0 / COUNT(*)"))["reward"]
        == 1.0
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("SELECT COUNT(*) FROM employees", None),  # runs, but the wrong count
        ("SELECT COUNT(*) FROM employes", "no such table"),
        ("SELEC COUNT(*) FROM employees", "syntax error"),
        ("SELECT 1; SELECT 2", "one statement"),
    ],
)
def test_wrong_and_malformed_queries_score_zero(url, text, error):
    row = verify(url, TASKS[0], text)
    assert row["reward"] == 0.0 and row["write_refused"] is False
    assert (row["execution_error"] is None) if error is None else (error in row["execution_error"])


@pytest.mark.parametrize("text", [None, "", "   ", "I don't know how to write that query.", "```sql\n```"])
def test_empty_replies_score_zero(url, text):
    row = verify(url, TASKS[0], text)
    assert row["reward"] == 0.0
    assert row["execution_error"] is not None


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM employees",
        "UPDATE employees SET salary = 0",
        "INSERT INTO departments VALUES (9, 'X', 'Y', 1)",
        "DROP TABLE assignments",
        "CREATE TABLE t (x)",
        "ATTACH DATABASE '/tmp/x.sqlite' AS other",
        "PRAGMA query_only = OFF",
    ],
)
def test_writes_are_refused_and_the_database_is_unchanged(url, sql):
    before = list(sqlite3.connect(DEFAULT_OUTPUT).iterdump())
    row = verify(url, TASKS[0], f"```sql\n{sql}\n```")
    assert row["reward"] == 0.0
    assert row["write_refused"] is True or "readonly" in (row["execution_error"] or "").lower(), row["execution_error"]
    assert list(sqlite3.connect(DEFAULT_OUTPUT).iterdump()) == before


def test_read_only_connection_refuses_writes_even_without_the_authorizer():
    connection = sqlite3.connect(f"file:{DEFAULT_OUTPUT}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        connection.execute("DELETE FROM employees")


def test_runaway_query_is_interrupted():
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
    result = run_query(DEFAULT_OUTPUT, endless, QueryLimits(timeout_s=0.2, max_rows=10, max_result_bytes=1000))
    assert result.rows is None and result.stopped_by == "time"
    assert result.error == "stopped: the query ran past the 0.2 s time limit"


def test_huge_results_are_capped():
    limits = QueryLimits(timeout_s=2, max_rows=100, max_result_bytes=1000)
    result = run_query(DEFAULT_OUTPUT, "SELECT a.id FROM employees a, employees b", limits)  # 100 rows = 800 bytes
    assert result.rows is None and result.stopped_by == "result_size"
    assert result.error == "stopped: the result has more than 100 rows (result size limit)"
    wide = run_query(DEFAULT_OUTPUT, "SELECT name, hex(zeroblob(100)) FROM employees", limits)
    assert wide.rows is None and wide.error == "stopped: the result is more than 1,000 bytes (result size limit)"
    value = run_query(DEFAULT_OUTPUT, "SELECT length(zeroblob(1001))", limits)
    assert value.rows is None and value.stopped_by == "memory" and "over 1,000 bytes (memory limit)" in value.error
    assert run_query(DEFAULT_OUTPUT, "SELECT length(zeroblob(1000))", limits).rows == [(1000,)]


def test_result_comparison_rules():
    assert results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=False)
    assert not results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=True)
    assert results_match([(2.0000000001,)], [(2,)], ordered=True)
    assert not results_match([(1,), (1,)], [(1,)], ordered=False)  # duplicates count
    assert not results_match([("a", 1)], [(1, "a")], ordered=False)  # column order matters


def test_sql_extraction():
    assert extract_sql("Sure!\n```sql\nSELECT 1;\n```\nand better:\n```sql\nSELECT 2\n```") == "SELECT 2"
    assert extract_sql("The query is SELECT name FROM employees;") == "SELECT name FROM employees"
    assert extract_sql("```\nselect 3\n```") == "select 3"
    assert extract_sql("  ") is None


def test_broken_gold_sql_is_an_error_naming_the_field_not_a_zero(url):
    body = TASKS[0] | {"gold_sql": "SELECT nope FROM nowhere", "response": {"id": "r", "output": reply("SELECT 1")}}
    response = httpx.post(f"{url}/verify", json=body)
    assert response.status_code == 400 and "gold_sql does not run" in response.json()["error"]["message"]
    missing = httpx.post(f"{url}/verify", json={k: v for k, v in body.items() if k != "gold_sql"})
    assert missing.status_code == 422 and "gold_sql" in missing.text


def test_a_configured_database_path_is_the_one_queried(tmp_path):
    path = build(tmp_path / "company.sqlite")
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM employees WHERE department_id = 1 AND id > 4")
    server = make_server(database_path=str(path))
    assert server.database == path
    with ThreadedServer.of(server) as http:
        row = verify(http.url, TASKS[0], "SELECT 4")  # 4 engineers left in this copy
    assert row["reward"] == 1.0


# ---- end to end ------------------------------------------------------------------------------------


def policy(mode: str, body: dict[str, Any]) -> Turn:
    task = next(t for t in TASKS if t["question"] == user_text(body))
    sql = task["gold_sql"] if mode == "correct" else task["gold_sql"].replace("SELECT", "SELECT 1 AS x,", 1)
    return Turn(text=f"```sql\n{sql}\n```")


@pytest.mark.slow
def test_end_to_end_right_and_wrong_policies(tmp_path):
    with environment_stack("text_to_sql", policy, tmp_path) as stack:
        right, stdout = stack.collect("correct")
        wrong, _ = stack.collect("wrong")
    assert [row["reward"] for row in right] == [1.0] * 5
    assert "mean/reward 1.0000" in stdout
    assert [row["reward"] for row in wrong] == [0.0] * 5
    assert all(row["execution_error"] is None for row in wrong)  # they ran; the results differ


def test_a_row_of_nemo_gym_s_other_text_to_sql_task_is_refused_naming_its_field():
    # Modelled by hand on NeMo Gym's rows: a judge task with a gold `sql` in a dialect, no `gold_sql`.
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": "List customers with 3+ orders."}]},
        "response": {"id": "r", "output": []},
        "sql": "SELECT name FROM customers",
        "sql_dialect": "postgresql",
        "sql_context": "CREATE TABLE customers (id SERIAL PRIMARY KEY, name TEXT);",
        "sql_prompt": "List customers with 3+ orders.",
        "uuid": "shop-001",
    }
    server = TextToSQLServer(config=TextToSQLConfig(name="text_to_sql"), server_client=registry_client({}))
    with ThreadedServer(server.setup_webserver()) as http:
        answer = httpx.post(f"{http.url}/verify", json=row)
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "NeMo Gym's text_to_sql task" in message and "(field `sql_dialect`)" in message
