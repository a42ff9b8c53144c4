"""The `collabgen` command line: each command calls a service in `collabgen.app` and prints.

Exit codes (one mapping, `_exit_on_error`, and one failure rule, `app.outcome`): 0 done;
1 a run finished with failures over the recipe's threshold, or unfinished; 2 bad input
(recipe, seeds, keys, out dir, a damaged journal, an out dir another run holds); 130 a
run stopped by Ctrl-C or SIGTERM (shards and an incomplete manifest written; rerun to
resume). Everything printed is scrubbed of key values first.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import click
import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from collabgen.config.errors import CollabgenError, NoSpaceError
from collabgen.config.secrets import install_log_scrubber, scrub_known
from collabgen.engine.selection import PairsPerTurn
from collabgen.output.diskspace import is_out_of_space, no_space_error

ExportFormat = Literal["collabgen", "collabllm"]

class _PlainUsageCommand(typer.core.TyperCommand):
    """Usage lines in click's own convention: ``collabgen run [OPTIONS] RECIPE``.

    Typer 0.29 wraps required arguments in braces (``{RECIPE}``), which reads as a shell
    brace expansion or a choice set; the Arguments section already says what is required.
    """

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece for piece in pieces]


class _App(typer.Typer):
    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _PlainUsageCommand)
        return super().command(*args, **kwargs)


app = _App(
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Generate multi-turn collaboration training data (CollabLLM multiturn-aware rewards).",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: fits 80 columns, flags without a `<bool>` type
)

EXIT_INTERRUPTED = 130
# An out dir or input the OS will not let us use: the user's to fix, named, not a traceback.
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                       errno.EISDIR}


class _StderrLog(logging.Handler):
    """collabgen's warnings on stderr as `warning: ...`; looks stderr up at each record, so
    it follows a redirected one (as the test runner's)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{record.levelname.lower()}: {self.format(record)}\n")
        except Exception:
            self.handleError(record)


def _version(value: bool) -> None:
    if value:
        from collabgen.config.version import __version__

        print(f"collabgen {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def main_options(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("-V", "--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Generate multi-turn collaboration training data (CollabLLM multiturn-aware rewards)."""
    if ctx.invoked_subcommand is None:  # bare `collabgen`: the help, and success (no_args_is_help exits 2)
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    install_log_scrubber()  # every log record of every library, scrubbed of keys
    logger = logging.getLogger("collabgen")
    if not any(isinstance(handler, _StderrLog) for handler in logger.handlers):
        logger.addHandler(_StderrLog(logging.WARNING))


def _console(stderr: bool = True) -> Console:
    return Console(stderr=stderr)


def _error(message: str) -> None:
    _console().print(f"[bold red]error:[/] {escape(scrub_known(message))}", highlight=False, soft_wrap=True)


@contextmanager
def _exit_on_error() -> Iterator[None]:
    """The one mapping from errors to exit codes: a CollabgenError prints and exits with its
    code; a full disk, whichever library hit it, exits 3 naming where; a file the OS
    refuses (permissions, immutable, read-only) exits 2 naming it; Ctrl-C outside a run's
    own handling exits 130."""
    try:
        yield
    except CollabgenError as err:
        _error(str(err))
        raise typer.Exit(err.exit_code) from None
    except Exception as err:
        if is_out_of_space(err):
            where = Path(err.filename) if isinstance(err, OSError) and err.filename else Path.cwd()
            _error(str(no_space_error(where)))
            raise typer.Exit(NoSpaceError.exit_code) from None
        if not isinstance(err, OSError) or err.errno not in _ENVIRONMENT_ERRNOS:
            raise
        _error(f"{err.filename or ''}: {err.strerror}".lstrip(": "))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        _error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _finish(outcome: Any, console: Console) -> None:
    verdict = outcome.verdict()
    if verdict:
        console.print(f"[bold red]{escape(verdict)}[/]", soft_wrap=True)
    raise typer.Exit(outcome.exit_code)


RecipeArg = Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe YAML file", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="PATH=VALUE", help="override a recipe field, e.g. generation.min_gap=0.05 (repeatable)",
    show_default=False)]
LimitOpt = Annotated[int | None, typer.Option(metavar="N", help="use at most N seeds (task.limit)", show_default=False)]
OutOpt = Annotated[Path | None, typer.Option("--out", metavar="DIR", help="output directory (output.dir)",
                                             show_default=False)]


def _load(recipe: Path, sets: list[str] | None, limit: int | None = None, out: Path | None = None) -> Any:
    """The recipe with the environment's role defaults and the command line's overrides."""
    from collabgen.config.overrides import Override, parse_set, role_env_overrides
    from collabgen.tasks.recipe_check import load_recipe

    overrides = [*role_env_overrides(), *(parse_set(text) for text in sets or [])]
    if limit is not None:
        overrides.append(Override("task.limit", limit, f"--limit {limit}"))
    if out is not None:
        overrides.append(Override("output.dir", str(out), f"--out {out}"))
    return load_recipe(recipe, overrides)


OutDirArg = Annotated[Path, typer.Argument(metavar="OUT_DIR", help="a collabgen out dir", show_default=False)]


@app.command()
def run(
    recipe: RecipeArg,
    overwrite: Annotated[bool, typer.Option(help="discard an out dir made by a different recipe or cut into another partition (--shard)")] = False,
    progress: Annotated[bool | None, typer.Option(help="live progress (default: on a terminal)")] = None,
    shard: Annotated[
        str | None, typer.Option(metavar="I/N", help="run slice i of n of the seeds, for array jobs; join with merge")
    ] = None,
    ray: Annotated[bool, typer.Option("--ray", help="run slices as Ray tasks and merge them")] = False,
    address: Annotated[str | None, typer.Option(metavar="ADDRESS", help="Ray cluster address (default: start or find one)")] = None,
    slices: Annotated[int | None, typer.Option(metavar="K", help="number of Ray slices (default: cluster CPUs)")] = None,
    sets: SetOpt = None,
    limit: LimitOpt = None,
    out: OutOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="if another run holds the out dir (or slice), wait for it "
                                       "to finish instead of exiting")] = False,
) -> None:
    """Run a recipe: seeds -> conversations -> pairs/, sft/, candidates/ shards. Resumes."""
    from collabgen.app.generate import run_async
    from collabgen.engine.slices import Slice

    console = _console()
    with _exit_on_error():
        loaded = _load(recipe, sets, limit, out)
        if ray:
            _run_on_ray(loaded, slices, address, overwrite, console)
        part = Slice.parse(shard) if shard else None
        report = asyncio.run(run_async(loaded, overwrite=overwrite, console=console, progress=progress, part=part,
                                       wait=wait, handle_signals=True))
    _print_run_summary(report, console)
    if report.interrupted:
        again = shlex.join(["collabgen", "run", str(recipe), *(["--shard", shard] if shard else []),
                            *(arg for text in sets or [] for arg in ("--set", text)),
                            *(["--limit", str(limit)] if limit is not None else []),
                            *(["--out", str(out)] if out is not None else [])])
        console.print(
            f"[bold yellow]stopped by {report.interrupted}:[/] the shards and manifest.json hold the "
            f"{report.ok + report.failed} of {report.seeds} conversations that ended (manifest marked "
            f"\"complete\": false). Run `{escape(again)}` to resume.", soft_wrap=True, highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    _finish(report.outcome, console)


def _run_on_ray(recipe: Any, slices: int | None, address: str | None, overwrite: bool, console: Console) -> None:
    from collabgen.app.distributed import run_on_ray
    from collabgen.app.outcome import Outcome

    result = run_on_ray(recipe, slices=slices, address=address, overwrite=overwrite)
    counts = result["manifest"].counts
    console.print(f"ray: {len(result['slices'])} slices merged into {recipe.output.dir}: {counts.model_dump()}")
    _finish(Outcome(total=counts.seeds, ok=counts.conversations_ok, failed=counts.conversations_failed,
                    max_failure_rate=recipe.generation.max_failure_rate), console)


def _sft_count(report: Any) -> str:
    """The sft/ rows, and how many finished conversations the recipe's filter left out."""
    if report.sft_filtered is None:
        return str(report.sft)
    return f"{report.sft} ({report.sft_filtered} below output.sft.min_final, left out)"


def _drift(report: Any) -> str:
    """How often the simulated user did the assistant's work, and by which model."""
    if report.user_drift is None or not report.user_drift[2]:
        return "no futures"
    model, drifted, futures = report.user_drift
    return f"{drifted} of {futures} futures ({drifted / futures:.1%}) by {model}, left out of the MR"


def _print_run_summary(report: Any, console: Console) -> None:
    table = Table(title=f"collabgen run: {report.out_dir}", show_header=False)
    for label, value in (
        ("seeds", report.seeds), ("conversations ok", report.ok), ("conversations failed", report.failed),
        ("pairs", report.pairs), ("sft trajectories", _sft_count(report)), ("candidates", report.candidates),
        ("simulated-user drift", _drift(report)),
        ("paid calls this run", report.paid_calls), ("cached calls this run", report.cached_calls),
        ("tokens this run (in/out)", _tokens(report.tokens)), ("cost this run", _costs(report.cost_usd)),
        ("elapsed", f"{report.elapsed_seconds:.1f}s"),
    ):
        table.add_row(label, str(value))
    console.print(table)
    for failure in report.failures[:10]:
        reason = scrub_known(str(failure["reason"]))
        console.print(f"[red]failed[/] {failure['conv_id']}: {escape(reason)}", highlight=False, soft_wrap=True)
    if len(report.failures) > 10:
        console.print(f"... and {len(report.failures) - 10} more in manifest.json")


def _tokens(tokens: dict[str, tuple[int, int]]) -> str:
    return ", ".join(f"{role} {p / 1000:,.1f}k/{c / 1000:,.1f}k" for role, (p, c) in tokens.items()) or "none"


def _costs(costs: dict[str, float | None]) -> str:
    """Dollars per role; a role without `prices` in the recipe is unknown, not free."""
    parts = [f"{role} " + ("unknown (no prices)" if c is None else f"${c:,.2f}") for role, c in costs.items()]
    known = [c for c in costs.values() if c is not None]
    total = f"; total ${sum(known):,.2f}" + (" + unknown" if len(known) < len(costs) else "") if known else ""
    return (", ".join(parts) + total) or "none"


@app.command()
def plan(recipe: RecipeArg, sets: SetOpt = None, limit: LimitOpt = None, out: OutOpt = None) -> None:
    """Validate a recipe (seeds, templates, keys) and estimate calls and tokens; calls nothing."""
    from collabgen.app.context import prepare
    from collabgen.app.plan import futures_note, plan_run

    console = Console()
    with _exit_on_error():
        setup = prepare(_load(recipe, sets, limit, out), offline=True)
        estimate = asyncio.run(plan_run(setup))
    loaded = setup.recipe
    console.print(f"recipe ok: task {setup.task.name}, {setup.seeds} seeds, out dir {escape(str(loaded.output.dir))}",
                  soft_wrap=True)
    console.print(f"calls per conversation (upper bound, {loaded.generation.max_turns} turns"
                  f"{futures_note(loaded)}): {estimate.calls_per_conversation:.0f}", soft_wrap=True)
    if estimate.least_calls_per_conversation is not None:
        console.print(f"calls per conversation if every race stops after its first round (the lower bound of "
                      f"adaptive futures, same turns): {estimate.least_calls_per_conversation:.0f}; the race's "
                      "measured stopping rate is in bench/RESULTS.md (python -m bench.mr_accuracy)", soft_wrap=True)
    for note in setup.unchecked:
        console.print(f"[yellow]not checked:[/] {escape(note)}", soft_wrap=True)
    for warning in estimate.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
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
            row.append(f"{costs[role]:,.2f}" if role in costs else "unknown")
        table.add_row(*row)
    console.print(table)


@app.command(name="eval")
def evaluate_policies(
    recipe: RecipeArg,
    policy: Annotated[
        list[str],
        typer.Option(metavar="SPEC", help="MODEL or name=N,model=M,base_url=U,...,system_prompt=TEXT|@proactive or "
                          "system_prompt_file=PATH (repeat to compare; the first is the baseline)"),
    ],
    sets: SetOpt = None,
    metrics: Annotated[str | None, typer.Option(metavar="M,M", help="report only these metrics, comma-separated, e.g. "
                                                     "bleu_nltk,tokens_k_cl100k (default: all)",
                                                show_default=False)] = None,
) -> None:
    """Benchmark policies the paper's way: whole conversations with the simulated user."""
    from collabgen.app.evaluate import eval_outcome, evaluate, write_report
    from collabgen.engine.evaluation import parse_policy_spec

    console = Console()
    with _exit_on_error():
        loaded = _load(recipe, sets)
        specs = [parse_policy_spec(text, loaded.models.policy) for text in policy]
        results = asyncio.run(evaluate(loaded, specs))
        wanted = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
        report, path = write_report(loaded, specs, results, wanted)
    console.print(_eval_table(report, loaded.task.type))
    console.print(f"report: {escape(str(path))} and report.json", soft_wrap=True)
    _finish(eval_outcome(loaded, report), console)


def _eval_table(report: dict[str, Any], task: str) -> Table:
    def cell(stats: dict[str, float], signed: bool = False) -> str:
        form = "{:+.3f}" if signed else "{:.3f}"
        return f"{form.format(stats['mean'])} [{form.format(stats['low'])}, {form.format(stats['high'])}]"

    table = Table(title=f"collabgen eval: {task} (mean [95% CI])")
    table.add_column("policy")
    table.add_column("n", justify="right")
    for metric in report["metrics"]:
        table.add_column(metric, justify="right")
    for name, summary in report["policies"].items():
        table.add_row(name, str(summary["conversations"]), *(cell(summary["metrics"][m]) for m in report["metrics"]))
    for label, diff in report["paired"].items():
        table.add_row(f"Δ {label}", str(diff["seeds"]), *(cell(diff["metrics"][m], True) for m in report["metrics"]))
    return table


@app.command()
def score(
    recipe: RecipeArg,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="JSONL: {\"seed\": {...}, \"messages\": [...]} per line",
                                         show_default=False)],
    out: Annotated[Path | None, typer.Option(metavar="F", help="where to write one JSON line per input line "
                                                  "(default: FILE's stem + .scores.jsonl)", show_default=False)] = None,
    sets: SetOpt = None,
) -> None:
    """Score your own conversations with the recipe's metrics, judges and token penalty (the futures' path)."""
    from collabgen.app.score import score_file

    console = _console()
    with _exit_on_error():
        summary = asyncio.run(score_file(_load(recipe, sets), file, out))
    console.print(f"scored {summary.scored} of {summary.lines} lines -> {escape(str(summary.out))}", soft_wrap=True)
    if summary.exit_code:
        console.print(f"[bold red]{summary.lines - summary.scored} lines not scored; see their error field[/]")
    raise typer.Exit(summary.exit_code)


