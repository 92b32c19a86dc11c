"""Safe accessors for OmegaConf nodes that turn OmegaConf's exceptions into ours."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from nemo_gym.errors import ConfigInterpolationError


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_missing(cfg: DictConfig | ListConfig, key: Any) -> bool:
    return OmegaConf.is_missing(cfg, key)


def child_node(cfg: DictConfig | ListConfig, key: Any) -> Any:
    """The child at `key` as written, without resolving it: a DictConfig/ListConfig for a nested block,
    the plain value otherwise, and None for a `???` or a `${...}` (neither is a literal to inspect yet).

    The one place we look at a config's structure before interpolation; everything else reads resolved values.
    """
    if OmegaConf.is_missing(cfg, key) or OmegaConf.is_interpolation(cfg, key):
        return None
    return cfg[key]


def resolved(cfg: DictConfig, key: str, where: str) -> Any:
    """Read one key with interpolation resolved, turning resolver failures into our error."""
    if key not in cfg:
        return None
    try:
        value = cfg[key]
        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except MissingMandatoryValue:
        return None  # reported, with every other `???`, by check_missing
    except OmegaConfBaseException as exc:
        raise ConfigInterpolationError(f"Cannot resolve `{where}`: {first_line(exc)}") from None
    return value


def as_port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= 65535:
        return value
    return None


def container_of(node: DictConfig | ListConfig, *, resolve: bool, where: str) -> dict[str, Any] | list[Any]:
    try:
        return OmegaConf.to_container(node, resolve=resolve)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or where
        raise ConfigInterpolationError(f"Cannot resolve `{key}`: {first_line(exc)}") from None


def str_value(raw: DictConfig, key: str) -> str | None:
    if key not in raw or is_missing(raw, key):
        return None
    value = resolved(raw, key, key)
    return str(value) if value else None
