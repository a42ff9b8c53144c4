"""What a task plugin is.

A task is one module: a `Seed` schema, the brief the user simulator gets (a template),
the names of its extrinsic metrics, and `score()`, which reads a finished future and
returns those metrics. A task class is generic over its seed and options types
(`class MathTask(Task[MathSeed, MathOptions])`), so `score` receives the task's own seed
type. Register it with one line in `collabgen.tasks.registry` (built-ins), an entry point
in the `collabgen.tasks` group (an installed package), or name it in a recipe as
`task.type: package.module:ClassName`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from collabgen.config.errors import SeedError
from collabgen.models.base import Message

if TYPE_CHECKING:
    from collabgen.prompting import Prompts
    from collabgen.sandbox import Sandbox


USER_DRIFT = "user_drift"
"""A future's flag: its simulated user acted as the assistant (`Task.user_drift`). The
future is left out of its candidate's MR; a candidate whose every future drifted gets
`ONLY_DRIFTED` and is never chosen."""
ONLY_DRIFTED = "user_drift_only"

UNDECIDED_FLAGS = frozenset({"math_verify_timeout", ONLY_DRIFTED})
"""Flags that leave a candidate's score no verdict (a metric that could not decide, or no
future whose user stayed a user): a candidate with one is never chosen nor rejected."""


class TaskOptions(BaseModel):
    """Options a task takes under `task.options` in the recipe."""

    model_config = ConfigDict(extra="forbid")


class SeedModel(BaseModel):
    """Base of task seeds: extra source columns are ignored."""

    model_config = ConfigDict(extra="ignore")

    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ScoringTools(Protocol):
    """What a task's metric may use: the judge role and the code sandbox."""

    prompts: Prompts

    async def judge_json(
        self, template: str, *, stage: str, validate: Callable[[dict[str, Any]], Any] | None = None,
        **variables: Any,
    ) -> Any:
        """Render `template`, ask the judge for a JSON object, parse it and pass it through
        `validate` (a reply that fails either is asked again, a bounded number of times)."""
        ...

    @property
    def sandbox(self) -> Sandbox: ...

    def flag(self, name: str) -> None:
        """Report something about the future beside the metric's value (e.g. "tampered"):
        it lands in the future's and the candidate's `flags` in `candidates/`."""
        ...


SeedT = TypeVar("SeedT", bound=SeedModel)
OptionsT = TypeVar("OptionsT", bound=TaskOptions)


class Task(ABC, Generic[SeedT, OptionsT]):
    """A collaboration task. Subclasses name their types as `Task[MySeed, MyOptions]`, set
    the class variables and implement `score`.

    `Seed` and `Options` are taken from the type arguments, so the schema the loader
    validates rows with and the type `score` is annotated with cannot drift apart.
    """

    name: ClassVar[str]
    Seed: ClassVar[type[SeedModel]]
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    options: OptionsT
    metrics: ClassVar[tuple[str, ...]]
    user_template: ClassVar[str]
    description: ClassVar[str] = ""
    default_hub: ClassVar[str | None] = None
    template_dirs: ClassVar[tuple[Path, ...]] = ()
    """Folders of the plugin's own templates, searched before the package's."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is Task:
                seed_type, options_type = get_args(base)
                if isinstance(seed_type, type) and issubclass(seed_type, SeedModel):
                    cls.Seed = seed_type
                if isinstance(options_type, type) and issubclass(options_type, TaskOptions):
                    cls.Options = options_type

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = self.Options.model_validate(options or {})  # type: ignore[assignment]

    @classmethod
    def metric_names(cls, options: TaskOptions) -> tuple[str, ...]:
        """The names of the metrics `score` returns with these options: `metrics` for a
        task whose metrics are fixed; a task whose recipe names them (`custom`) reads them
        from its options. The recipe check keys `reward.weights` by this, and the scorer
        reads it, so a metric named only in a recipe is weighted and computed like any."""
        return cls.metrics

    def seed_from_row(self, row: dict[str, Any], fields: dict[str, str], where: str) -> SeedT:
        """Build a seed from a source row; `fields` maps seed field -> source column."""
        values: dict[str, Any] = {}
        for field in self.Seed.model_fields:
            column = fields.get(field, field)
            if column in row:
                values[field] = row[column]
        try:
            return self.Seed.model_validate(values)  # type: ignore[return-value]
        except ValidationError as err:
            problems = []
            for item in err.errors():
                field = ".".join(str(p) for p in item["loc"]) or "row"
                column = fields.get(field, field)
                if item["type"] == "missing":
                    problems.append(
                        f"column {column!r} (seed field {field!r}) is missing; "
                        f"the row has {sorted(row)}; map it with task.source.fields"
                    )
                else:
                    problems.append(f"seed field {field!r} (column {column!r}): {item['msg']}")
            raise SeedError(f"{where}: malformed seed row: " + "; ".join(problems)) from None

    def user_brief(self, seed: SeedT, prompts: Prompts) -> str:
        """What the simulated user knows: what a real user in its place would know, i.e. the
        request and the intent behind it. A brief never holds what only the metric may use
        (reference answers, tests, labels): a simulator that knows the answer steers the
        assistant toward it and ends chats a real user could not judge."""
        return prompts.render(self.user_template, seed=seed, options=self.options)

    def user_drift(self, seed: SeedT, message: str) -> str | None:
        """Why one simulated-user message is the assistant's work rather than a user's
        (small models playing the user drift into solving the task), or None. A cheap rule
        per task; the default sees no drift."""
        return None

    def drifted_user(self, seed: SeedT, messages: list[Message]) -> str | None:
        """The first drift reason among the user messages of a future, or None."""
        for message in messages:
            if message["role"] == "user":
                reason = self.user_drift(seed, message["content"])
                if reason is not None:
                    return reason
        return None

    def opening_paste_chars(self, seed: SeedT) -> int:
        """How many characters the brief tells the simulated user to paste word for word in its
        first message (0: it opens with a request in its own words). The simulator widens the
        opening's message cap by this much (`engine.simulator.opening_schema`), so the cap
        never cuts what the brief asks for."""
        return 0

    def sandboxes(self, default: Callable[[], Sandbox]) -> list[tuple[Sandbox, tuple[str, ...]]]:
        """The sandboxes `score` runs code in (`default` is the run's), each with the modules
        its tests import: a run proves each with a canary before its first model call, so a
        sandbox that cannot give a right verdict stops the run instead of scoring 0."""
        return []

    def templates(self) -> list[str]:
        """Templates this task renders, checked by `collabgen plan` before any call."""
        return [self.user_template]


    @abstractmethod
    async def score(self, seed: SeedT, conversation: list[Message], tools: ScoringTools) -> dict[str, float]:
        """Extrinsic metrics of one finished future, each in 0..1, keyed by `metrics` names."""


def assistant_messages(conversation: list[Message]) -> list[str]:
    return [m["content"] for m in conversation if m["role"] == "assistant"]


def transcript(conversation: list[Message]) -> str:
    """A conversation as plain text for judges and extractors."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in conversation if m["role"] != "system")
