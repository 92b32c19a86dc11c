"""A job's tasks after folding: how many input lines each task is, and how many rollouts (its group) it owes.

NeMo Gym's collector gives identical input rows one task index and makes their copies that task's
rollouts; its `ng_prepare_data` writes each row `num_repeats` times in a row, so a file collated from
data sets with different `num_repeats` has runs of different lengths (a a a b b c). Here every run of
identical consecutive lines is one task (identical lines apart from each other stay separate tasks),
and a task's group is its copies x the `num_repeats` of its agent (NeMo Gym's per-agent mapping
`{agent: n, _default: n}`, or one number for all).

The plan is built during the validating pass (`tasks.scan_tasks`) and costs nothing beyond a few
integers while every task has the same copies and the same group size, which is the usual case;
otherwise one `array('I')` per varying column (4 bytes a task), never a row.

`TaskPlan.size_of` is the one definition of a task's group size: expected pairs, the pending count,
which rows belong to the job, metrics, the quality report, `GroupTally` and the groups file all ask it.
Every row and failure is stamped with it (`_ng_group_size`), so readers that have only a rows file
(exports, the viewer) get the same answer from the rows.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass

from nemo_gym.errors import ConfigError

__all__ = ["PlanBuilder", "TaskPlan", "canonical_repeats", "no_entry_error", "repeats_for_agent"]


class _Column:
    """Unsigned integers, one per task, kept as one number while they are all equal: the array is
    made only when a second value appears."""

    __slots__ = ("common", "count", "values")

    def __init__(self) -> None:
        self.common, self.count = 0, 0
        self.values: array[int] | None = None

    def add(self, value: int) -> None:
        if self.values is not None:
            self.values.append(value)
        elif self.count == 0 or value == self.common:
            self.common = value
        else:
            self.values = array("I", [self.common]) * self.count
            self.values.append(value)
        self.count += 1


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """Tasks of a job once runs of identical lines are folded, with each task's lines and group size."""

    num_tasks: int = 0
    copies: int = 1
    """Input lines of every task when they all have the same number; 0 when it varies (see `copies_of`)."""
    group_size: int = 1
    """Every task's group size when they are all the same; 0 when it varies (see `size_of`)."""
    rollouts: int = 0
    """Pairs the job owes: the sum of the tasks' group sizes."""
    smallest_group: int = 1
    """The smallest group of any task (the largest k pass@k averages over every task for)."""
    runs: array[int] | None = None
    """Each task's input lines, when they vary."""
    sizes: array[int] | None = None
    """Each task's group size, when they vary."""

    @classmethod
    def uniform(cls, num_tasks: int, group_size: int = 1, copies: int = 1) -> TaskPlan:
        return cls(num_tasks, copies, group_size, num_tasks * group_size, group_size)

    def copies_of(self, task_index: int) -> int:
        return self.runs[task_index] if self.runs is not None else self.copies

    def size_of(self, task_index: int) -> int:
        """The task's group: its copies x its agent's `num_repeats`."""
        return self.sizes[task_index] if self.sizes is not None else self.group_size

    def owes(self, task_index: int, rollout_index: int) -> bool:
        """Whether (task, rollout) is a pair of this job."""
        return 0 <= task_index < self.num_tasks and 0 <= rollout_index < self.size_of(task_index)

    @property
    def folds(self) -> bool:
        """Whether some task is more than one input line."""
        return self.runs is not None or self.copies > 1

    @property
    def sizes_vary(self) -> bool:
        return self.sizes is not None


class PlanBuilder:
    """Fed each input line of the validating pass (whether it repeats the line before, and the rollouts
    its agent gets), it closes a task at the end of each run of identical lines."""

    __slots__ = ("runs", "sizes", "run", "repeats", "rollouts", "smallest")

    def __init__(self) -> None:
        self.runs, self.sizes = _Column(), _Column()
        self.run, self.repeats, self.rollouts, self.smallest = 0, 1, 0, 0

    def add(self, same_as_previous: bool, repeats: int) -> None:
        if same_as_previous:
            self.run += 1
            return
        self._close()
        self.run, self.repeats = 1, repeats

    def _close(self) -> None:
        if self.run:
            size = self.run * self.repeats
            self.runs.add(self.run)
            self.sizes.add(size)
            self.rollouts += size
            self.smallest = size if self.smallest == 0 else min(self.smallest, size)
            self.run = 0

    def plan(self) -> TaskPlan:
        self._close()
        runs, sizes = self.runs, self.sizes
        return TaskPlan(
            num_tasks=runs.count,
            copies=0 if runs.values is not None else runs.common or 1,
            group_size=0 if sizes.values is not None else sizes.common or 1,
            rollouts=self.rollouts,
            smallest_group=self.smallest or 1,
            runs=runs.values,
            sizes=sizes.values,
        )


def repeats_for_agent(num_repeats: int | Mapping[str, int], agent: str | None) -> int | None:
    """The rollouts a task of `agent` gets per copy: one number for all, or NeMo Gym's per-agent mapping
    (its own entry, else `_default`); None when the mapping has neither."""
    if isinstance(num_repeats, int):
        return num_repeats
    return num_repeats.get(agent, num_repeats.get("_default")) if agent is not None else num_repeats.get("_default")


def no_entry_error(mapping: Mapping[str, int], missing: set[str]) -> ConfigError:
    """The one line for agents the tasks go to that a per-agent `num_repeats` has no count for."""
    return ConfigError(
        f"+num_repeats has no entry for the agent(s) {', '.join(sorted(missing))} the tasks go to and no _default "
        f"(it lists {', '.join(sorted(mapping)) or 'nothing'})"
    )


def canonical_repeats(
    num_repeats: int, per_agent: Mapping[str, int] | None, agents: frozenset[str]
) -> tuple[int, dict[str, int] | None]:
    """(num_repeats, per-agent counts) in the form a job records: a mapping that gives every agent the tasks
    go to the same count is that one number (the job is the same as with `+num_repeats=<n>`); otherwise
    each of those agents with its count, sorted by name (entries for agents no task goes to decide nothing)."""
    if per_agent is None:
        return num_repeats, None
    counts: dict[str, int] = {}
    for agent in sorted(agents):
        count = repeats_for_agent(per_agent, agent)
        if count is None:
            raise no_entry_error(per_agent, {a for a in agents if repeats_for_agent(per_agent, a) is None})
        counts[agent] = count
    distinct = set(counts.values())
    if len(distinct) <= 1:
        return (distinct.pop() if distinct else per_agent.get("_default", 1)), None
    return 1, counts
