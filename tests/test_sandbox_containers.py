"""NeMo Gym's container-sandbox API (`nemo_gym.sandbox.AsyncSandbox` over a provider), as environments such
as litmus_agent, deepswe and cvdp use it: a provider registered by name, files written at start, commands
run in the spec's workdir, files moved both ways, and a clear error for NeMo Gym's container backends."""

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from nemo_gym.errors import SandboxProviderUnavailableError
from nemo_gym.sandbox import (
    AsyncSandbox,
    SandboxCreateError,
    SandboxExecResult,
    SandboxHandle,
    SandboxResources,
    SandboxSpec,
    SandboxStatus,
    create_provider,
    register_provider,
    resolve_provider_config,
    resolve_provider_metadata,
)
from nemo_gym.sandbox.providers.base import SandboxExecResult as ProvidersExecResult
from nemo_gym.server_utils import get_first_server_config_dict, is_nemo_gym_fastapi_entrypoint


class DirectoryProvider:
    """A provider whose sandboxes are directories under `root` and whose commands run in /bin/sh there
    (the shape of litmus_agent's own test provider); it records what AsyncSandbox asked of it."""

    name = "directory_test_provider"

    def __init__(self, root: str):
        self.root = Path(root)
        self.calls: list[str] = []

    def _path(self, handle: SandboxHandle, path: str) -> Path:
        return Path(handle.raw) / path.lstrip("/")

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        self.calls.append(f"create {spec.image}")
        if spec.image == "missing:latest":
            raise SandboxCreateError("image missing:latest not found")
        box = self.root / f"box{len(self.calls)}"
        box.mkdir()
        return SandboxHandle(sandbox_id=box.name, provider_name=self.name, raw=str(box))

    async def exec(self, handle, command, *, cwd=None, env=None, timeout_s=None, user=None) -> SandboxExecResult:
        self.calls.append(f"exec {command} cwd={cwd} timeout={timeout_s}")
        where = self._path(handle, cwd or "/")
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["/bin/sh", "-c", command], cwd=where, capture_output=True, text=True, env=env)
        return SandboxExecResult(stdout=done.stdout, stderr=done.stderr, return_code=done.returncode)

    async def upload_file(self, handle, source_path: Path, target_path: str) -> None:
        self.calls.append(f"upload {target_path}")
        target = self._path(handle, target_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_path, target)

    async def download_file(self, handle, source_path: str, target_path: Path) -> None:
        shutil.copyfile(self._path(handle, source_path), target_path)

    async def status(self, handle) -> SandboxStatus:
        return SandboxStatus.RUNNING if Path(handle.raw).exists() else SandboxStatus.ERROR

    async def close(self, handle) -> None:
        self.calls.append("close")
        shutil.rmtree(handle.raw)

    async def aclose(self) -> None:
        self.calls.append("aclose")


register_provider(DirectoryProvider.name, DirectoryProvider, override=True)


def test_a_registered_provider_runs_a_sandbox_from_start_to_stop(tmp_path: Path) -> None:
    async def scenario() -> None:
        spec = SandboxSpec(image="python:3.12-slim", workdir="/work", files={"/work/task.txt": "42\n"})
        box = AsyncSandbox({DirectoryProvider.name: {"root": str(tmp_path)}}, spec)
        assert await box.status() == SandboxStatus.UNKNOWN
        async with box:
            await box.start()
            assert await box.status() == SandboxStatus.RUNNING
            result = await box.exec("cat task.txt && echo made > out.txt")
            assert result == SandboxExecResult(stdout="42\n", stderr="", return_code=0)
            (tmp_path / "in.txt").write_text("hello")
            await box.upload(tmp_path / "in.txt", "/work/in.txt")
            assert (await box.exec("cat in.txt", cwd="/work", timeout_s=5)).stdout == "hello"
            await box.download("/work/out.txt", tmp_path / "out.txt")
            assert (tmp_path / "out.txt").read_text() == "made\n"
            failed = await box.exec("exit 3")
            assert failed.return_code == 3
        provider = box._provider
        assert provider.calls[0] == "create python:3.12-slim" and provider.calls[1] == "upload /work/task.txt"
        # exec defaults: the spec's workdir and NeMo Gym's 180 s
        assert "exec cat task.txt && echo made > out.txt cwd=/work timeout=180" in provider.calls
        assert provider.calls[-2:] == ["close", "aclose"]
        assert await box.status() == SandboxStatus.STOPPED
        with pytest.raises(RuntimeError, match="not been started"):
            await box.exec("true")
        await box.stop()  # a second stop does nothing

    asyncio.run(scenario())


