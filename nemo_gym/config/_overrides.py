"""Hydra override grammar (`+a.b=1`, `++a=[x,y]`) without `@hydra.main`, into a DictConfig.

The plain overrides every command line is made of (`+key.sub=value`, the value one word of letters,
digits and `_ . / : + -`, or a flat list of such words without spaces) are read here, typed by the rules of Hydra's lexer (`OverrideLexer.g4`:
a value that is one FLOAT, INT, BOOL or NULL token is that type, anything else is its own text);
everything else (lists, dicts, quotes, `${...}`, escapes, spaces, sweeps, `~`, `@`) goes to Hydra's
parser. Importing Hydra was ~15% of a command's start-up, for overrides that need none of it;
tests/test_config.py checks both readings agree on a corpus of edge cases.
"""

from __future__ import annotations

import re
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


_KEY_PART = r"[A-Za-z_][A-Za-z0-9_]*"
_WORD = r"[A-Za-z0-9_./:+-]+"
_PLAIN_OVERRIDE = re.compile(rf"\+{{0,2}}({_KEY_PART}(?:\.{_KEY_PART})*)=({_WORD}|\[{_WORD}(?:,{_WORD})*\])")
_UINT = r"(?:0|[1-9](?:_?[0-9])*)"  # Hydra's INT_UNSIGNED
_DIGITS = r"[0-9](?:_?[0-9])*"
_POINT_FLOAT = rf"(?:{_UINT}\.|(?:{_UINT})?\.{_DIGITS})"
_FLOAT_TOKEN = re.compile(
    rf"[+-]?(?:{_POINT_FLOAT}|(?:{_UINT}|{_POINT_FLOAT})[eE][+-]?{_DIGITS}|[Ii][Nn][Ff]|[Nn][Aa][Nn])"
)
_INT_TOKEN = re.compile(rf"[+-]?{_UINT}")
_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _plain_override(text: str) -> tuple[str, Any] | None:
    """(key, value) of a plain override, typed as Hydra types it; None = one for Hydra's parser."""
    match = _PLAIN_OVERRIDE.fullmatch(text)
    if match is None:
        return None
    key, value = match.groups()
    if value.startswith("["):  # a flat list (`+config_paths=[a.yaml,b.yaml]`): each element is typed alike
        return key, [_plain_value(element) for element in value[1:-1].split(",")]
    return key, _plain_value(value)


def _plain_value(value: str) -> Any:
    # A value that is one whole token of the lexer takes that token's type (the lexer prefers the
    # longest match, then the earliest rule: FLOAT, INT, BOOL, NULL, before ID); several tokens, or
    # one ID, are a string of the value's own text (it has no spaces or escapes to drop).
    if _FLOAT_TOKEN.fullmatch(value):
        return float(value)
    if _INT_TOKEN.fullmatch(value):
        return int(value)
    return _WORDS.get(value.lower(), value)


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
    cfg = OmegaConf.create()
    for text in argv:
        if not isinstance(text, str):
            raise ConfigOverrideError(f"Malformed override {text!r}: expected a string like +key=value")
        plain = _plain_override(text)
        if plain is not None:
            _apply(cfg, text, *plain)
            continue
        parser = _get_override_parser()
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
        _apply(cfg, text, override.key_or_group, override.value())
    return cfg


def _apply(cfg: DictConfig, text: str, key: str, value: Any) -> None:
    try:
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    except OmegaConfBaseException as exc:
        raise ConfigOverrideError(f"Cannot apply override {text!r}: {first_line(exc)}") from None


def _hydra_reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Error parsing override", "See https://"))]
    return useful[0] if useful else (lines[0] if lines else type(exc).__name__)
