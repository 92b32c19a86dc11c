"""Config files: where the project root is, loading YAML, env.yaml, and `config_paths` includes."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_gym.config._nodes import container_of, first_line
from nemo_gym.errors import ConfigError, ConfigFileNotFoundError, ConfigSyntaxError

ENV_YAML = "env.yaml"


def find_project_root(start: pathlib.Path | None = None) -> pathlib.Path:
    """The folder holding `resources_servers/` and `nemo_gym/`.

    Walks up from `start` (default: the current directory); falls back to the folder that holds
    the installed `nemo_gym` package.
    """
    here = (start or pathlib.Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "resources_servers").is_dir() and (folder / "nemo_gym").is_dir():
            return folder
    return pathlib.Path(__file__).resolve().parents[2]


def load_config_file(path: pathlib.Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigSyntaxError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigSyntaxError(f"{path}: invalid YAML: {first_line(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: cannot load config: {first_line(exc)}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level of a config file must be a mapping, got a list")
    return loaded


def search_dirs(cwd: pathlib.Path, project_root: pathlib.Path) -> list[pathlib.Path]:
    dirs = [cwd.resolve()]
    if project_root.resolve() not in dirs:
        dirs.append(project_root.resolve())
    return dirs


def _find_file(entry: str, dirs: list[pathlib.Path], included_by: pathlib.Path | None) -> pathlib.Path:
    candidate = pathlib.Path(os.path.expanduser(entry))
    looked = [candidate] if candidate.is_absolute() else [d / candidate for d in dirs]
    for path in looked:
        if path.is_file():
            return path.resolve()
    origin = f"included by {included_by}" if included_by else "from config_paths"
    raise ConfigFileNotFoundError(
        f"Config file {entry!r} ({origin}) not found; looked in: {', '.join(str(p) for p in looked)}"
    )


def paths_list(value: Any, where: str) -> list[str]:
    """Validate a `config_paths` value: null means none, anything but a list of strings is an error."""
    if value is None:
        return []
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        hint = f"; write +config_paths=[{value}]" if isinstance(value, str) else ""
        raise ConfigError(f"{where}: config_paths must be a list of strings, got {value!r}{hint}")
    return value


def expand_includes(entries: list[str], dirs: list[pathlib.Path]) -> list[tuple[pathlib.Path, DictConfig]]:
    """Load every file named by `entries` and their own `config_paths`, in post-order.

    Post-order puts a file after everything it includes, so in the merge the including file
    wins; a later sibling (with its includes) wins over an earlier one. A file seen before,
    including one that would close a cycle, is skipped.
    """
    ordered: list[tuple[pathlib.Path, DictConfig]] = []
    seen: set[pathlib.Path] = set()

    def visit(entry: str, included_by: pathlib.Path | None) -> None:
        path = _find_file(entry, dirs, included_by)
        if path in seen:
            return
        seen.add(path)
        cfg = load_config_file(path)
        # Unresolved on purpose: includes are read before anything they could interpolate exists.
        raw = container_of(cfg, resolve=False, where=str(path)) if "config_paths" in cfg else {}
        raw_nested = raw.get("config_paths") if isinstance(raw, dict) else None
        if raw_nested is not None:
            for child in paths_list(raw_nested, str(path)):
                visit(child, path)
        ordered.append((path, cfg))

    for entry in entries:
        visit(entry, None)
    return ordered


def load_env_yaml(dirs: list[pathlib.Path]) -> tuple[pathlib.Path | None, DictConfig]:
    """The first env.yaml found in `dirs` and its content; (None, empty) when there is none."""
    for folder in dirs:
        path = folder / ENV_YAML
        if path.is_file():
            return path, load_config_file(path)
    return None, OmegaConf.create()
