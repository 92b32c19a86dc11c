"""GRPO groups collected in-process, for a trainer's loop: a batch of tasks in, whole groups out.

    from nemo_gym.training import collect_groups_sync

    groups = collect_groups_sync("http://127.0.0.1:11000", "my_env_simple_agent", tasks, num_generations=4,
                                 format="trl")
    for group in groups:               # the batch's order; each group holds num_generations records
        train_on(group.records)        # rollout order; `to_trl` records: prompt_ids, completion_ids, ...

It runs on the collection engine (`nemo_gym.rollouts.RolloutCollector`): at most `policy.concurrency`
rollouts in flight, and each rollout gets `policy.max_attempts` attempts (backoff and jitter between
them) before it counts as failed. A failed rollout is never a reward of 0: its group is *incomplete*
(`nemo_gym.rollouts.groups`), and `IncompleteGroupsError` names every such task and why its members
failed; the error's `groups` still holds the whole batch, complete groups included, for a caller that
would rather train on those. With `allow_incomplete=True` incomplete groups are returned instead,
marked `complete=False` and holding only the members that finished.

Rows that cannot take the format (a model server without `return_token_id_information`, a broken
token prefix) raise TrainingDataError naming the task and rollout: training on them is never silent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nemo_gym.errors import IncompleteGroupsError, TrainingDataError
from nemo_gym.rollouts.collector import CollectionPolicy, RolloutCollector, RolloutFailure
from nemo_gym.rollouts.tasks import RolloutJob, apply_overrides, check_task
from nemo_gym.training.formats import FORMATS
from nemo_gym.training.turns import TokenDataError

Row = dict[str, Any]
DEFAULT_POLICY = CollectionPolicy(concurrency=64)


@dataclass
class Group:
    """The rollouts of one task of the batch."""

    position: int
    """Where the task stands in the batch (also the rows' `_ng_task_index`)."""
    task: Row
    size: int
    """Rollouts asked for (num_generations)."""
    rows: list[Row] = field(default_factory=list)
    """The scored rows, in rollout order."""
    records: list[Row] = field(default_factory=list)
    """`rows` in the asked format (`FORMATS`), same order."""
    failures: dict[int, RolloutFailure] = field(default_factory=dict)
    """rollout index -> the error it still had after every attempt."""

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.size


def _prompt_preview(task: Row, limit: int = 60) -> str:
    prompt = task.get("responses_create_params", {}).get("input")
    if isinstance(prompt, list):
        texts = [item.get("content") for item in prompt if isinstance(item, dict) and item.get("role") == "user"]
        prompt = texts[-1] if texts else ""
    text = " ".join(str(prompt or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_incomplete(groups: Sequence[Group], attempts: int) -> str:
    incomplete = [group for group in groups if not group.complete]
    lines = [
        f"{len(incomplete)} of {len(groups)} groups are incomplete after {attempts} attempt(s) per rollout "
        f"(a GRPO group with a missing member has a wrong baseline):"
    ]
    for group in incomplete:
        errors = "; ".join(
            f"rollout {index}: {failure.error_type}: {failure.message[:200]}"
            for index, failure in sorted(group.failures.items())
        )
        lines.append(f"  task {group.position} ({_prompt_preview(group.task)!r}): {errors}")
    return "\n".join(lines)


async def collect_group_runs(
    collector: RolloutCollector,
    runs: Sequence[tuple[Row, int]],
    *,
    format: str = "trl",
    overrides: Row | None = None,
    train_constrained_tokens: bool = False,
) -> list[Group]:
    """One group per (task, size) of `runs`, in order; the engine behind `collect_groups` and the TRL
    rollout function (whose groups can differ in size). Never raises for a failed rollout. Tokens sampled
    under a grammar get mask 0 unless `train_constrained_tokens` (see `nemo_gym.training.formats`)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    convert = FORMATS[format]
    groups: list[Group] = []
    jobs: list[RolloutJob] = []
    for position, (task, size) in enumerate(runs):
        if size < 1:
            raise ValueError(f"group {position} asks for {size} rollouts; at least 1")
        checked = apply_overrides(check_task(task, path="<batch>", line=position + 1), overrides)
        groups.append(Group(position, task, size))
        jobs.extend(RolloutJob(position, rollout, checked, size) for rollout in range(size))

    finished: dict[int, dict[int, Row]] = {}
    async for outcome in collector.stream(jobs):
        job = outcome.job
        if outcome.row is not None:
            finished.setdefault(job.task_index, {})[job.rollout_index] = outcome.row
        else:
            assert outcome.failure is not None
            groups[job.task_index].failures[job.rollout_index] = outcome.failure

    for group in groups:
        members = finished.get(group.position, {})
        group.rows = [members[index] for index in sorted(members)]
        for row in group.rows:
            try:
                group.records.append(convert(row, train_constrained=train_constrained_tokens))
            except TokenDataError as error:
                raise TrainingDataError(
                    f"task {group.position} rollout {row.get('_ng_rollout_index')} cannot be written as {format}: "
                    f"{error}"
                ) from None
    return groups


async def collect_groups(
    head_url: str,
    agent_name: str,
    tasks: Sequence[Row],
    num_generations: int,
    *,
    format: str = "trl",
    policy: CollectionPolicy = DEFAULT_POLICY,
    overrides: Row | None = None,
    allow_incomplete: bool = False,
    train_constrained_tokens: bool = False,
) -> list[Group]:
    """Run `num_generations` rollouts of every task through `agent_name` on the stack at `head_url`;
    the groups in the batch's order, each holding its records in `format` in rollout order.

    `overrides` are merged into every task's responses_create_params (temperature, say). Raises
    IncompleteGroupsError (see the module docstring), TrainingDataError, UnknownServerError for an
    agent the head server does not know, ServerGoneError when a server stopped answering."""
    async with RolloutCollector.connect(head_url, agent_name, policy) as collector:
        groups = await collect_group_runs(
            collector,
            [(task, num_generations) for task in tasks],
            format=format,
            overrides=overrides,
            train_constrained_tokens=train_constrained_tokens,
        )
    if not allow_incomplete and not all(group.complete for group in groups):
        raise IncompleteGroupsError(describe_incomplete(groups, policy.max_attempts), groups=groups)
    return groups


def collect_groups_sync(
    head_url: str,
    agent_name: str,
    tasks: Sequence[Row],
    num_generations: int,
    **options: Any,
) -> list[Group]:
    """`collect_groups` for code without an event loop (a trainer's step); same arguments."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(collect_groups(head_url, agent_name, tasks, num_generations, **options))
    raise RuntimeError("collect_groups_sync was called inside a running event loop; await collect_groups instead")
