"""The `collabgen` command line. Exit codes: 0 done, 1 run finished with failures over the
recipe's threshold (or unfinished), 2 bad input (recipe, seeds, keys, out dir)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from collabgen.config.errors import CollabgenError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Generate multi-turn collaboration training data (CollabLLM multiturn-aware rewards).",
    pretty_exceptions_enable=False,
)


def _console() -> Console:
    return Console(stderr=True)


def _fail(err: CollabgenError) -> typer.Exit:
    _console().print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    return typer.Exit(err.exit_code)


RecipeArg = Annotated[Path, typer.Argument(help="recipe YAML file", show_default=False)]


@app.command()
def run(
    recipe: RecipeArg,
    overwrite: Annotated[bool, typer.Option(help="discard an out dir made by a different recipe")] = False,
    progress: Annotated[Optional[bool], typer.Option(help="live progress (default: on a terminal)")] = None,
    shard: Annotated[
        Optional[str], typer.Option(help="run slice i of n (i/n) of the seeds, for array jobs; join with merge")
    ] = None,
    ray: Annotated[bool, typer.Option("--ray", help="run slices as Ray tasks and merge them")] = False,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: start or find one)")] = None,
    slices: Annotated[Optional[int], typer.Option(help="number of Ray slices (default: cluster CPUs)")] = None,
) -> None:
    """Run a recipe: seeds -> conversations -> pairs/, sft/, candidates/ shards. Resumes."""
    from collabgen.config.recipe import Recipe
    from collabgen.engine.runner import run_async
    from collabgen.engine.slices import Slice

    console = _console()
    try:
        loaded = Recipe.from_yaml(recipe)
        if ray:
            from collabgen.engine.distributed import run_on_ray

            result = run_on_ray(loaded, slices=slices, address=address, overwrite=overwrite)
            counts = result["manifest"]["counts"]
            console.print(f"ray: {len(result['slices'])} slices merged into {loaded.output.dir}: {counts}")
            failed = counts["conversations_failed"] + counts["conversations_unfinished"]
            raise typer.Exit(1 if failed > loaded.generation.max_failure_rate * counts["seeds"] else 0)
        part = Slice.parse(shard) if shard else None
        report = asyncio.run(run_async(loaded, overwrite=overwrite, console=console, progress=progress, part=part))
    except CollabgenError as err:
        raise _fail(err) from None
    table = Table(title=f"collabgen run: {report.out_dir}", show_header=False)
    for label, value in (
        ("seeds", report.seeds),
        ("conversations ok", report.ok),
        ("conversations failed", report.failed),
        ("pairs", report.pairs),
        ("sft trajectories", report.sft),
        ("candidates", report.candidates),
        ("paid calls this run", report.paid_calls),
        ("cached calls this run", report.cached_calls),
        ("elapsed", f"{report.elapsed_seconds:.1f}s"),
    ):
        table.add_row(label, str(value))
    console.print(table)
    for failure in report.failures[:10]:
        console.print(
            f"[red]failed[/] {failure['conv_id']}: {escape(str(failure['reason']))}", highlight=False, soft_wrap=True
        )
    if len(report.failures) > 10:
        console.print(f"... and {len(report.failures) - 10} more in manifest.json")
    if report.exit_code:
        console.print(
            f"[bold red]failure rate {report.failure_rate:.1%} is over the recipe's "
            f"generation.max_failure_rate {report.max_failure_rate:.1%}[/]"
            if report.ok + report.failed == report.seeds
            else "[bold red]some conversations did not finish; run again to resume[/]"
        )
    raise typer.Exit(report.exit_code)


@app.command()
def plan(recipe: RecipeArg) -> None:
    """Validate a recipe (seeds, templates, keys) and estimate calls and tokens; calls nothing."""
    from collabgen.config.recipe import Recipe
    from collabgen.engine.plan import plan_run
    from collabgen.engine.runner import preflight
    from collabgen.engine.seeds import iter_seeds

    console = Console()
    try:
        loaded = Recipe.from_yaml(recipe)
        checked = preflight(loaded)
    except CollabgenError as err:
        raise _fail(err) from None
    first = next(iter_seeds(checked.task, loaded.task), None)
    brief = len(checked.task.user_brief(first[1], checked.prompts)) // 4 if first else 300
    estimate = plan_run(loaded, checked.task, checked.seeds, brief_tokens=brief)
    console.print(
        f"recipe ok: task {checked.task.name}, {checked.seeds} seeds, out dir {escape(str(loaded.output.dir))}",
        soft_wrap=True,
    )
    console.print(
        f"calls per conversation (upper bound, {loaded.generation.max_turns} turns): "
        f"{estimate.calls_per_conversation:.0f}",
        soft_wrap=True,
    )
    table = Table(title="estimate for the whole run (upper bound)")
    for column in ("role", "model", "calls", "prompt tokens", "completion tokens"):
        table.add_column(column, justify="left" if column in ("role", "model") else "right")
    costs = estimate.cost(loaded)
    if costs:
        table.add_column("cost (USD)", justify="right")
    for role, config in loaded.models.roles().items():
        total = estimate.total(role)
        row = [role, config.model, f"{total.calls:,.0f}", f"{total.prompt_tokens:,.0f}", f"{total.completion_tokens:,.0f}"]
        if costs:
            row.append(f"{costs.get(role, 0.0):,.2f}")
        table.add_row(*row)
    console.print(table)


@app.command()
def merge(out_dir: Annotated[Path, typer.Argument(help="out dir the slices wrote into")]) -> None:
    """Join the outputs of `run --shard i/n` slices: one manifest and card over all shards."""
    from collabgen.output.merge import merge_outputs

    try:
        manifest = merge_outputs(out_dir)
    except CollabgenError as err:
        raise _fail(err) from None
    console = _console()
    console.print(f"merged {len(manifest['slices']['present'])} slices: {manifest['counts']}", soft_wrap=True)
    if manifest["slices"]["missing"]:
        console.print(f"[bold red]missing slices:[/] {manifest['slices']['missing']}")
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