def test_a_sandbox_that_cannot_be_created_says_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        box = AsyncSandbox(DirectoryProvider(str(tmp_path)), SandboxSpec(image="missing:latest"))
        with pytest.raises(SandboxCreateError, match="missing:latest"):
            await box.start()
        with pytest.raises(ValueError, match="requires a SandboxSpec"):
            await AsyncSandbox(DirectoryProvider(str(tmp_path))).start()

    asyncio.run(scenario())


def test_nemo_gym_container_backends_are_refused_by_name() -> None:
    for name in ("docker", "opensandbox", "apptainer"):
        with pytest.raises(SandboxProviderUnavailableError, match=f"'{name}' is one of NeMo Gym's container backends"):
            AsyncSandbox({name: {"connection": {}}}, SandboxSpec(image="x"))
    # A ValueError, as NeMo Gym's unknown provider is: environments that catch it keep working.
    with pytest.raises(ValueError, match="Unknown sandbox provider 'nope'"):
        create_provider({"nope": {}})
    with pytest.raises(ValueError, match="exactly one provider name"):
        create_provider({})


def test_spec_values_are_checked_as_nemo_gyms_are() -> None:
    spec = SandboxSpec(resources={"cpu": 2, "memory_mib": "512"}, ports=["8080", 22])
    assert spec.resources == SandboxResources(cpu=2.0, memory_mib=512) and spec.ports == (8080, 22)
    with pytest.raises(ValueError, match="Unknown sandbox resource keys: vram"):
        SandboxSpec(resources={"vram": 1})
    with pytest.raises(ValueError, match="Duplicate sandbox TCP port"):
        SandboxSpec(ports=[1, 1])
    assert ProvidersExecResult is SandboxExecResult


def test_provider_config_by_name_or_inline() -> None:
    named = {"sandbox": {"opensandbox": {"domain": "d"}, "default_metadata": {"team": "x"}}, "other": 1}
    assert resolve_provider_config("sandbox", named) == {"opensandbox": {"domain": "d"}}
    assert resolve_provider_metadata("sandbox", named) == {"team": "x"}
    assert resolve_provider_config({"docker": {}}) == {"docker": {}}
    assert resolve_provider_metadata({"docker": {}}) == {}
    with pytest.raises(ValueError, match="'missing' is not defined.*Sandbox blocks found: sandbox"):
        resolve_provider_config("missing", named)
    with pytest.raises(ValueError, match="exactly one provider key"):
        resolve_provider_config({"a": {}, "b": {}})


def test_server_utils_names_deepswe_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"policy_model": {"responses_api_models": {"openai_model": {"host": "127.0.0.1", "port": 9}}}}
    assert get_first_server_config_dict(config, "policy_model")["port"] == 9
    # Our launcher starts no NeMo Gym-style uvicorn workers, so an app's `elif` worker branch never runs.
    assert not is_nemo_gym_fastapi_entrypoint("/x/app.py")
    monkeypatch.setenv("IS_NEMO_GYM_FASTAPI_WORKER", "1")
    monkeypatch.setenv("IS_NEMO_GYM_FASTAPI_ENTRYPOINT", "resources_servers/deepswe/app.py")
    assert is_nemo_gym_fastapi_entrypoint("/x/resources_servers/deepswe/app.py")
