"""Per-field statistics of a task data set, in NeMo Gym's `<stem>_metrics.json` shape.

`ng_prepare_data` writes these beside every data set (`data/example_metrics.json` is one) and per
data set type. The keys and rounding are NeMo Gym's, so a file it wrote compares equal to ours:

- `"Number of examples"`: rows (each counted `num_repeats` times);
- `"Number of tools"`, `"Json-dumped number of words (proxy for token count)"`, `"Number of turns"`
  (user messages) and `"Temperature"`, from each row's `responses_create_params`;
- every other top-level field: numbers and booleans (list items one by one) get the same block,
  `{"Total # non-null values", "Average", "Min", "Max", "Standard deviation"}` (sample deviation),
  strings get `{"unique_count", "total_count"}`; objects and nulls are not counted.

Values are rounded to 2 decimals, or 3 when |x| < 1. `metrics_differences` is NeMo Gym's check of a
stored file against fresh figures: every stored key must still be there, numbers within a small
tolerance, lists equal as multisets; new keys are allowed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["DatasetMetrics", "FieldStats", "metrics_differences"]

_FIXED_BLOCKS = (
    ("tools", "Number of tools"),
    ("words", "Json-dumped number of words (proxy for token count)"),
    ("turns", "Number of turns"),
    ("temperature", "Temperature"),
)
_REQUEST_FIELDS = ("responses_create_params", "response")


def _rounded(value: float) -> float:
    return round(value, 2) if abs(value) >= 1 else round(value, 3)


class FieldStats:
    """Count, mean, min, max and sample deviation of a stream of numbers (Welford), mergeable."""

    __slots__ = ("count", "mean", "squares", "low", "high")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.squares = 0.0
        self.low = math.inf
        self.high = -math.inf

    def observe(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.squares += delta * (value - self.mean)
        self.low, self.high = min(self.low, value), max(self.high, value)

    def merge(self, other: FieldStats) -> None:
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.squares = other.count, other.mean, other.squares
            self.low, self.high = other.low, other.high
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / total
        self.squares += other.squares + delta * delta * self.count * other.count / total
        self.count = total
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)

    def summary(self) -> dict[str, Any]:
        seen = self.count > 0
        deviation = math.sqrt(self.squares / (self.count - 1)) if self.count > 1 else 0.0
        return {
            "Total # non-null values": self.count,
            "Average": _rounded(self.mean if seen else 0.0),
            "Min": _rounded(float(self.low) if seen else 0.0),
            "Max": _rounded(float(self.high) if seen else 0.0),
            "Standard deviation": _rounded(deviation),
        }


class DatasetMetrics:
    """Statistics of the rows added so far; `merge` sums two data sets (a type's several files)."""

    def __init__(self) -> None:
        self.examples = 0
        self.fixed = {key: FieldStats() for key, _ in _FIXED_BLOCKS}
        self.numbers: dict[str, FieldStats] = {}
        self.strings: dict[str, Counter[str]] = {}
        self._order: list[str] = []  # the other fields, in the order they were first seen

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one valid task row (its `responses_create_params` is a dict)."""
        params = row["responses_create_params"]
        self.examples += 1
        tools = params.get("tools")
        if tools is not None:
            self.fixed["tools"].observe(len(tools))
        conversation = params.get("input")
        if isinstance(conversation, str):
            conversation = [{"role": "user", "content": conversation}]
        users = [item for item in conversation or [] if isinstance(item, dict) and item.get("role") == "user"]
        if users:
            self.fixed["turns"].observe(len(users))
        temperature = params.get("temperature")
        if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
            self.fixed["temperature"].observe(temperature)
        # Python's json.dumps spacing (", " and ": "), which the word count depends on, as NeMo Gym counts.
        self.fixed["words"].observe(len(_python_json(params).split()))
        for key, value in row.items():
            if key in _REQUEST_FIELDS:
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bool):
                    item = int(item)
                if isinstance(item, (int, float)):
                    self._field(key)
                    self.numbers.setdefault(key, FieldStats()).observe(item)
                elif isinstance(item, str):
                    self._field(key)
                    self.strings.setdefault(key, Counter())[item] += 1

    def _field(self, key: str) -> None:
        if key not in self.numbers and key not in self.strings:
            self._order.append(key)

    def merge(self, other: DatasetMetrics) -> None:
        self.examples += other.examples
        for key, stats in other.fixed.items():
            self.fixed[key].merge(stats)
        for key in other._order:
            self._field(key)
        for key, stats in other.numbers.items():
            self.numbers.setdefault(key, FieldStats()).merge(stats)
        for key, counts in other.strings.items():
            self.strings.setdefault(key, Counter()).update(counts)

    def summary(self) -> dict[str, Any]:
        """The figures under NeMo Gym's keys (see the module docstring)."""
        result: dict[str, Any] = {"Number of examples": self.examples}
        for key, label in _FIXED_BLOCKS:
            result[label] = self.fixed[key].summary()
        for key in self._order:
            # A field with numbers in some rows and strings in others: NeMo Gym's last writer is the string count.
            if key in self.strings:
                counts = self.strings[key]
                result[key] = {"unique_count": len(counts), "total_count": sum(counts.values())}
            else:
                result[key] = self.numbers[key].summary()
        return result


def _python_json(value: Any) -> str:
    """`json.dumps(value)` spacing: `, ` between items and `: ` after keys, non-ASCII escaped."""
    return json.dumps(value)


def _close(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return False
    tolerance = 5e-3 if max(abs(x), abs(y)) >= 1 else 5e-4
    return abs(x - y) <= max(tolerance, 1e-9)


def _hashable(value: Any) -> Any:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS) if isinstance(value, (dict, list)) else value


def _compare(stored: Any, fresh: Any, path: str, differences: list[str]) -> None:
    if isinstance(stored, dict) and isinstance(fresh, dict):
        for key, value in stored.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in fresh:
                differences.append(f"{where}: missing from the new metrics")
            else:
                _compare(value, fresh[key], where, differences)
        return
    if isinstance(stored, list) and isinstance(fresh, list):
        if len(stored) != len(fresh):
            differences.append(f"{path}: {len(stored)} items stored, {len(fresh)} now")
        elif Counter(map(_hashable, stored)) != Counter(map(_hashable, fresh)):
            differences.append(f"{path}: items differ ({stored!r} stored, {fresh!r} now)")
        return
    if isinstance(stored, float) and isinstance(fresh, float):
        if not _close(stored, fresh):
            differences.append(f"{path}: {stored} stored, {fresh} now")
        return
    if stored != fresh:
        differences.append(f"{path}: {stored!r} stored, {fresh!r} now")


def metrics_differences(stored: Any, fresh: Mapping[str, Any]) -> list[str]:
    """Where a stored metrics file disagrees with fresh figures (empty: they agree)."""
    differences: list[str] = []
    _compare(stored, dict(fresh), "", differences)
    return differences
