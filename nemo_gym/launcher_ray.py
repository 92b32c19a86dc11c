"""Run a stack's servers on a Ray cluster (`ng_run +ray_address=...`).

Ray is imported here and in nemo_gym.compute._ray, each only when a cluster is asked for.

Same servers, same processes as the local launcher (`nemo_gym.launcher`); only where they run changes:

  * one small actor per replica (`ReplicaActor`, no CPU reserved unless the server's
    `ray_resources` asks) starts the server as a subprocess on its node with the launcher's own
    `start_server_process`, bound to the node's address on a free port, waits for `/health`, and
    reports the URL. The head server (in ng_run, on this machine) registers it;
  * replicas of one server go to distinct nodes that can hold them (node-affinity scheduling,
    chosen here), so that losing a node loses one replica, not the server;
  * the bootstrap (the server's config, secrets included) is an argument of the actor's `start`
    call, not of the actor's creation (Ray keeps creation arguments in its control store for
    restarts; a method call goes from ng_run to the actor and nowhere else), and the actor hands it
    to its child through the same inherited pipe as locally: never an environment variable or a
    command line. The child gets `NEMO_GYM_RAY_ADDRESS` (the cluster's address, not a secret);
  * the actor holds the child's pipe: when the actor goes (ng_run stopped, killed, or its node
    lost), the child stops itself, as it does when a local launcher goes;
  * ng_run polls the actors. A replica that dies while a sibling lives is reported and the rest go
    on; a server with no replica left stops the stack, as a dead local server does.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pathlib
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nemo_gym.client import ServerInfo
from nemo_gym.config import GlobalConfig
from nemo_gym.errors import ClusterUnreachableError, ConfigError, ServerStartupError
from nemo_gym.free_ports import free_port
from nemo_gym.launcher import (
    LaunchOptions,
    ReplicaSlot,
    ServerProcess,
    Stack,
    answers_as,
    format_table,
    head_allowed_hosts,
    port_is_free,
    start_server_process,
    stop_server_processes,
)
from nemo_gym.servers.base import ServerBootstrap
from nemo_gym.servers.head import HeadServer
from nemo_gym.servers.launcher_link import RAY_ADDRESS_ENV

# Ray's names for the standard resources in `ray_resources`, as actor options; anything else is custom.
_STANDARD_RESOURCES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
_POLL_INTERVAL_S = 1.0
_PROBE_TIMEOUT_S = 3.0
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

_LOOPBACK_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Read by Ray when it is imported. "0" makes Ray take 127.0.0.1 as this node's address: without it a
driver rewrites a loopback cluster address to the machine's interface address and never reaches a
cluster started with --node-ip-address=127.0.0.1 (Ray issue #59110). Set only for such a cluster."""

if TYPE_CHECKING:
    import ray


def _import_ray(address: str) -> None:
    """Import Ray (into this module's `ray`), first telling it about a loopback cluster if that is what
    `address` names. ConfigError (exit 2) when the `ray` extra is not installed."""
    host = (os.environ.get("RAY_ADDRESS", "") if address == "auto" else address).rpartition(":")[0].strip("[]")
    if host and _is_loopback(host):
        os.environ.setdefault(_LOOPBACK_CLUSTER_ENV, "0")
    global ray
    try:
        import ray
        import ray.util.scheduling_strategies  # noqa: F401  (NodeAffinitySchedulingStrategy)
    except ImportError:
        raise ConfigError(
            'ng_run +ray_address=... needs Ray, which is not installed: pip install -e ".[ray]"'
        ) from None


def check_address(address: str) -> str:
    """`auto`, or `host:port` of the cluster's head (GCS). ConfigError (exit 2) for anything else."""
    if address == "auto":
        return address
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://"):
        raise ConfigError(
            f"ray_address {address!r}: Ray Client (ray://) is not supported; give the head's host:port "
            "(the address `ray start --head` prints) or `auto` on a node of the cluster"
        )
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"ray_address {address!r} is not `auto` or host:port of a Ray head (e.g. +ray_address=10.0.0.1:6379)"
        )
    return address


