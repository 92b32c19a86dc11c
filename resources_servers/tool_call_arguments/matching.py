"""Type-aware comparison of one function call's arguments with the expected ones (BFCL-style).

Pure functions, no I/O. The tool's JSON schema decides how each value is compared:
  * integer / number: numerically (3 == 3.0), never a string that looks like a number;
  * string: after trimming and case-folding, unless the schema gives an `enum`, which must match exactly;
  * boolean: exactly (1 is not true);
  * array: order-free (as multisets, items compared by the item schema), unless the task names the
    parameter in `ordered_params`;
  * object: key by key with the same rules, using the object's `properties` schema.
A parameter the schema marks optional may be omitted when the expected value is absent or equals
the schema's `default`. A parameter the schema does not declare is always an error.
"""

from __future__ import annotations

import math
from typing import Any

JSONDict = dict[str, Any]
NUMBER_TOLERANCE = 1e-9


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def values_match(actual: Any, expected: Any, schema: JSONDict, path: str, ordered: bool = False) -> str | None:
    """None when `actual` matches `expected` under `schema`, else one sentence saying where and why not."""
    kind = schema.get("type")
    if "enum" in schema:
        return None if actual == expected else f"{path}: {actual!r} is not {expected!r}"
    if kind in ("integer", "number") or (kind is None and _is_number(expected)):
        if not _is_number(actual):
            return f"{path}: expected a number, got {actual!r}"
        if kind == "integer" and isinstance(actual, float) and not actual.is_integer():
            return f"{path}: expected an integer, got {actual!r}"
        same = math.isclose(float(actual), float(expected), rel_tol=NUMBER_TOLERANCE, abs_tol=NUMBER_TOLERANCE)
        return None if same else f"{path}: {actual!r} != {expected!r}"
    if kind == "boolean" or (kind is None and isinstance(expected, bool)):
        return None if actual is expected else f"{path}: {actual!r} is not {expected!r}"
    if kind == "string" or (kind is None and isinstance(expected, str)):
        if not isinstance(actual, str):
            return f"{path}: expected a string, got {actual!r}"
        return (
            None if actual.strip().casefold() == expected.strip().casefold() else f"{path}: {actual!r} != {expected!r}"
        )
    if kind == "array" or (kind is None and isinstance(expected, list)):
        return _arrays_match(actual, expected, schema.get("items") or {}, path, ordered)
    if kind == "object" or (kind is None and isinstance(expected, dict)):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r}"
        problems = arguments_match(actual, expected, schema, set(), path)
        return problems[0] if problems else None
    return None if actual == expected else f"{path}: {actual!r} != {expected!r}"


def _arrays_match(actual: Any, expected: list[Any], item_schema: JSONDict, path: str, ordered: bool) -> str | None:
    if not isinstance(actual, list):
        return f"{path}: expected a list, got {actual!r}"
    if len(actual) != len(expected):
        return f"{path}: {len(actual)} items, expected {len(expected)}"
    if ordered:
        for index, (a, e) in enumerate(zip(actual, expected)):
            problem = values_match(a, e, item_schema, f"{path}[{index}]")
            if problem:
                return problem
        return None
    # Order-free: pair each expected item with a distinct actual item that matches it.
    unused = list(actual)
    for item in expected:
        match = next((i for i, a in enumerate(unused) if values_match(a, item, item_schema, path) is None), None)
        if match is None:
            return f"{path}: no item matches {item!r} (order does not matter)"
        unused.pop(match)
    return None


def arguments_match(
    actual: JSONDict, expected: JSONDict, schema: JSONDict, ordered_params: set[str], path: str = "arguments"
) -> list[str]:
    """Every way `actual` differs from `expected` for an object with JSON schema `schema` (empty = match)."""
    declared: JSONDict = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    problems = [
        f"{path}.{name}: not a parameter of this function" for name in actual if declared and name not in declared
    ]
    # Without a declared schema, every name either side uses is compared by the values' own types.
    properties = declared or {name: {} for name in [*expected, *actual]}
    for name, prop in properties.items():
        where = f"{path}.{name}"
        if name in expected and name in actual:
            problem = values_match(actual[name], expected[name], prop, where, ordered=name in ordered_params)
            if problem:
                problems.append(problem)
        elif name in expected:
            omissible = name not in required and "default" in prop and prop["default"] == expected[name]
            if not omissible:
                problems.append(f"{where}: missing")
        elif name in actual:
            # Optional and not expected: fine only when the model passed the default explicitly.
            if "default" not in prop or values_match(actual[name], prop["default"], prop, where) is not None:
                problems.append(f"{where}: not expected here (got {actual[name]!r})")
        elif name in required:
            problems.append(f"{where}: missing (required)")
    return problems
