"""A byte-offset index over a rollouts JSONL file, so the viewer can page through any size of file.

One streaming pass (on a background thread, so the first page is served while it runs) records,
per row, where its line starts and the handful of fields the table shows, in flat typed arrays
(about 50 bytes a row). The same pass feeds `aggregate_rollouts`, so the metrics cost no second
read. A whole row is read only when asked for, by seeking to its offset. Memory therefore grows
with the row count by a few megabytes per 100,000 rows, never with the size of the rows.

Rows are numbered 0.. in file order among the lines that parse; blank lines are skipped and lines
that do not parse are counted, not fatal. A file that a collection is still writing can be followed:
`refresh()` indexes what was appended since (a torn last line waits for its newline).
"""

from __future__ import annotations

import math
import os
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from nemo_gym.errors import InputDataError
from nemo_gym.rollouts.metrics import aggregate_rollouts
from nemo_gym.rollouts.tasks import GROUP_SIZE_FIELD
from nemo_gym.viewer.summary import summarize

SortKey = Literal["row", "task", "rollout", "reward", "turns", "tokens", "ending"]
SORT_KEYS: tuple[str, ...] = ("row", "task", "rollout", "reward", "turns", "tokens", "ending")
_MISSING = -1  # stored for an absent integer field; sorts before every real value
_SEARCH_CACHE_SIZE = 8


@dataclass(frozen=True, slots=True)
class RowQuery:
    """What the table asks for: a sort, filters, and a page of it."""

    sort: str = "row"
    descending: bool = False
    task: int | None = None
    ending: str | None = None
    reward_min: float | None = None
    reward_max: float | None = None
    search: str | None = None
    offset: int = 0
    limit: int = 50

    def filters(self) -> tuple[Any, ...]:
        return (self.sort, self.descending, self.task, self.ending, self.reward_min, self.reward_max, self.search)


