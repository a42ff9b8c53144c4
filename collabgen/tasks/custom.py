"""`task.type: custom`: a task declared in the recipe, without Python.

The recipe's `task.options` give what a task module would: the seed fields and their
types (`fields`), which of them the simulated user may see (`user_fields`), the user's
brief as a Jinja template rendered with `seed` (`brief`, or `brief_file` for a template
file), and the extrinsic metrics, picked from `collabgen.tasks.custom_metrics` (exact
match, math equivalence, BLEU, ROUGE-L, regex, unit tests, rubric judge). The metrics'
names are the task's metric names, so `reward.weights` keys them.

The simulated user never sees a reference: the brief is rendered with the `user_fields`
only, a metric's reference field may not be one of them, and a brief that reads any other
field is refused when the recipe is checked.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, create_model, field_validator

from collabgen.config.errors import SeedError
from collabgen.models.base import Message
from collabgen.prompting import TERMINATION_MARKER, Prompts, StrictSandbox
from collabgen.sandbox import Sandbox
from collabgen.tasks.base import ScoringTools, SeedModel, Task, TaskOptions, transcript
from collabgen.tasks.custom_metrics import (
    Extract,
    Metric,
    MetricBase,
    MetricInput,
    RegexMatch,
    extracted_answer,
    read_prediction,
)
from collabgen.tasks.math_answers import number_text
from collabgen.tasks.recipe_check import INTRINSIC_METRICS
from collabgen.tasks.registry import builtin_tasks

FieldType = Literal["str", "int", "float", "bool", "list[str]"]
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class FieldSpec(BaseModel):
    """One seed field: its type and whether every row must have it."""

    model_config = ConfigDict(extra="forbid")

    type: FieldType = "str"
    required: bool = True


def _field_specs(value: Any) -> Any:
    """`{question: str, hint: "str?"}`, `{question: {type: str, required: true}}`, or a list
    of `{name, type, required}` (or of bare names, each a required string) -> name -> spec."""
    if isinstance(value, list):
        specs: dict[str, Any] = {}
        for item in value:
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or "name" not in item:
                raise ValueError("a list of fields holds names or {name, type, required} mappings")
            rest = {k: v for k, v in item.items() if k != "name"}
            specs[str(item["name"])] = rest
        value = specs
    if not isinstance(value, dict):
        return value
    return {name: _shorthand(spec) for name, spec in value.items()}


def _shorthand(spec: Any) -> Any:
    if isinstance(spec, str):
        optional = spec.endswith("?")
        return {"type": spec.removesuffix("?").strip(), "required": not optional}
    return spec


class CustomOptions(TaskOptions):
    """The options of `task.type: custom` (see the README's "A task without Python")."""

    name: str = "custom"
    """The task's name in rows, conversation ids and the card."""
    description: str | None = None
    fields: Annotated[dict[str, FieldSpec], BeforeValidator(_field_specs)] = Field(min_length=1)
    user_fields: list[str] = Field(min_length=1)
    """The fields the simulated user's brief may read; never a metric's reference."""
    metrics: list[Metric] = Field(min_length=1)
    brief: str | None = None
    """The simulated user's brief: a Jinja template rendered with `seed` (its user fields)."""
    brief_file: Path | None = Field(default=None, validate_default=True)
    """The brief as a template file instead (relative paths: from the working directory)."""

    @field_validator("name")
    @classmethod
    def _task_name(cls, name: str) -> str:
        if not _TASK_NAME.fullmatch(name):
            raise ValueError(f"{name!r}: use letters, digits, '_', '-' or '.'")
        if name != "custom" and name in builtin_tasks():
            raise ValueError(f"{name!r} is a built-in task's name; pick another")
        return name

    @field_validator("fields")
    @classmethod
    def _field_names(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for name in fields:
            if not _NAME.fullmatch(name) or name.startswith("model_") or hasattr(SeedModel, name):
                raise ValueError(f"{name!r} cannot be a seed field name (use letters, digits and '_', "
                                 "not a pydantic attribute such as 'json' or 'copy'); map it with task.source.fields")
        return fields

    @field_validator("user_fields")
    @classmethod
    def _user_fields_declared(cls, names: list[str], info: ValidationInfo) -> list[str]:
        declared = info.data.get("fields", {})
        unknown = [n for n in names if n not in declared]
        if declared and unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} not among the declared fields ({', '.join(declared)})")
        return names

    @field_validator("metrics")
    @classmethod
    def _metrics_fit(cls, metrics: list[MetricBase], info: ValidationInfo) -> list[MetricBase]:
        check_metric_names(metrics)
        if "fields" in info.data and "user_fields" in info.data:
            for metric in metrics:
                check_references(metric, info.data["fields"], info.data["user_fields"])
        return metrics

    @field_validator("brief_file")
    @classmethod
    def _one_brief(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if (path is None) == (info.data.get("brief") is None):
            raise ValueError("give exactly one of `brief` (a template in the recipe) or `brief_file` (a template file)")
        source = brief_source(info.data.get("brief"), path)
        if "user_fields" in info.data:
            check_brief(source, info.data["user_fields"])
        return path


def check_metric_names(metrics: list[MetricBase]) -> None:
    seen: set[str] = set()
    for metric in metrics:
        name = metric.metric_name
        if not _NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r}: use letters, digits and '_'")
        if name in INTRINSIC_METRICS:
            raise ValueError(f"metric name {name!r} is taken by the intrinsic metric; name it with `name:`")
        if name in seen:
            raise ValueError(f"two metrics are named {name!r}; give each a distinct `name:`")
        seen.add(name)


def check_references(metric: MetricBase, fields: dict[str, FieldSpec], user_fields: list[str]) -> None:
    """A metric's reference is a declared field of a type it can read, required when the
    metric cannot do without it, and never one the simulated user sees."""
    for ref in metric.reference_fields():
        label = f"metric {metric.metric_name!r}: reference {ref!r}"
        if ref not in fields:
            raise ValueError(f"{label} is not a declared field ({', '.join(fields)})")
        if fields[ref].type not in metric.reference_kinds:
            raise ValueError(f"{label} is {fields[ref].type}; {metric.type} reads {' or '.join(metric.reference_kinds)}")
        if metric.reference_required and not fields[ref].required:
            raise ValueError(f"{label} must be a required field: {metric.type} cannot score without it")
        if ref in user_fields:
            raise ValueError(f"{label} is in user_fields: the simulated user must never see a reference")


_ENV = StrictSandbox(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True,
    autoescape=False,
)
"""The brief's Jinja settings, as `collabgen.prompting.Prompts`: a missing variable fails.
Sandboxed: a recipe is shared and pulled from hubs, so its brief is untrusted text and
may not reach Python internals (`__class__`, `__globals__`, ...) to run code."""


def brief_source(inline: str | None, path: Path | None) -> str:
    if path is None:
        return inline or ""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read the brief template {str(path)!r} ({err.strerror or err}; "
                         f"relative paths are from the working directory, {os.getcwd()})") from None


def check_brief(source: str, user_fields: list[str]) -> jinja2.Template:
    """The compiled brief, after checking it reads only `seed`'s user fields (in every
    branch: the template's syntax tree is read, not one rendering)."""
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"the brief is not a valid Jinja template: line {err.lineno}: {err.message}") from None
    unknown = meta.find_undeclared_variables(tree) - {"seed", "termination_marker"}
    if unknown:
        raise ValueError(f"the brief uses {', '.join(sorted(unknown))}; it is rendered with `seed` only")
    private = sorted(private_names(tree))
    if private:
        raise ValueError(f"the brief reads {', '.join(private)}: a brief may not reach Python internals "
                         "(names starting with '_'); it is rendered in Jinja's sandbox")
    hidden = sorted(seed_attributes(tree) - set(user_fields))
    if hidden:
        raise ValueError(f"the brief reads seed.{', seed.'.join(hidden)}, not in user_fields "
                         f"({', '.join(user_fields)}); the simulated user sees only those")
    return _ENV.from_string(source)


