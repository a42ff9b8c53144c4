"""What only the task plugin knows about a recipe: its options and its metric names.

The recipe's own schema is checked in `collabgen.config`, which cannot know the tasks
(it sits below them); this check runs on every recipe a run, plan, eval or score loads,
before any call, and names the file and line like the schema check does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from collabgen.config.errors import RecipeError
from collabgen.config.overrides import Override
from collabgen.config.recipe import Recipe, RewardConfig, describe_validation_error, recipe_lines, suggest, where
from collabgen.config.yaml_lines import Location
from collabgen.tasks.base import Task
from collabgen.tasks.registry import resolve_task

INTRINSIC_METRICS = ("interactivity", "token_penalty")


def computed_metrics(task_metrics: Iterable[str], reward: RewardConfig) -> list[str]:
    """The metrics a run computes, in a fixed order: the task's and interactivity when they
    have a weight (an unweighted metric costs nothing because it is never computed), and
    the token penalty always. These are the metric columns of every row."""
    names = [m for m in task_metrics if reward.weights.get(m, 0.0) != 0.0]
    if reward.weights.get("interactivity", 0.0) != 0.0:
        names.append("interactivity")
    return [*names, "token_penalty"]


def check_recipe_task(recipe: Recipe) -> type[Task]:
    """The recipe's task class, after checking its options and reward weights against it."""
    lines = recipe_lines(recipe)
    path = recipe.source_file
    try:
        task_cls = resolve_task(recipe.task.type)
    except KeyError as err:
        raise RecipeError(where(path, lines, ("task", "type")) + str(err.args[0])) from None
    try:
        options = task_cls.Options.model_validate(recipe.task.options)
    except ValidationError as err:
        raise RecipeError(describe_validation_error(err, path, lines, prefix=("task", "options"))) from None
    task_metrics = list(task_cls.metric_names(options))
    known = set(task_metrics) | set(INTRINSIC_METRICS)
    for name in recipe.reward.weights:
        if name not in known:
            raise _unknown_metric(path, lines, ("reward", "weights", name), task_cls.name, known)
    _check_sft_minimums(recipe, path, lines, task_cls.name, known, computed_metrics(task_metrics, recipe.reward))
    return task_cls


def _check_sft_minimums(
    recipe: Recipe, path: Path | None, lines: dict[Location, int], task: str, known: set[str], computed: list[str],
) -> None:
    """`output.sft.min_final` names metrics the rows record: a typo, or a metric with no
    reward weight (never computed, so no trajectory could pass), would silently empty sft/."""
    for name in recipe.output.sft.min_final:
        loc = ("output", "sft", "min_final", name)
        if name not in known:
            raise _unknown_metric(path, lines, loc, task, known)
        if name not in computed:
            raise RecipeError(
                where(path, lines, loc) + f"{'.'.join(loc)}: metric {name!r} is not computed (it has no "
                f"reward.weights entry), so no conversation records it; computed: {', '.join(computed)}"
            )


def _unknown_metric(path: Path | None, lines: dict[Location, int], loc: Location, task: str, known: set[str]) -> RecipeError:
    name = loc[-1]
    return RecipeError(
        where(path, lines, loc) + f"{'.'.join(loc)}: unknown metric for task {task!r}; "
        f"known: {', '.join(sorted(known))}{suggest(name, known)}"
    )


def load_recipe(source: Recipe | str | Path | dict[str, Any], overrides: list[Override] | None = None) -> Recipe:
    """A recipe from a YAML path (with `overrides`: the command line's and the
    `COLLABGEN_<ROLE>_<FIELD>` environment defaults), a dict or a Recipe, checked
    against its task too."""
    if isinstance(source, Recipe):
        recipe = source
    elif isinstance(source, dict):
        recipe = Recipe.from_dict(source)
    else:
        recipe = Recipe.from_yaml(source, overrides)
    check_recipe_task(recipe)
    return recipe
