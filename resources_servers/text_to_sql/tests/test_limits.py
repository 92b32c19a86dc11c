"""text_to_sql holds a model-written query to its time, memory and result-size limits.

The server runs in its own process here, so its memory can be measured apart from the test's:
a query that builds a 300 MB blob, or doubles a string 28 times, must be stopped with a reason
the model can read, the server must not grow, and the next query must work as before.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from resources_servers.text_to_sql.app import TextToSQLConfig, TextToSQLServer
from tests.e2e.env_rollouts import example_tasks

TASKS = example_tasks("text_to_sql")
SERVER_PEAK_RSS_MB = 400
"""The server's high-water mark; before these limits the doubling query took it to about 2 GB."""
REQUEST_TIMEOUT_S = 60
"""Only so that a query nothing stops fails the test instead of hanging it."""

SERVER = """
import sys
from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from resources_servers.text_to_sql.app import TextToSQLConfig, TextToSQLServer

server = TextToSQLServer(config=TextToSQLConfig(name="sql", domain="coding"), server_client=registry_client({}))
with ThreadedServer.of(server) as http:
    print(http.url, flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
"""

RANDOMBLOB = "SELECT length(hex(randomblob(300000000)))"
DOUBLING = (
    "WITH RECURSIVE s(n, x) AS (SELECT 0, 'ab' UNION ALL SELECT n + 1, x || x FROM s WHERE n < 28) "
    "SELECT length(x) FROM s WHERE n = 28"
)
# A hundred 9 MB rows to sort: no single value is too big, but the sort (kept in memory, not in a
# temp file) outgrows the worker's address-space limit.
BIG_SORT = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) "
    "SELECT count(*) FROM (SELECT i, printf('%.*c', 9000000, 'x') AS s FROM n ORDER BY i DESC)"
)
# One C call (instr over an 8 MB string) that takes far longer than the limit: SQLite's progress
# handler never runs inside it, so only killing the process running it can stop it.
SLOW_SINGLE_CALL = "SELECT instr(hex(zeroblob(4000000)), hex(zeroblob(50000)) || '1')"
ENDLESS = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
TOO_MANY_ROWS = "SELECT a.id, b.id, c.id, d.id FROM employees a, employees b, employees c, employees d"
TOO_MANY_BYTES = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) SELECT i, hex(zeroblob(500000)) FROM n"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, psutil.Process]]:
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://"), "the server did not start"
        yield url, psutil.Process(process.pid)
    finally:
        children = psutil.Process(process.pid).children(recursive=True)
        assert process.stdin is not None
        process.stdin.close()  # a clean shutdown: the server stops its workers itself
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for child in children:
            if child.is_running():
                child.kill()


def verify(url: str, sql: str, task: dict[str, Any] = TASKS[0]) -> dict[str, Any]:
    output = [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": sql, "annotations": []}]}
    ]
    body = task | {"response": {"id": "resp_1", "output": output}}
    response = httpx.post(f"{url}/verify", json=body, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    return response.json()


def peak_rss_mb(process: psutil.Process) -> float:
    # VmHWM is the kernel's record of the most the process ever had resident: no sampling can miss a spike.
    status = Path(f"/proc/{process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def assert_next_query_works(url: str) -> None:
    for task in TASKS[:2]:
        row = verify(url, task["gold_sql"], task)
        assert row["reward"] == 1.0 and row["execution_error"] is None


@pytest.mark.parametrize("sql", [RANDOMBLOB, DOUBLING], ids=["randomblob-300MB", "string-doubled-28-times"])
def test_a_query_building_a_huge_value_is_stopped_for_memory_and_the_server_stays_small(server, sql):
    url, process = server
    row = verify(url, sql)
    assert row["reward"] == 0.0
    assert "memory" in (row["execution_error"] or ""), row["execution_error"]
    assert row["stopped_by"] == "memory"
    assert peak_rss_mb(process) < SERVER_PEAK_RSS_MB
    assert_next_query_works(url)


def test_a_single_slow_c_call_is_killed_at_the_time_limit_while_the_server_keeps_answering(server):
    url, process = server
    outcome: dict[str, Any] = {}
    running = threading.Thread(target=lambda: outcome.update(verify(url, SLOW_SINGLE_CALL)))
    running.start()
    health_answers = 0
    while running.is_alive():
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # the event loop is never blocked
        health_answers += 1
        running.join(0.2)
    assert health_answers >= 2
    assert outcome["reward"] == 0.0
    assert "2 s time limit" in (outcome["execution_error"] or ""), outcome["execution_error"]
    assert outcome["stopped_by"] == "time"
    assert_next_query_works(url)


def test_an_endless_query_is_stopped_at_the_time_limit(server):
    url, _ = server
    row = verify(url, ENDLESS)
    assert row["reward"] == 0.0 and "2 s time limit" in (row["execution_error"] or "")
    assert row["stopped_by"] == "time"
    assert_next_query_works(url)


@pytest.mark.parametrize(
    ("sql", "message"),
    [(TOO_MANY_ROWS, "more than 10,000 rows"), (TOO_MANY_BYTES, "more than 10,000,000 bytes")],
    ids=["rows", "bytes"],
)
def test_an_oversized_result_is_refused_with_its_size(server, sql, message):
    url, process = server
    row = verify(url, sql)
    assert row["reward"] == 0.0
    assert message in (row["execution_error"] or "") and "result size limit" in row["execution_error"]
    assert row["stopped_by"] == "result_size"
    assert peak_rss_mb(process) < SERVER_PEAK_RSS_MB
    assert_next_query_works(url)


def test_queries_run_in_worker_processes_with_an_address_space_limit(server):
    url, process = server
    verify(url, TASKS[0]["gold_sql"])
    workers = [child for child in process.children() if "spawn_main" in " ".join(child.cmdline())]
    assert workers, "queries should run in worker processes"
    for worker in workers:
        soft, hard = worker.rlimit(psutil.RLIMIT_AS)
        assert soft == hard == 512 * 1024 * 1024


def test_a_query_outgrowing_its_worker_memory_is_stopped_for_memory_and_the_worker_recovers():
    # A long time limit and a small address space, so that memory is what stops it.
    config = TextToSQLConfig(name="sql", domain="coding", statement_timeout_s=60, query_memory_mb=160, query_workers=1)
    with ThreadedServer.of(TextToSQLServer(config=config, server_client=registry_client({}))) as http:
        row = verify(http.url, BIG_SORT)
        assert row["reward"] == 0.0 and row["stopped_by"] == "memory"
        assert "memory limit" in (row["execution_error"] or ""), row["execution_error"]
        assert_next_query_works(http.url)
