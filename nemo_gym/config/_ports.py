"""Hosts and ports for server instances: explicit ports are checked for clashes, the rest are picked free."""

from __future__ import annotations

from omegaconf import DictConfig

from nemo_gym.config._nodes import as_port, resolved
from nemo_gym.config._schema import DEFAULT_HOST
from nemo_gym.config._servers import Candidate
from nemo_gym.errors import ConfigError, PortConflictError
from nemo_gym.free_ports import free_port

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def _same_host(a: str, b: str) -> bool:
    def norm(host: str) -> str:
        return DEFAULT_HOST if host == "localhost" else host

    return norm(a) == norm(b) or a in _WILDCARD_HOSTS or b in _WILDCARD_HOSTS


def _free_port(host: str, avoid: set[int]) -> int:
    for bind_host in (host, ""):
        try:
            return free_port(bind_host, avoid)
        except OSError:
            continue  # not a local address (a remote host): any local free port will do
    raise ConfigError(f"Could not find a free port on {host}")


def assign_addresses(
    servers: list[Candidate], raw: DictConfig, default_host: str, head_host: str, head_port: int
) -> list[tuple[str, int]]:
    """Pick host and port for every server: explicit values first, then free ports for the rest."""
    hosts: list[str] = []
    explicit: list[int | None] = []
    claimed: list[tuple[str, int, str]] = [(head_host, head_port, "the head server (head_server.port)")]
    for server in servers:
        assert server.inner is not None
        prefix = f"{server.name}.{server.server_type}.{server.implementation}"
        host = resolved(server.inner, "host", f"{prefix}.host") if "host" in server.inner else None
        port = resolved(server.inner, "port", f"{prefix}.port") if "port" in server.inner else None
        host = host or default_host
        port = as_port(port) or None
        if port is not None:
            for other_host, other_port, other_name in claimed:
                if other_port == port and _same_host(host, other_host):
                    raise PortConflictError(
                        f"Port {port} on {host} is claimed by both `{server.name}` ({prefix}.port) and {other_name}"
                    )
            claimed.append((host, port, f"`{server.name}` ({prefix}.port)"))
        hosts.append(host)
        explicit.append(port)
    taken = {port for _, port, _ in claimed}
    addresses = []
    for host, port in zip(hosts, explicit, strict=True):
        if port is None:
            port = _free_port(host, taken)
            taken.add(port)
        addresses.append((host, port))
    return addresses
