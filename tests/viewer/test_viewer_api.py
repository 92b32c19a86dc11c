"""The viewer's JSON API over real HTTP: paging, sorting, filters, search, rows, metrics, failures, compare."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from nemo_gym.rollouts.metrics import aggregate_rollouts
from nemo_gym.viewer import RolloutIndex, ViewerRuns, build_viewer_app
from tests.conftest import cli
from tests.viewer.rollout_rows import rollout_row, write_rows


def start_viewer(serve, path, compare=None) -> httpx.Client:
    a = RolloutIndex(path).start()
    b = RolloutIndex(compare).start() if compare else None
    a.wait(30)
    if b:
        b.wait(30)
    return httpx.Client(base_url=serve(build_viewer_app(ViewerRuns(a, b))), trust_env=False, timeout=30)


@pytest.fixture
def rows_file(tmp_path):
    # 30 tasks x 4 rollouts; rewards cycle 0, 0.5, 1, 1; every 7th row ends at max_steps.
    rows = [
        rollout_row(
            task,
            rollout,
            [0.0, 0.5, 1.0, 1.0][(task + rollout) % 4],
            calls=1 + rollout % 3,
            tokens=100 + (task * 4 + rollout) % 17,
            episode_end="max_steps" if (task * 4 + rollout) % 7 == 0 else "completed",
        )
        for task in range(30)
        for rollout in range(4)
    ]
    return write_rows(tmp_path / "run.jsonl", rows), rows


def test_pages_through_the_file_in_order(serve, rows_file):
    path, rows = rows_file
    client = start_viewer(serve, path)
    page = client.get("/api/rows", params={"offset": 100, "limit": 50}).json()
    assert page["total"] == 120 and page["complete"]
    assert [r["row"] for r in page["rows"]] == list(range(100, 120))
    first = client.get("/api/rows", params={"limit": 3}).json()["rows"][0]
    assert first == {
        "row": 0,
        "line": 1,
        "task": 0,
        "rollout": 0,
        "reward": 0.0,
        "turns": 2,
        "tokens": 100,
        "ending": "max_steps",
    }


def test_one_row_is_returned_exactly_as_stored(serve, rows_file):
    path, rows = rows_file
    client = start_viewer(serve, path)
    assert client.get("/api/rows/57").json() == rows[57]
    missing = client.get("/api/rows/120")
    assert missing.status_code == 404 and "120 rows" in missing.json()["detail"]


def test_sorts_by_reward_descending_with_ties_in_file_order(serve, rows_file):
    path, rows = rows_file
    client = start_viewer(serve, path)
    page = client.get("/api/rows", params={"sort": "reward", "desc": True, "limit": 500}).json()["rows"]
    rewards = [r["reward"] for r in page]
    assert rewards == sorted(rewards, reverse=True)
    ones = [r["row"] for r in page if r["reward"] == 1.0]
    assert ones == sorted(ones)
    by_tokens = client.get("/api/rows", params={"sort": "tokens", "limit": 500}).json()["rows"]
    assert [r["tokens"] for r in by_tokens] == sorted(r["tokens"] for r in by_tokens)
    assert client.get("/api/rows", params={"sort": "nonsense"}).status_code == 422


def test_filters_by_task_reward_and_ending(serve, rows_file):
    path, rows = rows_file
    client = start_viewer(serve, path)
    task = client.get("/api/rows", params={"task": 7}).json()
    assert task["total"] == 4 and {r["task"] for r in task["rows"]} == {7}
    zero = client.get("/api/rows", params={"reward_max": 0, "limit": 500}).json()
    assert zero["total"] == sum(1 for r in rows if r["reward"] == 0.0)
    middle = client.get("/api/rows", params={"reward_min": 0.25, "reward_max": 0.75, "limit": 500}).json()
    assert {r["reward"] for r in middle["rows"]} == {0.5}
    cut = client.get("/api/rows", params={"ending": "max_steps", "limit": 500}).json()
    assert cut["total"] == sum(1 for r in rows if r["episode_end"] == "max_steps")
    both = client.get("/api/rows", params={"ending": "max_steps", "reward_min": 1, "limit": 500}).json()
    assert both["total"] == sum(1 for r in rows if r["episode_end"] == "max_steps" and r["reward"] >= 1)
    assert client.get("/api/rows", params={"ending": "deadline"}).json()["total"] == 0


def test_text_search_finds_rows_by_their_content(serve, tmp_path):
    rows = [rollout_row(t, 0, 1.0) for t in range(10)]
    rows[6] = rollout_row(6, 0, 0.0, text='The model said "Zanzibar" here')
    client = start_viewer(serve, write_rows(tmp_path / "run.jsonl", rows))
    assert [r["row"] for r in client.get("/api/rows", params={"q": "zanzibar"}).json()["rows"]] == [6]
    # A quote is stored escaped in JSON; searching for it still finds the row.
    assert [r["row"] for r in client.get("/api/rows", params={"q": 'said "Zan'}).json()["rows"]] == [6]
    assert client.get("/api/rows", params={"q": "City3"}).json()["total"] == 1
    assert client.get("/api/rows", params={"q": "no such text"}).json()["total"] == 0


def test_rows_without_an_ending_show_a_dash(serve, tmp_path):
    rows = [rollout_row(0, 0, 1.0, episode_end=None), rollout_row(1, 0, 1.0, episode_end="deadline")]
    client = start_viewer(serve, write_rows(tmp_path / "old.jsonl", rows))
    assert [r["ending"] for r in client.get("/api/rows").json()["rows"]] == ["-", "deadline"]
    assert client.get("/api/status").json()["a"]["endings"] == ["-", "deadline"]


def test_metrics_are_the_collectors_metrics_with_a_histogram(serve, rows_file):
    path, rows = rows_file
    client = start_viewer(serve, path)
    data = client.get("/api/metrics").json()
    expected = aggregate_rollouts(rows)
    assert data["metrics"]["pass_at_k"] == expected["pass_at_k"]
    assert data["metrics"]["key_metrics"]["pass@4"] == pytest.approx(expected["key_metrics"]["pass@4"])
    assert sum(data["histogram"]["counts"]) == 120
    assert data["histogram"]["counts"][0] == sum(1 for r in rows if r["reward"] == 0.0)
    assert data["histogram"]["counts"][-1] == sum(1 for r in rows if r["reward"] == 1.0)
    assert len(data["per_task"]) == 30 and "rewards" not in data["per_task"][0]


def test_unreadable_lines_are_counted_and_a_torn_tail_waits(serve, tmp_path):
    path = tmp_path / "torn.jsonl"
    good = [json.dumps(rollout_row(t, 0, 1.0)) for t in range(3)]
    path.write_text(good[0] + "\n\n" + good[1] + "\n{not json\n" + good[2] + "\n" + good[0][:40])
    client = start_viewer(serve, path)
    status = client.get("/api/status").json()["a"]
    assert status["rows"] == 3 and status["corrupt_lines"] == 1 and status["first_corrupt_line"] == 4
    assert status["pending_bytes"] == 40  # a last line without its newline is a row still being written
    assert [r["line"] for r in client.get("/api/rows").json()["rows"]] == [1, 3, 5]


def test_failures_file_beside_the_rollouts_is_summarised(serve, rows_file):
    path, _ = rows_file
    failures = [
        {
            "_ng_task_index": t,
            "_ng_rollout_index": 0,
            "error_type": kind,
            "message": f"{kind} on {t}",
            "status_code": None,
            "attempts": 3,
        }
        for t, kind in [(1, "ServerUnreachableError"), (2, "ServerUnreachableError"), (3, "HTTPStatusError")]
    ]
    write_rows(path.with_name("run_failures.jsonl"), failures)
    client = start_viewer(serve, path)
    data = client.get("/api/failures").json()
    assert data["exists"] and data["total"] == 3
    assert data["by_type"][0] == {
        "error_type": "ServerUnreachableError",
        "count": 2,
        "example": "ServerUnreachableError on 1",
    }
    assert [r["_ng_task_index"] for r in data["rows"]] == [1, 2, 3]


def test_compare_gives_the_per_task_reward_delta(serve, tmp_path):
    a = write_rows(
        tmp_path / "a.jsonl", [rollout_row(t, r, 0.0 if t == 1 else 1.0) for t in range(3) for r in range(2)]
    )
    b_rows = [rollout_row(t, r, 1.0 if t == 1 else (0.5 if t == 2 else 1.0)) for t in range(3) for r in range(2)]
    b = write_rows(tmp_path / "b.jsonl", b_rows + [rollout_row(9, 0, 1.0)])
    client = start_viewer(serve, a, compare=b)
    data = client.get("/api/compare").json()
    deltas = {t["task"]: t["delta"] for t in data["tasks"]}
    assert deltas == {0: 0.0, 1: 1.0, 2: -0.5, 9: None}
    assert data["summary"] | {"a_mean": None, "b_mean": None} == {
        "shared_tasks": 3,
        "only_in_a": 0,
        "only_in_b": 1,
        "improved": 1,
        "worse": 1,
        "unchanged": 1,
        "a_mean": None,
        "b_mean": None,
    }
    rows_of_task = client.get("/api/compare/task/2").json()
    assert [r["reward"] for r in rows_of_task["b"]] == [0.5, 0.5] and len(rows_of_task["a"]) == 2
    assert client.get(f"/api/rows/{rows_of_task['b'][0]['row']}", params={"run": "b"}).json()["reward"] == 0.5


def test_compare_without_a_second_run_says_how_to_get_one(serve, rows_file):
    client = start_viewer(serve, rows_file[0])
    response = client.get("/api/compare")
    assert response.status_code == 404 and "+compare_jsonl_fpath" in response.json()["detail"]


def test_page_and_assets_are_served_locally(serve, rows_file):
    client = start_viewer(serve, rows_file[0])
    page = client.get("/").text
    assert '<script src="/static/viewer.js">' in page and "http://" not in page.replace("http://www.w3.org", "")
    script = client.get("/static/viewer.js").text
    # Row text is model-written: it only ever goes in as text, never parsed as markup.
    assert not any(sink in script for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write"))
    assert client.get("/static/viewer.css").status_code == 200


def test_cli_names_a_missing_file_in_one_line(tmp_path):
    result = cli("ng_viewer", f"+jsonl_fpath={tmp_path / 'nope.jsonl'}", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ng_viewer: error: {tmp_path / 'nope.jsonl'}: rollouts file does not exist"
    ]


def test_cli_refuses_a_port_in_use(tmp_path, rows_file):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("ng_viewer", f"+jsonl_fpath={rows_file[0]}", f"+port={port}", timeout=60)
    assert result.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in result.stderr


def test_readme_screenshot_exists_and_is_small():
    screenshot = Path(__file__).resolve().parents[2] / "docs" / "viewer.png"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size < 400_000


def test_rows_appended_while_viewing_are_picked_up(serve, tmp_path):
    path = write_rows(tmp_path / "live.jsonl", [rollout_row(t, 0, 1.0) for t in range(3)])
    client = start_viewer(serve, path)
    with path.open("a") as handle:  # a collection still running: two rows and half of a third
        handle.write(json.dumps(rollout_row(3, 0, 0.0)) + "\n" + json.dumps(rollout_row(4, 0, 0.0)) + "\n")
        handle.write(json.dumps(rollout_row(5, 0, 1.0))[:50])
    status = wait_until_indexed(client, 5)
    assert status["rows"] == 5 and status["corrupt_lines"] == 0
    assert client.get("/api/metrics").json()["metrics"]["counts"]["rollouts"] == 5
    with path.open("a") as handle:
        handle.write(json.dumps(rollout_row(5, 0, 1.0))[50:] + "\n")
    assert wait_until_indexed(client, 6)["rows"] == 6
    assert client.get("/api/rows/5").json()["_ng_task_index"] == 5
    assert client.get("/api/rows", params={"reward_max": 0}).json()["total"] == 2
    assert client.get("/api/metrics").json()["metrics"]["fields"]["reward"]["mean"] == pytest.approx(4 / 6)


def wait_until_indexed(client: httpx.Client, rows: int) -> dict:
    """Ask for the status (which starts a catch-up pass when the file grew) until `rows` are indexed."""
    for _ in range(600):
        status = client.get("/api/status").json()["a"]
        if status["complete"] and status["rows"] >= rows:
            return status
        time.sleep(0.05)
    raise AssertionError(f"index never caught up: {status}")


def test_only_the_viewers_own_page_is_answered(serve, rows_file):
    """Another site's page (a foreign Origin) and a DNS-rebinding one (a foreign Host) get nothing;
    the viewer's own page, which sends its own URL as Origin, is answered."""
    path, _ = rows_file
    client = start_viewer(serve, path)
    own = str(client.base_url).rstrip("/")
    port = own.rsplit(":", 1)[1]
    assert client.get("/api/status", headers={"Origin": own}).status_code == 200
    assert client.get("/api/rows", headers={"Origin": f"http://localhost:{port}"}).status_code == 200
    foreign = client.get("/api/rows", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "allowed_hosts" in foreign.json()["error"]["message"]
    assert client.get("/api/rows/0", headers={"Origin": "http://127.0.0.1:1"}).status_code == 403
    rebound = client.get("/api/rows", headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"})
    assert rebound.status_code == 421 and "allowed_hosts" in rebound.json()["error"]["message"]
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 421


def test_allowed_hosts_lets_a_name_reach_the_viewer(serve, rows_file):
    path, _ = rows_file
    index = RolloutIndex(path).start()
    index.wait(30)
    url = serve(build_viewer_app(ViewerRuns(index), "127.0.0.1", ["viewer.lab.example"]))
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
        headers = {"Host": "viewer.lab.example", "Origin": "http://viewer.lab.example"}
        assert client.get("/api/status", headers=headers).status_code == 200
        assert client.get("/api/status", headers={"Host": "other.lab.example"}).status_code == 421
