"""Hydra override grammar (`+a.b=1`, `++a=[x,y]`) without `@hydra.main`, into a DictConfig."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_gym.config._nodes import first_line
from nemo_gym.errors import ConfigOverrideError

_override_parser: Any = None


def _get_override_parser() -> Any:
    # Building the ANTLR parser costs tens of milliseconds; do it once, and only when needed.
    global _override_parser
    if _override_parser is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _override_parser = OverridesParser.create()
    return _override_parser


def _override_hint(text: str, reason: str) -> str:
    """What to do: a list cut short (`+k=[a,` then `b]`) is almost always a space the shell split on."""
    key, _, value = text.partition("=")
    if "no viable alternative" in reason or value.count("[") > value.count("]") or value.count("{") > value.count("}"):
        return (
            f"the shell splits a list at each space: write it without spaces, {key}=[a.yaml,b.yaml], "
            f"or quote the whole override, '{key}=[a.yaml, b.yaml]'"
        )
    return 'expected +key=value, e.g. "+config_paths=[a.yaml,b.yaml]"'


def parse_overrides(argv: list[str]) -> DictConfig:
    """Parse Hydra-style overrides (`+a.b=1`, `++a=[x,y]`, `a="s"`) into a DictConfig.

    There is no base config, so `+key`, `++key` and `key` all just set the key; a later override
    of the same key wins. Values are typed the way Hydra types them.
    """
    parser = _get_override_parser()
    cfg = OmegaConf.create()
    for text in argv:
        if not isinstance(text, str):
            raise ConfigOverrideError(f"Malformed override {text!r}: expected a string like +key=value")
        try:
            override = parser.parse_override(text)
        except Exception as exc:  # Hydra raises several unrelated classes for grammar errors
            reason = _hydra_reason(exc)
            raise ConfigOverrideError(
                f"Malformed override {text!r}: {reason} ({_override_hint(text, reason)})"
            ) from None
        if override.is_delete():
            raise ConfigOverrideError(f"Unsupported override {text!r}: deleting keys with ~ is not supported")
        if override.is_sweep_override():
            raise ConfigOverrideError(
                f"Unsupported override {text!r}: sweeps (a=1,2) are not supported; "
                "quote a value that contains commas, or write a list [1,2]"
            )
        if override.package is not None:
            raise ConfigOverrideError(f"Unsupported override {text!r}: the @package syntax is not supported")
        key = override.key_or_group
        try:
            OmegaConf.update(cfg, key, override.value(), merge=False, force_add=True)
        except OmegaConfBaseException as exc:
            raise ConfigOverrideError(f"Cannot apply override {text!r}: {first_line(exc)}") from None
    return cfg


def _hydra_reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Error parsing override", "See https://"))]
    return useful[0] if useful else (lines[0] if lines else type(exc).__name__)
