"""`${key}` references in the merged config: which top-level keys they read, and a clear error for
one that points at nothing (most often a `${policy_base_url}` whose env.yaml is missing)."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_gym.config._files import ENV_YAML
from nemo_gym.config._sources import COMMAND_LINE, ConfigSources
from nemo_gym.errors import ConfigInterpolationError

# `${a.b}` or `${a[0]}`: an absolute reference; resolvers (`${oc.env:X}`) and relative ones (`${.x}`) are skipped.
_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][\w\-]*(?:\.[\w\-]+|\[\d+\])*)\s*\}")
_ROOT = re.compile(r"^[A-Za-z_][\w\-]*")


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(dotted path, raw text) of every string value, interpolations left unresolved."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")
    elif isinstance(node, str) and "${" in node:
        yield path, node


def _raw_container(raw: DictConfig | ListConfig) -> Any:
    try:
        return OmegaConf.to_container(raw, resolve=False)
    except OmegaConfBaseException:
        return {}


def references(raw: DictConfig) -> Iterator[tuple[str, str]]:
    """(where, referenced key) for every absolute `${...}` reference in the config."""
    for where, text in _strings(_raw_container(raw), ""):
        for match in _REFERENCE.finditer(text):
            yield where, match.group(1)


def referenced_top_keys(raw: DictConfig) -> set[str]:
    """Top-level keys some `${...}` reads: values like policy_base_url are legitimate even if no command declares them."""
    keys = set()
    for _, key in references(raw):
        root = _ROOT.match(key)
        if root:
            keys.add(root.group(0))
    return keys


_UNSET = object()


def _is_set(raw: DictConfig, key: str) -> bool:
    try:
        return OmegaConf.select(raw, key, default=_UNSET, throw_on_resolution_failure=False) is not _UNSET
    except OmegaConfBaseException:
        return True  # it exists; whatever is wrong inside it is reported on its own


def _show(path: str, root: pathlib.Path) -> str:
    try:
        return str(pathlib.Path(path).relative_to(root))
    except ValueError:
        return path


def _under(where: str, prefixes: Iterable[str] | None) -> bool:
    return prefixes is None or any(where == p or where.startswith((f"{p}.", f"{p}[")) for p in prefixes)


def unset_reference_error(
    raw: DictConfig, sources: ConfigSources, project_root: pathlib.Path, within: Iterable[str] | None = None
) -> ConfigInterpolationError | None:
    """A one-line error for the first `${key}` (under one of the `within` paths, if given) whose key is set nowhere.

    Names the value holding the reference, the file that set it, and where env.yaml was looked for
    when none was found, because a missing env.yaml is by far the most common cause.
    """
    unset = [(where, key) for where, key in references(raw) if _under(where, within) and not _is_set(raw, key)]
    if not unset:
        return None
    where, key = unset[0]
    origin = sources.origin(where)
    shown_origin = (
        f" (set in {_show(origin, project_root)})"
        if origin and origin != COMMAND_LINE
        else (" (set on the command line)" if origin == COMMAND_LINE else "")
    )
    if sources.env_path is None:
        looked = ", ".join(str(folder / ENV_YAML) for folder in sources.env_searched) or ENV_YAML
        cause = (
            f"no {ENV_YAML} was found (looked for {looked}); copy env.yaml.example to {ENV_YAML} "
            f"and fill it in, or pass +{key}=<value>"
        )
    else:
        cause = f"it is in neither {sources.env_path} nor the command line; add it to {ENV_YAML} or pass +{key}=<value>"
    others = sorted({other for _, other in unset[1:] if other != key})
    also = f" (also unset: {', '.join(others)})" if others else ""
    return ConfigInterpolationError(f"`{where}`{shown_origin} refers to ${{{key}}}, which is not set: {cause}{also}")