@app.command()
def merge(out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="out dir the slices wrote into",
                                                 show_default=False)]) -> None:
    """Join the outputs of `run --shard i/n` slices: one manifest and card over all shards."""
    from collabgen.output.merge import merge_outputs

    with _exit_on_error():
        manifest = merge_outputs(out_dir)
    console = _console()
    slices = manifest.slices
    console.print(f"merged {len(slices.present)} slices: {manifest.counts.model_dump()}", soft_wrap=True)
    if slices.missing:
        console.print(f"[bold red]missing slices:[/] {slices.missing}")
        raise typer.Exit(1)


@app.command()
def push(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="a collabgen out dir (holds manifest.json)",
                                            show_default=False)],
    repo: Annotated[str, typer.Option("--repo", metavar="ORG/NAME", help="Hub dataset repo, ORG/NAME (created if missing)",
                                      show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="create the repo private (ignored if it exists)")] = False,
    revision: Annotated[str | None, typer.Option(metavar="BRANCH", help="branch to commit to, created if missing (default: main)",
                                                    show_default=False)] = None,
    token_env: Annotated[str, typer.Option(metavar="VAR", help="environment variable holding the Hub token")] = "HF_TOKEN",
    large: Annotated[bool, typer.Option("--large", help="resumable multi-commit upload for very large folders "
                                        "(not atomic; re-run to resume)")] = False,
) -> None:
    """Upload shards, card and manifest to a Hub dataset repo in one commit (never .collabgen/)."""
    from collabgen.app.hub import push as push_to_hub

    console = Console()
    with _exit_on_error():
        result = push_to_hub(out_dir, repo, private=private, revision=revision, token_env=token_env, large=large)
    console.print(f"pushed {len(result.uploaded)} files to {result.repo_id}@{result.revision}", soft_wrap=True)
    if result.deleted:
        console.print(f"deleted {len(result.deleted)} stale shards: {', '.join(result.deleted)}", soft_wrap=True)
    if result.commit_url:
        console.print(f"commit: {result.commit_url}", soft_wrap=True, highlight=False)


