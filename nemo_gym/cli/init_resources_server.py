"""`ng_init_resources_server +entrypoint=resources_servers/<name>`: write a new, working environment.

NeMo Gym's command name. The folder gets `app.py` (one tool and a `verify`), `configs/<name>.yaml`,
`data/example.jsonl` (5 tasks), `tests/test_app.py` and a README, with the name filled in
everywhere; `ng_test` passes on it straight away except for the example rollouts, whose collection
command is printed here and by `ng_test`.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import find_project_root, load_global_config
from nemo_gym.errors import ConfigError
from nemo_gym.scaffold import check_name, collect_example_rollouts_command, scaffold_resources_server
from nemo_gym.scaffold.resources_server import MAX_NAME_LENGTH


class InitResourcesServerConfig(BaseModel):
    """Create resources_servers/<name>/ with a working example environment (refuses an existing folder)."""

    entrypoint: str = Field(
        description=f"The folder to create, resources_servers/<name>; <name>: 1 to {MAX_NAME_LENGTH} lowercase letters, "
        "digits and underscores, starting with a letter (a Python package name)."
    )
    domain: str = Field("agent", description="What the tasks are about (agent, math, coding, knowledge, ...).")
    description: str | None = Field(None, description="One line for the README, app docstring and config.")
    confined_scoring: bool = Field(
        False,
        description="Score answers in scoring.py, confined in the sandbox (use it when scoring parses model text "
        "with sympy, math-verify, eval or anything else that may run it).",
    )


def name_from_entrypoint(entrypoint: str) -> str:
    """`resources_servers/<name>` -> `<name>`, checked (`check_name`) before any path is made from it."""
    parts = PurePosixPath(entrypoint.strip().rstrip("/")).parts
    if len(parts) != 2 or parts[0] != "resources_servers":
        shown = entrypoint if len(entrypoint) <= 80 else entrypoint[:77] + "..."
        raise ConfigError(
            f"+entrypoint={shown}: expected resources_servers/<name>, one folder directly inside resources_servers "
            f"(e.g. resources_servers/my_env)"
        )
    check_name(parts[1])
    return parts[1]


def init_resources_server(argv: list[str]) -> int:
    params: InitResourcesServerConfig = read_command_config(
        InitResourcesServerConfig, load_global_config(argv), "ng_init_resources_server"
    )
    name = name_from_entrypoint(params.entrypoint)
    root = find_project_root()
    written = scaffold_resources_server(
        root, name, params.domain, params.description, confined_scoring=params.confined_scoring
    )
    print(f"Created resources_servers/{name}/:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    print(
        f"\nNext (from {root}):\n"
        f"  ng_test +entrypoint=resources_servers/{name}      # runs its tests and checks its data\n"
        f"  {collect_example_rollouts_command(name)}\n"
        f"      # collects data/example_rollouts.jsonl offline on the local model, which ng_test asks for",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_init_resources_server", init_resources_server, InitResourcesServerConfig, argv)


if __name__ == "__main__":
    main()
