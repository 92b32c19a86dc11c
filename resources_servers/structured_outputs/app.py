"""structured_outputs: the final reply must be JSON that validates against the task's schema, made strict.

Trains producing machine-readable output that follows a given JSON schema. No tools. The schema
(`schema_str`, JSON text) is first made *strict*, as OpenAI's strict structured outputs are: every
object schema requires all of its properties and allows no others, at every depth (nested objects,
array items, combinators and definitions). The reply may be wrapped in one ```json fence.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema import exceptions as jsonschema_errors

from nemo_gym.errors import InputDataError
from nemo_gym.openai_types import last_assistant_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)

MAX_ERROR_CHARS = 200
FENCE = re.compile(r"^```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?```$", re.DOTALL)

# Keywords whose value is a subschema, a list of subschemas, or a name -> subschema map.
SUBSCHEMA_KEYWORDS = (
    "items",
    "additionalItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
)
SUBSCHEMA_LIST_KEYWORDS = ("anyOf", "oneOf", "allOf", "prefixItems")
SUBSCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


class StructuredOutputsConfig(BaseResourcesServerConfig):
    pass


class StructuredOutputsVerifyRequest(BaseVerifyRequest):
    schema_str: str


class StructuredOutputsVerifyResponse(StructuredOutputsVerifyRequest, BaseVerifyResponse):
    schema_valid: bool
    """The reply parsed and validated against the strict schema."""
    parse_error: str | None
    validation_error: str | None


def _is_object_schema(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return "properties" in schema or kind == "object" or (isinstance(kind, list) and "object" in kind)


def strictify(schema: Any) -> Any:
    """A copy of `schema` in which every object schema requires all its properties and forbids others."""
    if isinstance(schema, list):  # `items` as a list (older drafts)
        return [strictify(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = dict(schema)
    for key in SUBSCHEMA_KEYWORDS:
        if key in strict:
            strict[key] = strictify(strict[key])
    for key in SUBSCHEMA_LIST_KEYWORDS:
        if isinstance(strict.get(key), list):
            strict[key] = [strictify(item) for item in strict[key]]
    for key in SUBSCHEMA_MAP_KEYWORDS:
        if isinstance(strict.get(key), dict):
            strict[key] = {name: strictify(item) for name, item in strict[key].items()}
    if _is_object_schema(strict):
        strict["required"] = list(strict.get("properties") or {})
        strict["additionalProperties"] = False
    return strict


@lru_cache(maxsize=1024)
def strict_validator(schema_str: str) -> Any:
    """A validator for the strict form of `schema_str`, built once per distinct schema."""
    try:
        schema = json.loads(schema_str)
    except json.JSONDecodeError as error:
        raise InputDataError(f"schema is not valid JSON: {error}", field="schema_str") from error
    if not isinstance(schema, dict):
        raise InputDataError("schema must be a JSON object", field="schema_str")
    strict = strictify(schema)
    validator_class = validators.validator_for(strict, default=Draft202012Validator)
    try:
        validator_class.check_schema(strict)
    except jsonschema_errors.SchemaError as error:
        raise InputDataError(f"not a valid JSON schema: {_shorten(error.message)}", field="schema_str") from error
    return validator_class(strict)


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def unfence(text: str) -> str:
    text = text.strip()
    match = FENCE.match(text)
    return match.group(1).strip() if match else text


def parse_reply(text: str) -> tuple[Any, str | None]:
    """(value, parse_error): the reply's JSON value, or why it is not JSON."""
    body = unfence(text)
    if not body:
        return None, "empty response"
    try:
        return json.loads(body), None
    except json.JSONDecodeError as error:
        return None, _shorten(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}")


def _where(error: jsonschema_errors.ValidationError) -> str:
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
    return f"${path}"


class StructuredOutputsServer(SimpleResourcesServer):
    config: StructuredOutputsConfig

    async def verify(self, body: StructuredOutputsVerifyRequest) -> StructuredOutputsVerifyResponse:
        validator = strict_validator(body.schema_str)
        value, parse_error = parse_reply(last_assistant_text(body.response.output))
        validation_error = None
        if parse_error is None:
            error = jsonschema_errors.best_match(validator.iter_errors(value))
            if error is not None:
                validation_error = _shorten(f"{_where(error)}: {error.message}")
        valid = parse_error is None and validation_error is None
        return StructuredOutputsVerifyResponse(
            **body.model_dump(),
            reward=1.0 if valid else 0.0,
            schema_valid=valid,
            parse_error=parse_error,
            validation_error=validation_error,
        )


if __name__ == "__main__":
    StructuredOutputsServer.run_webserver()