@app.command()
def inspect(
    out_dir: OutDirArg,
    conv: Annotated[str | None, typer.Option("--conv", metavar="ID", help="show one conversation turn by turn",
                                                show_default=False)] = None,
    bins: Annotated[int, typer.Option(min=2, max=50, metavar="N", help="histogram bins (2-50)")] = 10,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="DIR", help="also write the charts of `collabgen "
                    "view` as PNG files into DIR (needs matplotlib: the plot extra)", show_default=False)] = None,
) -> None:
    """Counts, MR histograms, metric means, failures and token usage of an out dir; or one conversation."""
    from collabgen.app.inspection import conversation, summary

    console = Console()
    with _exit_on_error():
        if plot is not None:
            from collabgen.view.plots import write_plots

            for path in write_plots(out_dir, plot):
                console.print(f"wrote {path}", highlight=False, soft_wrap=True)
        if conv is None:
            summary(out_dir, console, bins=bins)
        else:
            conversation(out_dir, conv, console)


@app.command()
def view(
    out_dir: OutDirArg,
    host: Annotated[str, typer.Option(metavar="HOST", help="address to listen on (another than loopback "
                                      "shows the run to the network)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, metavar="PORT", help="port (0: any free one)")] = 8765,
    export_to: Annotated[Path | None, typer.Option("--export", metavar="FILE", help="write the page as one "
                         "self-contained HTML file instead of serving it", show_default=False)] = None,
) -> None:
    """A read-only local web page over an out dir: overview, conversations, candidates and futures;
    the eval report of OUT/eval, or of OUT when it is an eval folder itself."""
    from collabgen.view.data import RunView

    console = Console()
    with _exit_on_error():
        run_view = RunView(out_dir)
        if export_to is not None:
            from collabgen.view.export import export as export_page

            written = export_page(run_view, export_to)
            console.print(f"wrote {written} ({written.stat().st_size:,} bytes)", soft_wrap=True, highlight=False)
            return
        from collabgen.view.server import ViewServer

        try:
            server = ViewServer(run_view, host, port)
        except OSError as err:
            raise CollabgenError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        console.print(f"collabgen view: {server.url} (read-only; Ctrl-C stops)", soft_wrap=True, highlight=False)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


@app.command()
def export(
    out_dir: OutDirArg,
    to: Annotated[Path | None, typer.Option(metavar="DIR", help="write here instead of rewriting OUT_DIR's pairs in place",
                                               show_default=False)] = None,
    min_gap: Annotated[float | None, typer.Option(metavar="G", help="keep a pair when chosen MR - rejected MR >= this "
                                                     "(default: the recipe's generation.min_gap)",
                                                     show_default=False)] = None,
    top_k: Annotated[int | None, typer.Option(metavar="K", help="chosen side: each of the K best candidates of a turn "
                                                 "(default: 1 for best-worst, all for all)", show_default=False)] = None,
    pairs_per_turn: Annotated[PairsPerTurn, typer.Option(help="best-worst: chosen vs the worst; all: chosen vs every "
                                                "candidate ranked below it")] = "best-worst",
    min_confidence: Annotated[float | None, typer.Option(
        metavar="P", help="keep a pair only when its confidence (P(chosen's true MR is higher), the pairs' `confidence` "
             "column) is at least this", min=0.0, max=1.0, show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(help="allow --to a folder that is not empty")] = False,
    layout: Annotated[ExportFormat, typer.Option("--format", help="collabgen: re-select pairs; collabllm: write the CollabLLM "
                                             "reference's multi-turn dataset (a save_to_disk folder) to --to")
                      ] = "collabgen",
) -> None:
    """Re-select DPO pairs from candidates/ (no model call); sft/ and candidates/ stay as they are.
    With --format collabllm, write the reference code's layout instead (its training scripts read it)."""
    from collabgen.app.export import export as export_pairs
    from collabgen.app.export import export_collabllm_checked

    if layout != "collabgen":
        with _exit_on_error():
            rows, conversations = export_collabllm_checked(
                out_dir, to=to, fmt=layout, overwrite=overwrite,
                selection_options=(min_gap, top_k, min_confidence, pairs_per_turn != "best-worst"),
            )
        _console().print(f"{to}: {rows} rows from {conversations} conversations in the CollabLLM layout "
                         "(MultiturnDataset reads the folder)", soft_wrap=True, highlight=False)
        return
    with _exit_on_error():
        report = export_pairs(out_dir, to=to, min_gap=min_gap, top_k=top_k, pairs_per_turn=pairs_per_turn,
                              min_confidence=min_confidence, overwrite=overwrite)
    console = _console()
    before = "?" if report.pairs_before is None else report.pairs_before
    console.print(f"{report.out_dir}: {report.pairs} pairs from {report.turns} turns (was {before}); "
                  f"{report.selection.describe()}", soft_wrap=True, highlight=False)
    if not report.card_rewritten:
        console.print("[yellow]the card could not be re-rendered from the manifest; counts in README.md "
                      "are the old ones (manifest.json is up to date)[/]")


@app.command()
def repair(
    target: Annotated[Path, typer.Argument(metavar="TARGET", help="an out dir (repairs every run journal in it) or one journal file",
                                           show_default=False)],
) -> None:
    """Repair a damaged journal: drop the bad record and what follows it for its conversation; keeps a backup."""
    from collabgen.app.repair import repair as repair_target

    with _exit_on_error():
        repairs = repair_target(target)
    console = _console()
    for result in repairs:
        if not result.dropped:
            console.print(f"{result.path}: intact, nothing to repair", soft_wrap=True, highlight=False)
            continue
        lines = ", ".join(str(n) for n in result.dropped)
        convs = ", ".join(str(c) for c in result.conversations) or "unknown"
        console.print(f"{result.path}: dropped line(s) {lines} (conversation index {convs}); original kept as "
                      f"{result.backup}. Run the recipe again to redo them.", soft_wrap=True, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
