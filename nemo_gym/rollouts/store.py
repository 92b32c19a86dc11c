"""Durable JSONL output: one row per finished rollout, written and flushed as it finishes.

Files for an output path `results/run.jsonl`:
  * `results/run.jsonl`                       scored rollout rows (completion order)
  * `results/run_failures.jsonl`              rollouts that failed after every attempt (never rows)
  * `results/run_materialized_inputs.jsonl`   exactly what was sent for each (task, rollout)
  * `results/run_aggregate_metrics.json`      metrics computed from the rows file

An existing output file is never silently overwritten or appended to: `mode="new"` refuses,
`"overwrite"` starts afresh, `"resume"` keeps the rows, repairs a torn last line left by a crash
and reports which (task, rollout) pairs are already done.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from nemo_gym.errors import InputDataError, OutputExistsError

OutputMode = Literal["new", "resume", "overwrite"]


def sidecar(path: Path, suffix: str, extension: str = ".jsonl") -> Path:
    return path.with_name(f"{path.stem}_{suffix}{extension}")


def repair_torn_tail(path: Path) -> int:
    """Truncate a partial last line (no trailing newline); returns the bytes removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline; everything after it is a torn write.
        position = size
        chunk = 1 << 16
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            data = handle.read(position - start)
            newline = data.rfind(b"\n")
            if newline != -1:
                keep = start + newline + 1
                handle.truncate(keep)
                return size - keep
            position = start
        handle.truncate(0)
        return size


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file, streamed; a corrupt line is an InputDataError naming it."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                raise InputDataError(f"corrupt row ({error})", path=str(path), line=line_number) from None


def done_keys(path: Path) -> set[tuple[int, int]]:
    keys: set[tuple[int, int]] = set()
    for row in iter_rows(path):
        task, rollout = row.get("_ng_task_index"), row.get("_ng_rollout_index")
        if isinstance(task, int) and isinstance(rollout, int):
            keys.add((task, rollout))
    return keys


class RolloutStore:
    """Owns the output files of one collection run. Use `open()`, `write_*`, `close()`."""

    def __init__(self, output_path: str | Path, mode: OutputMode = "new"):
        self.path = Path(output_path)
        self.mode = mode
        self.failures_path = sidecar(self.path, "failures")
        self.materialized_path = sidecar(self.path, "materialized_inputs")
        self.metrics_path = sidecar(self.path, "aggregate_metrics", ".json")
        self.repaired_bytes = 0
        self._rows: IO[bytes] | None = None
        self._failures: IO[bytes] | None = None
        self._materialized: IO[bytes] | None = None

    def open(self) -> set[tuple[int, int]]:
        """Prepare the files; returns the (task, rollout) pairs already done (resume only)."""
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and self.mode == "new":
            raise OutputExistsError(
                f"{self.path} already exists; pass +resume=true to finish it or +overwrite=true to replace it"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        done: set[tuple[int, int]] = set()
        if self.mode == "resume" and self.path.exists():
            self.repaired_bytes = repair_torn_tail(self.path)
            done = done_keys(self.path)
        append = self.mode == "resume"
        self._rows = self.path.open("ab" if append else "wb")
        self._failures = self.failures_path.open("ab" if append else "wb")
        self._materialized = self.materialized_path.open("ab" if append else "wb")
        return done

    @staticmethod
    def _write(handle: IO[bytes] | None, record: dict[str, Any]) -> None:
        assert handle is not None, "RolloutStore.open() first"
        handle.write(orjson.dumps(record) + b"\n")
        handle.flush()

    def write_row(self, row: dict[str, Any]) -> None:
        self._write(self._rows, row)

    def write_failure(self, record: dict[str, Any]) -> None:
        self._write(self._failures, record)

    def write_materialized(self, record: dict[str, Any]) -> None:
        self._write(self._materialized, record)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        temporary = self.metrics_path.with_suffix(".json.tmp")
        temporary.write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.metrics_path)  # atomic: never a half-written metrics file

    def close(self) -> None:
        for handle in (self._rows, self._failures, self._materialized):
            if handle is not None:
                handle.close()
        self._rows = self._failures = self._materialized = None
        # An empty failures file would only make people look for failures that did not happen.
        if self.failures_path.exists() and self.failures_path.stat().st_size == 0:
            self.failures_path.unlink()
