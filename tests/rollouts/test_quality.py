"""The quality report: each check on hand-made rows, the nested-error unwrapping, the files and the console."""

from __future__ import annotations

import json
import tracemalloc

import orjson
import pytest

from nemo_gym.rollouts.quality import (
    QualityAccumulator,
    build_quality_report,
    episode_end,
    format_quality_summary,
    quality_report_path,
    report_collection_quality,
    root_cause,
)

TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


def answer(text: str) -> dict:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def call() -> dict:
    return {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}


def tool_output(text: str) -> dict:
    return {"type": "function_call_output", "call_id": "c1", "output": text}


def row(task: int, rollout: int, reward: float = 1.0, output: list | None = None, **extra) -> dict:
    response = {
        "output": [call(), tool_output('{"weather": "cold"}'), answer("cold")] if output is None else output,
        "usage": dict(USAGE),
        "status": "completed",
    }
    response.update(extra.pop("response", {}))
    return {
        "responses_create_params": {"input": f"task {task}", "tools": TOOLS},
        "response": response,
        "reward": reward,
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        **extra,
    }


def report_of(rows: list[dict], failures: list[dict] = (), **kwargs):
    accumulator = QualityAccumulator(**kwargs)
    for item in rows:
        accumulator.add_row(item)
    for record in failures:
        accumulator.add_failure(record)
    return accumulator.report("rows.jsonl", "rows_failures.jsonl")


# --- root causes ---------------------------------------------------------------------------------

NESTED_502 = "http://127.0.0.1:44633/run answered HTTP 502: " + json.dumps(
    {
        "error": {
            "type": "HTTPStatusError",
            "message": "http://127.0.0.1:36753/v1/responses answered HTTP 502: "
            + json.dumps(
                {
                    "error": {
                        "type": "ServerUnreachableError",
                        "message": "cannot connect to http://127.0.0.1:9/v1/responses: [Errno 111] Connect call failed",
                    }
                }
            ),
        }
    }
)


def test_root_cause_unwraps_every_server_layer_to_the_refused_connection():
    error_type, message, status = root_cause("HTTPStatusError", NESTED_502, 502)
    assert error_type == "ServerUnreachableError"
    assert message == "cannot connect to http://127.0.0.1:9/v1/responses: [Errno 111] Connect call failed"
    assert status == 502


PLAIN_502 = (
    "http://127.0.0.1:44633/run answered HTTP 502: http://127.0.0.1:36753/v1/responses answered HTTP 502: "
    "cannot connect to http://127.0.0.1:9/v1/responses: [Errno 111] Connect call failed (after 5 attempts)"
)


def test_root_cause_reads_errors_relayed_as_text_and_names_the_refused_connection():
    error_type, message, status = root_cause("HTTPStatusError", PLAIN_502, 502)
    assert error_type == "ServerUnreachableError" and status == 502
    assert message.startswith("cannot connect to http://127.0.0.1:9/v1/responses")
    timed_out = "http://a/run answered HTTP 502: POST http://b/v1/responses timed out (TimeoutError)"
    assert root_cause("HTTPStatusError", timed_out, 502)[0] == "RequestTimeoutError"
    stalled = (
        "http://a/run answered HTTP 502: http://m/v1/responses answered HTTP 502: model server 'policy_model': "
        "upstream POST http://u/v1/responses timed out: no byte for 120 s after the first 7 bytes of the answer "
        "(read idle timeout) (after 5 attempts)"
    )
    assert root_cause("HTTPStatusError", stalled, 502)[0] == "RequestTimeoutError"
    too_large = (
        "http://a/run answered HTTP 424: http://m/v1/responses answered HTTP 424: model server 'policy_model': "
        "upstream POST http://u/v1/responses: the answer is over the 64 MiB response cap; stopped reading at "
        "67174400 bytes (max_upstream_response_bytes=67108864)"
    )
    assert root_cause("HTTPStatusError", too_large, 424)[:1] == ("ResponseTooLargeError",)
    key = "http://a/run answered HTTP 502: model server 'policy_model': upstream http://u/v1 answered HTTP 401: bad key"
    assert root_cause("HTTPStatusError", key, 502) == ("HTTPStatusError", "bad key", 401)


def test_root_cause_leaves_a_plain_message_alone():
    assert root_cause("TimeoutError", "rollout exceeded rollout_timeout_s=5", None) == (
        "TimeoutError",
        "rollout exceeded rollout_timeout_s=5",
        None,
    )
    # A body that is not JSON stops the unwrapping at the last readable layer.
    assert root_cause("HTTPStatusError", "x answered HTTP 500: <html>oops</html>", 500)[1].endswith("<html>oops</html>")


