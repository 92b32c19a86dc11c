"""Re-verify stored rollouts: send each row's response to its environment's `/verify` again, with no
model call, so a fixed verifier can re-score a collection without paying for generation again.

Per row, exactly what the agent did around the model, minus the model:
  resources `/seed_session` (the task row) -> [resources `/<tool>` for each stored function call,
  when `replay_tool_calls`] -> resources `/verify` (the task row + the stored response).
Replaying the stored tool calls rebuilds a stateful environment's per-rollout state (a counter, a
sandbox's files) the way the episode built it; tool outputs are not compared or stored again, and
stateless environments simply do the same cheap work twice. Turn it off for tools with side effects.

The task row sent to seed and verify should be the one the agent sent. It comes from, in order:
the `<stem>_materialized_inputs.jsonl` the collector wrote beside the rollouts (exact), a tasks
file the caller names, or else the stored row without `response`, `reward` and our
`_ng_*`/`agent_ref` bookkeeping. The fallback is counted and reported (`ReverifyOutcome.task_fallback`):
a stored row still carries the fields the last verify added (`/verify` drops those its response
model declares) but lacks the task fields an environment did not echo (NeMo Gym's rows, whose
verify keeps only declared fields), so its reward may differ from the task's.

The output row is the stored row updated with the verify response, so `_ng_task_index`,
`_ng_rollout_index`, `agent_ref` and any field the agent added are kept.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.client import CONNECT_ONLY_RETRY, ServerClient
from nemo_gym.errors import InputDataError, NemoGymError
from nemo_gym.rollouts.tasks import json_line_error
from nemo_gym.servers.resources import RESERVED_RESOURCES_PATHS

JSONDict = dict[str, Any]
BOOKKEEPING_FIELDS = frozenset({"response", "reward", "agent_ref"})
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
REWARD_TOLERANCE = 1e-9


def read_rollouts(path: str | Path) -> Iterator[tuple[int, JSONDict]]:
    """(line number, row) for each non-blank line; a line that is not a rollout row is an
    InputDataError naming it, raised before anything is sent when the caller checks first."""
    for line_number, _, row in read_rollouts_at(path):
        yield line_number, row


def read_rollouts_at(path: str | Path) -> Iterator[tuple[int, int, JSONDict]]:
    """`read_rollouts` plus each line's byte offset, for readers that come back to a row by seeking."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError("rollouts file does not exist", path=str(path))
    with path.open("rb") as handle:
        offset = 0
        for line_number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            yield line_number, start, parse_rollout_line(raw, path, line_number)


def parse_rollout_line(raw: bytes, path: Path, line_number: int) -> JSONDict:
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InputDataError(json_line_error(error, raw), path=str(path), line=line_number) from None
    if not isinstance(row, dict):
        raise InputDataError("expected a JSON object", path=str(path), line=line_number)
    for name, kind in (("response", dict), ("responses_create_params", dict)):
        if not isinstance(row.get(name), kind):
            raise InputDataError("missing or not an object", path=str(path), line=line_number, field=name)
    return row


class TaskRows:
    """The exact task rows of a collection, found by seeking: keyed by (task, rollout) for a
    materialized-inputs file, by task for a tasks file. Holds offsets, never rows."""

    def __init__(self, path: Path, per_rollout: bool):
        self.path, self.per_rollout = path, per_rollout
        self._offsets: dict[Any, int] = {}
        offset, task_index = 0, 0
        with path.open("rb") as handle:
            for raw in handle:
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                if per_rollout:
                    head = orjson.loads(raw)
                    key: Any = (head.get("_ng_task_index"), head.get("_ng_rollout_index"))
                else:
                    key, task_index = task_index, task_index + 1
                self._offsets[key] = start

    @classmethod
    def materialized(cls, path: Path) -> TaskRows:
        return cls(path, per_rollout=True)

    @classmethod
    def tasks(cls, path: Path) -> TaskRows:
        return cls(path, per_rollout=False)

    def get(self, task: Any, rollout: Any) -> JSONDict | None:
        offset = self._offsets.get((task, rollout) if self.per_rollout else task)
        if offset is None:
            return None
        with self.path.open("rb") as handle:
            handle.seek(offset)
            row = orjson.loads(handle.readline())
        return {key: value for key, value in row.items() if not key.startswith("_ng_")}


