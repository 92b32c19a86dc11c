"""NeMo Gym's config directives: one block built from another, applied once the files are merged.

NeMo Gym's YAML (its benchmarks' `config.yaml` and several environments) writes a server instance
as a variation of another:

    math_500_resources_server:
      _inherit_from: math_with_judge        # take that block (and drop it), then merge mine on top
      resources_servers:
        math_with_judge:
          should_use_judge: false

  * `_inherit_from: <dotted path>`: the block at the path, with this block's keys merged on top;
    the source block is removed (the variation replaces it).
  * `_copy: <dotted path>`: the same, but the source stays.
  * `"${inherit_from:<path>}"` / `"${copy:<path>}"` as a whole value: that value, as above.
  * `_delete_key: "a, b"`: drop those keys from the result (each must exist in it).

Sources are read from the config as merged, before any directive is applied, and a source that is
unset (`???`) leaves the target unset, as NeMo Gym does. Works on plain containers, so the rest of
the loader sees an ordinary config.
"""

from __future__ import annotations

import copy
from typing import Any

from nemo_gym.errors import ConfigError

INHERIT_FROM = "_inherit_from"
COPY = "_copy"
DELETE_KEY = "_delete_key"
_MISSING = "???"
_ABSENT = object()


def has_directives(node: Any) -> bool:
    """Whether any directive appears anywhere below `node` (the common case, none, costs one walk)."""
    if isinstance(node, dict):
        return any(key in (INHERIT_FROM, COPY, DELETE_KEY) or has_directives(value) for key, value in node.items())
    if isinstance(node, list):
        return any(has_directives(item) for item in node)
    return isinstance(node, str) and node.startswith(("${inherit_from:", "${copy:"))


def apply_directives(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with every directive applied (in place, and returned)."""
    frozen = copy.deepcopy(config)
    _apply_below(config, config, frozen, ())
    return config


def _apply_below(node: dict[str, Any], root: dict[str, Any], frozen: dict[str, Any], where: tuple[str, ...]) -> None:
    for key in list(node):
        value = node[key]
        here = (*where, str(key))
        pending_deletes: set[str] = set()
        if isinstance(value, dict) and DELETE_KEY in value:
            pending_deletes = _names(value.pop(DELETE_KEY), here)
            present = {name for name in pending_deletes if name in value}
            for name in present:  # dropped before the merge, so a deleted key is never read
                del value[name]
            pending_deletes -= present
        if isinstance(value, dict):
            _apply_below(value, root, frozen, here)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    _apply_below(item, root, frozen, (*here, str(index)))

        directive = _directive_of(value, here)
        if directive is None:
            continue
        path, moves = directive
        source = _lookup(frozen, path, here)
        if moves:
            _remove(root, path)
        if source == _MISSING:
            node[key] = _MISSING
            continue
        result = copy.deepcopy(source)
        if isinstance(value, dict):  # the property form: this block's own keys go on top
            if not isinstance(result, dict):
                raise ConfigError(f"`{'.'.join(here)}` merges its keys onto `{'.'.join(path)}`, which is not a mapping")
            result = _merged(result, value)
        node[key] = result
        for name in sorted(pending_deletes):
            if not isinstance(result, dict) or name not in result:
                raise ConfigError(f"`{'.'.join(here)}._delete_key` names {name!r}, which is not in the block")
            del result[name]


def _directive_of(value: Any, where: tuple[str, ...]) -> tuple[list[str], bool] | None:
    """(source path, whether the source is removed) of a directive value, or None."""
    if isinstance(value, str):
        for prefix, moves in (("${inherit_from:", True), ("${copy:", False)):
            if value.startswith(prefix) and value.endswith("}"):
                return _path(value[len(prefix) : -1], where), moves
        return None
    if isinstance(value, dict):
        if INHERIT_FROM in value and COPY in value:
            raise ConfigError(f"`{'.'.join(where)}` has both {INHERIT_FROM} and {COPY}; keep one")
        for name, moves in ((INHERIT_FROM, True), (COPY, False)):
            if name in value:
                return _path(value.pop(name), where), moves
    return None


def _path(text: Any, where: tuple[str, ...]) -> list[str]:
    parts = str(text).strip().split(".") if text is not None else []
    if not parts or any(not part for part in parts):
        raise ConfigError(f"`{'.'.join(where)}`: {text!r} is not a dotted config path")
    return parts


def _names(text: Any, where: tuple[str, ...]) -> set[str]:
    items = text if isinstance(text, list) else str(text).split(",")
    names = {str(item).strip() for item in items} - {""}
    if not names:
        raise ConfigError(f"`{'.'.join(where)}._delete_key` names no key")
    return names


def _lookup(frozen: dict[str, Any], path: list[str], where: tuple[str, ...]) -> Any:
    node: Any = frozen
    for part in path:
        if node == _MISSING:
            return _MISSING
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"`{'.'.join(where)}` builds on `{'.'.join(path)}`, which is not in the config")
        node = node[part]
    return node


def _remove(root: dict[str, Any], path: list[str]) -> None:
    node: Any = root
    for part in path[:-1]:
        node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is _ABSENT:
            return  # another variation already took it: several may build on one source
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` merged onto `base` as OmegaConf merges: mappings key by key, anything else replaced."""
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merged(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base
