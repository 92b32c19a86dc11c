"""text_to_sql: answer a question about a small company database with one SQLite query.

Trains writing correct SQL from a schema and a question. The model's query is run on a read-only
connection in a worker process, within time, memory and result-size limits (see `sql_runner.py`);
reward 1.0 iff its result set equals the gold query's (order-insensitive unless the task says
`ordered`). Queries that write are refused.
No tools: the schema is in the prompt and the query is the answer.

NeMo Gym has a different task under the same name (an LLM judge comparing the model's query with a
gold `sql` in a `sql_dialect` of mysql, postgresql or sqlite); its rows are refused with a 400
naming the field, never scored here as if they were this task.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from nemo_gym.compute import ComputeSettings, LocalExecutor
from nemo_gym.errors import ComputeTimeoutError, ComputeWorkerDiedError, InputDataError
from nemo_gym.openai_types import last_assistant_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from resources_servers.text_to_sql.build_db import DEFAULT_OUTPUT, build
from resources_servers.text_to_sql.sql_runner import (
    QueryLimits,
    QueryResult,
    load_sqlite,
    results_match,
    run_query,
    time_limit_error,
)

KILL_GRACE_S = 1.0
"""How long after its time limit a query's worker is killed: enough for the progress handler to stop
an ordinary query with an exact answer first; only a single long C call lives to be killed."""
SQL_BLOCK = re.compile(r"```(?:sql|sqlite)?\s*\n?(.*?)```", re.IGNORECASE | re.DOTALL)


class TextToSQLConfig(BaseResourcesServerConfig):
    database_path: str | None = None
    """SQLite file to query; None = the shipped `data/company.sqlite` (built at start-up if absent)."""
    statement_timeout_s: float = Field(2.0, gt=0)
    """A query running longer is stopped (its worker killed if need be) and scores 0."""
    max_rows: int = Field(10_000, ge=1)
    """A result with more rows scores 0 (it cannot be the answer to these questions, and would cost memory)."""
    max_result_bytes: int = Field(10_000_000, ge=1)
    """A result (or any one string or blob the query builds) over this many bytes scores 0."""
    query_memory_mb: int = Field(512, ge=64)
    """Address-space limit (RLIMIT_AS) of each process that runs queries."""
    query_workers: int = Field(4, ge=1)
    """Queries run at once, each in its own worker process; more wait their turn."""


NEMO_GYM_TASK_FIELDS = ("sql_dialect", "sql", "sql_context")


class TextToSQLVerifyRequest(BaseVerifyRequest):
    gold_sql: str
    ordered: bool = False
    """True when the question asks for an order; then row order must match too."""

    @model_validator(mode="before")
    @classmethod
    def refuse_nemo_gym_rows(cls, data: Any) -> Any:
        if isinstance(data, dict) and "gold_sql" not in data:
            field = next((name for name in NEMO_GYM_TASK_FIELDS if name in data), None)
            if field is not None:
                # InputDataError (not ValueError) passes through validation as a 400 naming the field.
                raise InputDataError(
                    "this row is NeMo Gym's text_to_sql task (an LLM judge over a gold `sql` in a `sql_dialect`), "
                    "not this environment's (SQLite results compared with `gold_sql`); run it with NeMo Gym's "
                    "text_to_sql environment",
                    field=field,
                )
        return data


class TextToSQLVerifyResponse(TextToSQLVerifyRequest, BaseVerifyResponse):
    extracted_sql: str | None
    execution_error: str | None
    """Why the query produced no result (syntax error, refused write, a limit that stopped it), else None."""
    write_refused: bool
    stopped_by: Literal["time", "memory", "result_size"] | None = None
    """Which limit stopped the query, when one did."""


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
    queries: LocalExecutor | None = None
    """Worker processes that run queries. Local even on Ray: the database file is on this machine."""

    @property
    def database(self) -> Path:
        if self.config.database_path:
            return Path(self.config.database_path)
        if not DEFAULT_OUTPUT.is_file():
            build(DEFAULT_OUTPUT)
        return DEFAULT_OUTPUT

    async def on_startup(self) -> None:
        await self._query_workers().start()  # workers up before the first rollout's query

    async def on_shutdown(self) -> None:
        if self.queries is not None:
            await self.queries.aclose()
            self.queries = None

    def _query_workers(self) -> LocalExecutor:
        # A worker process, not a thread: a single long C call (see sql_runner) can only be stopped by
        # killing what runs it, and its memory stays out of the server, under its own RLIMIT_AS.
        if self.queries is None:
            settings = ComputeSettings(
                max_concurrent=self.config.query_workers,
                timeout_s=self.config.statement_timeout_s + KILL_GRACE_S,
                memory_mb=self.config.query_memory_mb,
            )
            self.queries = LocalExecutor(settings, warmup=load_sqlite)
        return self.queries

    async def _run(self, sql: str) -> QueryResult:
        config = self.config
        limits = QueryLimits(config.statement_timeout_s, config.max_rows, config.max_result_bytes)
        try:
            return await self._query_workers().submit(run_query, self.database, sql, limits)
        except ComputeTimeoutError:
            return time_limit_error(config.statement_timeout_s)
        except ComputeWorkerDiedError:
            # Twice (the pool retries once on a fresh worker); under RLIMIT_AS that is almost always memory.
            limit = config.query_memory_mb
            message = f"stopped: the process running the query died (most likely at its {limit} MB memory limit)"
            return QueryResult(None, message, stopped_by="memory")

    async def _gold(self, sql: str) -> list[tuple]:
        if sql not in self.gold_results:
            result = await self._run(sql)
            if result.rows is None:
                # A broken task is an error naming the field, never a silent reward 0.
                raise InputDataError(f"gold_sql does not run: {result.error}")
            self.gold_results[sql] = result.rows
        return self.gold_results[sql]

    async def verify(self, body: TextToSQLVerifyRequest) -> TextToSQLVerifyResponse:
        expected = await self._gold(body.gold_sql)
        sql = extract_sql(last_assistant_text(body.response.output))
        result = await self._run(sql) if sql else QueryResult(None, "no SQL query in the reply")
        reward = 1.0 if result.rows is not None and results_match(result.rows, expected, body.ordered) else 0.0
        return TextToSQLVerifyResponse(
            **body.model_dump(),
            reward=reward,
            extracted_sql=sql,
            execution_error=result.error,
            write_refused=result.refused,
            stopped_by=result.stopped_by,
        )


if __name__ == "__main__":
    TextToSQLServer.run_webserver()
