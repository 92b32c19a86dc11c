"""`ng_test +entrypoint=resources_servers/<name>`: check an environment's data files and run its tests.

Data checks (resources servers): `data/example.jsonl` has exactly 5 valid task rows, and
`data/example_rollouts.jsonl` has 5 rows, each with a numeric `reward`, that belong to *these*
tasks: each row's `_ng_task_index` names a task of `data/example.jsonl` whose conversation is the
row's `responses_create_params.input` (so a file copied from another environment fails). A problem
with the example rollouts comes with the command that collects them afresh on the local model.

The folder's `tests/` run with pytest in this interpreter (servers share the installed
environment) from the folder, as NeMo Gym runs them (`from app import X` works), whether or not the
data checks passed, so one run shows everything to fix. Before that, the packages the folder's
requirements.txt names must be installed (`+install_requirements=true` installs them with pip). Exit code:
pytest's when tests fail, else 2 when a data check failed, else 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import SERVER_TYPES, find_project_root, load_global_config
from nemo_gym.env_requirements import INSTALL_REQUIREMENTS_HELP, ensure_requirements
from nemo_gym.errors import ConfigError, InputDataError
from nemo_gym.rollouts.store import iter_rows
from nemo_gym.rollouts.tasks import iter_tasks
from nemo_gym.scaffold import collect_example_rollouts_command

EXAMPLES_REQUIRED = 5


class EnvTestConfig(BaseModel):
    """Validate an implementation folder's example data and run its tests with pytest."""

    entrypoint: str = Field(description="The folder to test, e.g. resources_servers/mcqa.")
    should_validate_data: bool = Field(True, description="Check data/example.jsonl and data/example_rollouts.jsonl.")
    install_requirements: bool = Field(False, description=INSTALL_REQUIREMENTS_HELP)


def conversation_key(conversation: Any) -> tuple[tuple[str, str], ...]:
    """A conversation as (role, text) pairs, so formatting the agent adds on the way (a `type`
    field, text parts instead of a string) does not make the same conversation look different."""
    if isinstance(conversation, str):
        return (("user", conversation),)
    pairs = []
    for item in conversation if isinstance(conversation, list) else []:
        if not isinstance(item, dict):
            continue
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        pairs.append((str(item.get("role", item.get("type", ""))), str(content or "")))
    return tuple(pairs)


def _first_user_text(key: tuple[tuple[str, str], ...]) -> str:
    text = next((text for role, text in key if role == "user"), key[0][1] if key else "")
    return text if len(text) <= 60 else text[:57] + "..."


def _task_by_input(conversation: tuple[tuple[str, str], ...], tasks: list[tuple[tuple[str, str], ...]]) -> int | None:
    return next((index for index, task in enumerate(tasks) if task == conversation), None)


