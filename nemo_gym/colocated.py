"""Co-located collection: the agent and resources servers of a stack run inside the collector's process.

Over HTTP every tool step crosses loopback four times (collector -> agent -> resources, agent ->
model), each paying for JSON, a socket and an HTTP parse on both sides. Here the agent and resources
servers are built from the same config in this process and their ASGI apps are called in memory
(`nemo_gym.asgi_transport`); only the model servers stay remote HTTP servers, as in real use. The
servers are the same objects with the same apps (middleware, sessions, request limits, error
answers), so rows are the same as over HTTP.

Use it on one machine with environments you trust: their code runs in the collector's process (a
crash is answered as a 500 and fails only its rollout, but an environment that blocks the event loop
or leaks memory slows the collector). Verification that needs isolation still goes to the compute
pool or sandbox, as the environment asks.

Python API (an RL trainer in-process; the model servers already run behind `head_url`):

    async with ColocatedStack(config, head_url) as stack:
        async with stack.collector("my_agent", CollectionPolicy(concurrency=256)) as collector:
            async for outcome in collector.stream(jobs):
                ...

`ng_collect_rollouts +colocate=true +config_paths=[...]` does this, starting the model servers
(`nemo_gym.colocated_remote.RemoteStack`) when none run. This module never imports the launcher (nor,
through it, uvicorn): a co-located collection that uses running model servers does not need them.
"""

from __future__ import annotations

import ast
import gc
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from nemo_gym.asgi_transport import ColocatedHttpClient, LocalApp, LocalApps, inproc_url
from nemo_gym.client import PoolLimits, ServerClient, ServerInfo, Timeouts
from nemo_gym.config import GlobalConfig, ServerInstance
from nemo_gym.errors import ConfigError
from nemo_gym.rollouts.collector import CollectionPolicy, RolloutCollector
from nemo_gym.servers.base import ServerBootstrap, SimpleServer, freeze_start_up_heap

COLOCATED_SERVER_TYPES = frozenset({"resources_servers", "responses_api_agents"})
"""Server kinds that run in the collector's process; model servers stay remote."""


def colocated_instances(config: GlobalConfig) -> list[ServerInstance]:
    return [instance for instance in config.instances if instance.server_type in COLOCATED_SERVER_TYPES]


COLLECTION_GC_THRESHOLDS = (10_000, 10, 10)
"""The least of the collector's garbage-collector thresholds while it runs a co-located collection
(CPython's default is (700, 10, 10)); the young one grows with the rollouts in flight
(`collection_gc_thresholds`). The process then holds every in-flight rollout of the agent and its
environments: at 256 in flight a young collection came every ~5 tool steps and walked that whole young
heap, and collections took ~0.4 ms of the collector's ~2 ms CPU per rollout (0.03 ms with these
thresholds, measured with `gc.callbacks`). Cyclic garbage lives a little longer; nothing else changes."""

YOUNG_OBJECTS_PER_ROLLOUT_IN_FLIGHT = 250
"""How far the young-generation threshold grows with the rollouts in flight (`collection_gc_thresholds`).
A young collection walks every object allocated since the last one that is still alive, and a rollout in
flight keeps ~650 of them alive for its whole life. With a fixed 10,000, 4,096 in flight crossed it every
~0.4 s: 121 young and 11 middle collections in 16,000 rollouts walked every rollout's objects and found
nothing to free ("0 unreachable" in each), 0.39-0.73 ms of the collector's ~2 ms per rollout (0.02 ms at
250 per rollout in flight; measured with `gc.callbacks`). It also bounds the cyclic garbage that waits for a
collection to about a third of what the rollouts in flight hold."""


def collection_gc_thresholds(concurrency: int) -> tuple[int, int, int]:
    """The garbage-collector thresholds for a co-located collection with `concurrency` rollouts in flight."""
    young, middle, old = COLLECTION_GC_THRESHOLDS
    return max(young, YOUNG_OBJECTS_PER_ROLLOUT_IN_FLIGHT * concurrency), middle, old


@contextmanager
def collection_gc(concurrency: int = CollectionPolicy.model_fields["concurrency"].default) -> Iterator[None]:
    """Garbage collection tuned for a co-located collection of `concurrency` rollouts in flight, restored
    afterwards: what exists now (the imported libraries, the servers just built) is frozen out of every
    collection (`gc.freeze`), and collections run less often (`collection_gc_thresholds`).
    `ng_collect_rollouts +colocate=true` runs its collection inside it; a trainer using `ColocatedStack` may
    do the same (it is the trainer's process, so it is not done for it)."""
    previous = gc.get_threshold()
    froze = gc.get_freeze_count() == 0  # a caller that froze on its own keeps its freeze
    if froze:
        freeze_start_up_heap()
    gc.set_threshold(*collection_gc_thresholds(concurrency))
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        if froze:
            gc.unfreeze()