def task_row_of(stored: JSONDict, task_rows: TaskRows | None) -> tuple[JSONDict, bool]:
    """The row the agent sent to seed and verify for this rollout, and whether it is the stored row
    standing in because no task row matched (see the module docstring)."""
    if task_rows is not None:
        found = task_rows.get(stored.get("_ng_task_index"), stored.get("_ng_rollout_index"))
        if found is not None:
            # The stored request is what the model saw (overrides included); keep it authoritative.
            return found | {"responses_create_params": stored["responses_create_params"]}, False
    fallback = {
        key: value for key, value in stored.items() if key not in BOOKKEEPING_FIELDS and not key.startswith("_ng_")
    }
    return fallback, True


def stored_reward(row: JSONDict) -> float | None:
    value = row.get("reward")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(slots=True)
class ReverifyOutcome:
    """One re-verified row, or why it could not be."""

    line: int
    task: Any
    rollout: Any
    old_reward: float | None
    new_reward: float | None = None
    row: JSONDict | None = None
    error_type: str | None = None
    message: str | None = None
    task_fallback: bool = False
    """True when no task row matched and the stored row stood in for it."""

    @property
    def ok(self) -> bool:
        return self.row is not None

    @property
    def changed(self) -> bool:
        if not self.ok:
            return False
        if self.old_reward is None or self.new_reward is None:
            return self.old_reward != self.new_reward
        return abs(self.new_reward - self.old_reward) > REWARD_TOLERANCE

    def failure_record(self) -> JSONDict:
        return {
            "_ng_task_index": self.task,
            "_ng_rollout_index": self.rollout,
            "line": self.line,
            "error_type": self.error_type,
            "message": self.message,
        }


