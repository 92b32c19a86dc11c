"""Finding server instances in the merged config and checking them: shape, refs, `???` values."""

from __future__ import annotations

import difflib
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig

from nemo_gym.config._nodes import as_port, child_node, is_missing, resolved
from nemo_gym.config._schema import RESERVED_KEYS, SERVER_TYPES, Domain
from nemo_gym.errors import AlmostServerError, MissingConfigValueError, ServerRefNotFoundError


class Candidate:
    """A top-level block that has a server-type key; it becomes a server or an almost-server."""

    def __init__(self, name: str, block: DictConfig) -> None:
        self.name = name
        self.block = block
        self.problems: list[str] = []
        self.server_type = ""
        self.implementation = ""
        self.inner: DictConfig | None = None


def _has_entrypoint(block: DictConfig) -> bool:
    for stype in SERVER_TYPES:
        impls = child_node(block, stype) if stype in block else None
        if isinstance(impls, DictConfig) and not is_missing(block, stype):
            for impl in impls.keys():
                node = child_node(impls, impl)
                if isinstance(node, DictConfig) and not is_missing(impls, impl) and "entrypoint" in node:
                    return True
    return False


def find_candidates(raw: DictConfig) -> list[Candidate]:
    candidates = []
    for key in raw.keys():
        name = str(key)
        if name in RESERVED_KEYS or is_missing(raw, key):
            continue
        block = child_node(raw, key)
        if not isinstance(block, DictConfig):
            continue
        if any(stype in block for stype in SERVER_TYPES) and _has_entrypoint(block):
            candidates.append(Candidate(name, block))
    return candidates


def validate(candidate: Candidate) -> None:
    block, problems = candidate.block, candidate.problems
    types = [stype for stype in SERVER_TYPES if stype in block]
    if len(types) > 1:
        problems.append(f"has {len(types)} server-type keys ({', '.join(types)}); an instance has exactly one")
        return
    stype = candidate.server_type = types[0]
    impls = child_node(block, stype)
    if not isinstance(impls, DictConfig) or len(impls) != 1:
        found = ", ".join(str(k) for k in impls.keys()) if isinstance(impls, DictConfig) else type(impls).__name__
        problems.append(f"`{stype}` must hold exactly one implementation, found: {found or 'none'}")
        return
    impl = candidate.implementation = str(next(iter(impls.keys())))
    inner = child_node(impls, impl)
    prefix = f"{candidate.name}.{stype}.{impl}"
    if not isinstance(inner, DictConfig):
        problems.append(f"`{prefix}` must be a mapping")
        return
    candidate.inner = inner
    # NeMo Gym allows a folder below the server type, e.g. `conversational_tool_use/simulation` for
    # responses_api_agents/conversational_tool_use/simulation/; each part must still be a plain folder name,
    # so an implementation never reaches outside its server type's folder.
    if "\\" in impl or any(part in {"", ".", ".."} for part in impl.split("/")):
        problems.append(f"implementation name {impl!r} must be a folder path under {stype}/ (plain names joined by /)")

    entrypoint = resolved(inner, "entrypoint", f"{prefix}.entrypoint")
    if "entrypoint" in inner and is_missing(inner, "entrypoint"):
        pass  # reported with every other `???` once the servers are known
    elif not isinstance(entrypoint, str) or not entrypoint:
        problems.append(f"`entrypoint` must be a non-empty path string, got {entrypoint!r}")
    elif pathlib.PurePath(entrypoint).is_absolute():
        problems.append(f"`entrypoint` must be relative to {stype}/{impl}/, got absolute path {entrypoint!r}")

    if stype == "resources_servers":
        domains = ", ".join(d.value for d in Domain)
        domain = resolved(inner, "domain", f"{prefix}.domain") if "domain" in inner else None
        if domain is None and not ("domain" in inner and is_missing(inner, "domain")):
            problems.append(f"`domain` is required for resources servers (one of: {domains})")
        elif domain is not None and domain not in Domain._value2member_map_:
            problems.append(f"`domain` {domain!r} is not one of: {domains}")

    if "host" in inner:
        host = resolved(inner, "host", f"{prefix}.host")
        if host is not None and not isinstance(host, str):
            problems.append(f"`host` must be a string, got {host!r}")
    if "port" in inner:
        port = resolved(inner, "port", f"{prefix}.port")
        if port not in (None, "") and as_port(port) is None:
            problems.append(f"`port` must be an integer in 0-65535, got {port!r}")

    if "num_replicas" in inner:
        replicas = resolved(inner, "num_replicas", f"{prefix}.num_replicas")
        if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1):
            problems.append(f"`num_replicas` must be an integer >= 1, got {replicas!r}")
    if "ray_resources" in inner:
        _validate_ray_resources(resolved(inner, "ray_resources", f"{prefix}.ray_resources"), problems)

    if "datasets" in inner and not is_missing(inner, "datasets"):
        _validate_datasets(resolved(inner, "datasets", f"{prefix}.datasets"), problems)