# --- checks over rows ------------------------------------------------------------------------------


def test_a_clean_run_passes_every_check():
    rows = [row(task, rollout, reward=float(rollout)) for task in range(3) for rollout in range(2)]
    report = report_of(rows, num_tasks=3, num_repeats=2)
    assert report.findings == []
    assert report.num_rows == 6 and report.num_tasks == 3 and report.tool_error_rate == 0.0
    assert report.episode_ends == {"completed": 6}
    assert [task.std > 0 for task in report.per_task] == [True, True, True]
    assert format_quality_summary(report).startswith("Quality: all 18 checks passed")


@pytest.mark.parametrize("nested", [NESTED_502, PLAIN_502], ids=["json-bodies", "plain-text"])
def test_failures_are_grouped_by_root_cause_with_the_most_common_message(nested):
    failures = [
        {
            "_ng_task_index": t,
            "_ng_rollout_index": 0,
            "error_type": "HTTPStatusError",
            "message": nested,
            "status_code": 502,
        }
        for t in range(3)
    ]
    failures.append(
        {
            "_ng_task_index": 3,
            "_ng_rollout_index": 0,
            "error_type": "TimeoutError",
            "message": "rollout exceeded rollout_timeout_s=5",
        }
    )
    report = report_of([], failures, num_tasks=4, num_repeats=1)
    top = report.failures_by_type[0]
    assert (top.error_type, top.count, top.most_common_count) == ("ServerUnreachableError", 3, 3)
    assert "Connect call failed" in top.most_common_message and "is the model" in top.hint
    assert report.check("failed_rollouts").status == "fail"  # not a single row: the run is unusable
    assert report.check("tasks_all_failed").count == 4
    assert report.check("missing_rollouts").count == 4
    summary = format_quality_summary(report)
    assert "failed: 3 x ServerUnreachableError (HTTP 502): cannot connect to http://127.0.0.1:9/v1/responses" in summary
    assert "failed: 1 x TimeoutError" in summary


def test_duplicate_rows_and_missing_pairs_are_counted():
    rows = [row(0, 0), row(0, 0), row(1, 0)]
    report = report_of(rows, num_tasks=2, num_repeats=2)
    duplicate = report.check("duplicate_rows")
    assert (duplicate.status, duplicate.count) == ("fail", 1)
    assert duplicate.examples[0].task_index == 0 and duplicate.examples[0].rollout_index == 0
    assert report.check("missing_rollouts").count == 2  # (0, 1) and (1, 1)


