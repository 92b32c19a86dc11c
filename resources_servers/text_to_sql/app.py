"""text_to_sql: answer a question about a small company database with one SQLite query.

Trains writing correct SQL from a schema and a question. The model's query is run on a read-only
connection with a statement timeout (see `sql_runner.py`); reward 1.0 iff its result set equals the
gold query's (order-insensitive unless the task says `ordered`). Queries that write are refused.
No tools: the schema is in the prompt and the query is the answer.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from pydantic import Field

from nemo_gym.errors import InputDataError
from nemo_gym.openai_types import last_assistant_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from resources_servers.text_to_sql.build_db import DEFAULT_OUTPUT, build
from resources_servers.text_to_sql.sql_runner import QueryResult, results_match, run_query

SQL_BLOCK = re.compile(r"```(?:sql|sqlite)?\s*\n?(.*?)```", re.IGNORECASE | re.DOTALL)


class TextToSQLConfig(BaseResourcesServerConfig):
    database_path: str | None = None
    """SQLite file to query; None = the shipped `data/company.sqlite` (built at start-up if absent)."""
    statement_timeout_s: float = Field(2.0, gt=0)
    """A query running longer is interrupted and scores 0."""
    max_rows: int = Field(10_000, ge=1)
    """A result with more rows scores 0 (it cannot be the answer to these questions, and would cost memory)."""


class TextToSQLVerifyRequest(BaseVerifyRequest):
    gold_sql: str
    ordered: bool = False
    """True when the question asks for an order; then row order must match too."""


class TextToSQLVerifyResponse(TextToSQLVerifyRequest, BaseVerifyResponse):
    extracted_sql: str | None
    execution_error: str | None
    """Why the query produced no result (syntax error, refused write, timeout), else None."""
    write_refused: bool


def extract_sql(text: str) -> str | None:
    """The last fenced code block, else the text from the first SELECT/WITH on; None when empty."""
    blocks = SQL_BLOCK.findall(text)
    candidate = blocks[-1] if blocks else text
    if not blocks:
        start = re.search(r"\b(SELECT|WITH)\b", candidate, re.IGNORECASE)
        candidate = candidate[start.start() :] if start else candidate
    candidate = candidate.strip().rstrip(";").strip()
    return candidate or None


class TextToSQLServer(SimpleResourcesServer):
    config: TextToSQLConfig
    gold_results: dict[str, list[tuple]] = Field(default_factory=dict)
    """gold SQL -> its rows: a task's gold query runs once per server, not once per rollout."""

    @property
    def database(self) -> Path:
        if self.config.database_path:
            return Path(self.config.database_path)
        if not DEFAULT_OUTPUT.is_file():
            build(DEFAULT_OUTPUT)
        return DEFAULT_OUTPUT

    def _run(self, sql: str) -> QueryResult:
        return run_query(self.database, sql, timeout_s=self.config.statement_timeout_s, max_rows=self.config.max_rows)

    async def _gold(self, sql: str) -> list[tuple]:
        if sql not in self.gold_results:
            result = await asyncio.to_thread(self._run, sql)
            if result.rows is None:
                # A broken task is an error naming the field, never a silent reward 0.
                raise InputDataError(f"gold_sql does not run: {result.error}")
            self.gold_results[sql] = result.rows
        return self.gold_results[sql]

    async def verify(self, body: TextToSQLVerifyRequest) -> TextToSQLVerifyResponse:
        expected = await self._gold(body.gold_sql)
        sql = extract_sql(last_assistant_text(body.response.output))
        result = await asyncio.to_thread(self._run, sql) if sql else QueryResult(None, "no SQL query in the reply")
        reward = 1.0 if result.rows is not None and results_match(result.rows, expected, body.ordered) else 0.0
        return TextToSQLVerifyResponse(
            **body.model_dump(),
            reward=reward,
            extracted_sql=sql,
            execution_error=result.error,
            write_refused=result.refused,
        )


if __name__ == "__main__":
    TextToSQLServer.run_webserver()