def check_example_rollouts(
    rollouts: Path, tasks: list[tuple[tuple[str, str], ...]], notes: list[str] | None = None
) -> list[str]:
    """Problems with the example rollouts: count, rewards, and that each belongs to a task of `tasks`.

    A row carries its task as `_ng_task_index` (ours); a row without one (NeMo Gym writes none) is
    matched to the task whose input conversation is the row's, and `notes` says which it was."""
    try:
        rows = list(iter_rows(rollouts))
    except InputDataError as error:
        return [str(error)]
    problems = []
    matched: list[tuple[int, int]] = []
    if len(rows) != EXAMPLES_REQUIRED:
        problems.append(f"{rollouts}: {len(rows)} rows, expected exactly {EXAMPLES_REQUIRED}")
    for number, row in enumerate(rows, start=1):
        where = f"{rollouts}:{number}"
        reward = row.get("reward")
        if isinstance(reward, bool) or not isinstance(reward, (int, float)):
            problems.append(f"{where}: no numeric reward")
        params = row.get("responses_create_params")
        conversation = conversation_key(params.get("input") if isinstance(params, dict) else None)
        if "_ng_task_index" not in row:
            found = _task_by_input(conversation, tasks)
            if found is None:
                problems.append(
                    f"{where}: no _ng_task_index, and its input ({_first_user_text(conversation)!r}) is none of "
                    f"the tasks of data/example.jsonl; was the file copied from another environment?"
                )
            else:
                matched.append((number, found))
            continue
        index = row["_ng_task_index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(tasks):
            problems.append(
                f"{where}: _ng_task_index {index!r} is not a task of data/example.jsonl "
                f"(0..{len(tasks) - 1}); these rows were not collected from this environment's tasks"
            )
            continue
        if conversation != tasks[index]:
            problems.append(
                f"{where}: its input ({_first_user_text(conversation)!r}) is not task {index} of data/example.jsonl "
                f"({_first_user_text(tasks[index])!r}); was the file copied from another environment?"
            )
    if matched and notes is not None:
        pairs = ", ".join(f"row {number} -> task {index}" for number, index in matched)
        notes.append(
            f"{len(matched)} example rollout(s) carry no _ng_task_index (NeMo Gym's rows do not); "
            f"matched to the tasks of data/example.jsonl by their input: {pairs}"
        )
    return problems


def check_data(folder: Path, notes: list[str] | None = None) -> list[str]:
    """Problems with a resources server's example data (empty when it is fine); what was inferred
    along the way (rows matched to tasks by their input) goes to `notes`."""
    problems = []
    examples = folder / "data" / "example.jsonl"
    tasks: list[tuple[tuple[str, str], ...]] = []
    try:
        tasks = [conversation_key(row["responses_create_params"]["input"]) for _, row in iter_tasks(examples)]
        if len(tasks) != EXAMPLES_REQUIRED:
            problems.append(f"{examples}: {len(tasks)} tasks, expected exactly {EXAMPLES_REQUIRED}")
    except InputDataError as error:
        problems.append(str(error))
    rollouts = folder / "data" / "example_rollouts.jsonl"
    if not rollouts.is_file():
        problems.append(f"{rollouts}: missing (5 rollouts of the example tasks, collected with the command below)")
    elif tasks:
        problems.extend(check_example_rollouts(rollouts, tasks, notes))
    return problems


def rollout_problems(problems: list[str]) -> bool:
    return any("example_rollouts.jsonl" in problem for problem in problems)


def env_for_tests(folder: Path, root: Path) -> dict[str, str]:
    """The environment pytest runs in: the folder first on the import path, then the project, as for
    the folder's server (nemo_gym.launcher), so `from app import X` works as in NeMo Gym and
    `from resources_servers.<name>.app import X` keeps working."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), str(root), env.get("PYTHONPATH", "")) if p)
    return env


def run_tests(argv: list[str]) -> int:
    params: EnvTestConfig = read_command_config(EnvTestConfig, load_global_config(argv), "ng_test")
    root = find_project_root()
    folder = (root / params.entrypoint).resolve()
    if folder.parent.name not in SERVER_TYPES or not folder.is_dir():
        raise ConfigError(
            f"+entrypoint={params.entrypoint}: expected an existing <{'|'.join(SERVER_TYPES)}>/<name> folder under {root}"
        )
    tests = folder / "tests"
    if not tests.is_dir():
        raise ConfigError(f"{folder} has no tests/ folder")

    ensure_requirements([folder], root, install=params.install_requirements, command="ng_test")

    problems: list[str] = []
    if params.should_validate_data and folder.parent.name == "resources_servers":
        notes: list[str] = []
        problems = check_data(folder, notes)
        for note in notes:
            print(f"ng_test: data: {note}", flush=True)
        if problems:
            for problem in problems:
                print(f"ng_test: data: {problem}", file=sys.stderr, flush=True)
            if rollout_problems(problems):
                print(
                    f"ng_test: collect the example rollouts (from {root}) with:\n"
                    f"  {collect_example_rollouts_command(folder.name)}",
                    file=sys.stderr,
                    flush=True,
                )
        else:
            print(
                f"data ok: {EXAMPLES_REQUIRED} example tasks and {EXAMPLES_REQUIRED} example rollouts of them",
                flush=True,
            )
    code = subprocess.call([sys.executable, "-m", "pytest", "tests", "-q"], cwd=folder, env=env_for_tests(folder, root))
    if code != 0:
        return code
    if problems:
        print(f"ng_test: tests passed; {len(problems)} data problem(s) above", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_test", run_tests, EnvTestConfig, argv)


if __name__ == "__main__":
    main()
