"""math_with_judge, math_with_code and code_gen end to end: one `ng_run` stack, a scripted upstream,
`ng_collect_rollouts` per environment, rewards checked row by row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from tests.conftest import cli

pytestmark = pytest.mark.slow

ENVIRONMENTS = ("math_with_judge", "math_with_code", "code_gen")
CONFIGS = (
    ",".join(f"resources_servers/{env}/configs/{env}.yaml" for env in ENVIRONMENTS)
    + ",responses_api_models/openai_model/configs/openai_model.yaml"
)

# What the scripted model answers, keyed by a phrase of the task's user message. One task per
# environment is answered wrongly, so the rewards prove the verifier discriminates.
MATH_ANSWERS = {
    "interior angles of a hexagon": "The angles sum to (6-2)*180 = \\boxed{720}.",
    "exactly two heads": "There are 3 of 8 outcomes: \\boxed{0.375}",
    "x^2 - 5x + 6": "The roots are 2 and 3, so \\boxed{2}.",
    "sqrt{50}": "\\boxed{\\sqrt{50}}",  # unsimplified but equal: math-verify accepts it
    "12 \\times 13": "\\boxed{146}",  # wrong
}
MATH_CODE = {
    "multiples of 3 or 5": "sum(i for i in range(1000) if i % 3 == 0 or i % 5 == 0)",
    "prime numbers": "primes = [n for n in range(2, 101) if all(n % d for d in range(2, n))]\nlen(primes)",
    "7^2024": "pow(7, 2024, 13)",
    "Fibonacci": "a, b = 1, 1\nfor _ in range(18):\n    a, b = b, a + b\nb",
    "digits of 2^100": "sum(int(d) for d in str(2 ** 99))",  # wrong: off by one power
}
PROGRAMS = {
    "print their sum": "a, b = map(int, input().split())\nprint(a + b)",
    "print it reversed": "print(input()[::-1])",
    "largest of them": "input()\nprint(max(map(int, input().split())))",
    "is_palindrome": "def is_palindrome(s):\n    return s.lower() == s.lower()[::-1]",
    "two_sum": "def two_sum(nums, target):\n    return [0, 1]",  # wrong on the second test
}


def _user_text(body: dict[str, Any]) -> str:
    for item in body["input"]:
        if item.get("role") == "user":
            content = item["content"]
            return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)
    return ""


def _pick(table: dict[str, str], text: str) -> str:
    return next(value for key, value in table.items() if key in text)


def script(body: dict[str, Any]) -> Turn:
    question = _user_text(body)
    tool_results = [item["output"] for item in body["input"] if item.get("type") == "function_call_output"]
    if any(tool.get("name") == "execute_python" for tool in body.get("tools") or []):
        if not tool_results:
            return Turn(tool_calls=[("execute_python", json.dumps({"code": _pick(MATH_CODE, question)}))])
        return Turn(text=f"The code printed it: \\boxed{{{json.loads(tool_results[-1])['stdout'].strip()}}}")
    if "programming problem" in question:
        return Turn(text=f"```python\n{_pick(PROGRAMS, question)}\n```")
    return Turn(text=_pick(MATH_ANSWERS, question))


def Stack(*overrides: str) -> NgRunProcess:
    return NgRunProcess(CONFIGS, *overrides)


def collect(env: str, head_port: int, output: Path) -> list[dict[str, Any]]:
    result = cli(
        "ng_collect_rollouts",
        f"+agent_name={env}_simple_agent",
        f"+input_jsonl_fpath=resources_servers/{env}/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        "+num_samples_in_parallel=5",
        f"+head_server.port={head_port}",
    )
    assert result.returncode == 0, result.stderr
    assert "5/5" in result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    return sorted(rows, key=lambda row: row["_ng_task_index"])


def test_three_environments_collect_scored_rollouts_through_ng_run(head_port, tmp_path):
    with ScriptedOpenAI(script) as upstream:
        stack = Stack(
            f"+head_server.port={head_port}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=sk-test",
            "+policy_model_name=scripted-model",
        )
        try:
            stack.wait_ready()

            math = collect("math_with_judge", head_port, tmp_path / "math.jsonl")
            assert [row["reward"] for row in math] == [1.0, 1.0, 1.0, 1.0, 0.0]
            assert [row["library_reward"] for row in math] == [1.0, 1.0, 1.0, 1.0, 0.0]
            assert math[4]["expected_answer"] == "156" and math[4]["extracted_answer"] == "146"
            assert all(row["judge_evaluations"] is None for row in math)

            code_math = collect("math_with_code", head_port, tmp_path / "math_code.jsonl")
            assert [row["reward"] for row in code_math] == [1.0, 1.0, 1.0, 1.0, 0.0]
            assert code_math[4]["expected_result"] == "115" and code_math[4]["extracted_result"] == "107"
            for row in code_math:
                kinds = [item["type"] for item in row["response"]["output"]]
                assert kinds == ["function_call", "function_call_output", "message"]
                tool_output = json.loads(row["response"]["output"][1]["output"])
                assert tool_output["error"] is None and tool_output["stdout"].strip() == row["extracted_result"]

            programs = collect("code_gen", head_port, tmp_path / "code.jsonl")
            assert [row["reward"] for row in programs] == [1.0, 1.0, 1.0, 1.0, 0.0]
            assert [row["num_passed"] for row in programs] == [3, 3, 3, 3, 2]
            assert programs[4]["error"] == "test 2: expected [1, 2], got [0, 1]"
        finally:
            stack.stop()
    assert stack.process.returncode == 0
