"""Run one model-written query against the read-only database, safely, and compare result sets.

Three walls keep a query from changing anything:
  * the connection is opened `file:...?mode=ro` (SQLite itself refuses writes) with `query_only`;
  * an authorizer allows only reading (SELECT, reads of columns, functions, recursive CTEs), so a
    write, ATTACH, PRAGMA or schema change is refused before it runs, with a reason we can report.

And these keep it from hogging anything (each stop says which limit, as text the model sees):
  * time: a progress handler interrupts the statement at its deadline. It runs only between
    SQLite VM steps, and one step can be a single long C call (instr over megabytes, say) that no
    handler or sqlite3_interrupt reaches; so the server also runs `run_query` in a worker process
    that it kills a moment after the deadline (app.py). The kill is the guarantee, the handler
    the quick, exact answer for ordinary long queries;
  * memory: SQLITE_LIMIT_LENGTH caps every string and blob, so `randomblob(300000000)` or a string
    doubled 28 times fails at once instead of allocating gigabytes (a progress handler never fires
    inside those single calls either); the worker's address-space limit bounds the rest (temporary
    storage included: it is kept in memory, so no query writes to disk);
  * result size: rows and bytes are counted while fetching, and fetching stops at the first excess.
Pure and synchronous: the server calls it in a worker process.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
PROGRESS_EVERY_N_OPS = 1_000
FLOAT_DIGITS = 6
NUMBER_BYTES = 8
"""What an integer, a float or a NULL counts for in a result's size."""

StopReason = Literal["time", "memory", "result_size"]


@dataclass(frozen=True)
class QueryLimits:
    timeout_s: float
    max_rows: int
    max_result_bytes: int
    """Also the largest string or blob the query may build: a bigger value could never be returned."""


@dataclass(frozen=True)
class QueryResult:
    rows: list[tuple[Any, ...]] | None
    error: str | None = None
    refused: bool = False
    stopped_by: StopReason | None = None
    """Which limit stopped the query, when one did."""


def time_limit_error(timeout_s: float) -> QueryResult:
    return QueryResult(None, f"stopped: the query ran past the {timeout_s:g} s time limit", stopped_by="time")


def open_read_only(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    # Sorts and temporary tables stay in memory, under the worker's address-space limit, rather than
    # in temp files a query could grow by gigabytes before its deadline.
    connection.execute("PRAGMA temp_store = MEMORY")
    return connection


def _authorizer(action: int, *_: Any) -> int:
    return sqlite3.SQLITE_OK if action in ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    return NUMBER_BYTES


def run_query(database: Path, sql: str, limits: QueryLimits) -> QueryResult:
    """Execute `sql` read-only within `limits`: rows, or why there are none."""
    connection = open_read_only(database)
    try:
        connection.set_authorizer(_authorizer)
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_result_bytes)
        deadline = time.monotonic() + limits.timeout_s
        # Returning non-zero from the progress handler aborts the running statement.
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_EVERY_N_OPS)
        try:
            return _fetch_within(connection.execute(sql), limits)
        except sqlite3.DatabaseError as error:
            return _explained(error, limits)
        except sqlite3.Warning as error:  # e.g. more than one statement
            return QueryResult(None, f"{type(error).__name__}: {error}")
        except MemoryError:  # SQLite's SQLITE_NOMEM, or Python's own, under the worker's address-space limit
            return QueryResult(None, "stopped: the query ran past its memory limit", stopped_by="memory")
    finally:
        connection.close()


def _fetch_within(cursor: sqlite3.Cursor, limits: QueryLimits) -> QueryResult:
    rows: list[tuple[Any, ...]] = []
    total_bytes = 0
    for row in cursor:
        if len(rows) == limits.max_rows:
            message = f"stopped: the result has more than {limits.max_rows:,} rows (result size limit)"
            return QueryResult(None, message, stopped_by="result_size")
        total_bytes += sum(map(_size, row))
        if total_bytes > limits.max_result_bytes:
            message = f"stopped: the result is more than {limits.max_result_bytes:,} bytes (result size limit)"
            return QueryResult(None, message, stopped_by="result_size")
        rows.append(tuple(row))
    return QueryResult(rows)


def _explained(error: sqlite3.DatabaseError, limits: QueryLimits) -> QueryResult:
    code = getattr(error, "sqlite_errorname", "")
    message = str(error)
    if code == "SQLITE_AUTH" or "not authorized" in message:
        return QueryResult(None, "refused: the query does something other than read", refused=True)
    if code == "SQLITE_INTERRUPT" or "interrupted" in message:
        return time_limit_error(limits.timeout_s)
    if code == "SQLITE_TOOBIG":
        message = f"stopped: the query built a string or blob over {limits.max_result_bytes:,} bytes (memory limit)"
        return QueryResult(None, message, stopped_by="memory")
    return QueryResult(None, f"{type(error).__name__}: {message}")


def _normalized(value: Any) -> Any:
    # 2 and 2.0 compare (and hash) equal in Python; rounding absorbs float noise from AVG and division.
    return round(value, FLOAT_DIGITS) if isinstance(value, float) else value


def results_match(actual: list[tuple[Any, ...]], expected: list[tuple[Any, ...]], ordered: bool) -> bool:
    """Same rows (column order matters, names do not); row order only when `ordered`."""
    actual_rows = [tuple(map(_normalized, row)) for row in actual]
    expected_rows = [tuple(map(_normalized, row)) for row in expected]
    return actual_rows == expected_rows if ordered else Counter(actual_rows) == Counter(expected_rows)


def load_sqlite() -> None:
    """Warm-up of a query worker: open an in-memory database once, so the first query pays no start-up."""
    sqlite3.connect(":memory:").close()
