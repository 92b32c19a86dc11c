"""`ng_version [+json=true]`: this toolkit's version, the Python running it, key libraries and the machine
(NeMo Gym's `gym --version`)."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from typing import Any

import psutil
from pydantic import BaseModel, Field

import nemo_gym
from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import load_global_config

DISTRIBUTION = "nemo-gym-lite"
KEY_DEPENDENCIES = ("openai", "fastapi", "uvicorn", "aiohttp", "pydantic", "hydra-core", "ray")


class VersionConfig(BaseModel):
    """Print the toolkit's version, the Python interpreter and install location, the versions of key libraries
    (ray: "not installed" unless the [ray] extra is) and the machine's OS, CPUs and memory."""

    json_output: bool = Field(False, alias="json", description="Print one JSON object instead of text.")


def _version_of(distribution: str) -> str:
    try:
        return installed_version(distribution)
    except PackageNotFoundError:
        return "not installed"


def version_info() -> dict[str, Any]:
    """What `ng_version` prints, as data (NeMo Gym's keys)."""
    return {
        "nemo_gym": nemo_gym.__version__,
        "python": platform.python_version(),
        "python_path": sys.executable,
        "installation_path": str(nemo_gym.PARENT_DIR),
        "dependencies": {name: _version_of(name) for name in KEY_DEPENDENCIES},
        "system": {
            "os": f"{platform.system()} {platform.release()}",
            "platform": platform.platform(),
            "architecture": platform.machine(),
            "processor": platform.processor() or "unknown",
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 1024**3, 2),
        },
    }


def show(argv: list[str]) -> int:
    params: VersionConfig = read_command_config(VersionConfig, load_global_config(argv), "ng_version")
    info = version_info()
    if params.json_output:
        print(json.dumps(info), flush=True)
        return 0
    system = info["system"]
    lines = [
        f"{DISTRIBUTION} {info['nemo_gym']} (NeMo Gym compatible)",
        f"Python {info['python']} ({info['python_path']})",
        f"Installation: {info['installation_path']}",
        "",
        "Key Dependencies:",
        *(f"  {name}: {found}" for name, found in info["dependencies"].items()),
        "",
        "System:",
        f"  OS: {system['os']}",
        f"  Platform: {system['platform']}",
        f"  Architecture: {system['architecture']}",
        f"  Processor: {system['processor']}",
        f"  CPUs: {system['cpus']}",
        f"  Memory: {system['memory_gb']} GB",
    ]
    print("\n".join(lines), flush=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_version", show, VersionConfig, argv)


if __name__ == "__main__":
    main()
