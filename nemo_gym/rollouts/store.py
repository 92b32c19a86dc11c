"""Durable JSONL output: one row per finished rollout, written and flushed as it finishes.

Files for an output path `results/run.jsonl`:
  * `results/run.jsonl`                       scored rollout rows (completion order)
  * `results/run_failures.jsonl`              pairs that failed after every attempt and still have no row
  * `results/run_materialized_inputs.jsonl`   exactly what was sent for each (task, rollout), once per pair
  * `results/run_metrics.json`                metrics computed from the rows file (ours: counts, pass@k, ...)
  * `results/run_aggregate_metrics.json`      the environment's own metrics, NeMo Gym's file (see `aggregate_metrics`)
  * `results/run_job.json`                    the job that owns these files (see `job_identity`)
  * `results/run_groups.jsonl`                which GRPO groups are complete, one line per task (see `groups`)
  * `results/run.jsonl.lock`                  held while a collector writes them (see `output_lock`)
When `results/run.jsonl` is a symlink, the side files (and the lock) are those of the file it points to.

An existing output file is never silently overwritten or appended to: `mode="new"` refuses,
`"overwrite"` starts afresh, `"resume"` keeps the rows, repairs a torn last line left by a crash
(in every JSONL file), and reports which (task, rollout) pairs are already done. After a resume the
side files agree with the rows: the failures file keeps one record per pair that is still missing,
the materialized inputs one line per pair however many times the run was killed.

Each write is one `write` + `flush` (no fsync: a killed process loses nothing the kernel has, and
fsync per row would cost more than a rollout). An OS error (disk full, read-only file system) is an
OutputWriteError naming the file; whatever was written stays resumable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from nemo_gym.errors import InputDataError, OutputExistsError, OutputWriteError
from nemo_gym.rollouts.output_lock import os_error_text, resolved
from nemo_gym.rollouts.tasks import FAILURE_TERMINAL_FIELD, RolloutJob

OutputMode = Literal["new", "resume", "overwrite"]
PairKey = tuple[int, int]


def sidecar(path: Path, suffix: str, extension: str = ".jsonl") -> Path:
    """`results/run.jsonl` -> `results/run_<suffix><extension>`. A symlinked output's side files are the
    ones beside the file it points to: they belong to the rows, whichever name reached them, so a resume
    through the link finds the job record and failures of the run that wrote the rows."""
    if path.is_symlink():
        path = resolved(path)
    return path.with_name(f"{path.stem}_{suffix}{extension}")


# The end-of-run files are named here, beside the others, so that a collection checks every name it will
# write (`FileCollection.written_files`) without importing the modules that write them at the end.


def groups_path(output_path: str | Path) -> Path:
    """`results/run.jsonl` -> `results/run_groups.jsonl` (written by `nemo_gym.rollouts.groups`)."""
    return sidecar(Path(output_path), "groups")


def quality_report_path(output_path: str | Path) -> Path:
    """`results/run.jsonl` -> `results/run_quality.json` (written by `nemo_gym.rollouts.quality`)."""
    return sidecar(Path(output_path), "quality", ".json")


def aggregate_metrics_path(output_path: Path) -> Path:
    """`results/run.jsonl` -> `results/run_aggregate_metrics.json` (NeMo Gym's name; written by
    `nemo_gym.rollouts.aggregate_metrics`)."""
    return output_path.with_name(f"{output_path.stem}_aggregate_metrics.json")


def write_error(path: Path, error: OSError) -> OutputWriteError:
    return OutputWriteError(
        f"cannot write {path}: {os_error_text(error)}; make room or fix the permissions, then finish the run "
        f"with the same command plus +resume=true",
        path=str(path),
    )


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


def pair_key(record: dict[str, Any]) -> PairKey | None:
    task, rollout = record.get("_ng_task_index"), record.get("_ng_rollout_index")
    if isinstance(task, int) and isinstance(rollout, int):
        return (task, rollout)
    return None


def done_keys(path: Path) -> set[PairKey]:
    return {key for row in iter_rows(path) if (key := pair_key(row)) is not None}


class _JsonlFile:
    """One append-only JSONL file: a record per line, flushed per record, OS errors named."""

    __slots__ = ("path", "_handle")

    def __init__(self, path: Path, append: bool):
        self.path = path
        try:
            self._handle: IO[bytes] | None = path.open("ab" if append else "wb")
        except OSError as error:
            raise write_error(path, error) from None

    def write(self, record: dict[str, Any]) -> None:
        assert self._handle is not None, "RolloutStore.open() first"
        try:
            self._handle.write(orjson.dumps(record) + b"\n")
            self._handle.flush()
        except OSError as error:
            raise write_error(self.path, error) from None

    def close(self) -> None:
        if self._handle is None:
            return
        try:
            self._handle.close()
        except OSError:
            pass  # the write that failed already raised; what reached the disk is repaired on resume
        self._handle = None


class RolloutStore:
    """Owns the output files of one collection run. Use `open()`, `write_*`, `close()`."""

    def __init__(self, output_path: str | Path, mode: OutputMode = "new"):
        self.path = Path(output_path)
        self.mode = mode
        self.failures_path = sidecar(self.path, "failures")
        self.materialized_path = sidecar(self.path, "materialized_inputs")
        # Not `_aggregate_metrics.json`: that name is NeMo Gym's file, written from the environment's
        # `/aggregate_metrics` in NeMo Gym's shape (`nemo_gym.rollouts.aggregate_metrics`).
        self.metrics_path = sidecar(self.path, "metrics", ".json")
        self.repaired_bytes = 0
        self._rows: _JsonlFile | None = None
        self._failures: _JsonlFile | None = None
        self._materialized: _JsonlFile | None = None
        self._already_materialized: set[PairKey] = set()
        # Pairs with a failure record from an earlier run; a row for one of them makes that record stale.
        self._earlier_failures: set[PairKey] = set()
        self._recovered: set[PairKey] = set()
        self.terminal_failures: set[PairKey] = set()
        """Pairs whose latest failure record says retrying cannot help (`_ng_failure_terminal`, set by the
        agent): a resume leaves them missing instead of running them again, as NeMo Gym's does."""

    @property
    def output_exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def check_mode(self) -> None:
        """Refuse to touch an existing output unless resume or overwrite was asked for."""
        if self.mode == "new" and self.output_exists:
            raise OutputExistsError(
                f"{self.path} already exists; pass +resume=true to finish it or +overwrite=true to replace it"
            )

    def open(self) -> set[PairKey]:
        """Prepare the files; returns the (task, rollout) pairs already done (resume only)."""
        self.check_mode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_error(self.path.parent, error) from None
        done: set[PairKey] = set()
        append = self.mode == "resume"
        if append:
            try:
                done = self._prepare_resume()
            except OSError as error:
                raise write_error(self.path, error) from None
        self._rows = _JsonlFile(self.path, append)
        self._failures = _JsonlFile(self.failures_path, append)
        self._materialized = _JsonlFile(self.materialized_path, append)
        return done

    def _prepare_resume(self) -> set[PairKey]:
        done: set[PairKey] = set()
        if self.path.exists():
            self.repaired_bytes = repair_torn_tail(self.path)
            done = done_keys(self.path)
        if self.materialized_path.exists():
            repair_torn_tail(self.materialized_path)
            self._already_materialized = _dedupe_materialized(self.materialized_path)
        if self.failures_path.exists():
            repair_torn_tail(self.failures_path)
            self._earlier_failures = _compact_failures(self.failures_path, drop=done, terminal=self.terminal_failures)
        return done

    def write_row(self, row: dict[str, Any]) -> None:
        assert self._rows is not None, "RolloutStore.open() first"
        self._rows.write(row)
        if self._earlier_failures:
            key = pair_key(row)
            if key in self._earlier_failures:
                self._recovered.add(key)

    def write_failure(self, record: dict[str, Any]) -> None:
        assert self._failures is not None, "RolloutStore.open() first"
        self._failures.write(record)

    def write_materialized(self, job: RolloutJob) -> None:
        """What is sent for `job`, once per pair: a resume does not repeat a pair already recorded."""
        assert self._materialized is not None, "RolloutStore.open() first"
        if self._already_materialized and job.key in self._already_materialized:
            return
        self._materialized.write(job.stamp(dict(job.row)))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        temporary = self.metrics_path.with_suffix(".json.tmp")
        try:
            temporary.write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
            os.replace(temporary, self.metrics_path)  # atomic: never a half-written metrics file
        except OSError as error:
            _remove_quietly(temporary)
            raise write_error(self.metrics_path, error) from None

    def close(self) -> None:
        """Close the files and make the failures file true to the rows. Safe to call more than once."""
        if self._rows is None and self._failures is None and self._materialized is None:
            return
        for file in (self._rows, self._failures, self._materialized):
            if file is not None:
                file.close()
        self._rows = self._failures = self._materialized = None
        if self._recovered or self._earlier_failures:
            try:
                # A pair that failed earlier and succeeded (or failed again) now: keep only what is still true.
                _compact_failures(self.failures_path, drop=self._recovered)
            except OSError:
                pass  # disk full: the next resume compacts again
        # An empty failures file would only make people look for failures that did not happen.
        try:
            if self.failures_path.exists() and self.failures_path.stat().st_size == 0:
                self.failures_path.unlink()
        except OSError:
            pass


