"""Setting a run up, in one place: what `run`, `eval`, `plan` and `score` all need.

`prepare(recipe)` checks everything that can be wrong with the input before any call
(the task and its options, the templates, every seed row, the keys) and returns a
`RunSetup`. `open_context(setup, ...)` then opens what a run holds: each role's model on
its chain of layers (optionally around backends the caller gives, e.g. the counting
backend of `plan` or a scripted one in tests), the request cache, the run's usage book
and the sandbox, and closes them all on the way out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from collabgen.config.errors import RecipeError, SeedError
from collabgen.config.recipe import GenerationConfig, Recipe, TaskConfig, recipe_lines, where
from collabgen.config.secrets import remember
from collabgen.engine.collaboration import Collaboration, Roles
from collabgen.engine.multiturn_reward import INTERACTIVITY_TEMPLATES, Scorer, metric_names
from collabgen.engine.seeds import SkippedRow, iter_seeds
from collabgen.engine.simulator import TEMPLATES as SIMULATOR_TEMPLATES
from collabgen.engine.slices import Slice
from collabgen.engine.source_select import SelectionStats
from collabgen.models.base import ChatBackend
from collabgen.models.cache import RequestCache
from collabgen.models.executor import RoleModel
from collabgen.models.gate import CallGate
from collabgen.models.probe import probe_roles
from collabgen.models.registry import build_roles, check_models, engine_readiness, resolve_api_key
from collabgen.models.schema_dialect import SchemaUntranslatable, for_backend
from collabgen.models.usage import UsageBook
from collabgen.prompting import Prompts
from collabgen.sandbox import LazySandbox
from collabgen.tasks.base import SeedModel, Task
from collabgen.tasks.recipe_check import check_recipe_task

log = logging.getLogger("collabgen")

ENGINE_TEMPLATES = (*SIMULATOR_TEMPLATES, "proactive_system", "row_system", *INTERACTIVITY_TEMPLATES.values())


@dataclass
class RunSetup:
    """A recipe checked against everything but the models' answers."""

    recipe: Recipe
    task: Task
    prompts: Prompts
    seeds: int
    metric_names: list[str]
    unchecked: list[str] = field(default_factory=list)  # what could not be checked, said by `plan`
    skipped: list[SkippedRow] = field(default_factory=list)  # malformed rows left out (`on_bad_row: skip`)
    selection: SelectionStats | None = None  # what `task.source.select` left out (when the recipe selects)


def prepare(recipe: Recipe, part: Slice | None = None, *, check_keys: bool = True,
            task_config: TaskConfig | None = None, count_seeds: bool = True, offline: bool = False) -> RunSetup:
    """Check task, templates, every seed row (streamed) and keys; no call is made.

    `count_seeds=False` skips the seed source (`collabgen score` brings its own seeds);
    `offline` (`collabgen plan`) never opens a Hub dataset: its seeds are counted from
    `task.limit` and their rows go unchecked, which `unchecked` says.
    """
    remember(*recipe.inline_secrets())  # scrubbed from every reply, error and log from now on
    hub = (task_config or recipe.task).source.hub
    if offline and hub is not None and count_seeds:
        setup = prepare(recipe, part, check_keys=check_keys, task_config=task_config, count_seeds=False,
                        offline=True)
        limit = (task_config or recipe.task).limit
        setup.seeds = limit or 0
        setup.unchecked.append(
            f"the seed rows of Hub dataset {hub.name!r} (plan opens no network; "
            + (f"counting task.limit = {limit})" if limit else "set task.limit to get totals)")
        )
        return setup
    task = check_recipe_task(recipe)(recipe.task.options)
    prompts = Prompts(extra_dirs=list(task.template_dirs))
    prompts.check([*ENGINE_TEMPLATES, *task.templates()])
    check_schemas(recipe, prompts, [*ENGINE_TEMPLATES, *task.templates()])
    if check_keys:
        check_models(recipe)
    readiness = engine_readiness(recipe) if check_keys else None
    if readiness is not None and not offline:
        raise RecipeError(readiness)  # `run` stops here, in one line; `plan` says it and still estimates
    skipped: list[SkippedRow] = []
    config = task_config or recipe.task
    selection = SelectionStats() if config.source.select is not None and count_seeds else None
    seeds = _count_seeds(recipe, task, task_config, part, skipped, selection) if count_seeds else 0
    if selection is not None and selection.skipped:
        log.warning("%s", selection.describe())
    return RunSetup(recipe=recipe, task=task, prompts=prompts, seeds=seeds,
                    metric_names=metric_names(task, recipe.reward), skipped=skipped, selection=selection,
                    unchecked=[readiness] if readiness else [])


def check_schemas(recipe: Recipe, prompts: Prompts, templates: list[str]) -> None:
    """Every template's JSON Schema translates for the backend of the role answering it
    (`schema_dialect`; the user answers the simulator's templates, the judge the rest): a
    keyword OpenAI strict mode refuses and collabgen cannot check after parsing fails here,
    naming file and role, not as HTTP 400 on every call."""
    for name in templates:
        schema = prompts.schema(name)
        role = "user" if name in SIMULATOR_TEMPLATES else "judge"
        config = recipe.models.roles()[role]
        if schema is not None and config.json_mode and config.json_schema:
            try:
                for_backend(config, schema)
            except SchemaUntranslatable as err:
                raise RecipeError(f"template {name}.schema.json, for models.{role} ({config.backend} "
                                  f"{config.model}): {err}") from None


