"""What OpenAI refuses in a strict `response_format: json_schema`, for the fake server.

Written from OpenAI's "Structured model outputs" guide, section "Supported schemas"
(https://platform.openai.com/docs/guides/structured-outputs#supported-schemas), on its
own and not from collabgen's translation (`collabgen.models.schema_dialect`), so a test
of the translation against this check is not a check of the code against itself:
- the root is an object, not `anyOf`;
- every object sets `additionalProperties: false` and lists every property in `required`;
- a keyword outside the supported set is refused: supported are the structural ones and,
  as constraints, string `pattern`/`format` (nine formats), number `multipleOf`,
  `maximum`, `exclusiveMaximum`, `minimum`, `exclusiveMinimum`, array `minItems`/`maxItems`
  (`minLength`/`maxLength` are not listed; composition is not supported);
- a fine-tuned model (`ft:...`) also refuses `minLength`, `maxLength`, `pattern`, `format`,
  `minimum`, `maximum`, `multipleOf`, `patternProperties`, `minItems`, `maxItems`.
Messages follow the shape of OpenAI's ("Invalid schema for response_format 'name': In
context=(...), ...").
"""

from __future__ import annotations

from typing import Any

STRUCTURAL = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
              "$ref", "$defs", "definitions", "description", "title"}
CONSTRAINTS = {"pattern", "format", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
               "minItems", "maxItems"}
FINE_TUNED_REFUSED = {"minLength", "maxLength", "pattern", "format", "minimum", "maximum", "multipleOf",
                      "patternProperties", "minItems", "maxItems"}
FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}


def strict_schema_errors(schema: Any, model: str = "") -> list[str]:
    """Why OpenAI would refuse `schema` in strict mode for `model`; empty when it takes it."""
    if not isinstance(schema, dict) or schema.get("type") != "object" or "anyOf" in schema:
        return ["In context=(), the root schema must be an object and not use 'anyOf'."]
    return _node_errors(schema, (), model.startswith("ft:"))


def _node_errors(node: Any, context: tuple[str, ...], fine_tuned: bool) -> list[str]:
    if not isinstance(node, dict):
        return [f"In context={context}, a schema must be an object."]
    errors = [f"In context={context}, '{key}' is not permitted." for key, value in node.items()
              if not _permitted(key, value, fine_tuned)]
    kinds = node.get("type")
    if kinds == "object" or (isinstance(kinds, list) and "object" in kinds) or "properties" in node:
        if node.get("additionalProperties") is not False:
            errors.append(f"In context={context}, 'additionalProperties' is required to be supplied and to be false.")
        missing = [name for name in node.get("properties", {}) if name not in node.get("required", [])]
        if missing:
            errors.append(f"In context={context}, 'required' is required to be supplied and to be an array "
                          f"including every key in properties. Missing '{missing[0]}'.")
    for name, sub in (node.get("properties") or {}).items():
        errors += _node_errors(sub, (*context, "properties", name), fine_tuned)
    if isinstance(node.get("items"), dict):
        errors += _node_errors(node["items"], (*context, "items"), fine_tuned)
    for i, branch in enumerate(node.get("anyOf") or []):
        errors += _node_errors(branch, (*context, "anyOf", str(i)), fine_tuned)
    for defs in ("$defs", "definitions"):
        for name, sub in (node.get(defs) or {}).items():
            errors += _node_errors(sub, (*context, defs, name), fine_tuned)
    return errors


def _permitted(key: str, value: Any, fine_tuned: bool) -> bool:
    if key in STRUCTURAL:
        return True
    if key not in CONSTRAINTS or (fine_tuned and key in FINE_TUNED_REFUSED):
        return False
    return key != "format" or value in FORMATS


def refusal(body: dict[str, Any]) -> str | None:
    """OpenAI's message refusing the request's strict `json_schema` response format, or None."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    if spec.get("strict") is not True:
        return None
    errors = strict_schema_errors(spec.get("schema"), str(body.get("model", "")))
    return f"Invalid schema for response_format '{spec.get('name')}': {errors[0]}" if errors else None
