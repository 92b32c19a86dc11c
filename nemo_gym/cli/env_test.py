"""`ng_test +entrypoint=resources_servers/<name>`: check an environment's data files and run its tests.

Data checks (resources servers): `data/example.jsonl` has exactly 5 valid task rows and
`data/example_rollouts.jsonl` has 5 rows, each with a numeric `reward`. Then pytest runs the
folder's `tests/` with this interpreter (servers share the installed environment).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import SERVER_TYPES, find_project_root, load_global_config
from nemo_gym.errors import ConfigError, InputDataError
from nemo_gym.rollouts.store import iter_rows
from nemo_gym.rollouts.tasks import iter_tasks

EXAMPLES_REQUIRED = 5


class EnvTestConfig(BaseModel):
    """Validate an implementation folder's example data and run its tests with pytest."""

    entrypoint: str = Field(description="The folder to test, e.g. resources_servers/mcqa.")
    should_validate_data: bool = Field(True, description="Check data/example.jsonl and data/example_rollouts.jsonl.")


def check_data(folder: Path) -> list[str]:
    """Problems with a resources server's example data (empty when it is fine)."""
    problems = []
    examples = folder / "data" / "example.jsonl"
    try:
        count = sum(1 for _ in iter_tasks(examples))
        if count != EXAMPLES_REQUIRED:
            problems.append(f"{examples}: {count} tasks, expected exactly {EXAMPLES_REQUIRED}")
    except InputDataError as error:
        problems.append(str(error))
    rollouts = folder / "data" / "example_rollouts.jsonl"
    if not rollouts.is_file():
        problems.append(f"{rollouts}: missing (collect it with ng_collect_rollouts on the example tasks)")
    else:
        try:
            rows = list(iter_rows(rollouts))
        except InputDataError as error:
            problems.append(str(error))
        else:
            if len(rows) != EXAMPLES_REQUIRED:
                problems.append(f"{rollouts}: {len(rows)} rows, expected exactly {EXAMPLES_REQUIRED}")
            for number, row in enumerate(rows, start=1):
                if not isinstance(row.get("reward"), (int, float)):
                    problems.append(f"{rollouts}:{number}: no numeric reward")
    return problems


def run_tests(argv: list[str]) -> int:
    params: EnvTestConfig = read_command_config(EnvTestConfig, load_global_config(argv), "ng_test")
    root = find_project_root()
    folder = (root / params.entrypoint).resolve()
    if folder.parent.name not in SERVER_TYPES or not folder.is_dir():
        raise ConfigError(f"+entrypoint={params.entrypoint}: expected an existing <{'|'.join(SERVER_TYPES)}>/<name> folder under {root}")
    if params.should_validate_data and folder.parent.name == "resources_servers":
        problems = check_data(folder)
        if problems:
            raise InputDataError("; ".join(problems))
        print(f"data ok: {EXAMPLES_REQUIRED} example tasks and {EXAMPLES_REQUIRED} example rollouts", flush=True)
    tests = folder / "tests"
    if not tests.is_dir():
        raise ConfigError(f"{folder} has no tests/ folder")
    return subprocess.call([sys.executable, "-m", "pytest", str(tests.relative_to(root)), "-q"], cwd=root)


def main(argv: list[str] | None = None) -> None:
    run_command("ng_test", run_tests, EnvTestConfig, argv)


if __name__ == "__main__":
    main()
