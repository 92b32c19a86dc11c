"""The failures file beside a rollouts file (`<stem>_failures.jsonl`): rollouts that failed every
attempt, with their error. Read streaming; only counts per error type and one page are kept."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson


def failures_path_for(rollouts_path: Path) -> Path:
    """Where the collector writes the failures of `rollouts_path` (see nemo_gym.rollouts.store)."""
    return rollouts_path.with_name(f"{rollouts_path.stem}_failures.jsonl")


def read_failures(path: Path, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """{path, exists, total, by_type: [{error_type, count, example}], rows: [...one page...]}."""
    result: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "total": 0, "by_type": [], "rows": []}
    if not result["exists"]:
        return result
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    page: list[dict[str, Any]] = []
    total = 0
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                record = {"error_type": "corrupt line", "message": f"line {line_number} is not valid JSON"}
            if not isinstance(record, dict):
                record = {"error_type": "corrupt line", "message": f"line {line_number} is not a JSON object"}
            error_type = str(record.get("error_type") or "unknown")
            counts[error_type] += 1
            examples.setdefault(error_type, str(record.get("message") or ""))
            if offset <= total < offset + limit:
                page.append(record | {"line": line_number})
            total += 1
    result["total"] = total
    result["by_type"] = [
        {"error_type": name, "count": count, "example": examples[name]} for name, count in counts.most_common()
    ]
    result["rows"] = page
    return result