class RolloutIndex:
    """Index one rollouts file; `start()` builds it on a thread, every reader works on what is built."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputDataError("rollouts file does not exist", path=str(self.path))
        self.offsets = array("q")
        self.lines = array("q")
        self.tasks = array("q")
        self.rollouts = array("q")
        self.group_sizes = array("I")  # the row's `_ng_group_size` (its task's group), 0 when it has none
        self.rewards = array("d")  # NaN when the row has no numeric reward
        self.turns = array("q")
        self.tokens = array("q")
        self.endings = array("H")  # position in `ending_names`
        self.ending_names: list[str] = []
        self._ending_codes: dict[str, int] = {}
        self.corrupt_lines: list[int] = []
        self.metrics: dict[str, Any] | None = None
        self.metrics_error: str | None = None
        self.error: str | None = None
        self.file_size = self.path.stat().st_size
        self.bytes_read = 0
        self._scanned_to = 0  # byte offset just past the last line indexed
        self._size_seen = -1  # file size when the last pass started
        self._next_line = 1
        self._count = 0  # rows whose every array entry is written; readers never look past it
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._orders: dict[tuple[str, bool], array] = {}
        self._searches: OrderedDict[tuple[str, int], array] = OrderedDict()
        self._last_query: tuple[tuple[Any, ...], int, list[int]] | None = None
        self._lock = threading.Lock()

    # ---- building ------------------------------------------------------------------------------
    def start(self) -> RolloutIndex:
        self._thread = threading.Thread(target=self.build, name=f"index-{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def started(self) -> bool:
        return self._thread is not None or self.complete

    @property
    def complete(self) -> bool:
        return self._done.is_set()

    @property
    def count(self) -> int:
        return self._count

    def build(self) -> None:
        """The first pass: index every line and compute the metrics from the same read."""
        self._aggregate(self._scan())

    def refresh(self) -> bool:
        """Index the rows appended since the last pass (a collection still writing to the file) and
        recompute the metrics, on a thread; True when such a pass started."""
        with self._lock:
            if not self.complete:
                return False
            try:
                size = self.path.stat().st_size
            except OSError as error:
                self.error = f"cannot read {self.path}: {error}"
                return False
            if size < self._scanned_to:
                self.error = f"{self.path} got shorter since it was indexed; restart ng_viewer to see it as it is now"
                return False
            if size == self._scanned_to or size == self._size_seen:
                return False  # nothing new, or only the same torn tail as last time
            self.file_size = size
            self._done.clear()
        self._thread = threading.Thread(target=self._catch_up, name=f"refresh-{self.path.name}", daemon=True)
        self._thread.start()
        return True

    def _catch_up(self) -> None:
        for _ in self._scan():
            pass
        # The metrics need every row again: one streaming pass, small next to what collecting them cost.
        self._aggregate(self._indexed_rows())

    def _aggregate(self, rows: Iterator[dict[str, Any]]) -> None:
        try:
            metrics = aggregate_rollouts(rows)
            for task in metrics.get("per_task", []):
                task.pop("rewards", None)  # every reward again, per task: the page never shows them
            self.metrics, self.metrics_error = metrics, None
        except InputDataError as error:
            # Rows from another writer may lack our indices; the table still works without metrics.
            self.metrics_error = str(error)
            for _ in rows:
                pass
        except OSError as error:
            self.error = f"cannot read {self.path}: {error}"
        finally:
            self._done.set()

    def _scan(self) -> Iterator[dict[str, Any]]:
        """Index the lines after the last one indexed, yielding each row. A last line without its
        newline that does not parse is a row still being written: it is left for the next pass."""
        offset = self._scanned_to
        with self.path.open("rb", buffering=1 << 20) as handle:
            self._size_seen = os.fstat(handle.fileno()).st_size
            handle.seek(offset)
            for line_number, raw in enumerate(handle, start=self._next_line):
                start = offset
                offset += len(raw)
                if not raw.strip():
                    self._advance(offset, line_number)
                    continue
                try:
                    row = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    if not raw.endswith(b"\n"):
                        return  # torn tail: still being written
                    self.corrupt_lines.append(line_number)
                    self._advance(offset, line_number)
                    continue
                if not isinstance(row, dict):
                    self.corrupt_lines.append(line_number)
                    self._advance(offset, line_number)
                    continue
                self._append(start, line_number, row)
                self._advance(offset, line_number)
                yield row

    def _advance(self, offset: int, line_number: int) -> None:
        self._scanned_to = self.bytes_read = offset
        self._next_line = line_number + 1

    def _indexed_rows(self) -> Iterator[dict[str, Any]]:
        with self.path.open("rb", buffering=1 << 20) as handle:
            for row_number in range(self._count):
                offset = self.offsets[row_number]
                if handle.tell() != offset:
                    handle.seek(offset)
                yield orjson.loads(handle.readline())

    def _append(self, offset: int, line_number: int, row: Any) -> None:
        summary = summarize(row)
        code = self._ending_codes.get(summary.ending)
        if code is None:
            code = self._ending_codes[summary.ending] = len(self.ending_names)
            self.ending_names.append(summary.ending)
        self.offsets.append(offset)
        self.lines.append(line_number)
        self.tasks.append(_MISSING if summary.task is None else summary.task)
        self.rollouts.append(_MISSING if summary.rollout is None else summary.rollout)
        stamped = row.get(GROUP_SIZE_FIELD)
        self.group_sizes.append(
            stamped if isinstance(stamped, int) and not isinstance(stamped, bool) and 0 < stamped < 1 << 32 else 0
        )
        self.rewards.append(math.nan if summary.reward is None else summary.reward)
        self.turns.append(summary.turns)
        self.tokens.append(_MISSING if summary.tokens is None else summary.tokens)
        self.endings.append(code)
        self._count += 1

    # ---- reading -------------------------------------------------------------------------------
    def read_raw(self, row_number: int) -> bytes:
        """The row's JSON text, read by seeking to its line."""
        if not 0 <= row_number < self._count:
            raise IndexError(row_number)
        with self.path.open("rb") as handle:
            handle.seek(self.offsets[row_number])
            return handle.readline().rstrip(b"\r\n")

    def summary_of(self, row_number: int) -> dict[str, Any]:
        reward = self.rewards[row_number]
        return {
            "row": row_number,
            "line": self.lines[row_number],
            "task": _or_none(self.tasks[row_number]),
            "rollout": _or_none(self.rollouts[row_number]),
            "reward": None if math.isnan(reward) else reward,
            "turns": self.turns[row_number],
            "tokens": _or_none(self.tokens[row_number]),
            "ending": self.ending_names[self.endings[row_number]],
        }

    def status(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "rows": self._count,
            "complete": self.complete,
            "bytes_read": self.bytes_read,
            "file_size": self.file_size,
            "pending_bytes": max(0, self.file_size - self.bytes_read) if self.complete else 0,
            "corrupt_lines": len(self.corrupt_lines),
            "first_corrupt_line": self.corrupt_lines[0] if self.corrupt_lines else None,
            "endings": list(self.ending_names),
            "error": self.error,
        }

    # ---- querying ------------------------------------------------------------------------------
    def query(self, query: RowQuery) -> tuple[int, list[int]]:
        """(number of matching rows, the row numbers of the requested page)."""
        if query.sort not in SORT_KEYS:
            raise ValueError(f"unknown sort key {query.sort!r}; use one of {', '.join(SORT_KEYS)}")
        count = self._count
        with self._lock:
            cached = self._last_query
        if cached is not None and cached[0] == query.filters() and cached[1] == count:
            matching = cached[2]
        else:
            matching = self._matching(query, count)
            with self._lock:
                self._last_query = (query.filters(), count, matching)
        start = max(0, query.offset)
        return len(matching), matching[start : start + max(0, query.limit)]

    def _matching(self, query: RowQuery, count: int) -> list[int]:
        order = self._order(query.sort, query.descending, count)
        checks = []
        if query.task is not None:
            tasks, wanted_task = self.tasks, query.task
            checks.append(lambda n: tasks[n] == wanted_task)
        if query.ending is not None:
            code = self._ending_codes.get(query.ending)
            if code is None:
                return []
            endings = self.endings
            checks.append(lambda n: endings[n] == code)
        if query.reward_min is not None or query.reward_max is not None:
            low = -math.inf if query.reward_min is None else query.reward_min
            high = math.inf if query.reward_max is None else query.reward_max
            rewards = self.rewards
            checks.append(lambda n: low <= rewards[n] <= high)  # NaN (no reward) never matches
        if query.search:
            found = set(self._search(query.search, count))
            checks.append(found.__contains__)
        if not checks:
            return list(order)
        return [n for n in order if all(check(n) for check in checks)]

    def _order(self, key: str, descending: bool, count: int) -> array:
        cached = self._orders.get((key, descending))
        if cached is not None and len(cached) == count:
            return cached
        rows = range(count)
        if key == "row":
            order = array("q", reversed(rows) if descending else rows)
        else:
            column = self._column(key)

            def sort_key(n: int) -> tuple[bool, Any]:
                value = column[n]
                missing = _is_missing(key, value)
                return (not missing, 0 if missing else value) if descending else (missing, 0 if missing else value)

            # Missing values go last either way; Python's sort is stable (also with reverse=True),
            # so ties keep file order.
            order = array("q", sorted(rows, key=sort_key, reverse=descending))
        if self.complete:
            self._orders[(key, descending)] = order
        return order

    def _column(self, key: str) -> Any:
        if key == "ending":
            names = self.ending_names
            return [names[code] for code in self.endings]
        return {
            "task": self.tasks,
            "rollout": self.rollouts,
            "reward": self.rewards,
            "turns": self.turns,
            "tokens": self.tokens,
        }[key]

    def _search(self, text: str, count: int) -> array:
        """Rows whose JSON text contains `text` (ASCII case-insensitive), in file order."""
        cache_key = (text, count)
        with self._lock:
            if cache_key in self._searches:
                self._searches.move_to_end(cache_key)
                return self._searches[cache_key]
        plain = text.lower().encode()
        escaped = orjson.dumps(text.lower())[1:-1]  # the form quotes, backslashes and newlines take in JSON
        needles = {plain, escaped}
        found = array("q")
        with self.path.open("rb", buffering=1 << 20) as handle:
            for row_number in range(count):
                offset = self.offsets[row_number]
                if handle.tell() != offset:
                    handle.seek(offset)
                line = handle.readline().lower()
                if any(needle in line for needle in needles):
                    found.append(row_number)
        with self._lock:
            self._searches[cache_key] = found
            while len(self._searches) > _SEARCH_CACHE_SIZE:
                self._searches.popitem(last=False)
        return found

    # ---- aggregates ----------------------------------------------------------------------------
    def histogram(self, bins: int = 10) -> dict[str, Any]:
        """Counts of rollout rewards in equal-width bins over [0, 1], or over [min, max] when a
        reward lies outside it; the last bin includes its upper edge."""
        values = [r for r in self.rewards[: self._count] if not math.isnan(r)]
        if not values:
            return {"edges": [], "counts": [], "missing": self._count}
        low, high = min(values), max(values)
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        if high == low:
            return {"edges": [low, high], "counts": [len(values)], "missing": self._count - len(values)}
        width = (high - low) / bins
        counts = [0] * bins
        for value in values:
            counts[min(bins - 1, int((value - low) / width))] += 1
        edges = [low + width * i for i in range(bins)] + [high]
        return {"edges": edges, "counts": counts, "missing": self._count - len(values)}

    def task_rewards(self) -> dict[int, tuple[int, float]]:
        """task index -> (rollouts with a reward, mean reward), from the indexed rows."""
        sums: dict[int, list[float]] = {}
        for task, reward in zip(self.tasks[: self._count], self.rewards[: self._count]):
            if task == _MISSING or math.isnan(reward):
                continue
            entry = sums.setdefault(task, [0, 0.0])
            entry[0] += 1
            entry[1] += reward
        return {task: (int(n), total / n) for task, (n, total) in sorted(sums.items())}

    def rows_of_task(self, task: int) -> list[int]:
        tasks = self.tasks
        rows = [n for n in range(self._count) if tasks[n] == task]
        return sorted(rows, key=lambda n: (self.rollouts[n], n))


def _or_none(value: int) -> int | None:
    return None if value == _MISSING else value


def _is_missing(key: str, value: Any) -> bool:
    if key == "reward":
        return math.isnan(value)
    if key in ("task", "rollout", "tokens"):
        return value == _MISSING
    return False