def connect(address: str, log_to_driver: bool) -> str:
    """Join the cluster as a driver; returns its GCS address. ClusterUnreachableError (exit 1) if none answers."""
    check_address(address)
    _import_ray(address)
    if address != "auto":
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_TIMEOUT_S).close()
        except OSError as error:
            raise ClusterUnreachableError(
                f"no Ray cluster answers at ray_address {address!r} ({error.strerror or error}); "
                "is `ray start --head` running there and its port reachable from this machine?"
            ) from None
    try:
        ray.init(address=address, namespace="nemo_gym", log_to_driver=log_to_driver, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClusterUnreachableError(f"could not join the Ray cluster at ray_address {address!r}: {error}") from None
    return str(ray.get_runtime_context().gcs_address)


def actor_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray actor options for one replica: standard resources by their option name, the rest as custom.
    Nothing asked, nothing reserved (num_cpus=0): a server is I/O bound unless its config says otherwise."""
    options: dict[str, Any] = {"num_cpus": 0}
    custom: dict[str, float] = {}
    for name, amount in resources.items():
        if name in _STANDARD_RESOURCES:
            options[name] = amount
        else:
            custom[name] = amount
    if custom:
        options["resources"] = custom
    return options


def demand(resources: dict[str, float]) -> dict[str, float]:
    """The same request in the names a node reports its totals in (`CPU`, `GPU`, `memory`, custom)."""
    return {_STANDARD_RESOURCES.get(name, name): amount for name, amount in resources.items() if amount}


def place(slots: list[ReplicaSlot], nodes: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """(server, replica) -> node id: each server's replicas on distinct nodes that can hold them, while
    there are enough such nodes (then round again), each server starting where the last one ended so
    that servers spread too. ConfigError when no node of the cluster can hold a server at all."""
    placement: dict[tuple[str, int], str] = {}
    turn = 0
    for slot in slots:
        instance = slot.instance
        wanted = demand(instance.ray_resources)
        fits = [
            node["NodeID"]
            for node in nodes
            if all(node["Resources"].get(name, 0.0) >= amount for name, amount in wanted.items())
        ]
        if not fits:
            raise ConfigError(
                f"no node of the Ray cluster has what server {instance.name!r} asks for "
                f"(ray_resources: {instance.ray_resources}); nodes offer: "
                + "; ".join(_describe_node(node) for node in nodes)
            )
        if slot.replica == 0:
            turn += 1
            start = turn
        placement[(instance.name, slot.replica)] = fits[(start + slot.replica) % len(fits)]
    return placement


def _describe_node(node: dict[str, Any]) -> str:
    shown = {k: v for k, v in node["Resources"].items() if not k.startswith("node:") and k != "object_store_memory"}
    return f"{node['NodeManagerAddress']} {shown}"


class ReplicaActor:
    """Lives on one node for one replica: starts the server process there and reports on it."""

    def __init__(self) -> None:
        self.process: ServerProcess | None = None

    def start(
        self, slot: ReplicaSlot, bootstrap: ServerBootstrap, project_root: str, ray_address: str, timeout_s: float
    ) -> dict[str, Any]:
        import httpx
        import ray  # this runs in a Ray worker, where the driver's `_import_ray` never ran

        host = ray.util.get_node_ip_address()
        port = free_port(host)
        here = ReplicaSlot(slot.instance, slot.replica, host, port)
        bootstrap.config.update(host=host, port=port)
        self.process = start_server_process(
            here, bootstrap, pathlib.Path(project_root), sys.stdout, extra_env={RAY_ADDRESS_ENV: ray_address}
        )
        node = ray.get_runtime_context().get_node_id()
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=httpx.Timeout(2.0, connect=0.5), trust_env=False) as probe:
            while time.monotonic() < deadline:
                if self.process.popen.poll() is not None:
                    report = self.process.exit_report()  # waits for the output reader, which sees a config error
                    return {"config_error": self.process.config_error, "report": report}
                if answers_as(probe, here.url, self.process.popen.pid):
                    return {"url": here.url, "node": node, "host": host, "pid": self.process.popen.pid}
                time.sleep(0.05)
        return {"report": f"not healthy after {timeout_s:.0f} s on node {host}. " + self.process.exit_report()}

    def poll(self) -> int | None:
        return None if self.process is None else self.process.popen.poll()

    def report(self) -> str:
        return "(never started)" if self.process is None else self.process.exit_report()

    def stop(self, timeout_s: float) -> None:
        if self.process is not None:
            stop_server_processes([self.process], timeout_s, lambda text: print(text, flush=True))


class RemoteReplica:
    """ng_run's handle on one replica running on the cluster."""

    def __init__(self, slot: ReplicaSlot, actor: Any, node_id: str):
        self.slot = slot
        self.actor: Any = actor
        """The actor handle (typed Any: Ray's handles are built at run time)."""
        self.node_id = node_id
        self.url = ""
        self.host = ""
        self.pid: int | None = None


class RayStack(Stack):
    """A stack whose servers run on a Ray cluster; the head server stays in this process."""

    def __init__(
        self,
        config: GlobalConfig,
        ray_address: str,
        options: LaunchOptions = LaunchOptions(),
        log: Callable[[str], None] | None = None,
    ):
        self.gcs_address = connect(ray_address, log_to_driver=options.echo_child_output)
        try:
            super().__init__(config, options, log)
            self.head = HeadServer(
                self.registry,
                self._head_host(),
                config.head_port,
                head_allowed_hosts(config),
                self.served_config_digest(),
            )
        except BaseException:
            ray.shutdown()
            raise
        self.remote: list[RemoteReplica] = []
        self._last_poll = 0.0
        self._actor_class = ray.remote(max_restarts=0)(ReplicaActor)

    def _head_host(self) -> str:
        """Servers on other nodes must reach the head: a loopback head host becomes this node's address,
        unless this node's address is loopback too (a cluster pinned to 127.0.0.1, as in tests)."""
        host = self.config.head_host
        node_ip = ray.util.get_node_ip_address()
        if host in _LOOPBACK_HOSTS and not _is_loopback(node_ip):
            return node_ip
        return host

    def _initial_rows(self) -> list[ServerInfo]:
        return []  # a replica's row appears once its node and port are known

    def check_ports(self) -> None:
        """Only the head server binds on this machine; each replica takes a free port on its node."""
        if not port_is_free(self.head.host, self.head.port):
            raise ConfigError(
                f"head server port {self.head.host}:{self.head.port} is already in use "
                f"(another ng_run?); choose another with +head_server.port=<port>"
            )

    @property
    def server_count(self) -> int:
        return len(self.slots)

    def _start_servers(self) -> None:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        placement = place(self.slots, nodes)
        calls = []
        for slot in self.slots:
            node_id = placement[(slot.instance.name, slot.replica)]
            actor: Any = self._actor_class.options(
                name=None,
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id, soft=False),
                **actor_options(slot.instance.ray_resources),
            ).remote()
            replica = RemoteReplica(slot, actor, node_id)
            self.remote.append(replica)
            bootstrap = self.bootstrap_for(slot, [])  # servers read the registry from the head server
            calls.append(
                actor.start.remote(
                    slot, bootstrap, str(self.config.project_root), self.gcs_address, self.options.startup_timeout_s
                )
            )
        deadline = time.monotonic() + self.options.startup_timeout_s + 30  # + actor start on a busy node
        for replica, call in zip(self.remote, calls, strict=True):
            try:
                result = ray.get(call, timeout=max(1.0, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                raise ServerStartupError(
                    f"server {replica.slot.label!r} did not start on the Ray cluster within "
                    f"{self.options.startup_timeout_s:.0f} s (its actor may be waiting for resources: "
                    f"ray_resources {replica.slot.instance.ray_resources}); raise +startup_timeout_s=..."
                ) from None
            except ray.exceptions.RayError as error:
                raise ServerStartupError(f"server {replica.slot.label!r} could not start on Ray: {error}") from None
            if result.get("config_error"):
                raise ConfigError(result["config_error"])
            if "url" not in result:
                raise ServerStartupError(result["report"])
            replica.url, replica.host, replica.pid = result["url"], result["host"], result["pid"]
            self.registry.put(
                self._info(replica.slot, url=replica.url, node=result["node"]).model_copy(
                    update={"pid": replica.pid, "healthy": True}
                )
            )
        self._wait_for_head()

    def _wait_for_head(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        while not self.head.started:
            if self.head.failed or time.monotonic() > deadline:
                raise ServerStartupError(f"the head server could not start on {self.head_url}")
            time.sleep(0.02)

    def check(self) -> None:
        if self._stopped or time.monotonic() - self._last_poll < _POLL_INTERVAL_S:
            return
        self._last_poll = time.monotonic()
        polls = [(replica, replica.actor.poll.remote()) for replica in self.remote]
        for replica, call in polls:
            try:
                code = ray.get(call, timeout=10)
            except ray.exceptions.RayActorError as error:
                self._lost(replica, f"its actor died with its node or process ({type(error).__name__})")
                continue
            except ray.exceptions.RayError as error:
                self._lost(replica, f"Ray reported: {type(error).__name__}: {str(error)[:300]}")
                continue
            if code is not None:
                try:
                    report = ray.get(replica.actor.report.remote(), timeout=10)
                except ray.exceptions.RayError:
                    report = f"server {replica.slot.label!r} exited with code {code}"
                self._lost(replica, report)

    def _lost(self, replica: RemoteReplica, why: str) -> None:
        slot = replica.slot
        self.registry.update(slot.instance.name, slot.replica, healthy=False)
        self.remote.remove(replica)
        try:
            ray.kill(replica.actor)
        except ray.exceptions.RayError:
            pass
        siblings = [other for other in self.remote if other.slot.instance.name == slot.instance.name]
        where = f"on node {replica.host} ({replica.node_id[:12]})"
        if not siblings:
            raise ServerStartupError(f"server {slot.label!r} {where} is gone: {why}")
        self.lost.append(slot.label)
        self.log(
            f"replica {slot.replica} of server {slot.instance.name!r} {where} is gone ({why}); "
            f"{len(siblings)} of {slot.instance.num_replicas} replicas remain and take its new rollouts"
        )

    def table(self) -> str:
        rows = [("NAME", "TYPE", "IMPLEMENTATION", "URL", "NODE")]
        rows.append(("head_server", "head", "-", self.head_url, "(this machine)"))
        for replica in self.remote:
            instance = replica.slot.instance
            rows.append(
                (
                    replica.slot.label,
                    instance.server_type,
                    instance.implementation,
                    replica.url,
                    f"{replica.host} {replica.node_id[:12]}",
                )
            )
        return format_table(rows)

    def stop(self) -> None:
        """Stop every replica on every node (each actor stops its process), then leave the cluster."""
        if self._stopped:
            return
        self._stopped = True
        try:
            stops = [replica.actor.stop.remote(self.options.stop_timeout_s) for replica in self.remote]
            try:
                ray.get(stops, timeout=self.options.stop_timeout_s + 10)
            except ray.exceptions.RayError:
                pass  # an actor already gone took its process with it (the pipe closed)
            for replica in self.remote:
                try:
                    ray.kill(replica.actor)
                except ray.exceptions.RayError:
                    pass
        finally:
            self.head.stop()
            ray.shutdown()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