def server_class(instance: ServerInstance, project_root: Path) -> type[SimpleServer]:
    """The server class an entrypoint serves (`<Class>.run_webserver()` in its `__main__` block), imported
    under its package path (`resources_servers.<env>.app`) so its own imports and pickling work as usual."""
    entrypoint = (instance.directory / instance.entrypoint).resolve()
    where = f"server {instance.name!r} ({entrypoint})"
    if not entrypoint.is_file():
        raise ConfigError(f"{where}: the entrypoint does not exist")
    class_name = _served_class_name(entrypoint)
    if class_name is None:
        raise ConfigError(f"{where} cannot be co-located: its entrypoint calls no <ServerClass>.run_webserver()")
    module = _import_entrypoint(entrypoint, project_root, instance)
    found = getattr(module, class_name, None)
    if not (isinstance(found, type) and issubclass(found, SimpleServer)):
        raise ConfigError(f"{where} cannot be co-located: {class_name} is not a server class")
    return found


def _served_class_name(entrypoint: Path) -> str | None:
    tree = ast.parse(entrypoint.read_text(encoding="utf-8"), str(entrypoint))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "run_webserver"
            and isinstance(node.func.value, ast.Name)
        ):
            return node.func.value.id
    return None


def _import_entrypoint(entrypoint: Path, project_root: Path, instance: ServerInstance) -> ModuleType:
    root = project_root.resolve()
    try:
        relative = entrypoint.relative_to(root).with_suffix("")
        module_name = ".".join(relative.parts)
    except ValueError:
        module_name = f"_nemo_gym_colocated_{instance.name}"
    for folder in (str(root), str(instance.directory.resolve())):  # what a server process has on PYTHONPATH
        if folder not in sys.path:
            sys.path.append(folder)
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(module_name, entrypoint)
    if spec is None or spec.loader is None:
        raise ConfigError(f"server {instance.name!r}: cannot import {entrypoint}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


class ColocatedStack:
    """The co-located servers of `config`, built and started in this process (inside a running loop)."""

    def __init__(self, config: GlobalConfig, head_url: str):
        self.config = config
        self.head_url = head_url
        self.instances = colocated_instances(config)
        self.local = LocalApps()
        self.rows = [
            ServerInfo(
                name=i.name,
                server_type=i.server_type,
                implementation=i.implementation,
                url=inproc_url(i.name),
                pid=os.getpid(),
                healthy=True,
            )
            for i in self.instances
        ]
        self.servers: dict[str, SimpleServer] = {}
        self._clients: list[ServerClient] = []

    async def __aenter__(self) -> ColocatedStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if not self.instances:
            raise ConfigError("nothing to co-locate: the config defines no agent or resources server")
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        for instance in self.instances:
            cls = server_class(instance, self.config.project_root)
            config = self.config.server_config_dict(instance.name)
            config.update(host=instance.host, port=instance.port)
            bootstrap = ServerBootstrap(
                name=instance.name,
                config=config,
                head_url=self.head_url,
                registry=[],
                config_key=f"{instance.name}.{instance.server_type}.{instance.implementation}",
            )
            server = cls.from_bootstrap(bootstrap)
            # Its own pool for the remote calls (the model server), as a server process has.
            server.server_client.pin_servers(ColocatedHttpClient(self.local), self.rows)
            self.servers[instance.name] = server
            self.local.add(LocalApp(instance.name, server.setup_webserver(), instance.host, instance.port))
        await self.local.start()

    def server_client(self, timeouts: Timeouts = Timeouts(), limits: PoolLimits = PoolLimits()) -> ServerClient:
        """A client for the caller (the collector): co-located names are called in memory, others over HTTP."""
        client = ServerClient(self.head_url)
        client.pin_servers(ColocatedHttpClient(self.local, timeouts=timeouts, limits=limits), self.rows)
        self._clients.append(client)
        return client

    def collector(
        self,
        agent_name: str | None,
        policy: CollectionPolicy = CollectionPolicy(),
        timeouts: Timeouts = Timeouts(),
        limits: PoolLimits = PoolLimits(),
    ) -> RolloutCollector:
        """A `RolloutCollector` whose agent calls stay in this process; use `async with` as with `connect`."""
        return RolloutCollector(self.server_client(timeouts, limits), agent_name, policy)

    async def stop(self) -> None:
        """Shut every server down (its `on_shutdown`, its client closed) and close the callers' clients."""
        await self.local.stop()
        for server in self.servers.values():
            await server.server_client.aclose()  # closed by its lifespan already, unless it never started
        for client in self._clients:
            await client.aclose()
        self._clients.clear()
