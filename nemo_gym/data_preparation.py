"""Validate the data sets a config names and collate them per type (`ng_prepare_data`, NeMo Gym's
`gym dataset collate`).

The data sets are the `datasets:` entries of agent instances (`{name, type, jsonl_fpath,
num_repeats, ...}`). The mode picks the types: `example_validation` the `example` sets (the 5 rows a
pull request adds), `train_preparation` the `train`, `validation` and `benchmark` sets.

1. Every line of every set is checked as a task row; all bad lines are reported at once (file:line)
   and nothing is written.
2. Each set's statistics (`nemo_gym.dataset_metrics`) go to `<jsonl stem>_metrics.json` beside it.
   When that file already exists and disagrees, the fresh figures go to `<stem>_metrics_conflict.json`
   instead and the run stops before collating (`overwrite_metrics_conflicts` replaces the stored file).
3. Per type, `<output_dirpath>/<type>.jsonl` gets every row of every set of that type, each repeated
   `num_repeats` times in a row (aaabbb) and stamped with the `agent_ref` of the agent that owns the
   set, and `<output_dirpath>/<type>_metrics.json` the type's statistics. A benchmark set with a
   `prompt_config` has its input built from that prompt file.

NeMo Gym can download missing sets from its registries; nothing here reaches the network, so a
missing set is an error naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from nemo_gym.config import GlobalConfig
from nemo_gym.dataset_metrics import DatasetMetrics, metrics_differences
from nemo_gym.errors import InputDataError, OutputIsInputError
from nemo_gym.prompt_templates import PromptTemplate
from nemo_gym.rollouts.tasks import check_task

__all__ = ["Dataset", "PreparationMode", "PreparationReport", "find_datasets", "prepare_data", "split_repeats"]

PreparationMode = Literal["train_preparation", "example_validation"]
TYPES_OF_MODE: dict[str, tuple[str, ...]] = {
    "train_preparation": ("train", "validation", "benchmark"),
    "example_validation": ("example",),
}
AGENTS = "responses_api_agents"
# The fields of a data set entry written at the top of its metrics file, in NeMo Gym's order.
_ENTRY_FIELDS = ("name", "type", "jsonl_fpath", "num_repeats", "source", "gitlab_identifier", "huggingface_identifier")
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True, slots=True)
class Dataset:
    """One `datasets:` entry of an agent, with its file found on disk (None when it is missing)."""

    agent: str
    entry: dict[str, Any]
    path: Path | None

    @property
    def name(self) -> str:
        return str(self.entry["name"])

    @property
    def type(self) -> str:
        return str(self.entry["type"])

    @property
    def num_repeats(self) -> int:
        return int(self.entry.get("num_repeats") or 1)

    def header(self) -> dict[str, Any]:
        """The entry's fields as NeMo Gym's metrics files start with them (unset ones as null)."""
        head = {key: self.entry.get(key, 1 if key == "num_repeats" else None) for key in _ENTRY_FIELDS}
        head["license"] = self.entry.get("license")
        return head


@dataclass(slots=True)
class PreparationReport:
    """What a run wrote: per-set metrics files and, per type, the collated rows and their metrics."""

    metrics_files: dict[str, Path] = field(default_factory=dict)
    """Data set file -> its metrics file (written or already up to date)."""
    collated: dict[str, Path] = field(default_factory=dict)
    """Type -> `<output_dirpath>/<type>.jsonl`."""
    rows: dict[str, int] = field(default_factory=dict)
    """Type -> rows written (repeats included)."""


def _locate(jsonl_fpath: str, config: GlobalConfig) -> Path | None:
    """The file a `jsonl_fpath` names: from the working directory, else from the project root."""
    candidate = Path(jsonl_fpath)
    for path in (candidate, config.project_root / candidate):
        if path.is_file():
            return path
    return None


def find_datasets(config: GlobalConfig, mode: PreparationMode) -> list[Dataset]:
    """The data sets of the mode's types, in config order (agents, then their `datasets:` entries)."""
    wanted = TYPES_OF_MODE[mode]
    found = []
    for instance in config.instances:
        if instance.server_type != AGENTS:
            continue
        for entry in config.server_config_dict(instance.name).get("datasets") or []:
            if entry.get("type") in wanted:
                found.append(Dataset(instance.name, dict(entry), _locate(str(entry["jsonl_fpath"]), config)))
    return found