def _compact_failures(path: Path, *, drop: set[PairKey], terminal: set[PairKey] | None = None) -> set[PairKey]:
    """Rewrite the failures file with the latest record per pair, minus the pairs in `drop`;
    returns the pairs left, and adds to `terminal` those whose latest record is marked terminal
    (`_ng_failure_terminal`). Only failures are read, never rows, so this stays small."""
    latest: dict[PairKey, bytes] = {}
    marked: set[PairKey] = set()
    lines = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            lines += 1
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # an unreadable record says nothing about which pair is missing
            key = pair_key(record) if isinstance(record, dict) else None
            if key is not None and key not in drop:
                latest.pop(key, None)
                latest[key] = raw if raw.endswith(b"\n") else raw + b"\n"
                if record.get(FAILURE_TERMINAL_FIELD):
                    marked.add(key)
                else:
                    marked.discard(key)
    if len(latest) != lines:
        _replace_contents(path, latest.values())
    if terminal is not None:
        terminal |= marked
    return set(latest)


def _dedupe_materialized(path: Path) -> set[PairKey]:
    """Keys of the materialized inputs; rewrites the file only if a pair appears twice (older versions
    re-recorded in-flight pairs on every resume)."""
    seen: set[PairKey] = set()
    duplicated = False
    with path.open("rb") as handle:
        for raw in handle:
            key = _key_of_line(raw)
            if key is None:
                continue
            duplicated |= key in seen
            seen.add(key)
    if duplicated:
        kept: set[PairKey] = set()

        def first_of_each() -> Iterator[bytes]:
            with path.open("rb") as handle:
                for raw in handle:
                    key = _key_of_line(raw)
                    if key is not None and key not in kept:
                        kept.add(key)
                        yield raw

        _replace_contents(path, first_of_each())
    return seen


def _key_of_line(raw: bytes) -> PairKey | None:
    if not raw.strip():
        return None
    try:
        return pair_key(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None


def _replace_contents(path: Path, lines: Iterator[bytes] | Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as handle:
            for line in lines:
                handle.write(line)
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
