"""Writing an environment, as a new user does it: scaffold -> ng_test -> collect 5 rollouts -> ng_test passes
-> the rollouts in ng_viewer (headless Chromium).

The scaffold, the first ng_test and the collection run in the `authored_environment` fixture
(tests/e2e/conftest.py), as real commands against a scripted upstream; these tests check what
they left behind, and what a dead upstream looks like on the console.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_gym.aio import run_async
from nemo_gym.rollouts import CollectionSpec, collect_to_file
from nemo_gym.rollouts.quality import format_quality_summary
from nemo_gym.scaffold import collect_example_rollouts_command
from nemo_gym.testing import NgRunProcess, ScriptedOpenAI, free_port
from tests.conftest import PROJECT_ROOT, child_env
from tests.e2e.conftest import (
    ENV_NAME,
    OPENAI_MODEL_CONFIG,
    collect,
    measure_then_answer,
    python_module,
    scratch_project,
)

pytestmark = pytest.mark.slow


def test_scaffold_check_collect_then_check_again(authored_environment):
    env = authored_environment
    rows = [json.loads(line) for line in env.rollouts.read_text().splitlines()]
    assert len(rows) == 5
    assert sorted(row["_ng_task_index"] for row in rows) == [0, 1, 2, 3, 4]
    # The tool ran on the model's arguments and verify scored the task field: every answer is right.
    assert [row["reward"] for row in rows] == [1.0] * 5
    assert {row["extracted_answer"] == row["expected_answer"] for row in rows} == {True}
    assert all(item["type"] == "function_call" for row in rows for item in row["response"]["output"][:1])

    # The quality report is written beside the rows (not in the environment's folder) and summarised.
    quality = json.loads(env.rollouts.with_name(f"{env.name}_example_rollouts_quality.json").read_text())
    assert quality["num_rows"] == 5 and quality["tool_error_rate"] == 0.0
    assert "Quality:" in env.collect_stderr

    assert sorted(path.name for path in (env.folder / "data").iterdir()) == ["example.jsonl", "example_rollouts.jsonl"]

    # The command copied those rows into the environment as its example rollouts: ng_test passes outright.
    (env.folder / "data" / "example_rollouts.jsonl").write_text(env.rollouts.read_text())
    checked = python_module("nemo_gym.cli.env_test", f"+entrypoint=resources_servers/{env.name}", cwd=env.project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "data ok" in checked.stdout


def test_example_rollouts_copied_from_another_environment_fail_with_a_clear_line(authored_environment):
    env = authored_environment
    copied = PROJECT_ROOT / "resources_servers" / "example_single_tool_call" / "data" / "example_rollouts.jsonl"
    (env.folder / "data" / "example_rollouts.jsonl").write_text(copied.read_text())
    checked = python_module("nemo_gym.cli.env_test", f"+entrypoint=resources_servers/{env.name}", cwd=env.project)
    assert checked.returncode == 2
    assert "was the file copied from another environment?" in checked.stderr
    assert collect_example_rollouts_command(env.name) in checked.stderr


def test_a_dead_upstream_is_named_on_the_console(tmp_path):
    project = scratch_project(tmp_path / "project")
    assert (
        python_module(
            "nemo_gym.cli.init_resources_server", f"+entrypoint=resources_servers/{ENV_NAME}", cwd=project
        ).returncode
        == 0
    )
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    output = tmp_path / "dead.jsonl"
    result = collect(project, ENV_NAME, output, dead, "+max_attempts=1")
    assert result.returncode == 1
    # Not just "0 tasks": the console names the refused connection, three JSON levels down in the failures file.
    assert re.search(
        r"failed: 5 x ServerUnreachableError \(HTTP 502\): cannot connect to " + re.escape(dead), result.stderr
    ), result.stderr
    assert "is the model (or its upstream, policy_base_url) running?" in result.stderr
    report = json.loads(output.with_name("dead_quality.json").read_text())
    assert report["failures_by_type"][0]["error_type"] == "ServerUnreachableError"


CHROMIUM = "/usr/bin/chromium"


def test_the_collected_rollouts_open_in_the_viewer(authored_environment):
    """The last step of the loop: the 5 rows in ng_viewer, in a real headless Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (apt-get install -y chromium)")
    env = authored_environment
    rows = [json.loads(line) for line in env.rollouts.read_text().splitlines()]
    process = subprocess.Popen(
        [sys.executable, "-m", "nemo_gym.cli.viewer", f"+jsonl_fpath={env.rollouts}", "+port=0"],
        cwd=env.project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
    )
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, f"ng_viewer printed no URL: {line}"
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url.group(0))
            page.wait_for_selector("#rows tbody tr")
            assert page.locator("#rows tbody tr").count() == 5
            first = page.locator("#rows tbody tr").first
            first.click()
            call = page.locator("#detail .item.function_call").first
            call.wait_for()
            shown = rows[int(first.get_attribute("data-row"))]
            assert call.locator(".tool-name").inner_text() == "get_word_length"
            stored = next(item for item in shown["response"]["output"] if item["type"] == "function_call")
            assert json.loads(call.locator(".arguments").inner_text()) == json.loads(stored["arguments"])
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_python_api_writes_the_quality_report_too(authored_environment, tmp_path):
    """collect_to_file (what an RL trainer calls) ends with the same report: here every task got 1.0
    twice, so the report says there is no GRPO signal in any of them."""
    env = authored_environment
    head_port = free_port()
    configs = [f"resources_servers/{env.name}/configs/{env.name}.yaml", OPENAI_MODEL_CONFIG]
    spec = CollectionSpec(
        agent_name=f"{env.name}_simple_agent",
        input_jsonl_fpath=str(env.folder / "data" / "example.jsonl"),
        num_repeats=2,
    )
    with ScriptedOpenAI(measure_then_answer) as upstream:
        overrides = [f"+head_server.port={head_port}", f"+policy_base_url={upstream.url}", "+policy_api_key=sk-test"]
        with NgRunProcess(configs, *overrides, "+policy_model_name=scripted-model", cwd=env.project):
            report = run_async(collect_to_file(f"http://127.0.0.1:{head_port}", spec, tmp_path / "api.jsonl"))
    assert report.complete and report.quality is not None
    assert report.quality_path == tmp_path / "api_quality.json" and report.quality_path.exists()
    constant = report.quality.check("constant_reward_tasks")
    assert (constant.status, constant.count, constant.total) == ("warn", 5, 5)
    assert "no GRPO signal" in format_quality_summary(report.quality)
