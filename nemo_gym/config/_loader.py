"""The loading pipeline (overrides, env.yaml, files, servers, addresses) and the GlobalConfig it returns."""

from __future__ import annotations

import difflib
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from nemo_gym.config._directives import apply_directives, has_directives
from nemo_gym.config._files import (
    expand_includes,
    find_project_root,
    load_config_file,
    load_env_yaml,
    paths_list,
    search_dirs,
)
from nemo_gym.config._model_choice import choose_model
from nemo_gym.config._nodes import as_port, container_of, first_line, is_missing, resolved, str_value
from nemo_gym.config._overrides import parse_overrides
from nemo_gym.config._ports import assign_addresses
from nemo_gym.config._references import unset_reference_error
from nemo_gym.config._schema import DEFAULT_HEAD_PORT, DEFAULT_HOST, ServerInstance
from nemo_gym.config._servers import check_missing, check_refs, find_candidates, report_almost_servers, validate
from nemo_gym.config._sources import ConfigSources
from nemo_gym.errors import (
    ConfigError,
    ConfigInterpolationError,
    MissingConfigValueError,
    NoServerInstancesError,
    UnknownServerError,
)


class GlobalConfig:
    """The merged, validated config: the raw DictConfig plus the server instances found in it."""

    def __init__(
        self,
        raw: DictConfig,
        instances: list[ServerInstance],
        *,
        head_host: str,
        head_port: int,
        project_root: pathlib.Path,
        sources: ConfigSources | None = None,
        head_port_chosen: bool = False,
    ) -> None:
        self.raw = raw
        self.sources = sources or ConfigSources()
        self.instances = instances
        self.head_host = head_host
        self.head_port = head_port
        self.head_port_chosen = head_port_chosen
        """True when head_server.port was set (a file, env.yaml or the command line), not the default."""
        self.project_root = project_root
        self._by_name = {instance.name: instance for instance in instances}

    def __repr__(self) -> str:
        names = ", ".join(i.name for i in self.instances)
        return f"GlobalConfig(instances=[{names}], head={self.head_host}:{self.head_port})"

    @property
    def head_url(self) -> str:
        return f"http://{self.head_host}:{self.head_port}"

    def instance(self, name: str) -> ServerInstance:
        """The server instance called `name`; UnknownServerError (with a suggestion) if none."""
        try:
            return self._by_name[name]
        except KeyError:
            pass
        close = difflib.get_close_matches(name, list(self._by_name), n=1)
        if close:
            hint = f"Did you mean '{close[0]}'?"
        elif self._by_name:
            hint = f"Configured instances: {', '.join(self._by_name)}"
        else:
            hint = "No server instances are configured"
        raise UnknownServerError(f"Unknown server instance {name!r}. {hint}")

    def server_config_dict(self, name: str) -> dict[str, Any]:
        """The instance's own implementation dict, resolved, with `name`, `host` and `port` filled in."""
        instance = self.instance(name)
        inner = self.raw[name][instance.server_type][instance.implementation]
        where = f"{name}.{instance.server_type}.{instance.implementation}"
        container = self._resolved(inner, where)
        assert isinstance(container, dict)
        container.update(name=name, host=instance.host, port=instance.port)
        return container

    def stack_digest(self) -> str:
        """A digest of the servers this config starts: names, kinds, code and settings, not addresses.

        Two loads of the same files and overrides give the same digest (ports picked at load time are
        left out), so a command can tell "the stack I would start is already running" from "another
        stack holds this head port". The head server serves this digest, never a config value."""
        described = [
            {
                "name": instance.name,
                "kind": [instance.server_type, instance.implementation, instance.entrypoint],
                "replicas": instance.num_replicas,
                "settings": {
                    k: v for k, v in self.server_config_dict(instance.name).items() if k not in ("host", "port")
                },
            }
            for instance in sorted(self.instances, key=lambda instance: instance.name)
        ]
        canonical = json.dumps(described, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_container(self, resolve: bool = False) -> dict[str, Any]:
        container = (
            self._resolved(self.raw, "config") if resolve else container_of(self.raw, resolve=False, where="config")
        )
        assert isinstance(container, dict)
        return container

    def _resolved(self, node: DictConfig, where: str) -> dict[str, Any] | list[Any]:
        try:
            return container_of(node, resolve=True, where=where)
        except ConfigInterpolationError as error:
            within = None if where == "config" else [where]
            raise unset_reference_error(self.raw, self.sources, self.project_root, within) or error from None

    def require_servers(self) -> None:
        """NoServerInstancesError unless the config defines at least one server instance."""
        if not self.instances:
            raise NoServerInstancesError(
                "No server instances configured; pass config files with "
                '"+config_paths=[resources_servers/<env>/configs/<env>.yaml,...]"'
            )

    def get(self, key: str, default: Any = None) -> Any:
        """A top-level (or dotted) value, interpolations resolved; `default` if absent."""
        try:
            value = OmegaConf.select(self.raw, key, default=default, throw_on_missing=True)
        except MissingMandatoryValue:
            raise MissingConfigValueError(
                f"Mandatory value `{key}` (???) was never set; set it, e.g. ++{key}=<value>"
            ) from None
        except OmegaConfBaseException as exc:
            error = ConfigInterpolationError(f"Cannot resolve `{key}`: {first_line(exc)}")
            raise unset_reference_error(self.raw, self.sources, self.project_root, [key]) or error from None
        if isinstance(value, (DictConfig, ListConfig)):
            return (
                self._resolved(value, key)
                if isinstance(value, DictConfig)
                else container_of(value, resolve=True, where=key)
            )
        return value


def _merge(configs: list[DictConfig], what: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(*configs) if configs else OmegaConf.create()
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Cannot merge {what}: {first_line(exc)}") from None
    assert isinstance(merged, DictConfig)
    return merged


def _with_directives_applied(raw: DictConfig) -> DictConfig:
    """NeMo Gym's `_inherit_from` / `_copy` / `_delete_key` (see `_directives`), applied to the merged config."""
    container = container_of(raw, resolve=False, where="config")
    if not has_directives(container):
        return raw
    assert isinstance(container, dict)
    return OmegaConf.create(apply_directives(container))


def _read_config_paths(pre: DictConfig) -> list[str]:
    if "config_paths" not in pre or is_missing(pre, "config_paths"):
        return []
    try:
        value = pre.config_paths
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigInterpolationError(f"Cannot resolve `config_paths`: {first_line(exc)}") from None
    return paths_list(value, "command line or env.yaml")


def _head_address(raw: DictConfig, default_host: str) -> tuple[str, int, bool]:
    """head_server.host/port (default: default_host, 11000), written back so children see the same;
    the third value says whether the port was set rather than defaulted."""
    head = raw.get("head_server") if "head_server" in raw else None
    head_host, head_port, chosen = default_host, DEFAULT_HEAD_PORT, False
    if isinstance(head, DictConfig):
        head_host = str_value(head, "host") or default_host
        port = resolved(head, "port", "head_server.port")
        if port not in (None, "", 0):
            if not as_port(port):
                raise ConfigError(f"head_server.port must be an integer in 1-65535, got {port!r}")
            head_port = as_port(port) or DEFAULT_HEAD_PORT
            chosen = True
        head.host, head.port = head_host, head_port
    else:
        raw.head_server = {"host": head_host, "port": head_port}
    return head_host, head_port, chosen


def load_global_config(
    argv_or_overrides: list[str] | DictConfig | Mapping[str, Any],
    *,
    require_servers: bool = False,
    project_root: pathlib.Path | None = None,
    cwd: pathlib.Path | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> GlobalConfig:
    """Build the global config from CLI overrides (or an already-built DictConfig/dict).

    Reads env.yaml from `cwd` or else `project_root`, loads every `config_paths` file with its
    includes, merges defaults < files < env.yaml < CLI, then finds, validates and addresses the
    servers. `defaults` are values a command supplies when nobody else does (ng_prepare_data's empty
    `policy_*`, so a data set is checked without a model configured), as NeMo Gym's initial config.
    """
    if isinstance(argv_or_overrides, DictConfig):
        cli = argv_or_overrides
    elif isinstance(argv_or_overrides, Mapping):
        cli = OmegaConf.create(dict(argv_or_overrides))
    else:
        cli = parse_overrides(list(argv_or_overrides))
    cwd = (cwd or pathlib.Path.cwd()).resolve()
    root = (project_root or find_project_root(cwd)).resolve()
    dirs = search_dirs(cwd, root)

    env_path, env = load_env_yaml(dirs)
    entries = _read_config_paths(_merge([env, cli], "env.yaml with the command line"))
    files = expand_includes(entries, dirs)
    # `+model=...`: the provider's config file joins the files, its layer (model name, address, key) right above them.
    choice = choose_model(cli, env, env_path, files, root)
    layers: list[DictConfig] = []
    if choice is not None:
        files.append((choice.config_file, load_config_file(choice.config_file)))
        layers.append(choice.layer)
    base = [OmegaConf.create(dict(defaults))] if defaults else []
    raw = _merge(base + [cfg for _, cfg in files] + layers + [env, cli], "config files, env.yaml and the command line")
    if files or "config_paths" in raw:
        raw.config_paths = [str(path) for path, _ in files]
    raw = _with_directives_applied(raw)
    sources = ConfigSources(cli=cli, env=env, env_path=env_path, env_searched=tuple(dirs), files=tuple(files))

    try:
        instances, (head_host, head_port, head_port_chosen) = _find_servers(raw, root)
    except ConfigInterpolationError as error:
        # Say which `${key}` is unset and whether env.yaml was found, not only where resolving failed.
        resolved_here = [c.name for c in find_candidates(raw)] + ["head_server", "default_host"]
        raise unset_reference_error(raw, sources, root, resolved_here) or error from None
    config = GlobalConfig(
        raw,
        instances,
        head_host=head_host,
        head_port=head_port,
        project_root=root,
        sources=sources,
        head_port_chosen=head_port_chosen,
    )
    if require_servers:
        config.require_servers()
    return config


def _find_servers(raw: DictConfig, root: pathlib.Path) -> tuple[list[ServerInstance], tuple[str, int, bool]]:
    """Find, validate and address the server instances; returns them with the head server's address
    (host, port, whether the port was set)."""
    candidates = find_candidates(raw)
    for candidate in candidates:
        validate(candidate)
    almost = [c for c in candidates if c.problems]
    if almost:
        report_almost_servers(almost, raw)
    servers = [c for c in candidates if not c.problems]
    check_missing(servers)
    check_refs(servers)
    for server in servers:  # fail now, not in a child process minutes later
        where = f"{server.name}.{server.server_type}.{server.implementation}"
        assert server.inner is not None
        container_of(server.inner, resolve=True, where=where)

    default_host = str_value(raw, "default_host") or DEFAULT_HOST
    head_host, head_port, head_port_chosen = _head_address(raw, default_host)

    instances = []
    for server, (host, port) in zip(
        servers, assign_addresses(servers, raw, default_host, head_host, head_port), strict=True
    ):
        assert server.inner is not None
        where = f"{server.name}.{server.server_type}.{server.implementation}"
        server.inner.host = host
        server.inner.port = port
        instances.append(
            ServerInstance(
                name=server.name,
                server_type=server.server_type,
                implementation=server.implementation,
                entrypoint=str(server.inner.entrypoint),
                host=host,
                port=port,
                directory=root / server.server_type / server.implementation,
                # Both checked by `validate` above; absent (None) means the defaults.
                num_replicas=resolved(server.inner, "num_replicas", f"{where}.num_replicas") or 1,
                ray_resources=resolved(server.inner, "ray_resources", f"{where}.ray_resources") or {},
            )
        )
    return instances, (head_host, head_port, head_port_chosen)
