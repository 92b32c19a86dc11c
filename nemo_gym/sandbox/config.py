"""NeMo Gym's `nemo_gym.sandbox.config`: which container-sandbox provider a server's `sandbox_provider` names.

`sandbox_provider` is either an inline one-key mapping `{provider_name: {...}}` or the name of a
top-level block of the merged config holding one (`sandbox: {docker: {...}}`). A block may also
carry `default_metadata`, defaults for `SandboxSpec.metadata`, which is not a provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["resolve_provider_config", "resolve_provider_metadata"]

DEFAULT_METADATA_KEY = "default_metadata"


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return dict(value) if isinstance(value, Mapping) else value


def _block(sandbox_provider: str | Mapping[str, Any], named_configs: Mapping[str, Any] | None) -> tuple[Any, str]:
    if isinstance(sandbox_provider, Mapping):
        return _plain(sandbox_provider), "inline sandbox_provider config"
    if not isinstance(sandbox_provider, str):
        raise TypeError(
            "sandbox_provider must be a name reference (str) or a single-key provider mapping, "
            f"got {type(sandbox_provider).__name__}"
        )
    if not sandbox_provider:
        raise ValueError("Sandbox provider reference must be a non-empty string")
    block = (named_configs or {}).get(sandbox_provider)
    if block is None:
        candidates = sorted(
            str(key)
            for key, value in (named_configs or {}).items()
            if isinstance(_plain(value), Mapping) and len([k for k in _plain(value) if k != DEFAULT_METADATA_KEY]) == 1
        )
        raise ValueError(
            f"Sandbox provider reference {sandbox_provider!r} is not defined in the merged config: add a top-level "
            f"'{sandbox_provider}:' block to config_paths. Sandbox blocks found: {', '.join(candidates) or '(none)'}"
        )
    return _plain(block), f"reference {sandbox_provider!r}"


def resolve_provider_config(
    sandbox_provider: str | Mapping[str, Any], named_configs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`{provider_name: provider_kwargs}` for `nemo_gym.sandbox.create_provider` (reserved keys left out)."""
    block, source = _block(sandbox_provider, named_configs)
    if not isinstance(block, Mapping):
        raise ValueError(f"Sandbox provider config from {source} must be a mapping, got: {block!r}")
    names = [key for key in block if key != DEFAULT_METADATA_KEY]
    if len(names) != 1:
        raise ValueError(
            f"Sandbox provider config from {source} must have exactly one provider key "
            f"{{provider_name: config}}, got keys: {names!r}"
        )
    return {names[0]: block[names[0]]}


def resolve_provider_metadata(
    sandbox_provider: str | Mapping[str, Any], named_configs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The block's `default_metadata` ({} without one)."""
    block, source = _block(sandbox_provider, named_configs)
    if not isinstance(block, Mapping):
        raise ValueError(f"Sandbox provider config from {source} must be a mapping, got: {block!r}")
    metadata = block.get(DEFAULT_METADATA_KEY) or {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"Sandbox '{DEFAULT_METADATA_KEY}' from {source} must be a mapping, got: {metadata!r}")
    return dict(metadata)
