"""NeMo Gym's container-sandbox API: `AsyncSandbox` over a pluggable provider, with the same names and call shapes.

    provider = {"my_provider": {...}}                    # or a provider object
    async with AsyncSandbox(provider, SandboxSpec(image="python:3.12-slim")) as box:
        await box.start()
        result = await box.exec("python -V")               # SandboxExecResult(stdout, stderr, return_code)
        await box.upload("local.txt", "/work/remote.txt"); await box.download("/work/out.txt", "out.txt")

A provider is any object with NeMo Gym's provider methods (`create`, `exec`, `upload_file`,
`download_file`, `status`, `close`, `aclose`); `register_provider(name, cls)` makes it available
by name. NeMo Gym ships container backends (docker, apptainer, enroot, daytona, opensandbox,
ecs_fargate, openshell); this project has none of them, so naming one raises
`SandboxProviderUnavailableError` saying so. Model-written Python runs here in our own
`nemo_gym.sandbox.Sandbox` (confined processes on this machine), which is a different API.
Interactive PTY sessions and serialize/connect are not provided.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from nemo_gym.errors import SandboxCreateError, SandboxProviderUnavailableError

__all__ = [
    "AsyncSandbox",
    "ExecResult",
    "SandboxCreateError",
    "SandboxCreateVerificationError",
    "SandboxEndpoint",
    "SandboxExecResult",
    "SandboxHandle",
    "SandboxProvider",
    "SandboxResources",
    "SandboxSpec",
    "SandboxStatus",
    "SupportsSandboxEndpoint",
    "create_provider",
    "get_provider_class",
    "list_providers",
    "register_provider",
]


class SandboxCreateVerificationError(SandboxCreateError):
    """A newly created sandbox failed its provider's readiness checks."""


class SandboxStatus(str, Enum):  # noqa: UP042 -- str() stays "SandboxStatus.RUNNING", as NeMo Gym's
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SandboxEndpoint:
    """A route to a service inside a sandbox: an absolute URL and the headers it needs."""

    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = self.endpoint.strip() if isinstance(self.endpoint, str) else ""
        parts = urlsplit(url)
        if not (parts.scheme and parts.netloc):
            raise ValueError("Sandbox endpoint must be a non-empty absolute URL")
        object.__setattr__(self, "endpoint", url)
        object.__setattr__(self, "headers", {str(k): str(v) for k, v in dict(self.headers).items()})


@dataclass(frozen=True)
class SandboxResources:
    cpu: float | None = None
    memory_mib: int | None = None
    disk_gib: int | None = None
    gpu: int | None = None
    gpu_type: str | None = None

    @classmethod
    def from_mapping(cls, resources: Mapping[str, Any] | None) -> SandboxResources:
        if resources is None:
            return cls()
        unknown = set(resources) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"Unknown sandbox resource keys: {', '.join(sorted(unknown))}. "
                f"Expected keys: {', '.join(sorted(cls.__dataclass_fields__))}"
            )
        kinds: dict[str, type] = {"cpu": float, "memory_mib": int, "disk_gib": int, "gpu": int, "gpu_type": str}
        return cls(**{key: kinds[key](value) for key, value in resources.items() if value is not None})


@dataclass(frozen=True)
class SandboxSpec:
    """What to create: image, working directory, environment, files written at start, resources, ports."""

    image: str | None = None
    ttl_s: int | float | None = None
    ready_timeout_s: int | float | None = None
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    resources: SandboxResources | Mapping[str, Any] = field(default_factory=SandboxResources)
    entrypoint: list[str] | None = None
    provider_options: dict[str, Any] = field(default_factory=dict)
    ports: tuple[int, ...] | list[int] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.resources, SandboxResources):
            object.__setattr__(self, "resources", SandboxResources.from_mapping(self.resources))
        if not isinstance(self.ports, (list, tuple)):
            raise TypeError("Sandbox ports must be a list or tuple of TCP port numbers")
        ports: list[int] = []
        for raw in self.ports:
            try:
                if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                    raise ValueError
                port = int(raw)
            except ValueError:
                raise ValueError(f"Invalid sandbox TCP port: {raw!r}") from None
            if not 1 <= port <= 65535:
                raise ValueError(f"Sandbox TCP port must be between 1 and 65535, got {port}")
            if port in ports:
                raise ValueError(f"Duplicate sandbox TCP port: {port}")
            ports.append(port)
        object.__setattr__(self, "ports", tuple(ports))


@dataclass
class SandboxHandle:
    """A created sandbox; `raw` belongs to its provider."""

    sandbox_id: str
    provider_name: str
    raw: Any


@dataclass(frozen=True)
class SandboxExecResult:
    """One command's outcome; `error_type` is set when the runtime failed without a process exit code."""

    stdout: str | None
    stderr: str | None
    return_code: int
    error_type: str | None = None


ExecResult = SandboxExecResult


class SandboxProvider(Protocol):
    """What `AsyncSandbox` needs from a backend."""

    name: str

    async def create(self, spec: SandboxSpec) -> SandboxHandle: ...

    async def exec(
        self,
        handle: SandboxHandle,
        command: str,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: int | float | None = None,
        user: str | int | None = None,
    ) -> SandboxExecResult: ...

    async def upload_file(self, handle: SandboxHandle, source_path: Path, target_path: str) -> None: ...

    async def download_file(self, handle: SandboxHandle, source_path: str, target_path: Path) -> None: ...

    async def status(self, handle: SandboxHandle) -> SandboxStatus: ...

    async def close(self, handle: SandboxHandle) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SupportsSandboxEndpoint(Protocol):
    async def endpoint(self, handle: SandboxHandle, port: int) -> SandboxEndpoint: ...


