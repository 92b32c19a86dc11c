"""`ng_list_environments`: every environment under `resources_servers/` with its domain, tools,
offline flag and number of example tasks, read from files only (no server is started).

Domain and offline flag come from the resources server block in `configs/*.yaml`; the tools are
the function names declared by the tasks in `data/example.jsonl` (what a model is offered), and the
task count is that file's row count. NeMo Gym's `list_benchmarks` lists benchmarks; this lists
environments.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import Domain, find_project_root, load_global_config
from nemo_gym.errors import ConfigError, ConfigSyntaxError, InputDataError

RESOURCES_SERVERS = "resources_servers"


class ListEnvironmentsConfig(BaseModel):
    """List the environments in resources_servers/: domain, tools, offline flag, example tasks.
    Nothing is started; everything is read from each environment's config and example data."""

    format: Literal["table", "json"] = Field(
        "table", description="table for people, json (one object per line) for scripts."
    )
    domain: str | None = Field(None, description="Show only environments of this domain.")
    offline_only: bool = Field(False, description="Show only environments that run without network access.")


class EnvironmentSummary(BaseModel):
    """One environment as the listing shows it."""

    name: str
    domain: str | None
    offline: bool | None
    """None when the config does not say; the listing shows it as `?`."""
    tools: list[str]
    example_tasks: int
    description: str | None = None


def _resources_blocks(config_file: Path) -> list[tuple[str, dict[str, Any]]]:
    """(instance name, implementation settings) for each resources server declared in the file."""
    try:
        loaded = OmegaConf.load(config_file)
    except (yaml.YAMLError, OmegaConfBaseException, OSError, UnicodeDecodeError) as error:
        raise ConfigSyntaxError(f"{config_file}: cannot be read as YAML ({error})") from None
    if not isinstance(loaded, DictConfig):
        return []
    blocks = []
    for instance, body in loaded.items():
        server_types = body if isinstance(body, DictConfig) else None
        implementations = server_types.get(RESOURCES_SERVERS) if server_types is not None else None
        if not isinstance(implementations, DictConfig):
            continue
        for settings in implementations.values():
            if isinstance(settings, DictConfig):
                # Unresolved: `${...}` values are shown as written, never resolved against a stack.
                container = OmegaConf.to_container(settings, resolve=False)
                if isinstance(container, dict):
                    blocks.append((str(instance), {str(key): value for key, value in container.items()}))
    return blocks


def _example_tools_and_count(examples: Path) -> tuple[list[str], int]:
    if not examples.is_file():
        return [], 0
    tools: list[str] = []
    count = 0
    with examples.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputDataError(f"{examples}:{number}: not valid JSON ({error.msg})") from None
            count += 1
            params = row.get("responses_create_params") if isinstance(row, dict) else None
            for tool in (params or {}).get("tools") or []:
                name = tool.get("name") or (tool.get("function") or {}).get("name")
                if name and name not in tools:
                    tools.append(name)
    return tools, count


def _as_offline_flag(value: Any, where: Path) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: `offline` must be true or false, got {value!r}")


def discover_environments(root: Path) -> list[EnvironmentSummary]:
    """Every environment folder under `root/resources_servers`, sorted by name."""
    summaries = []
    for folder in sorted((root / RESOURCES_SERVERS).iterdir()):
        configs = sorted((folder / "configs").glob("*.yaml")) if folder.is_dir() else []
        if not configs:
            continue
        tools, count = _example_tools_and_count(folder / "data" / "example.jsonl")
        # The config named after the folder is the environment's own; others are variants.
        preferred = sorted(configs, key=lambda path: path.stem != folder.name)
        for config_file in preferred:
            blocks = _resources_blocks(config_file)
            if blocks:
                _, settings = blocks[0]
                summaries.append(
                    EnvironmentSummary(
                        name=folder.name,
                        domain=settings.get("domain"),
                        offline=_as_offline_flag(settings.get("offline"), config_file),
                        tools=tools,
                        example_tasks=count,
                        description=settings.get("description"),
                    )
                )
                break
    return summaries


def render_table(summaries: list[EnvironmentSummary]) -> str:
    header = ("environment", "domain", "offline", "tasks", "tools")
    rows = [
        (
            s.name,
            s.domain or "?",
            {True: "yes", False: "no", None: "?"}[s.offline],
            str(s.example_tasks),
            ", ".join(s.tools) or "-",
        )
        for s in summaries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1]
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def check_domain(domain: str, summaries: list[EnvironmentSummary]) -> None:
    """Raise ConfigError for a domain no environment could have (`maths`): an empty table would
    read as "no such environments here" when the filter itself was mistyped."""
    known = list(dict.fromkeys([d.value for d in Domain] + [s.domain for s in summaries if s.domain]))
    if domain in known:
        return
    close = difflib.get_close_matches(domain, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(f"+domain={domain}: not a domain; {hint}known domains: {', '.join(known)}")


def list_environments(argv: list[str]) -> int:
    params: ListEnvironmentsConfig = read_command_config(
        ListEnvironmentsConfig, load_global_config(argv), "ng_list_environments"
    )
    summaries = discover_environments(find_project_root())
    if params.domain is not None:
        check_domain(params.domain, summaries)
        summaries = [s for s in summaries if s.domain == params.domain]
    if params.offline_only:
        summaries = [s for s in summaries if s.offline is True]
    if params.format == "json":
        for summary in summaries:
            print(summary.model_dump_json())
    else:
        print(render_table(summaries))
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_list_environments", list_environments, ListEnvironmentsConfig, argv)


if __name__ == "__main__":
    main()
