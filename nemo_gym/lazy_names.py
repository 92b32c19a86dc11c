"""A package's public names, imported on first use (PEP 562) instead of when the package is imported.

`nemo_gym.servers` and `nemo_gym.rollouts` re-export names from their submodules; importing them all up
front put FastAPI in every collector and the end-of-run reports before its first rollout.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, submodule_of: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The package's `__getattr__` and `__dir__`: a name in `submodule_of` is imported from that submodule
    the first time it is asked for, then kept in `namespace` (the package's globals)."""

    def __getattr__(name: str) -> object:
        submodule = submodule_of.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
