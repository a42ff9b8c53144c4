"""Each backend's dialect of JSON Schema: what a judge's schema becomes on the wire.

A schema a backend refuses costs every call of its stage (OpenAI answers HTTP 400), so
each backend gets a schema it takes, and what had to be left out is checked on the parsed
reply instead (`Translated.residual`, through `reply_shape`): a reply that breaks a
constraint the server was not sent is a format failure, asked again like any other.

OpenAI, `response_format: {type: json_schema, strict: true}`. From OpenAI's "Structured
model outputs" guide, section "Supported schemas"
(https://platform.openai.com/docs/guides/structured-outputs#supported-schemas, now served
at https://developers.openai.com/api/docs/guides/structured-outputs), as read in 2026:
- the root is an object, not `anyOf`; every object sets `additionalProperties: false`;
  every property is listed in `required` ("All fields must be required");
- the supported constraints are, for strings, `pattern` and `format` (date-time, time,
  date, duration, email, hostname, ipv4, ipv6, uuid); for numbers, `multipleOf`,
  `maximum`, `exclusiveMaximum`, `minimum`, `exclusiveMinimum`; for arrays, `minItems`,
  `maxItems`. `minLength`/`maxLength` are not among them (the guide's 2024 text listed
  them, with `pattern`, `format`, `minimum`, `maximum` and `multipleOf`, as "not
  supported"), so they are never sent;
- composition (`allOf`, `not`, `dependentRequired`, `dependentSchemas`, `if`, `then`,
  `else`) is not supported; fine-tuned models (`ft:...`) additionally take none of
  `minLength`, `maxLength`, `pattern`, `format`, `minimum`, `maximum`, `multipleOf`,
  `patternProperties`, `minItems`, `maxItems`;
- "If you turn on Structured Outputs by supplying `strict: true` and call the API with an
  unsupported JSON Schema, you will receive an error."
Only what the guide names as supported is sent; the rest is dropped. Making every property
required and every object closed only narrows what a reply may be: a reply that fits the
sent schema and the residual fits the original schema.

Anthropic (a forced tool, not `strict`) and vLLM in-process (structured outputs) take the
schema as it is: the tool's `input_schema` is plain JSON Schema, and vLLM compiles the
keywords the shipped schemas use. The OpenAI translation is used for every server spoken
to over the OpenAI protocol, since the request says `strict: true`, unless the role sets
`schema_dialect: full`: a vLLM or SGLang server takes `maxLength`, and its decoder then
bounds the simulator's strings (a random or runaway model otherwise writes to its budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collabgen.config.recipe import ModelConfig
from collabgen.models.reply_shape import compiled

# What OpenAI strict mode takes: structure, annotations, and the guide's supported constraints.
OPENAI_STRUCTURE = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
    "$ref", "$defs", "definitions", "description", "title",
})
OPENAI_CONSTRAINTS = frozenset({
    "pattern", "format", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "minItems", "maxItems",
})
OPENAI_FINE_TUNED_REFUSED = frozenset({
    "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "multipleOf", "patternProperties",
    "minItems", "maxItems",
})
OPENAI_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
# Dropped with nothing to check: they describe a value, they do not constrain it.
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "default", "examples", "deprecated", "readOnly",
                         "writeOnly", "format"})
# Dropped and checked on the parsed reply (`reply_shape` enforces each of these).
CHECKED_AFTER = frozenset({"minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
                           "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "const",
                           "enum"})


class SchemaUntranslatable(ValueError):
    """A schema keyword the backend does not take and collabgen cannot check after parsing."""


@dataclass(frozen=True)
class Dropped:
    """One constraint left out of the sent schema: where (`reply.message`), which, its value."""

    at: str
    keyword: str
    value: Any


@dataclass(frozen=True)
class Translated:
    """The schema a backend is sent, and what of the original it was not sent."""

    schema: dict[str, Any]
    dropped: tuple[Dropped, ...] = ()
    residual: dict[str, Any] | None = None
    """The dropped constraints as a schema of their own, for `reply_shape.check_shape`; None
    when nothing that constrains was dropped."""


def for_backend(config: ModelConfig, schema: dict[str, Any]) -> Translated:
    """The schema `config`'s backend is sent for `schema`, and what it leaves out."""
    if config.backend == "openai" and config.schema_dialect == "openai":
        return openai_strict(schema, fine_tuned=config.model.startswith("ft:"))
    # anthropic (a plain tool input_schema), vllm (structured outputs), an OpenAI-protocol
    # server the recipe says takes the whole schema (`schema_dialect: full`)
    return Translated(schema)