class Reverifier:
    """Re-verifies rows against running resources servers, `concurrency` at a time."""

    def __init__(
        self,
        server_client: ServerClient,
        resources_server_for: Callable[[JSONDict], str],
        *,
        task_rows: TaskRows | None = None,
        concurrency: int = 64,
        replay_tool_calls: bool = True,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.server_client = server_client
        self.resources_server_for = resources_server_for
        self.task_rows = task_rows
        self.concurrency = concurrency
        self.replay_tool_calls = replay_tool_calls

    async def reverify_one(self, line: int, stored: JSONDict) -> ReverifyOutcome:
        outcome = ReverifyOutcome(
            line, stored.get("_ng_task_index"), stored.get("_ng_rollout_index"), stored_reward(stored)
        )
        try:
            resources = self.resources_server_for(stored)
            task_row, outcome.task_fallback = task_row_of(stored, self.task_rows)
            seeded = await self.server_client.post(resources, "/seed_session", json=task_row, retry=CONNECT_ONLY_RETRY)
            seeded.raise_for_status()
            cookies = dict(seeded.cookies)
            if self.replay_tool_calls:
                await self._replay(resources, stored, cookies)
            verified = await self.server_client.post(
                resources,
                "/verify",
                json=task_row | {"response": stored["response"]},
                cookies=cookies,
                retry=CONNECT_ONLY_RETRY,
            )
            verified.raise_for_status()
            result = verified.json()
            new_reward = stored_reward(result) if isinstance(result, dict) else None
            if new_reward is None:
                raise InputDataError(f"resources server {resources!r} answered /verify without a numeric reward")
        except NemoGymError as error:
            outcome.error_type, outcome.message = type(error).__name__, str(error)
            return outcome
        outcome.new_reward = new_reward
        outcome.row = stored | result
        return outcome

    async def _replay(self, resources: str, stored: JSONDict, cookies: dict[str, str]) -> None:
        """Re-run the stored function calls in order, as the agent dispatched them (same safety rules:
        only declared tools, never a reserved path, JSON-object arguments); their outputs are not used."""
        declared = {
            tool.get("name")
            for tool in stored["responses_create_params"].get("tools") or []
            if isinstance(tool, dict) and tool.get("type", "function") == "function"
        }
        for item in stored["response"].get("output") or []:
            if not isinstance(item, dict) or item.get("type") != "function_call":
                continue
            name = item.get("name") or ""
            if name not in declared or name in RESERVED_RESOURCES_PATHS or not TOOL_NAME_PATTERN.match(name):
                continue
            try:
                arguments = orjson.loads(item.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                continue
            if not isinstance(arguments, dict):
                continue
            result = await self.server_client.post(
                resources, f"/{name}", json=arguments, cookies=cookies, retry=CONNECT_ONLY_RETRY
            )
            cookies.update(result.cookies)

    async def stream(self, rows: Iterable[tuple[int, JSONDict]]) -> AsyncIterator[ReverifyOutcome]:
        """Outcomes in completion order; at most `concurrency` rows in flight and waiting."""
        source = iter(rows)
        outcomes: asyncio.Queue[ReverifyOutcome | None] = asyncio.Queue(self.concurrency)
        active = self.concurrency

        async def worker() -> None:
            nonlocal active
            try:
                for line, row in source:  # one shared iterator: each row is taken by exactly one worker
                    await outcomes.put(await self.reverify_one(line, row))
            finally:
                active -= 1
                if active == 0:
                    await outcomes.put(None)

        workers = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
        try:
            while (outcome := await outcomes.get()) is not None:
                yield outcome
            for task in workers:
                task.result()  # re-raise a worker's unexpected error instead of losing it
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


@dataclass
class RewardChanges:
    """Tally of a re-verification: per task, rows seen, rewards changed, old and new reward sums."""

    rows: int = 0
    failed: int = 0
    task_fallbacks: int = 0
    per_task: dict[Any, list[float]] = field(default_factory=dict)  # task -> [rows, changed, old sum, new sum]

    def add(self, outcome: ReverifyOutcome) -> None:
        self.rows += 1
        self.task_fallbacks += outcome.task_fallback
        if not outcome.ok:
            self.failed += 1
            return
        entry = self.per_task.setdefault(outcome.task, [0, 0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += outcome.changed
        entry[2] += outcome.old_reward or 0.0
        entry[3] += outcome.new_reward or 0.0

    @property
    def changed(self) -> int:
        return int(sum(entry[1] for entry in self.per_task.values()))

    def report(self, max_tasks: int = 50) -> str:
        """Human lines: the totals, then each task whose rewards changed (mean old -> new)."""
        verified = self.rows - self.failed
        lines = [
            f"Re-verified {verified} of {self.rows} rows: {self.changed} rewards changed"
            + (f", {self.failed} rows failed" if self.failed else "")
            + "."
        ]
        if self.task_fallbacks:
            lines.append(
                f"  {self.task_fallbacks} of {self.rows} rows matched no task row and were verified from the stored "
                "row (fields verify added are dropped; task fields the row lacks are missing); pass "
                "+tasks_jsonl_fpath=<the tasks the collection ran on> to verify them from their tasks."
            )
        changed_tasks = [(task, e) for task, e in self.per_task.items() if e[1]]
        changed_tasks.sort(key=lambda pair: (not isinstance(pair[0], int), pair[0] if isinstance(pair[0], int) else 0))
        for task, (rows, changed, old_sum, new_sum) in changed_tasks[:max_tasks]:
            lines.append(
                f"  task {task}: {int(changed)} of {int(rows)} rewards changed, "
                f"mean {old_sum / rows:.3f} -> {new_sum / rows:.3f}"
            )
        if len(changed_tasks) > max_tasks:
            lines.append(f"  ... and {len(changed_tasks) - max_tasks} more tasks with changes")
        return "\n".join(lines)