# ---- providers by name -----------------------------------------------------------------------------
_REGISTERED: dict[str, type] = {}

NEMO_GYM_CONTAINER_PROVIDERS = frozenset(
    {"apptainer", "daytona", "docker", "ecs_fargate", "enroot", "opensandbox", "openshell"}
)
"""NeMo Gym's built-in container backends: names an environment's config may use that nothing here provides."""


def register_provider(name: str, provider_class: type, *, override: bool = False) -> None:
    """Make `provider_class` available to `create_provider({name: {...}})`."""
    if not name:
        raise ValueError("Provider name must be non-empty")
    if name in _REGISTERED and not override:
        raise ValueError(f"Sandbox provider {name!r} is already registered")
    _REGISTERED[name] = provider_class


def list_providers() -> list[str]:
    return sorted(_REGISTERED)


def get_provider_class(name: str) -> type:
    if name in _REGISTERED:
        return _REGISTERED[name]
    available = ", ".join(list_providers()) or "none registered"
    if name in NEMO_GYM_CONTAINER_PROVIDERS:
        raise SandboxProviderUnavailableError(
            f"sandbox provider {name!r} is one of NeMo Gym's container backends, which this project does not "
            f"include (available: {available}); run the environment where that backend exists, or "
            f"register_provider() one of your own"
        )
    raise SandboxProviderUnavailableError(f"Unknown sandbox provider {name!r}. Available providers: {available}")


def create_provider(config: Mapping[str, Any]) -> Any:
    """A provider built from a one-key config `{provider_name: {constructor keyword arguments}}`."""
    if len(config) != 1:
        raise ValueError("Sandbox provider config must contain exactly one provider name")
    name, kwargs = next(iter(config.items()))
    if not isinstance(name, str) or not name:
        raise ValueError("Sandbox provider name must be a non-empty string")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"Sandbox provider {name!r} config must be a mapping")
    return get_provider_class(name)(**dict(kwargs or {}))


# ---- the sandbox --------------------------------------------------------------------------------------
class AsyncSandbox:
    """One sandbox of a provider: start it, run commands, move files, stop it (also on leaving `async with`)."""

    def __init__(self, provider: Mapping[str, Any] | SandboxProvider, spec: SandboxSpec | None = None) -> None:
        self._provider = create_provider(provider) if isinstance(provider, Mapping) else provider
        self._spec = spec
        self._handle: SandboxHandle | None = None
        self._running = False
        self._closed = False

    def _live_handle(self) -> SandboxHandle:
        if self._handle is None or not self._running:
            raise RuntimeError("Sandbox has not been started")
        return self._handle

    async def start(self, spec: SandboxSpec | None = None) -> AsyncSandbox:
        if self._closed:
            raise RuntimeError("Sandbox has been stopped")
        if self._running:
            raise RuntimeError("Sandbox is already started")
        wanted = spec if spec is not None else self._spec
        if wanted is None:
            raise ValueError("Sandbox.start() requires a SandboxSpec")
        handle = await self._provider.create(wanted)
        try:
            if wanted.files:
                with tempfile.TemporaryDirectory(prefix="nemo-gym-sandbox-upload-") as scratch:
                    for index, (target, text) in enumerate(wanted.files.items()):
                        source = Path(scratch) / f"file-{index}"
                        source.write_text(text, encoding="utf-8")
                        await self._provider.upload_file(handle, source, target)
        except BaseException:
            # A sandbox that could not be set up is not left running, nor its provider open.
            await self._provider.close(handle)
            await self._provider.aclose()
            self._closed = True
            raise
        self._spec, self._handle, self._running = wanted, handle, True
        return self

    async def exec(
        self,
        command: str,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: int | float | None = 180,
        user: str | int | None = None,
    ) -> SandboxExecResult:
        """Run a shell command; `cwd` defaults to the spec's workdir, `timeout_s` to 180 s (NeMo Gym's)."""
        if cwd is None and self._spec is not None:
            cwd = self._spec.workdir
        return await self._provider.exec(self._live_handle(), command, cwd=cwd, env=env, timeout_s=timeout_s, user=user)

    async def upload(self, local_path: Path | str, remote_path: str) -> None:
        await self._provider.upload_file(self._live_handle(), Path(local_path), remote_path)

    async def download(self, remote_path: str, local_path: Path | str) -> None:
        await self._provider.download_file(self._live_handle(), remote_path, Path(local_path))

    async def status(self) -> SandboxStatus:
        if self._handle is None:
            return SandboxStatus.UNKNOWN
        if not self._running:
            return SandboxStatus.STOPPED
        return await self._provider.status(self._handle)

    async def endpoint(self, port: int) -> SandboxEndpoint:
        """The URL of a service on a port the spec declared, if the provider can route to it."""
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"Sandbox endpoint port must be an integer between 1 and 65535, got {port!r}")
        declared = tuple(self._spec.ports) if self._spec is not None else ()
        if port not in declared:
            raise ValueError(f"Sandbox port {port} was not declared in SandboxSpec.ports; declared: {list(declared)}")
        if not isinstance(self._provider, SupportsSandboxEndpoint):
            name = getattr(self._provider, "name", type(self._provider).__name__)
            raise NotImplementedError(f"Sandbox provider {name!r} does not support service endpoints")
        return await self._provider.endpoint(self._live_handle(), port)

    async def stop(self) -> None:
        """Close the sandbox and its provider; calling it again does nothing."""
        if self._closed:
            return
        try:
            if self._handle is not None and self._running:
                self._running = False
                await self._provider.close(self._handle)
        finally:
            await self._provider.aclose()
            self._closed = True

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