def _rows(dataset: Dataset) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the decoding error) for each non-blank line."""
    assert dataset.path is not None
    with dataset.path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                yield number, InputDataError(f"not valid JSON ({error})", path=str(dataset.path), line=number)


def _prompt_of(dataset: Dataset) -> PromptTemplate | None:
    prompt = dataset.entry.get("prompt_config") if dataset.type == "benchmark" else None
    return PromptTemplate.load(str(prompt))[0] if prompt else None


def _checked_rows(dataset: Dataset, problems: list[str]) -> Iterator[dict[str, Any]]:
    """The set's valid rows (its prompt applied); each bad line adds one line to `problems`."""
    prompt = _prompt_of(dataset)
    where = str(dataset.path)
    for number, row in _rows(dataset):
        try:
            if isinstance(row, InputDataError):
                raise row
            if prompt is not None:
                row = prompt.apply(row, path=where, line=number)
            yield check_task(row, path=where, line=number)
        except InputDataError as error:
            problems.append(str(error))


def _measure(dataset: Dataset, problems: list[str]) -> DatasetMetrics:
    metrics = DatasetMetrics()
    for row in _checked_rows(dataset, problems):
        for _ in range(dataset.num_repeats):
            metrics.add(row)
    return metrics


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=4) + "\n")
    os.replace(temporary, path)


def _store_metrics(path: Path, fresh: dict[str, Any], overwrite_conflicts: bool, say: Callable[[str], None]) -> str:
    """Write `fresh` to `path` unless a stored file already agrees; on disagreement write
    `<stem>_conflict.json` and return its path (or overwrite, when asked). '' when all is well."""
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputDataError(f"cannot read the stored metrics ({error})", path=str(path)) from None
        differences = metrics_differences(stored, fresh)
        if not differences:
            say(f"{path}: up to date")
            return ""
        conflict = path.with_name(f"{path.stem}_conflict.json")
        _write_json(conflict, fresh)
        shown = "; ".join(differences[:5]) + (f"; ... {len(differences) - 5} more" if len(differences) > 5 else "")
        say(f"{path}: stored metrics differ from the data ({shown}); fresh figures in {conflict}")
        if not overwrite_conflicts:
            return str(conflict)
    _write_json(path, fresh)
    say(f"{path}: written")
    return ""


def _check_outputs_are_not_inputs(datasets: list[Dataset], output_dir: Path) -> None:
    inputs = {dataset.path.resolve(): dataset for dataset in datasets if dataset.path is not None}
    for kind in {dataset.type for dataset in datasets}:
        target = (output_dir / f"{kind}.jsonl").resolve()
        if target in inputs:
            raise OutputIsInputError(
                f"+output_dirpath={output_dir} would write {target}, which is the data set "
                f"{inputs[target].name!r} itself; choose another output folder",
                path=str(target),
                input_path=str(target),
            )