def private_names(tree: nodes.Template) -> set[str]:
    """Attributes or constant keys starting with `_` (`x.__class__`, `x['__globals__']`):
    refused when the recipe is checked, so a clear message names them; the sandbox also
    refuses any built at render time (`x|attr('__cl' ~ 'ass__')`)."""
    found = {node.attr for node in tree.find_all(nodes.Getattr) if node.attr.startswith("_")}
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str) and item.arg.value.startswith("_"):
            found.add(item.arg.value)
    return found


def seed_attributes(tree: nodes.Template) -> set[str]:
    """Names read as `seed.x` or `seed["x"]` anywhere in a template."""
    def on_seed(node: nodes.Getattr | nodes.Getitem) -> bool:
        return isinstance(node.node, nodes.Name) and node.node.name == "seed"

    found = {node.attr for node in tree.find_all(nodes.Getattr) if on_seed(node)}
    for item in tree.find_all(nodes.Getitem):
        if on_seed(item) and isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            found.add(item.arg.value)
    return found


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


_TEXT = Annotated[str, BeforeValidator(number_text)]
_TYPES: dict[str, Any] = {
    "str": _TEXT, "int": int, "float": float, "bool": bool,
    "list[str]": Annotated[list[_TEXT], BeforeValidator(_as_list)],
}


