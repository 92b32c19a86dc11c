"""A llama.cpp grammar (GBNF) for JSON written exactly as Python's `json.dumps` writes it.

A constrained tool call must come out as the text the server would render for the same call
afterwards (`tool_prompt` renders past calls with `json.dumps(..., ensure_ascii=False)`), or a
token-exact prompt built on the sampled ids differs from the re-rendered conversation the model
would otherwise see. llama.cpp's own JSON-schema grammar admits any JSON spacing, escapes and
number spellings (`{ "a" :1.50}`), which parse to the same value but print differently; this one
admits only the canonical spelling of each value:

- separators `", "` and `": "`, no other whitespace;
- strings with literal characters except `"`, `\\` and control characters, which are escaped as
  `\\"`, `\\\\`, `\\n`, `\\t` (the other control characters are not admitted at all);
- integers without leading zeros or `-0`, up to 15 digits;
- decimals as `repr(float)` prints them: at most 7 digits before the point and 7 after, no
  trailing zero after the point except `.0`, and fewer than four zeros after `0.` (smaller
  numbers print in exponent form, which is not admitted).

`json.dumps(json.loads(text), ensure_ascii=False) == text` for every text the grammar admits (see
the tests), but one: a free-form object (no declared properties) that names a key twice, which a
grammar cannot rule out; parsing keeps the last value. Schemas map to rules for `type` (string, integer, number, boolean, null, array,
object with `properties` in declared order, optional ones optional), `enum`, `const`, `anyOf`,
`oneOf` and type lists; anything else (`$ref`, `allOf`, `not`, string formats and lengths) is
admitted as any canonical JSON value of the declared type, or any value at all.
"""

from __future__ import annotations

import json
from typing import Any

_PRIMITIVES = {
    "value": 'object | array | string | number | "true" | "false" | "null"',
    "object": '"{" ( string ": " value ( ", " string ": " value )* )? "}"',
    "array": '"[" ( value ( ", " value )* )? "]"',
    "string": '"\\"" char* "\\""',
    "char": '[^"\\\\\\x00-\\x1F] | "\\\\" ["\\\\nt]',
    "integer": '"0" | "-"? [1-9] [0-9]{0,14}',
    "number": 'integer | "-"? ( [1-9] [0-9]{0,6} "." fraction | "0." small-fraction )',
    "fraction": '"0" | [0-9]{0,6} [1-9]',
    "small-fraction": '"0" | "0"{0,3} [1-9] ( [0-9]{0,5} [1-9] )?',
    "boolean": '"true" | "false"',
    "null": '"null"',
}
_TYPE_RULES = {"string", "integer", "number", "boolean", "null", "array", "object"}


def gbnf_literal(text: str) -> str:
    """`text` as a quoted GBNF literal."""
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(raw, escaped)
    return f'"{text}"'


def canonical_json(value: Any) -> str:
    """The spelling the grammar admits for `value` (and the one `tool_prompt` renders)."""
    return json.dumps(value, ensure_ascii=False)


class CanonicalJsonGrammar:
    """Collects GBNF rules; `value_rule(schema)` returns the name of a rule admitting the schema's values."""

    def __init__(self) -> None:
        self._rules: dict[str, str] = dict(_PRIMITIVES)
        self._by_body: dict[str, str] = {}

    def add(self, body: str, hint: str = "r") -> str:
        """A rule with this body (reused when one exists) and its name."""
        if body in self._by_body:
            return self._by_body[body]
        name = f"{hint}-{len(self._by_body) + 1}"
        self._rules[name] = body
        self._by_body[body] = name
        return name

    def text(self, root_body: str) -> str:
        """The whole grammar with `root ::= root_body`."""
        lines = [f"root ::= {root_body}"] + [f"{name} ::= {body}" for name, body in self._rules.items()]
        return "\n".join(lines) + "\n"

    def value_rule(self, schema: Any) -> str:
        if not isinstance(schema, dict) or not schema:
            return "value"
        if "const" in schema:
            return self.add(gbnf_literal(canonical_json(schema["const"])), "const")
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            body = " | ".join(gbnf_literal(canonical_json(option)) for option in schema["enum"])
            return self.add(body, "enum")
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.add(" | ".join(self.value_rule(option) for option in options), "any")
        kind = schema.get("type")
        if kind is None and isinstance(schema.get("properties"), dict):
            kind = "object"
        if isinstance(kind, list):
            kinds = [each for each in kind if each in _TYPE_RULES]
            if not kinds:
                return "value"
            return self.add(" | ".join(self.value_rule({**schema, "type": each}) for each in kinds), "types")
        if kind == "object":
            return self._object_rule(schema)
        if kind == "array":
            return self._array_rule(schema)
        return kind if kind in _TYPE_RULES else "value"

    def _object_rule(self, schema: dict[str, Any]) -> str:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return "object"
        required = set(schema.get("required") or ())
        members = [
            (f"{gbnf_literal(canonical_json(key) + ': ')} {self.value_rule(sub)}", key in required)
            for key, sub in properties.items()
        ]
        # Properties come in declared order, each optional one present or not, with ", " between the
        # present ones: `first` admits members i.. when none was written yet, `rest` after one was.
        rest = ""
        first = ""
        for member, is_required in reversed(members):
            if is_required:
                first = f"{member} {rest}".strip()
                rest = f'", " {member} {rest}'.strip()
            else:
                present = f"{member} {rest}".strip()
                first = self.add(f"{present} | {first}" if first else f"( {present} )?", "props")
                rest = f'( ", " {member} )? {rest}'.strip()
        return self.add(f'"{{" {first} "}}"', "object")

    def _array_rule(self, schema: dict[str, Any]) -> str:
        item = self.value_rule(schema.get("items"))
        body = f'"[" {item} ( ", " {item} )* "]"'
        if not int(schema.get("minItems") or 0):
            body = f'"[" ( {item} ( ", " {item} )* )? "]"'
        return self.add(body, "array")
