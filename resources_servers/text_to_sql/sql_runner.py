"""Run one model-written query against the read-only database, safely, and compare result sets.

Three walls keep a query from changing or hogging anything:
  * the connection is opened `file:...?mode=ro` (SQLite itself refuses writes) with `query_only`;
  * an authorizer allows only reading (SELECT, reads of columns, functions, recursive CTEs), so a
    write, ATTACH, PRAGMA or schema change is refused before it runs, with a reason we can report;
  * a progress handler interrupts any statement that runs past its deadline.
Pure and synchronous: the server calls it from a worker thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
PROGRESS_EVERY_N_OPS = 1_000
FLOAT_DIGITS = 6


class QueryRefused(Exception):
    """The query tried something other than reading: it is never executed."""


@dataclass(frozen=True)
class QueryResult:
    rows: list[tuple[Any, ...]] | None
    error: str | None = None
    refused: bool = False


def open_read_only(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    return connection


def _authorizer(action: int, *_: Any) -> int:
    return sqlite3.SQLITE_OK if action in ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def run_query(database: Path, sql: str, *, timeout_s: float, max_rows: int) -> QueryResult:
    """Execute `sql` read-only with a deadline; at most `max_rows` rows are kept."""
    connection = open_read_only(database)
    try:
        connection.set_authorizer(_authorizer)
        deadline = time.monotonic() + timeout_s
        # Returning non-zero from the progress handler aborts the running statement.
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_EVERY_N_OPS)
        try:
            cursor = connection.execute(sql)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.DatabaseError as error:
            message = str(error)
            if "not authorized" in message:
                return QueryResult(None, "refused: the query does something other than read", refused=True)
            if "interrupted" in message:
                return QueryResult(None, f"timed out after {timeout_s:g} s")
            return QueryResult(None, f"{type(error).__name__}: {message}")
        except sqlite3.Warning as error:  # e.g. more than one statement
            return QueryResult(None, f"{type(error).__name__}: {error}")
        if len(rows) > max_rows:
            return QueryResult(None, f"more than {max_rows} rows")
        return QueryResult([tuple(row) for row in rows])
    finally:
        connection.close()


def _normalized(value: Any) -> Any:
    # 2 and 2.0 compare (and hash) equal in Python; rounding absorbs float noise from AVG and division.
    return round(value, FLOAT_DIGITS) if isinstance(value, float) else value


def results_match(actual: list[tuple[Any, ...]], expected: list[tuple[Any, ...]], ordered: bool) -> bool:
    """Same rows (column order matters, names do not); row order only when `ordered`."""
    actual_rows = [tuple(map(_normalized, row)) for row in actual]
    expected_rows = [tuple(map(_normalized, row)) for row in expected]
    return actual_rows == expected_rows if ordered else Counter(actual_rows) == Counter(expected_rows)