_DATASET_TYPES = ("train", "validation", "example", "benchmark")
# The fields of a `datasets` entry, as NeMo Gym's DatasetConfig / BenchmarkDatasetConfig declare them.
# Here `name`, `type`, `jsonl_fpath` and `num_repeats` are checked (NeMo Gym's data preparation and
# dataset commands read them; no command here does); the others (where to download from, the
# licence, a benchmark's preparation script and prompt) are accepted so NeMo Gym's configs load and
# nothing here acts on them. Any other key is a typo.
_DATASET_FIELDS = (
    "name",
    "type",
    "jsonl_fpath",
    "num_repeats",
    "license",
    "source",
    "gitlab_identifier",
    "huggingface_identifier",
    "prepare_script",
    "prompt_config",
)


def _validate_ray_resources(resources: Any, problems: list[str]) -> None:
    if resources is None:
        return
    if not isinstance(resources, dict):
        problems.append(f"`ray_resources` must be a mapping of Ray resource names to amounts, got {resources!r}")
        return
    for key, amount in resources.items():
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
            problems.append(f"`ray_resources.{key}` must be a number >= 0, got {amount!r}")


def _validate_datasets(datasets: Any, problems: list[str]) -> None:
    if datasets is None:
        return
    if not isinstance(datasets, list):
        problems.append(f"`datasets` must be a list, got {type(datasets).__name__}")
        return
    for index, dataset in enumerate(datasets):
        where = f"`datasets[{index}]`"
        if not isinstance(dataset, dict):
            problems.append(f"{where} must be a mapping")
            continue
        for key in dataset:
            if key not in _DATASET_FIELDS:
                close = difflib.get_close_matches(str(key), _DATASET_FIELDS, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else f" (known: {', '.join(_DATASET_FIELDS)})"
                problems.append(f"{where} has unknown key `{key}`{hint}")
        for field in ("name", "type", "jsonl_fpath"):
            if not dataset.get(field):
                problems.append(f"{where} is missing `{field}`")
        if dataset.get("type") and dataset["type"] not in _DATASET_TYPES:
            problems.append(f"{where}.type {dataset['type']!r} is not one of: {', '.join(_DATASET_TYPES)}")
        repeats = dataset.get("num_repeats", 1)
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            problems.append(f"{where}.num_repeats must be an integer >= 1, got {repeats!r}")


def report_almost_servers(almost: list[Candidate], raw: DictConfig) -> None:
    details = "; ".join(
        f"`{c.name}`"
        + (f" ({c.server_type}.{c.implementation})" if c.implementation else "")
        + ": "
        + ", ".join(c.problems)
        for c in almost
    )
    message = (
        f"Found {len(almost)} almost-server(s), blocks shaped like a server instance that fail validation: {details}"
    )
    error_on = raw.get("error_on_almost_servers", True) if "error_on_almost_servers" in raw else True
    if error_on in (False, "false", "False", 0):
        print(f"warning: {message}; skipping them because error_on_almost_servers=false", file=sys.stderr)
        return
    raise AlmostServerError(f"{message} (set +error_on_almost_servers=false to skip them)")


def _walk_missing(node: DictConfig | ListConfig, path: str) -> Iterator[str]:
    keys: Any = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        child_path = f"{path}.{key}"
        if is_missing(node, key):
            yield child_path
            continue
        child = child_node(node, key)
        if isinstance(child, (DictConfig, ListConfig)):
            yield from _walk_missing(child, child_path)


def check_missing(servers: list[Candidate]) -> None:
    missing = [path for c in servers for path in _walk_missing(c.block, c.name)]
    if missing:
        listed = ", ".join(f"`{p}`" for p in missing)
        hints = " ".join(f"++{p}=<value>" for p in missing)
        raise MissingConfigValueError(f"Mandatory value(s) marked ??? were never set: {listed}; set them, e.g. {hints}")


def _is_ref(node: Any) -> bool:
    return (
        isinstance(node, DictConfig) and "type" in node and "name" in node and child_node(node, "type") in SERVER_TYPES
    )


def check_refs(servers: list[Candidate]) -> None:
    by_type: dict[str, list[str]] = {stype: [] for stype in SERVER_TYPES}
    for server in servers:
        by_type[server.server_type].append(server.name)
    type_of = {server.name: server.server_type for server in servers}
    for server in servers:
        assert server.inner is not None
        for field in server.inner.keys():
            node = child_node(server.inner, field)
            if not _is_ref(node):
                continue
            where = f"{server.name}.{server.server_type}.{server.implementation}.{field!s}"
            ref_type = child_node(node, "type")
            ref_name = resolved(node, "name", f"{where}.name")
            if ref_name in by_type[ref_type]:
                continue
            if ref_name in type_of:
                hint = f"'{ref_name}' is a {type_of[ref_name]} instance"
            else:
                close = difflib.get_close_matches(str(ref_name), by_type[ref_type], n=1)
                if close:
                    hint = f"Did you mean '{close[0]}'?"
                elif by_type[ref_type]:
                    hint = f"Available {ref_type}: {', '.join(by_type[ref_type])}"
                else:
                    hint = f"No {ref_type} instance is configured"
            raise ServerRefNotFoundError(
                f"Server ref `{where}` points to {ref_type} instance {ref_name!r}, which is not configured. {hint}"
            )
