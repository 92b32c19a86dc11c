"""The viewer's HTTP side: a JSON API over one (or two, to compare) indexed rollouts files, and the
static page that draws it. Everything is served from this process; the page loads nothing else.

Endpoints (every `run` parameter is `a`, the file viewed, or `b`, the file compared with it):
  GET /                         the page
  GET /api/status               both runs' indexing progress, the failures file, what is available
  GET /api/rows                 a page of the table: sort, filters, text search, offset/limit
  GET /api/rows/{n}             one whole row, as stored
  GET /api/metrics              aggregate metrics (pass@k, ...), the reward histogram, per-task means,
                                complete and incomplete GRPO groups (`groups`, null when the group size is unknown)
  GET /api/failures             the failures file: counts by error type and a page of records
  GET /api/compare              per-task mean reward in both runs and the delta
  GET /api/compare/task/{task}  the rows of one task in both runs
Every request passes `nemo_gym.servers.request_guard` first: the page is served to the user's own
browser only, not to another site's page (a foreign `Origin`) nor a DNS-rebinding one (a foreign `Host`).
Handlers are plain `def`: FastAPI runs them on its thread pool, so file reads never block the loop.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from nemo_gym.servers.request_guard import RequestGuard
from nemo_gym.viewer.compare import compare_runs
from nemo_gym.viewer.failures import failures_path_for, read_failures
from nemo_gym.viewer.groups import group_summary
from nemo_gym.viewer.index import SORT_KEYS, RolloutIndex, RowQuery

STATIC_DIR = Path(__file__).with_name("static")
MAX_PAGE = 500


@dataclass
class ViewerRuns:
    """What one viewer serves: the run looked at, optionally a second run to compare, the failures file."""

    a: RolloutIndex
    b: RolloutIndex | None = None
    failures_path: Path | None = None
    title: str = field(default="")

    def __post_init__(self) -> None:
        if self.failures_path is None:
            self.failures_path = failures_path_for(self.a.path)
        self.title = self.title or self.a.path.name

    def run(self, name: str) -> RolloutIndex:
        if name == "a":
            return self.a
        if name == "b" and self.b is not None:
            return self.b
        raise HTTPException(404, f"no run {name!r}: this viewer has run a" + (" and b" if self.b else ""))


def json_response(payload: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")


def build_viewer_app(
    runs: ViewerRuns, bound_host: str = "127.0.0.1", allowed_hosts: list[str] | None = None
) -> FastAPI:
    """The viewer app, for a server bound to `bound_host`; its lifespan starts indexing every file
    that is not indexed yet."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        for index in (runs.a, runs.b):
            if index is not None and not index.started:
                index.start()
        yield

    app = FastAPI(title="nemo_gym rollout viewer", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(
        RequestGuard,
        bound_host=bound_host,
        allowed_hosts=allowed_hosts or [],
        setting="ng_viewer's +allowed_hosts=[...]",
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/status")
    def status() -> Response:
        """Also where a file that grew since it was indexed (a collection still running) is caught up."""
        assert runs.failures_path is not None
        for index in (runs.a, runs.b):
            if index is not None:
                index.refresh()
        failures = runs.failures_path
        return json_response(
            {
                "title": runs.title,
                "a": runs.a.status(),
                "b": runs.b.status() if runs.b is not None else None,
                "failures": {"path": str(failures), "exists": failures.is_file()},
            }
        )

    @app.get("/api/rows")
    def rows(
        run: str = "a",
        offset: int = Query(0, ge=0),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        sort: str = "row",
        desc: bool = False,
        task: int | None = None,
        ending: str | None = None,
        reward_min: float | None = None,
        reward_max: float | None = None,
        q: str | None = None,
    ) -> Response:
        index = runs.run(run)
        if sort not in SORT_KEYS:
            raise HTTPException(422, f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
        query = RowQuery(
            sort=sort,
            descending=desc,
            task=task,
            ending=ending or None,
            reward_min=reward_min,
            reward_max=reward_max,
            search=q or None,
            offset=offset,
            limit=limit,
        )
        total, page_rows = index.query(query)
        return json_response(
            {
                "total": total,
                "offset": offset,
                "indexed": index.count,
                "complete": index.complete,
                "rows": [index.summary_of(n) for n in page_rows],
            }
        )

    @app.get("/api/rows/{row_number}")
    def row(row_number: int, run: str = "a") -> Response:
        index = runs.run(run)
        try:
            raw = index.read_raw(row_number)
        except IndexError:
            raise HTTPException(404, f"no row {row_number} (the file has {index.count} rows indexed)") from None
        return Response(raw, media_type="application/json")

    @app.get("/api/metrics")
    def metrics(run: str = "a") -> Response:
        index = runs.run(run)
        if not index.complete:
            return json_response({"complete": False, "indexed": index.count})
        aggregate = dict(index.metrics or {})
        per_task = aggregate.pop("per_task", [])
        failures = runs.failures_path if run == "a" else failures_path_for(index.path)
        return json_response(
            {
                "complete": True,
                "metrics": aggregate or None,
                "groups": group_summary(index, failures),
                "error": index.metrics_error,
                "histogram": index.histogram(),
                "per_task": per_task
                or [
                    {"_ng_task_index": task, "num_rollouts": n, "mean_reward": mean}
                    for task, (n, mean) in index.task_rewards().items()
                ],
            }
        )

    @app.get("/api/failures")
    def failures(offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=MAX_PAGE)) -> Response:
        assert runs.failures_path is not None
        return json_response(read_failures(runs.failures_path, offset, limit))

    @app.get("/api/compare")
    def compare() -> Response:
        if runs.b is None:
            raise HTTPException(404, "no second run: start the viewer with +compare_jsonl_fpath=<other rollouts>")
        return json_response(compare_runs(runs.a, runs.b))

    @app.get("/api/compare/task/{task}")
    def compare_task(task: int) -> Response:
        if runs.b is None:
            raise HTTPException(404, "no second run: start the viewer with +compare_jsonl_fpath=<other rollouts>")
        return json_response(
            {
                side: [index.summary_of(n) for n in index.rows_of_task(task)]
                for side, index in (("a", runs.a), ("b", runs.b))
            }
        )

    return app
