"""Which keys of a mapping a pydantic model does not declare, each with a did-you-mean suggestion.

One check for every place a user names a parameter: a command's own parameters (`+num_repeat=2`),
the keys every command shares (`+head_server.prot=...`), and each server's own config block, which
the server process checks against the config class it is about to validate. The known names are
always read from the models in code, so a field added to a model is known everywhere at once.

Deliberately free of omegaconf and yaml: every server process imports it at start-up.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

_MAX_LISTED = 40  # ng_collect_rollouts takes 29 with the shared keys: list them all, not "and 4 more"


@dataclass(frozen=True)
class UnknownKey:
    """One key nobody reads: its dotted path (as typed after `+`), a close known name, and its siblings."""

    path: str
    suggestion: str | None
    known: tuple[str, ...]


def declared_names(model: type[BaseModel]) -> list[str]:
    """Field names and string aliases, in declaration order."""
    names: list[str] = []
    for name, field in model.model_fields.items():
        names.append(name)
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str) and alias not in names:
                names.append(alias)
    return names


def find_unknown_keys(
    model: type[BaseModel],
    data: Mapping[str, Any],
    *,
    prefix: str = "",
    also_known: Iterable[str] = (),
) -> list[UnknownKey]:
    """Keys of `data` that `model` does not declare, recursing into nested pydantic models.

    The top level is always strict (a server config allows extra keys only so that subclasses can
    add fields, not so that typos pass). Below it a model with `extra="allow"` accepts anything,
    and values typed as plain dicts are free-form.
    """
    known = declared_names(model) + [name for name in also_known if name not in model.model_fields]
    found: list[UnknownKey] = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        field = _field_for(model, str(key))
        if field is None:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f"{prefix}.{close[0]}" if close and prefix else (close[0] if close else None)
            found.append(UnknownKey(path, suggestion, tuple(known)))
            continue
        found.extend(_walk_value(field.annotation, value, path))
    return found


def describe_unknown_keys(unknown: list[UnknownKey]) -> str:
    """One line: `unknown parameter 'num_repeat'; did you mean 'num_repeats'?` (or all of them, when several)."""
    if len(unknown) == 1:
        key = unknown[0]
        if key.suggestion:
            return f"unknown parameter '{key.path}'; did you mean '{key.suggestion}'?"
        return f"unknown parameter '{key.path}'; expected one of: {_listing(key.known)}"
    parts = [f"'{k.path}'" + (f" (did you mean '{k.suggestion}'?)" if k.suggestion else "") for k in unknown]
    return "unknown parameters " + ", ".join(parts)


def _listing(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _field_for(model: type[BaseModel], key: str) -> Any:
    field = model.model_fields.get(key)
    if field is not None:
        return field
    for candidate in model.model_fields.values():
        if key in (candidate.alias, candidate.validation_alias):
            return candidate
    return None


def _allows_extra(model: type[BaseModel]) -> bool:
    return model.model_config.get("extra") == "allow"


def _walk_value(annotation: Any, value: Any, path: str) -> list[UnknownKey]:
    """Check `value` against a field's annotation: nested models, and lists or dicts of them."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _walk_value(typing.get_args(annotation)[0], value, path)
    if origin in (typing.Union, types.UnionType):
        # Follow a union only when exactly one member can hold this value; otherwise it is ambiguous.
        members = [arg for arg in typing.get_args(annotation) if _kind(arg) in _HOLDERS[_kind_of_value(value)]]
        return _walk_value(members[0], value, path) if len(members) == 1 else []
    kind = _kind(annotation)
    if kind == "model" and isinstance(value, Mapping) and not _allows_extra(annotation):
        return find_unknown_keys(annotation, value, prefix=path)
    args = typing.get_args(annotation)
    if kind == "list" and isinstance(value, list) and args:
        return [
            problem for index, entry in enumerate(value) for problem in _walk_value(args[0], entry, f"{path}[{index}]")
        ]
    if kind == "mapping" and isinstance(value, Mapping) and len(args) == 2:
        return [problem for key, entry in value.items() for problem in _walk_value(args[1], entry, f"{path}.{key}")]
    return []


def _kind(annotation: Any) -> str:
    """'model', 'mapping', 'list', 'none' or 'scalar' for a (possibly generic) annotation."""
    if annotation is type(None) or annotation is None:
        return "none"
    origin = typing.get_origin(annotation) or annotation
    if not isinstance(origin, type):
        return "scalar"
    if issubclass(origin, BaseModel):
        return "model"
    if issubclass(origin, Mapping):
        return "mapping"
    if issubclass(origin, (list, tuple, set, frozenset)) or origin is Sequence:
        return "list"
    return "scalar"


# Which annotation kinds can hold a value of each kind (a dict fills a model or a mapping).
_HOLDERS = {"none": {"none"}, "mapping": {"model", "mapping"}, "list": {"list"}, "scalar": {"scalar"}}


def _kind_of_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return "mapping"
    return "list" if isinstance(value, list) else "scalar"
