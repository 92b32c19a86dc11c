"""The viewer page in a real headless Chromium (Debian's `chromium`, driven by Playwright), on rollouts
from a real collection: the table lists them, a click opens a conversation with its tool call, the
charts are drawn, and model-written text never runs as markup."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, cli, spawn
from tests.viewer.rollout_rows import rollout_row, write_rows

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_api = None
if (sync_api is None or not os.path.exists(CHROMIUM)) and not os.environ.get("CI"):
    # CI installs both (.ci/run and the dev extra) and must fail loudly without them; elsewhere say what is missing.
    pytest.skip(
        "needs Debian's chromium (apt-get install -y chromium) and playwright (the dev extra)", allow_module_level=True
    )

pytestmark = pytest.mark.slow


@contextmanager
def viewer(*args: str) -> Iterator[str]:
    """`ng_viewer` as a user runs it; yields the URL it printed."""
    process = spawn("ng_viewer", *args, "+port=0")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"ng_viewer printed no URL: {line}{process.stdout.read() if process.poll() is not None else ''}"
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert errors == [], f"the page raised: {errors}"


def test_collected_rollouts_are_listed_opened_and_charted(page, upstream, head_port, tmp_path):
    output = tmp_path / "rollouts.jsonl"
    collected = cli(
        "ng_collect_rollouts",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={TUTORIAL_DATA}",
        f"+output_jsonl_fpath={output}",
        "+limit=5",
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=x",
        "+policy_model_name=scripted-model",
        timeout=180,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 5

    with viewer(f"+jsonl_fpath={output}") as url:
        page.goto(url)
        page.wait_for_selector("#rows tbody tr")
        table = page.locator("#rows tbody tr")
        assert table.count() == 5
        assert page.inner_text("#page-info") == "1-5 of 5"
        assert sorted(int(page.inner_text(f"#rows tbody tr:nth-child({n}) td:nth-child(2)")) for n in range(1, 6)) == [
            0,
            1,
            2,
            3,
            4,
        ]

        table.nth(2).click()
        call = page.locator("#detail .item.function_call")
        call.first.wait_for()
        shown_row = int(table.nth(2).get_attribute("data-row"))
        stored_call = next(item for item in rows[shown_row]["response"]["output"] if item["type"] == "function_call")
        assert call.first.locator(".tool-name").inner_text() == "get_weather"
        assert json.loads(call.first.locator(".arguments").inner_text()) == json.loads(stored_call["arguments"])
        assert "The weather in San Francisco is cold." in page.inner_text("#detail .item.function_call_output")
        assert "bring a jacket" in page.inner_text("#detail .item.assistant")
        assert "total_tokens" in page.inner_text("#detail")

        page.click("nav button[data-tab=metrics]")
        page.wait_for_selector("#histogram rect.bar")
        bars = page.locator("#histogram rect.bar")
        assert bars.count() == 1  # all 5 scored 1.0: one bar, in the last bin
        assert bars.first.locator("title").text_content() == "[0.90, 1.00]: 5 rollouts"
        assert page.locator("#per-task rect.bar").count() == 5
        cards = page.inner_text("#key-metrics").split("\n")
        metrics = dict(zip(cards[::2], cards[1::2]))
        assert metrics["mean/reward"] == "1.000" and metrics["pass@1"] == "1.000" and metrics["rollouts"] == "5"
        assert page.locator("#passk tbody tr").count() == 1


def test_sorting_filtering_and_model_text_shown_as_text(page, tmp_path):
    hostile = '<img src=x onerror="window.__ran = 1"><b>bold?</b>'
    rows = [rollout_row(t, 0, [0.0, 1.0, 0.5][t % 3]) for t in range(8)]
    rows[4] = rollout_row(4, 0, 0.25, text=hostile, episode_end="max_steps", accuracy=0.25)
    rows[4]["response"]["output"].insert(
        0, {"type": "reasoning", "summary": [{"type": "summary_text", "text": "First look up City4."}]}
    )
    path = write_rows(tmp_path / "run.jsonl", rows)
    with viewer(f"+jsonl_fpath={path}") as url:
        page.goto(url)
        page.wait_for_selector("#rows tbody tr")
        page.click("#rows th[data-sort=reward]")
        page.click("#rows th[data-sort=reward]")  # second click: descending
        page.wait_for_selector("#rows th.sorted-desc")
        rewards = [page.inner_text(f"#rows tbody tr:nth-child({n}) td:nth-child(4)") for n in range(1, 9)]
        assert rewards == sorted(rewards, reverse=True) and rewards[0] == "1.000"

        page.select_option("#ending", "max_steps")
        page.wait_for_function("document.querySelectorAll('#rows tbody tr').length === 1")
        page.click("#rows tbody tr")
        page.locator("#detail .item.assistant").wait_for()
        assert page.inner_text("#detail .item.assistant .text") == hostile
        assert page.locator("#detail img").count() == 0
        assert page.evaluate("window.__ran") is None
        assert page.inner_text("#detail .item.reasoning .text") == "First look up City4."
        assert "accuracy\t0.25" in page.inner_text("#detail table.kv")  # verify extras

        page.click("#clear")
        page.fill("#q", "City7")
        # The filter before #clear also matched one row: wait for the search's own row, not any single row.
        page.wait_for_function("document.querySelector('#rows tbody tr td:nth-child(2)')?.textContent === '7'")
        assert page.inner_text("#page-info") == "1-1 of 1"


def test_two_runs_side_by_side(page, tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [rollout_row(t, r, 1.0) for t in range(3) for r in range(2)])
    b = write_rows(
        tmp_path / "b.jsonl", [rollout_row(t, r, 0.0 if t == 2 else 1.0) for t in range(3) for r in range(2)]
    )
    with viewer(f"+jsonl_fpath={a}", f"+compare_jsonl_fpath={b}") as url:
        page.goto(url)
        page.click("nav button[data-tab=compare]")
        page.wait_for_selector("#compare-rows tbody tr")
        first = page.locator("#compare-rows tbody tr").first
        assert first.locator("td").nth(0).inner_text() == "2" and first.locator("td").nth(3).inner_text() == "-1.000"
        assert "1 worse" in page.inner_text("#compare-summary")
        first.click()
        page.locator("#compare-b .item.function_call").first.wait_for()
        assert "reward 0.000" in page.inner_text("#compare-b .meta")
        assert "reward 1.000" in page.inner_text("#compare-a .meta")
        assert page.locator("#delta-chart rect.bar.negative").count() == 1


def test_failures_tab_lists_the_failures_file(page, tmp_path):
    path = write_rows(tmp_path / "run.jsonl", [rollout_row(0, 0, 1.0)])
    write_rows(
        tmp_path / "run_failures.jsonl",
        [
            {
                "_ng_task_index": 1,
                "_ng_rollout_index": 0,
                "error_type": "ServerUnreachableError",
                "message": "cannot connect to policy_model",
                "status_code": None,
                "attempts": 3,
            }
        ],
    )
    with viewer(f"+jsonl_fpath={path}") as url:
        page.goto(url)
        page.wait_for_selector("#rows tbody tr")
        page.wait_for_function("document.querySelector('#failure-count').textContent === '(1)'")
        page.click("nav button[data-tab=failures]")
        page.wait_for_selector("#failure-rows tbody tr")
        assert "cannot connect to policy_model" in page.inner_text("#failure-rows")
        assert "ServerUnreachableError" in page.inner_text("#failure-types")


def test_a_stopped_viewer_server_is_said_on_the_page_not_raised(page, tmp_path):
    path = write_rows(tmp_path / "run.jsonl", [rollout_row(0, 0, 1.0)])
    with viewer(f"+jsonl_fpath={path}") as url:
        page.goto(url)
        page.wait_for_selector("#rows tbody tr")
    # The page polls every 3 s; the fixture fails the test if a poll raised instead of reporting.
    page.wait_for_function(
        "document.querySelector('#status').textContent.startsWith('cannot reach the viewer server')", timeout=15_000
    )


def test_clicks_after_the_viewer_server_stopped_are_said_on_the_page_not_raised(page, tmp_path):
    # A sort, a filter and a row click each start a load of their own; a stopped server must turn each
    # into a line in the status bar, not an unhandled "Failed to fetch" (the fixture fails on one).
    path = write_rows(tmp_path / "run.jsonl", [rollout_row(t, 0, 1.0) for t in range(3)])
    with viewer(f"+jsonl_fpath={path}") as url:
        page.goto(url)
        page.wait_for_selector("#rows tbody tr")
    for action in (
        lambda: page.click("#rows th[data-sort=reward]"),
        lambda: page.fill("#q", "City1"),
        lambda: page.click("#rows tbody tr"),
    ):
        page.evaluate("document.querySelector('#status').textContent = ''")
        action()
        page.wait_for_function(
            "document.querySelector('#status').textContent.startsWith('cannot reach the viewer server')",
            timeout=5_000,
        )
