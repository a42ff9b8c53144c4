"""Does a parsed JSON reply have the shape its JSON schema asks for?

A judge reply without `answer` scored every future's accuracy 0, and `"interactivity":
true` passed as 1.0 (in Python a bool is an int): a reply that is not in the asked shape
is a format failure, asked again like any reply that does not parse. This checks the part
of JSON Schema the shipped (and custom) judge schemas use: `type` (one or a list; a bool
is never a number and a number never a bool), `required`, `properties`, `items`, `enum`,
`minimum`/`maximum`. Extra fields are tolerated (a model's harmless chatter is not a
reason to pay again). `jsonschema` is not a dependency; this is its small subset.
"""

from __future__ import annotations

from typing import Any


def _is(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "null":
        return value is None
    return True  # a type this check does not know: not refused here


def shape_errors(value: Any, schema: dict[str, Any], at: str = "reply") -> list[str]:
    """What is wrong with `value` against `schema`, each naming where; empty when it fits."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, kind) for kind in kinds):
            return [f"{at} is {type(value).__name__} {value!r:.40}, expected {' or '.join(kinds)}"]
    errors: list[str] = []
    if "enum" in schema and not any(value == option and type(value) is type(option) for option in schema["enum"]):
        errors.append(f"{at} is {value!r:.40}, expected one of {schema['enum']}")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{at} is {value}, below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{at} is {value}, above the maximum {schema['maximum']}")
    if isinstance(value, dict):
        errors += [f"{at} lacks the required field {name!r}" for name in schema.get("required", ())
                   if name not in value]
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += shape_errors(value[name], sub, f"{at}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for position, item in enumerate(value):
            errors += shape_errors(item, schema["items"], f"{at}[{position}]")
    return errors


def check_shape(value: Any, schema: dict[str, Any] | None) -> Any:
    """`value` when it fits `schema` (or there is none); else `ValueError` naming what is wrong."""
    errors = shape_errors(value, schema) if schema else []
    if errors:
        raise ValueError("; ".join(errors))
    return value
