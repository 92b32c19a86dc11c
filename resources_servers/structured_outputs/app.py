"""structured_outputs: the final reply must be JSON that validates against the task's schema, made strict.

Trains producing machine-readable output that follows a given JSON schema. No tools. The schema
(`schema_str`, JSON text) is first made *strict*, as OpenAI's strict structured outputs are: every
object schema requires all of its properties and allows no others, at every depth (nested objects,
array items, combinators and definitions). The reply may be wrapped in one ```json fence.

With `response_mode: tool_call` (NeMo Gym's rows) the answer is the arguments of the response's one
function call (the one named `tool_name` when the row names it; the value under `tool_payload_key`
when the row names one) instead of the reply text. Only JSON is graded: a row whose `schema_type`
is another format (NeMo Gym's yaml, xml, toml, csv) is refused with a 400 naming it.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Literal

from jsonschema import Draft202012Validator, validators
from jsonschema import exceptions as jsonschema_errors

from nemo_gym.errors import InputDataError
from nemo_gym.openai_types import function_calls, last_assistant_text
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
    schema_type: str | None = None
    """NeMo Gym's answer format; only json (or None) is graded here."""
    response_mode: Literal["text", "tool_call"] | None = None
    """text (None): the reply text is the answer. tool_call: the one function call's arguments are."""
    tool_name: str | None = None
    """tool_call mode: the function the model must call (None = whichever it calls)."""
    tool_payload_key: str | None = None
    """tool_call mode: the argument holding the answer (None = all the arguments)."""


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


def tool_call_payload(body: StructuredOutputsVerifyRequest) -> tuple[Any, str | None]:
    """(value, parse_error): the answer carried by the response's single function call."""
    calls = function_calls(body.response.output)
    if not calls:
        return None, "no function call in the response"
    names = ", ".join(str(call.get("name")) for call in calls)
    if len(calls) > 1:
        return None, f"expected exactly one function call, got: {names}"
    if body.tool_name and calls[0].get("name") != body.tool_name:
        return None, f"expected a call to {body.tool_name!r}, got: {names}"
    arguments = calls[0].get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as error:
            return None, _shorten(f"invalid JSON arguments: {error.msg} at line {error.lineno} column {error.colno}")
    if body.tool_payload_key:
        if not isinstance(arguments, dict) or body.tool_payload_key not in arguments:
            return None, f"the call's arguments have no {body.tool_payload_key!r}"
        return arguments[body.tool_payload_key], None
    return arguments, None


def _where(error: jsonschema_errors.ValidationError) -> str:
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
    return f"${path}"


class StructuredOutputsServer(SimpleResourcesServer):
    config: StructuredOutputsConfig

    async def verify(self, body: StructuredOutputsVerifyRequest) -> StructuredOutputsVerifyResponse:
        if body.schema_type not in (None, "json"):
            raise InputDataError(
                f"schema_type {body.schema_type!r} is not graded by this environment (JSON only)", field="schema_type"
            )
        validator = strict_validator(body.schema_str)
        if body.response_mode == "tool_call":
            value, parse_error = tool_call_payload(body)
        else:
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