def openai_strict(schema: dict[str, Any], *, fine_tuned: bool = False) -> Translated:
    """`schema` as OpenAI strict mode takes it (see the module docstring); raises
    `SchemaUntranslatable` when it would lose a constraint that cannot be checked after."""
    dropped: list[Dropped] = []
    sent, residual = _strict_node(schema, "reply", fine_tuned, dropped, in_defs=False)
    if sent.get("type") != "object" or "anyOf" in sent:
        raise SchemaUntranslatable("OpenAI strict mode needs a root schema of type object (not anyOf)")
    return Translated(sent, tuple(dropped), residual or None)


def _allowed(keyword: str, value: Any, fine_tuned: bool) -> bool:
    if keyword in OPENAI_STRUCTURE:
        return True
    if keyword not in OPENAI_CONSTRAINTS or (fine_tuned and keyword in OPENAI_FINE_TUNED_REFUSED):
        return False
    return keyword != "format" or value in OPENAI_FORMATS


def _strict_node(
    node: Any, at: str, fine_tuned: bool, dropped: list[Dropped], *, in_defs: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what is sent, the residual to check) for one schema node, recursively."""
    if not isinstance(node, dict):
        raise SchemaUntranslatable(f"{at}: a schema must be an object, not {node!r:.40}")
    sent: dict[str, Any] = {}
    residual: dict[str, Any] = {}
    for keyword, value in node.items():
        if _allowed(keyword, value, fine_tuned):
            sent[keyword] = value
            continue
        dropped.append(Dropped(at, keyword, value))
        if keyword in ANNOTATIONS:
            continue
        if keyword not in CHECKED_AFTER or in_defs or (keyword == "pattern" and compiled(value) is None):
            where = " (inside definitions)" if in_defs else ""
            raise SchemaUntranslatable(
                f"{at}: {keyword!r}{where} is not taken by OpenAI strict mode and collabgen cannot check it "
                "after parsing; drop it from the schema, or set json_schema: false for this role")
        residual[keyword] = value
    _strict_children(sent, residual, at, fine_tuned, dropped, in_defs=in_defs)
    if _is_object(sent):
        sent["additionalProperties"] = False
        sent["required"] = list(sent.get("properties", {}))
    return sent, residual


def _strict_children(
    sent: dict[str, Any], residual: dict[str, Any], at: str, fine_tuned: bool, dropped: list[Dropped], *,
    in_defs: bool,
) -> None:
    """Translate `sent`'s subschemas in place, gathering their residuals into `residual`."""
    if isinstance(sent.get("properties"), dict):
        properties, inner = {}, {}
        for name, sub in sent["properties"].items():
            properties[name], rest = _strict_node(sub, f"{at}.{name}", fine_tuned, dropped, in_defs=in_defs)
            if rest:
                inner[name] = rest
        sent["properties"] = properties
        if inner:
            residual["properties"] = inner
    if isinstance(sent.get("items"), dict):
        sent["items"], rest = _strict_node(sent["items"], f"{at}[*]", fine_tuned, dropped, in_defs=in_defs)
        if rest:
            residual["items"] = rest
    if isinstance(sent.get("anyOf"), list):
        original = sent["anyOf"]
        branches = [_strict_node(b, f"{at}.anyOf[{i}]", fine_tuned, dropped, in_defs=in_defs)
                    for i, b in enumerate(original)]
        sent["anyOf"] = [branch for branch, _ in branches]
        if any(rest for _, rest in branches):
            residual["anyOf"] = original  # a reply fits one branch as a whole: checked against the originals
    for defs in ("$defs", "definitions"):
        if isinstance(sent.get(defs), dict):
            sent[defs] = {name: _strict_node(sub, f"{at}.{defs}.{name}", fine_tuned, dropped, in_defs=True)[0]
                          for name, sub in sent[defs].items()}


def _is_object(node: dict[str, Any]) -> bool:
    kinds = node.get("type")
    return kinds == "object" or (isinstance(kinds, list) and "object" in kinds) or "properties" in node
