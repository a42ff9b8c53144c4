"""Does a parsed JSON reply have the shape its JSON schema asks for?

A judge reply without `answer` scored every future's accuracy 0, and `"interactivity":
true` passed as 1.0 (in Python a bool is an int): a reply that is not in the asked shape
is a format failure, asked again like any reply that does not parse. This checks the part
of JSON Schema the shipped (and custom) judge schemas use: `type` (one or a list; a bool
is never a number and a number never a bool), `required`, `properties`, `items`, `enum`,
`const`, `anyOf`, `minimum`/`maximum` (and their exclusive forms), `multipleOf`,
`minLength`/`maxLength`, `pattern`, `minItems`/`maxItems`, `uniqueItems`: the last ones
because a backend may not take them (`schema_dialect`: OpenAI strict mode drops
`maxLength`), and what the server was not sent is checked here. Extra fields are
tolerated (a model's harmless chatter is not a reason to pay again). `jsonschema` is not a
dependency; this is its small subset (`format` is an annotation, not checked; a `$ref` is
not followed).
"""

from __future__ import annotations

import json
import math
import re
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
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        errors.append(f"{at} is {value!r:.40}, expected one of {schema['enum']}")
    if "const" in schema and not _same(value, schema["const"]):
        errors.append(f"{at} is {value!r:.40}, expected {schema['const']!r:.40}")
    if isinstance(schema.get("anyOf"), list) and not any(
            not shape_errors(value, branch, at) for branch in schema["anyOf"] if isinstance(branch, dict)):
        errors.append(f"{at} is {value!r:.40}, fitting none of its anyOf branches")
    if _is(value, "number"):
        errors += _number_errors(value, schema, at)
    if isinstance(value, str):
        errors += _string_errors(value, schema, at)
    if isinstance(value, dict):
        errors += [f"{at} lacks the required field {name!r}" for name in schema.get("required", ())
                   if name not in value]
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += shape_errors(value[name], sub, f"{at}.{name}")
    if isinstance(value, list):
        errors += _array_errors(value, schema, at)
    return errors


def _same(value: Any, option: Any) -> bool:
    return value == option and type(value) is type(option)


def _number_errors(value: float, schema: dict[str, Any], at: str) -> list[str]:
    errors = []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{at} is {value}, below the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{at} is {value}, above the maximum {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{at} is {value}, not above the exclusive minimum {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{at} is {value}, not below the exclusive maximum {schema['exclusiveMaximum']}")
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0 and not math.isclose(value / step, round(value / step)):
        errors.append(f"{at} is {value}, not a multiple of {step}")
    return errors


def _string_errors(value: str, schema: dict[str, Any], at: str) -> list[str]:
    errors = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{at} is {len(value)} characters, fewer than minLength {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{at} is {len(value)} characters, more than maxLength {schema['maxLength']}")
    pattern = compiled(schema.get("pattern"))
    if pattern is not None and pattern.search(value) is None:
        errors.append(f"{at} is {value!r:.40}, not matching the pattern {schema['pattern']!r}")
    return errors


def compiled(pattern: Any) -> re.Pattern[str] | None:
    """`pattern` as a Python regex; None when it is none or one Python cannot read (an
    ECMA-only construct): a schema the server enforces is not refused here for it."""
    if not isinstance(pattern, str):
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _array_errors(value: list[Any], schema: dict[str, Any], at: str) -> list[str]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{at} has {len(value)} items, fewer than minItems {schema['minItems']}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{at} has {len(value)} items, more than maxItems {schema['maxItems']}")
    if schema.get("uniqueItems") is True and len({json.dumps(item, sort_keys=True) for item in value}) < len(value):
        errors.append(f"{at} repeats an item (uniqueItems)")
    if isinstance(schema.get("items"), dict):
        for position, item in enumerate(value):
            errors += shape_errors(item, schema["items"], f"{at}[{position}]")
    return errors


def check_shape(value: Any, schema: dict[str, Any] | None) -> Any:
    """`value` when it fits `schema` (or there is none); else `ValueError` naming what is wrong."""
    errors = shape_errors(value, schema) if schema else []
    if errors:
        raise ValueError("; ".join(errors))
    return value