def _count_seeds(
    recipe: Recipe, task: Task, task_config: TaskConfig | None, part: Slice | None, skipped: list[SkippedRow],
    selection: SelectionStats | None = None,
) -> int:
    """Seeds of the run (or of its slice), every row validated; none at all is an error
    (an empty seed file used to "succeed" with empty shards). Errors name the recipe
    field, file and line."""
    config = task_config or recipe.task
    base = ("eval", "source") if task_config is not None and recipe.eval.source is not None else ("task", "source")
    lines, path = recipe_lines(recipe), recipe.source_file
    selected = in_part = 0
    try:
        for index, _ in iter_seeds(task, config, skipped, selection):
            selected += 1
            in_part += part is None or part.contains(index)
    except SeedError as err:
        if not err.loc:
            raise
        field = (*base, *err.loc)
        raise SeedError(where(path, lines, field) + f"{'.'.join(field)}: {err}") from None
    if selected == 0:
        source = config.source.path or (config.source.hub.name if config.source.hub else "the source")
        offset = "eval.offset" if task_config is not None else "task.offset"
        skipped_note = f" at or after {offset} {config.offset}" if config.offset else ""
        field = (*base, "path" if config.source.path else "hub")
        raise SeedError(where(path, lines, field) + f"{'.'.join(field)}: {source} holds no seed rows{skipped_note}; "
                        "nothing to generate")
    return in_part


@dataclass
class RunContext:
    """What a run holds open while it calls models."""

    setup: RunSetup
    roles: dict[str, RoleModel]
    usage: UsageBook
    cache: RequestCache | None = None
    sandbox: LazySandbox = field(default_factory=LazySandbox)

    @property
    def team(self) -> Roles:
        return Roles(policy=self.roles["policy"], user=self.roles["user"], judge=self.roles["judge"])

    def scorer(self) -> Scorer:
        setup = self.setup
        return Scorer(setup.task, setup.recipe.reward, self.roles["judge"], setup.prompts, self.sandbox)

    def collaboration(self, position: int, seed: SeedModel, *, generation: GenerationConfig | None = None,
                      scorer: Scorer | None = None, gate: CallGate | None = None) -> Collaboration:
        """The conversation of the seed at `position`, named `<task>-<position>`; with
        `gate`, every call it makes (the scorer's too) passes that gate."""
        setup = self.setup
        roles = self.team
        if gate is not None:
            roles = Roles(policy=roles.policy.gated(gate), user=roles.user.gated(gate), judge=roles.judge.gated(gate))
            scorer = scorer or Scorer(setup.task, setup.recipe.reward, roles.judge, setup.prompts, self.sandbox)
        return Collaboration(
            task=setup.task, seed=seed, conv_id=f"{setup.task.name}-{position:06d}", index=position,
            generation=generation or setup.recipe.generation, roles=roles, prompts=setup.prompts,
            scorer=scorer or self.scorer(),
        )

    def prefix_share(self) -> dict[str, float]:
        return {name: role.prefix.share() for name, role in self.roles.items()}


@asynccontextmanager
async def open_context(
    setup: RunSetup, *, cache_path: Path | None, backends: Mapping[str, ChatBackend] | None = None,
) -> AsyncIterator[RunContext]:
    """Roles, cache and sandbox for a run; `backends` replaces the recipe's backend of a role."""
    cache = RequestCache(cache_path) if cache_path is not None else None
    usage = UsageBook()
    roles = build_roles(setup.recipe, cache, usage, backends=backends)
    try:
        yield RunContext(setup=setup, roles=roles, usage=usage, cache=cache)
    finally:
        for role in roles.values():
            await role.aclose()
        if cache is not None:
            cache.close()


async def check_endpoints(recipe: Recipe, skip: Collection[str] = ()) -> list[str]:
    """Before the first paid call: every role's endpoint answers (else `EndpointError`,
    exit 2, naming role and URL); a role with no `context_length` takes the server's.
    Returns warnings (a model the endpoint does not list)."""
    roles = {role: (config, resolve_api_key(role, config)) for role, config in recipe.models.roles().items()
             if role not in skip}
    warnings = []
    for role, probed in (await probe_roles(roles)).items():
        config = roles[role][0]
        if config.context_length is None and probed.context_length is not None:
            config.context_length = probed.context_length
        if probed.served and config.model not in probed.served:
            listed = ", ".join(probed.served[:5]) + (" ..." if len(probed.served) > 5 else "")
            warnings.append(f"models.{role}: {config.model!r} is not among the models {config.base_url} lists "
                            f"({listed}); calls may fail with 404")
    return warnings


async def prove_sandboxes(context: RunContext) -> None:
    """Before the first model call: every sandbox the task will score with gives a right
    verdict on a program that must pass and one that must fail (else `SandboxUnavailable`,
    exit 2, with the sandbox's stderr). A broken sandbox must stop a run, not score 0."""
    for sandbox, imports in context.setup.task.sandboxes(context.sandbox):
        await sandbox.canary(imports=imports)