def seed_model(options: CustomOptions) -> type[SeedModel]:
    """The seed schema of the declared fields (numbers read as text in string fields)."""
    definitions: dict[str, Any] = {}
    for name, spec in options.fields.items():
        kind = _TYPES[spec.type]
        definitions[name] = (kind, ...) if spec.required else (kind | None, None)
    model: type[SeedModel] = create_model(f"CustomSeed_{options.name}", __base__=SeedModel, **definitions)
    return model


class CustomTask(Task[SeedModel, CustomOptions]):
    """A task whose seed schema, brief and metrics come from its options."""

    name: ClassVar[str] = "custom"
    metrics: ClassVar[tuple[str, ...]] = ()
    user_template: ClassVar[str] = ""
    description: ClassVar[str] = "A task declared in the recipe: seed fields, the user's brief and metrics."

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        opts = self.options
        # Per instance, as the recipe says: what a task module sets on its class.
        self.Seed = seed_model(opts)  # type: ignore[misc]
        self.name = opts.name  # type: ignore[misc]
        self.metrics = self.metric_names(opts)  # type: ignore[misc]
        self.description = opts.description or f"{opts.name}: a collaboration task scored by {', '.join(self.metrics)}."  # type: ignore[misc]
        self._brief = check_brief(brief_source(opts.brief, opts.brief_file), opts.user_fields)
        self._gate: asyncio.Semaphore | None = None

    @classmethod
    def metric_names(cls, options: TaskOptions) -> tuple[str, ...]:
        assert isinstance(options, CustomOptions)
        return tuple(metric.metric_name for metric in options.metrics)

    def sandboxes(self, default: Callable[[], Sandbox]) -> list[tuple[Sandbox, tuple[str, ...]]]:
        uses_tests = any(getattr(metric, "type", None) == "unit_tests" for metric in self.options.metrics)
        return [(default(), ())] if uses_tests else []

    def templates(self) -> list[str]:
        metrics = self.options.metrics
        extract = ["tasks/custom_extract"] if any(isinstance(m.prediction, Extract) for m in metrics) else []
        rubric = ["tasks/custom_rubric"] if any(m.type == "rubric" for m in metrics) else []
        return [*extract, *rubric]

    def user_brief(self, seed: SeedModel, prompts: Prompts) -> str:
        """The brief, rendered with the user fields only: a reference is not in reach."""
        visible = {name: getattr(seed, name) for name in self.options.user_fields}
        return self._brief.render(seed=visible, termination_marker=TERMINATION_MARKER).strip()

    def seed_from_row(self, row: dict[str, Any], fields: dict[str, str], where: str) -> SeedModel:
        """A seed whose brief renders and whose own regex pattern (if a metric reads one)
        compiles: both fail here, when `plan` reads the seeds, not in the middle of a run."""
        seed = super().seed_from_row(row, fields, where)
        try:
            self.user_brief(seed, Prompts())
        except SecurityError as err:
            raise SeedError(f"{where}: the brief tried an operation Jinja's sandbox refuses ({err}); "
                            "a brief may only format the seed's user fields") from None
        except jinja2.TemplateError as err:
            raise SeedError(f"{where}: the brief does not render for this row: {err}") from None
        for metric in self.options.metrics:
            if isinstance(metric, RegexMatch) and metric.reference is not None:
                try:
                    metric.compiled(getattr(seed, metric.reference))
                except ValueError as err:
                    raise SeedError(f"{where}: malformed seed row: seed field {metric.reference!r}: {err}") from None
        return seed

    async def score(self, seed: SeedModel, conversation: list[Message], tools: ScoringTools) -> dict[str, float]:
        metrics = self.options.metrics
        extracted = await self._extractions(conversation, tools)
        values = seed.model_dump()
        inputs = [
            MetricInput(values, conversation, prediction, tools, self._sandbox_gate())
            for prediction in (
                extracted[m.prediction.extract] if isinstance(m.prediction, Extract)
                else read_prediction(m.prediction, conversation)
                for m in metrics
            )
        ]
        scores = await asyncio.gather(*(m.value(given) for m, given in zip(metrics, inputs)))
        return {m.metric_name: float(s) for m, s in zip(metrics, scores)}

    async def _extractions(self, conversation: list[Message], tools: ScoringTools) -> dict[str, str]:
        """What the judge extracts, once per distinct instruction (metrics may share one)."""
        instructions = list(dict.fromkeys(
            m.prediction.extract for m in self.options.metrics if isinstance(m.prediction, Extract)
        ))
        replies = await asyncio.gather(*(
            tools.judge_json("tasks/custom_extract", stage="extraction", validate=extracted_answer,
                             conversation=transcript(conversation), instruction=instruction)
            for instruction in instructions
        ))
        return dict(zip(instructions, replies))

    def _sandbox_gate(self) -> asyncio.Semaphore:
        """Sandboxed test runs at once: one per CPU, as the code task."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(os.cpu_count() or 4)
        return self._gate

