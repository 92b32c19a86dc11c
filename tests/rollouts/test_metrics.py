"""Aggregate metrics: pass@k, streaming stats and the end-of-run summary, checked by hand."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from nemo_gym.errors import InputDataError
from nemo_gym.rollouts.metrics import RunningStats, aggregate_rollouts, format_key_metrics, pass_at_k

approx = pytest.approx


# --- pass@k -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # pass@1 is simply c / n
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (5, 2, 4, 1.0),  # n - c = 3 < 4: every 4-subset holds a success
        (4, 0, 1, 0.0),
        (4, 0, 4, 0.0),
        (3, 3, 1, 1.0),
        (3, 3, 3, 1.0),
        (10, 1, 3, 0.3),  # 1 - C(9,3)/C(10,3) = 1 - 84/120
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == approx(expected)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 0), (3, 1, 4), (3, 1, -1), (3, 4, 1), (3, -1, 1), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_k_stays_exact_for_many_rollouts():
    # 1 - C(500, 100)/C(1000, 100) is within a hair of 1; no overflow, no NaN.
    value = pass_at_k(1000, 500, 100)
    assert math.isfinite(value) and 0.999 < value <= 1.0


# --- RunningStats -----------------------------------------------------------------------


def test_running_stats_agrees_with_statistics_module():
    rng = random.Random(7)
    values = [rng.uniform(-5, 5) for _ in range(500)] + [1e6 + rng.random() for _ in range(5)]
    stats = RunningStats()
    for v in values:
        stats.add(v)
    assert stats.count == len(values)
    assert stats.mean == approx(statistics.fmean(values), rel=1e-12)
    assert stats.std == approx(statistics.stdev(values), rel=1e-9)  # sample std, n - 1
    assert stats.min == min(values) and stats.max == max(values)


def test_running_stats_edge_cases():
    stats = RunningStats()
    assert stats.to_dict() == {"mean": None, "std": None, "min": None, "max": None, "count": 0}
    stats.add(True)  # bools count as 1
    assert stats.to_dict() == {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0, "count": 1}


# --- aggregate_rollouts on a hand-made collection ----------------------------------------


def _row(task, rollout, reward, accuracy, **extra):
    return {
        "responses_create_params": {"input": [{"role": "user", "content": f"task {task}"}]},
        "response": {
            "output": [],
            "usage": {
                "input_tokens": 100,
                "output_tokens": 10 * (rollout + 1),
                "total_tokens": 100 + 10 * (rollout + 1),
                "output_tokens_details": {"reasoning_tokens": 2},
            },
        },
        "reward": reward,
        "accuracy": accuracy,
        "label": "not a number",
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        "_ng_attempt_index": 5,
        "_private_score": 99.0,
        **extra,
    }


# Two tasks x three repeats, in a shuffled (completion) order.
#   task 0 rewards by rollout index: [1.0, 0.0, 1.0]   accuracy [True, False, True]
#   task 1 rewards by rollout index: [0.0, 0.5, 0.0]   accuracy [False, False, False]
HAND_ROWS = [
    _row(1, 2, 0.0, False),
    _row(0, 1, 0.0, False),
    _row(0, 0, 1.0, True),
    _row(1, 0, 0.0, False),
    _row(0, 2, 1.0, True),
    _row(1, 1, 0.5, False),
]


def test_aggregate_hand_made_collection():
    metrics = aggregate_rollouts(iter(HAND_ROWS), num_repeats=3, failures=1, wall_time_s=3.0)

    assert metrics["counts"] == {"tasks": 2, "rollouts": 6, "succeeded": 6, "failed": 1, "expected_rollouts": 6}

    # reward: 1,0,1,0,0.5,0 -> mean 2.5/6 = 5/12. Deviations from 5/12 in twelfths: 7,-5,7,-5,1,-5;
    # squares sum to 174/144; sample variance = (174/144)/5 = 174/720.
    assert metrics["fields"]["reward"] == approx(
        {"mean": 5 / 12, "std": math.sqrt(174 / 720), "min": 0.0, "max": 1.0, "count": 6}
    )
    # accuracy (bools as 0/1): 1,0,1,0,0,0 -> mean 1/3; squared deviations 4/9*2 + 1/9*4 = 4/3;
    # sample variance = (4/3)/5 = 4/15.
    assert metrics["fields"]["accuracy"] == approx(
        {"mean": 1 / 3, "std": math.sqrt(4 / 15), "min": 0.0, "max": 1.0, "count": 6}
    )
    # `_`-prefixed keys, strings and nested objects are not fields.
    assert set(metrics["fields"]) == {"reward", "accuracy"}

    # Successes (reward >= 1): task 0 has c=2 of n=3; task 1 has c=0 (0.5 is not a success).
    #   pass@1 = (2/3 + 0)/2 = 1/3
    #   pass@2 = (1 [n-c=1 < 2] + 0)/2 = 1/2
    #   pass@3 = (1 + 0)/2 = 1/2
    assert metrics["pass_at_k"] == approx({"pass@1": 1 / 3, "pass@2": 0.5, "pass@3": 0.5})
    # max of the first k: task 0 -> 1, 1, 1; task 1 -> 0, 0.5, 0.5.
    assert metrics["max_at_k"] == approx({"max@1": 0.5, "max@2": 0.75, "max@3": 0.75})
    # mean of the first k: task 0 -> 1, 1/2, 2/3; task 1 -> 0, 1/4, 1/6.
    #   mean@1 = 1/2, mean@2 = 3/8, mean@3 = (2/3 + 1/6)/2 = 5/12 (= the overall mean, complete tasks)
    assert metrics["mean_at_k"] == approx({"mean@1": 0.5, "mean@2": 0.375, "mean@3": 5 / 12})
    assert metrics["num_tasks_at_k"] == {"1": 2, "2": 2, "3": 2}

    # Per task, rewards are listed by rollout index whatever order the rows arrived in.
    task_0, task_1 = metrics["per_task"]
    assert task_0 == {
        "_ng_task_index": 0,
        "num_rollouts": 3,
        "mean_reward": approx(2 / 3),
        "rewards": [1.0, 0.0, 1.0],
        "pass@3": 1.0,
    }
    assert task_1 == {
        "_ng_task_index": 1,
        "num_rollouts": 3,
        "mean_reward": approx(1 / 6),
        "rewards": [0.0, 0.5, 0.0],
        "pass@3": 0.0,
    }

    # input 6 x 100; output per task 10+20+30 = 60, two tasks 120; total 720; reasoning 6 x 2.
    assert metrics["usage"] == {
        "input_tokens": 600,
        "output_tokens": 120,
        "total_tokens": 720,
        "output_tokens_details.reasoning_tokens": 12,
    }
    assert metrics["wall_time_s"] == 3.0
    assert metrics["rollouts_per_s"] == approx(2.0)  # 6 rows / 3 s

    assert metrics["key_metrics"] == approx(
        {
            "mean/reward": 5 / 12,
            "pass@1": 1 / 3,
            "pass@3": 0.5,
            "mean@3": 5 / 12,
            "rollouts": 6,
            "failed": 1,
            "rollouts_per_s": 2.0,
        }
    )
    json.dumps(metrics, allow_nan=False)  # what the CLI writes next to the output file


def test_aggregate_matches_the_spec_mean_over_rows():
    # NeMo Gym's printed metric is sum / len(rows) per numeric field; ours must agree.
    metrics = aggregate_rollouts(HAND_ROWS)
    for field in ("reward", "accuracy"):
        expected = sum(float(row[field]) for row in HAND_ROWS) / len(HAND_ROWS)
        assert metrics["fields"][field]["mean"] == approx(expected)


def test_missing_rows_exclude_short_tasks_from_larger_k():
    # task 0: rewards [1, 0, 1] (all 3 repeats); task 1: only rollout 1 survived, reward 1.
    rows = [
        {"reward": 1.0, "_ng_task_index": 0, "_ng_rollout_index": 0},
        {"reward": 0.0, "_ng_task_index": 0, "_ng_rollout_index": 1},
        {"reward": 1.0, "_ng_task_index": 0, "_ng_rollout_index": 2},
        {"reward": 1.0, "_ng_task_index": 1, "_ng_rollout_index": 1},
    ]
    metrics = aggregate_rollouts(rows, num_repeats=3, failures=2)
    assert metrics["counts"] == {"tasks": 2, "rollouts": 4, "succeeded": 4, "failed": 2, "expected_rollouts": 6}
    # pass@1 = (2/3 + 1/1)/2 = 5/6 over both tasks; k = 2, 3 use task 0 alone: 1 - C(1,k)/C(3,k) = 1.
    assert metrics["pass_at_k"] == approx({"pass@1": 5 / 6, "pass@2": 1.0, "pass@3": 1.0})
    assert metrics["num_tasks_at_k"] == {"1": 2, "2": 1, "3": 1}
    # mean@1 = (1 + 1)/2; mean@2 = task 0 only, (1 + 0)/2; mean@3 = 2/3.
    assert metrics["mean_at_k"] == approx({"mean@1": 1.0, "mean@2": 0.5, "mean@3": 2 / 3})
    assert metrics["per_task"][1] == {
        "_ng_task_index": 1,
        "num_rollouts": 1,
        "mean_reward": 1.0,
        "rewards": [1.0],
        "pass@3": None,
    }
    assert metrics["key_metrics"]["pass@3"] == approx(1.0)

    # Without num_repeats, the largest k is the fewest rollouts of any task (1 here).
    assert aggregate_rollouts(rows)["pass_at_k"] == approx({"pass@1": 5 / 6})


def test_empty_input_reports_zero_counts():
    metrics = aggregate_rollouts([], failures=3, wall_time_s=2.0)
    assert metrics["counts"] == {"tasks": 0, "rollouts": 0, "succeeded": 0, "failed": 3, "expected_rollouts": None}
    assert metrics["fields"] == {} and metrics["pass_at_k"] == {} and metrics["per_task"] == []
    assert metrics["usage"] == {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    assert metrics["rollouts_per_s"] == 0.0
    assert metrics["key_metrics"] == {
        "mean/reward": None,
        "pass@1": None,
        "rollouts": 0,
        "failed": 3,
        "rollouts_per_s": 0.0,
    }
    json.dumps(metrics, allow_nan=False)
    assert "0 succeeded, 3 failed" in format_key_metrics(metrics)

    with_repeats = aggregate_rollouts([], num_repeats=2)
    assert with_repeats["counts"]["expected_rollouts"] == 0
    assert with_repeats["pass_at_k"] == {"pass@1": None, "pass@2": None}
    assert "pass@2 n/a" in format_key_metrics(with_repeats)


def test_rows_without_usage_or_reward_or_rollout_index():
    rows = [
        {"_ng_task_index": 3, "reward": None, "response": {"usage": None}},  # reward defaults to 0.0
        {"_ng_task_index": 3, "reward": True},  # bool reward is 1.0; rollout index = arrival order
    ]
    metrics = aggregate_rollouts(rows)
    assert metrics["usage"] == {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    assert metrics["per_task"][0]["rewards"] == [0.0, 1.0]
    assert metrics["pass_at_k"] == approx({"pass@1": 0.5, "pass@2": 1.0})
    assert metrics["rollouts_per_s"] is None


def test_non_finite_extras_are_skipped_not_averaged():
    rows = [
        {"_ng_task_index": 0, "reward": 1.0, "score": float("nan")},
        {"_ng_task_index": 0, "reward": 0.0, "score": 0.25},
    ]
    assert aggregate_rollouts(rows)["fields"]["score"] == approx(
        {"mean": 0.25, "std": 0.0, "min": 0.25, "max": 0.25, "count": 1}
    )


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"reward": 1.0}, "_ng_task_index"),
        ({"reward": 1.0, "_ng_task_index": "0"}, "_ng_task_index"),
        ({"reward": "high", "_ng_task_index": 0}, "reward"),
        ({"reward": float("nan"), "_ng_task_index": 0}, "reward"),
        ({"reward": 1.0, "_ng_task_index": 0, "_ng_rollout_index": None}, "_ng_rollout_index"),
    ],
)
def test_malformed_rows_name_the_row_and_field(row, field):
    with pytest.raises(InputDataError) as error:
        aggregate_rollouts([{"reward": 0.0, "_ng_task_index": 0}, row])
    assert error.value.field == field
    assert "row 2" in str(error.value)


def test_format_key_metrics_prints_the_headline_numbers():
    text = format_key_metrics(aggregate_rollouts(HAND_ROWS, num_repeats=3, failures=1, wall_time_s=3.0))
    lines = text.splitlines()
    assert lines[0] == "Rollouts: 6 succeeded, 1 failed, 2 tasks, 3.0 s (2.00 rollouts/s)"
    assert lines[1] == "Tokens: 600 in, 120 out, 720 total"
    assert lines[2] == "mean/reward 0.4167  pass@1 0.3333  pass@3 0.5000  mean@3 0.4167"
    # A bare key_metrics dict works too.
    assert format_key_metrics({"rollouts": 2, "failed": 0, "rollouts_per_s": None, "pass@1": 1.0}) == (
        "Rollouts: 2 succeeded, 0 failed\npass@1 1.0000"
    )


def test_summary_lists_the_mean_of_every_extra_numeric_field():
    rows = [
        {"_ng_task_index": 0, "_ng_rollout_index": 0, "reward": 1.0, "accuracy": True, "set_overlap": 0.5},
        {"_ng_task_index": 1, "_ng_rollout_index": 0, "reward": 0.0, "accuracy": False, "set_overlap": 1.0},
    ]
    text = format_key_metrics(aggregate_rollouts(rows, num_repeats=1))
    assert "mean/reward 0.5000" in text
    assert "mean/accuracy 0.5000" in text and "mean/set_overlap 0.7500" in text