def test_empty_answers_cut_offs_and_episode_ends():
    rows = [
        row(0, 0, output=[call(), tool_output("{}"), answer("   ")]),  # empty final answer
        row(1, 0, output=[call(), tool_output("{}")]),  # stopped before the model read the tool result
        row(
            2,
            0,
            output=[answer("half a")],
            response={"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
        ),
        row(3, 0, output=[answer("late")], episode_end="deadline"),
        row(4, 0, output=[]),
    ]
    report = report_of(rows)
    assert report.check("empty_final_answer").count == 3  # tasks 0, 1 and 4
    assert report.check("cut_off_max_steps").count == 1
    assert report.check("cut_off_token_limit").count == 1
    assert report.check("cut_off_deadline").count == 1
    assert report.check("no_model_output").count == 1
    assert report.episode_ends == {"completed": 2, "max_steps": 1, "max_output_tokens": 1, "deadline": 1}


def test_an_agent_written_episode_end_wins_over_inference():
    assert episode_end({"episode_end": "max_steps", "response": {"output": [answer("x")]}}) == "max_steps"
    assert episode_end({"response": {"status": "incomplete", "incomplete_details": None}}) == "max_output_tokens"
    assert episode_end({"response": {"output": [answer("done")]}}) == "completed"


def test_tool_error_rate_and_tools_never_called():
    rows = [
        row(0, 0, output=[call(), tool_output('{"error": "Tool \'x\' is not available."}'), answer("sorry")]),
        row(
            1,
            0,
            output=[
                call(),
                tool_output('{"error": {"type": "ValidationError", "message": "city"}}'),
                call(),
                tool_output('{"city": "Oslo"}'),
                answer("ok"),
            ],
        ),
        row(2, 0, output=[answer("I will not use tools")]),
    ]
    report = report_of(rows)
    assert report.check("tool_errors").count == 2 and report.check("tool_errors").total == 3
    assert report.tool_error_rate == pytest.approx(2 / 3)
    assert report.check("tools_never_called").count == 1


def test_tasks_with_one_reward_on_every_rollout_have_no_grpo_signal():
    rows = [row(0, r, reward=1.0) for r in range(4)] + [row(1, r, reward=r / 3) for r in range(4)]
    report = report_of(rows)
    constant = report.check("constant_reward_tasks")
    assert (constant.status, constant.count, constant.total) == ("warn", 1, 2)
    assert [ref.task_index for ref in constant.examples] == [0]
    spread = {task.task_index: task for task in report.per_task}
    assert spread[0].std == 0.0 and spread[1].min == 0.0 and spread[1].max == 1.0


def test_constant_reward_is_skipped_with_one_rollout_per_task():
    assert report_of([row(0, 0), row(1, 0)]).check("constant_reward_tasks").status == "skipped"


def test_rewards_and_usage_that_break_the_contract():
    rows = [row(0, 0, reward=2.0), row(1, 0, reward=None), row(2, 0, response={"usage": {"input_tokens": 1}})]
    report = report_of(rows)
    assert report.check("reward_out_of_range").count == 1
    assert report.check("missing_reward").status == "fail"
    assert report.check("usage_inconsistent").count == 1


# --- files ---------------------------------------------------------------------------------------


def test_report_from_files_counts_unreadable_lines_and_writes_beside_the_output(tmp_path, capsys):
    output = tmp_path / "run.jsonl"
    output.write_bytes(orjson.dumps(row(0, 0)) + b"\n{torn\n" + orjson.dumps(row(1, 0)) + b"\n")
    (tmp_path / "run_failures.jsonl").write_text(
        json.dumps(
            {
                "_ng_task_index": 2,
                "_ng_rollout_index": 0,
                "error_type": "HTTPStatusError",
                "message": NESTED_502,
                "status_code": 502,
            }
        )
        + "\n"
    )
    report = report_collection_quality(output, num_tasks=3, num_repeats=1)
    assert quality_report_path(output) == tmp_path / "run_quality.json"
    saved = json.loads((tmp_path / "run_quality.json").read_text())
    assert saved["schema_version"] == 1 and saved["num_rows"] == 2 and saved["num_failures"] == 1
    unreadable = next(check for check in saved["checks"] if check["id"] == "unreadable_rows")
    assert unreadable["count"] == 1 and unreadable["examples"][0]["line"] == 2
    assert report.check("failed_rollouts").status == "warn"
    printed = capsys.readouterr().err
    assert "ServerUnreachableError" in printed and str(tmp_path / "run_quality.json") in printed


def test_memory_stays_flat_while_streaming_many_rows(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("wb") as handle:
        for index in range(6_000):
            handle.write(orjson.dumps(row(index // 4, index % 4, reward=(index % 3) / 2)) + b"\n")
    tracemalloc.start()
    report = build_quality_report(path, num_tasks=1500, num_repeats=4)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.num_rows == 6_000 and report.check("missing_rollouts").count == 0
    # Holding the rows would take more than the file (~2.5 MB); per-task summaries take a fraction of it.
    assert peak < path.stat().st_size


def test_a_tool_that_always_sends_an_error_key_is_an_error_only_when_it_is_filled(tmp_path, capsys):
    # A calculator that answers {"result": ..., "error": null} on success: 5 calls, the last one divides by zero.
    outputs = ['{"result": 10.0, "error": null}', '{"result": 3, "error": ""}', '{"result": 4, "error": {}}']
    outputs += ['{"result": 7, "error": false}', '{"result": null, "error": "division by zero"}']
    rows = [row(task, 0, output=[call(), tool_output(text), answer("done")]) for task, text in enumerate(outputs)]
    output = tmp_path / "calc.jsonl"
    output.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in rows))
    report = report_collection_quality(output, num_tasks=5, num_repeats=1)
    check = report.check("tool_errors")
    assert (check.count, check.total) == (1, 5)
    assert [(ref.task_index, ref.rollout_index) for ref in check.examples] == [(4, 0)]
    assert "tool_errors: 1 of 5 tool outputs are errors" in capsys.readouterr().err


def test_a_bare_fastapi_detail_body_is_a_tool_error_but_a_detail_field_beside_a_result_is_not():
    rows = [
        row(0, 0, output=[call(), tool_output('{"detail": "Not Found"}'), answer("x")]),
        row(1, 0, output=[call(), tool_output('{"detail": "sunny", "temp": 20}'), answer("x")]),
    ]
    assert report_of(rows).check("tool_errors").count == 1
