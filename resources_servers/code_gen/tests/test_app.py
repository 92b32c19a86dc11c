"""code_gen over real HTTP: code extraction, both unit-test styles in the real sandbox, and hostile code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from resources_servers.code_gen.app import CodeGenConfig, CodeGenServer, extract_code

SUM_TESTS = {"inputs": ["1 2\n", "-5 5\n"], "outputs": ["3\n", "0\n"]}
TWO_SUM_TESTS = {"inputs": ["[2, 7, 11, 15]\n9", "[3, 2, 4]\n6"], "outputs": ["[0, 1]", "[1, 2]"], "fn_name": "two_sum"}


@pytest.fixture(scope="module")
def url():
    port = free_port()
    server = CodeGenServer(
        config=CodeGenConfig(name="code_gen", port=port, unit_test_timeout_s=3), server_client=registry_client({})
    )
    with ThreadedServer(server.setup_webserver(), port=port) as running:
        yield running.url


def fenced(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n```{lang}\n{code}\n```\nIt reads the input and prints the answer."


def assistant(*texts: str) -> dict[str, Any]:
    return {
        "id": "resp_test",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "id": f"msg_{i}",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
            for i, text in enumerate(texts)
        ],
    }


def verify(url: str, response: dict[str, Any], tests: dict[str, Any] = SUM_TESTS) -> dict[str, Any]:
    row = {
        "responses_create_params": {"input": "task"},
        "verifier_metadata": {"unit_tests": tests},
        "response": response,
    }
    reply = httpx.post(f"{url}/verify", json=row, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def assert_still_serving(url: str) -> None:
    assert httpx.get(f"{url}/health").status_code == 200
    row = verify(url, assistant(fenced("a, b = map(int, input().split())\nprint(a + b)")))
    assert row["reward"] == 1.0


# ---- correct, wrong, malformed, empty ---------------------------------------------------------------


def test_correct_stdin_program_scores_one(url):
    row = verify(url, assistant(fenced("import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)")))
    assert (row["reward"], row["num_tests"], row["num_passed"], row["error"]) == (1.0, 2, 2, None)
    assert row["verifier_metadata"]["unit_tests"]["inputs"] == SUM_TESTS["inputs"]  # the task travels into the row


def test_correct_function_and_solution_class_score_one(url):
    function = (
        "def two_sum(nums, target):\n    seen = {}\n    for i, n in enumerate(nums):\n"
        "        if target - n in seen:\n            return [seen[target - n], i]\n        seen[n] = i"
    )
    assert verify(url, assistant(fenced(function)), TWO_SUM_TESTS)["reward"] == 1.0
    method = (
        "class Solution:\n    def two_sum(self, nums, target):\n        return next([i, j] for i in range(len(nums))"
        " for j in range(i + 1, len(nums)) if nums[i] + nums[j] == target)"
    )
    assert verify(url, assistant(fenced(method)), TWO_SUM_TESTS)["reward"] == 1.0


def test_function_arguments_may_be_a_list_and_tuples_equal_lists(url):
    tests = {"inputs": [[[1, 2], 3]], "outputs": [[1, 2, 3]], "fn_name": "append"}
    row = verify(url, assistant(fenced("def append(xs, x):\n    return tuple(xs) + (x,)")), tests)
    assert row["reward"] == 1.0


def test_wrong_output_scores_zero_and_names_the_first_failing_test(url):
    row = verify(url, assistant(fenced("a, b = map(int, input().split())\nprint(a - b)")))
    assert (row["reward"], row["num_passed"]) == (0.0, 0)
    assert row["error"] == "test 1: expected '3', got '-1'"


def test_partially_right_function_scores_zero_with_the_count_of_passes(url):
    row = verify(url, assistant(fenced("def two_sum(nums, target):\n    return [0, 1]")), TWO_SUM_TESTS)
    assert (row["reward"], row["num_tests"], row["num_passed"]) == (0.0, 2, 1)
    assert row["error"] == "test 2: expected [1, 2], got [0, 1]"


def test_an_exception_is_named(url):
    row = verify(url, assistant(fenced("def two_sum(nums, target):\n    return nums[99]")), TWO_SUM_TESTS)
    assert row["reward"] == 0.0 and "IndexError: list index out of range" in row["error"]


def test_missing_function_is_named(url):
    row = verify(url, assistant(fenced("def twosum(nums, target):\n    return [0, 1]")), TWO_SUM_TESTS)
    assert row["reward"] == 0.0 and "two_sum" in row["error"] and "NameError" in row["error"]


@pytest.mark.parametrize(
    "response, error",
    [
        (assistant("print(3)"), "no code block"),  # code without a fence
        (assistant(fenced("a, b = map(int, input().split(\nprint(a + b)")), "SyntaxError"),
        (assistant(""), "no code block"),
        ({"id": "resp_empty", "output": []}, "no code block"),
    ],
)
def test_malformed_or_empty_answers_score_zero(url, response, error):
    row = verify(url, response)
    assert row["reward"] == 0.0 and row["num_passed"] == 0 and error in row["error"]


def test_only_the_final_message_and_its_last_python_fence_count(url):
    right = "a, b = map(int, input().split())\nprint(a + b)"
    text = fenced("print('draft')") + "\n" + fenced(right) + "\n```text\nexample output: 3\n```"
    assert verify(url, assistant(text))["reward"] == 1.0
    assert verify(url, assistant(fenced(right), "Hope that helps!"))["reward"] == 0.0  # final message has no code
    assert verify(url, assistant(fenced(right, lang="")))["reward"] == 1.0  # any fence when none says python


def test_extract_code_rules():
    assert extract_code("```py\nx = 1\n```") == "x = 1\n"
    assert extract_code("```python\na\n```\n```bash\nls\n```") == "a\n"
    assert extract_code("```js\nx\n```\n```\ny\n```") == "y\n"
    assert extract_code("no fence") is None and extract_code("```python\nunclosed") is None


def test_a_task_with_unpaired_tests_is_rejected(url):
    row = {
        "responses_create_params": {"input": "task"},
        "response": assistant(fenced("print(1)")),
        "verifier_metadata": {"unit_tests": {"inputs": ["1"], "outputs": []}},
    }
    reply = httpx.post(f"{url}/verify", json=row, timeout=30)
    assert reply.status_code == 422 and "1 inputs but 0 outputs" in reply.text


# ---- safety: hostile code stays in the sandbox, the server keeps serving -----------------------------


def test_infinite_loop_times_out(url):
    row = verify(url, assistant(fenced("while True:\n    pass")))
    assert row["reward"] == 0.0 and row["error"] == "test 1: timed out after 3 s"
    assert_still_serving(url)


def test_memory_bomb_is_refused(url):
    row = verify(url, assistant(fenced("hog = bytearray(8 * 1024 ** 3)")))
    assert row["reward"] == 0.0 and "MemoryError" in row["error"]
    assert_still_serving(url)


def test_fork_bomb_is_contained(url):
    row = verify(url, assistant(fenced("import os\nwhile True:\n    os.fork()")))
    assert row["reward"] == 0.0
    assert "BlockingIOError" in row["error"] or "timed out" in row["error"] or "killed" in row["error"], row["error"]
    assert_still_serving(url)


def test_writing_outside_the_work_dir_is_refused(url, tmp_path):
    targets = [str(tmp_path / "escaped.txt"), "/etc/escaped.txt", "/root/escaped.txt"]
    code = (
        f"for path in {targets!r}:\n    try:\n        open(path, 'w').write('pwned')\n        print('wrote', path)\n"
        "    except OSError as error:\n        print(type(error).__name__)"
    )
    row = verify(url, assistant(fenced(code)), {"inputs": [""], "outputs": ["wrote"]})
    got = row["error"].split(", got ", 1)[1]
    assert row["reward"] == 0.0 and "PermissionError" in got and "wrote" not in got
    assert not any(os.path.exists(path) for path in targets)
    assert_still_serving(url)


def test_secrets_in_the_server_environment_are_invisible(url, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    code = "import os\nprint(os.environ.get('OPENAI_API_KEY'))"
    row = verify(url, assistant(fenced(code)), {"inputs": [""], "outputs": ["sk-secret"]})
    assert row["reward"] == 0.0 and row["error"] == "test 1: expected 'sk-secret', got 'None'"
    assert_still_serving(url)


def test_network_is_refused(url):
    code = "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=2)\nprint('connected')"
    row = verify(url, assistant(fenced(code)), {"inputs": [""], "outputs": ["connected"]})
    assert row["reward"] == 0.0 and "OSError" in row["error"] and "network" in row["error"]
    assert_still_serving(url)


def test_the_tested_code_cannot_see_the_expected_outputs(url):
    # A solution that hunts for the answers in its own process, its parent, its files and its stdin.
    code = """\
import gc, glob, os, sys
needle = 'needle-' + str(4000 + 242)  # never spelled out, so this source file does not match itself
found = []
for obj in gc.get_objects():
    if isinstance(obj, dict) and 'outputs' in obj:
        found.append(obj['outputs'])
for name in glob.glob('*') + glob.glob('/proc/%d/*' % os.getppid()):
    try:
        text = open(name, errors='ignore').read()
    except OSError:
        continue
    if needle in text:
        found.append(name)
print(needle if found else 'not found ' + sys.stdin.read())
"""
    row = verify(url, assistant(fenced(code)), {"inputs": ["x"], "outputs": ["needle-4242"]})
    assert row["reward"] == 0.0 and row["error"] == "test 1: expected 'needle-4242', got 'not found x'"


def test_example_tasks_are_well_formed():
    path = Path(__file__).parents[1] / "data" / "example.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        tests = row["verifier_metadata"]["unit_tests"]
        assert len(tests["inputs"]) == len(tests["outputs"]) >= 2