def prepare_data(
    config: GlobalConfig,
    mode: PreparationMode,
    output_dirpath: str | Path,
    *,
    overwrite_metrics_conflicts: bool = False,
    say: Callable[[str], None] = print,
    repeat_rows: bool = True,
) -> PreparationReport:
    """Validate, measure and collate the mode's data sets (see the module docstring). `repeat_rows=False`
    writes each row once in the collated files (a collection repeats it instead: see `split_repeats`);
    the metrics still count every repeat."""
    datasets = find_datasets(config, mode)
    wanted = ", ".join(TYPES_OF_MODE[mode])
    if not datasets:
        raise InputDataError(
            f"no agent in the config has a data set of type {wanted} (`datasets:` entries of an agent); "
            f"pass the environment's config in +config_paths=[...]"
        )
    missing = [dataset for dataset in datasets if dataset.path is None]
    if missing:
        names = ", ".join(f"{d.agent}/{d.name} ({d.entry['jsonl_fpath']})" for d in missing)
        raise InputDataError(
            f"{len(missing)} data set file(s) not found: {names}; "
            f"create them (downloading from NeMo Gym's registries is not done here)"
        )
    output_dir = Path(output_dirpath)
    _check_outputs_are_not_inputs(datasets, output_dir)

    problems: list[str] = []
    measured = [(dataset, _measure(dataset, problems)) for dataset in datasets]
    if problems:
        listed = "\n".join(problems[:MAX_LISTED_PROBLEMS])
        more = f"\n... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        say(listed + more)
        raise InputDataError(f"{len(problems)} invalid row(s) in the data sets (listed above); nothing was written")

    report = PreparationReport()
    conflicts: list[str] = []
    by_type: dict[str, tuple[Dataset, DatasetMetrics]] = {}
    for dataset, metrics in measured:
        assert dataset.path is not None
        target = dataset.path.with_name(f"{dataset.path.stem}_metrics.json")
        say(f"{dataset.agent}/{dataset.name} ({dataset.type}): {metrics.examples} examples")
        conflict = _store_metrics(target, dataset.header() | metrics.summary(), overwrite_metrics_conflicts, say)
        if conflict:
            conflicts.append(conflict)
        report.metrics_files[str(dataset.path)] = target
        if dataset.type in by_type:
            by_type[dataset.type][1].merge(metrics)
        else:
            combined = DatasetMetrics()
            combined.merge(metrics)
            by_type[dataset.type] = (dataset, combined)
    if conflicts:
        raise InputDataError(
            f"stored metrics disagree with the data in {len(conflicts)} file(s) ({', '.join(conflicts)} hold the "
            f"fresh figures): delete the stale metrics file(s) and run again, or pass +overwrite_metrics_conflicts=true"
        )

    for kind, (first, metrics) in by_type.items():
        conflict = _store_metrics(
            output_dir / f"{kind}_metrics.json", first.header() | metrics.summary(), overwrite_metrics_conflicts, say
        )
        if conflict:
            conflicts.append(conflict)
            continue
        report.collated[kind], report.rows[kind] = _collate(kind, datasets, output_dir, repeat_rows)
    if conflicts:
        raise InputDataError(
            f"stored metrics in {output_dir} disagree with the data ({', '.join(conflicts)} hold the fresh figures): "
            f"delete the stale file(s) and run again, or pass +overwrite_metrics_conflicts=true"
        )
    return report


def _collate(kind: str, datasets: list[Dataset], output_dir: Path, repeat_rows: bool = True) -> tuple[Path, int]:
    """Write every row of the type's sets, stamped with its agent and repeated `num_repeats` times unless
    `repeat_rows` is off, to `<type>.jsonl`."""
    target = output_dir / f"{kind}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    written = 0
    ignored: list[str] = []  # already reported by the validation pass, which found none
    with temporary.open("wb") as out:
        for dataset in datasets:
            if dataset.type != kind:
                continue
            ref = {"type": AGENTS, "name": dataset.agent}
            for row in _checked_rows(dataset, ignored):
                line = orjson.dumps(row | {"agent_ref": ref}) + b"\n"
                for _ in range(dataset.num_repeats if repeat_rows else 1):
                    out.write(line)
                    written += 1
    os.replace(temporary, target)
    return target, written


def split_repeats(config: GlobalConfig, split: str) -> int:
    """The `num_repeats` shared by every data set of type `split`: how many rollouts a collection on that
    split owes each task.

    NeMo Gym's `gym eval run --split` collates each row `num_repeats` times in a row and its collector
    folds identical lines into one task, so the copies become one task's rollouts (one group, pass@k over
    them). Here a collection on a split collates each row once and repeats it that many times instead,
    which gives the same groups. Sets of one split that repeat differently would give groups of different
    sizes in one job, which a collection here does not hold: that is refused, naming the sets."""
    sets = [dataset for dataset in find_datasets(config, "train_preparation") if dataset.type == split]
    repeats = {dataset.num_repeats for dataset in sets}
    if len(repeats) > 1:
        listed = ", ".join(f"{d.agent}/{d.name}: {d.num_repeats}" for d in sets)
        raise InputDataError(
            f"the {split} data sets repeat their rows differently ({listed}); one collection gives every task "
            f"the same number of rollouts: give them one num_repeats, or collect each set on its own"
        )
    return repeats.pop() if repeats else 1
