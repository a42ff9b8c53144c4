"""`collabgen eval`: every policy holds a conversation per held-out seed; resumable.

The setup is a run's (`context.prepare` on the eval seeds, the same roles and cache);
the conversations are the engine's (`engine.evaluation.Evaluator`); finished ones go to
an append log under the eval folder, so a rerun continues and the request cache makes
replays free. The report (means, bootstrap intervals, paired differences) is written by
`output.eval_report`.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

from collabgen.app.context import RunContext, open_context, prepare, prove_sandboxes
from collabgen.app.outcome import Outcome
from collabgen.config.errors import RecipeError
from collabgen.config.recipe import Recipe
from collabgen.config.secrets import scrub, secret_values
from collabgen.engine.evaluation import (
    EvalResult,
    Evaluator,
    PolicySpec,
    eval_dir,
    eval_generation,
    eval_task_config,
)
from collabgen.engine.journal import AppendLog, LogReader
from collabgen.engine.seeds import iter_seeds
from collabgen.files import write_atomic
from collabgen.models.registry import build_backend, build_role, resolve_api_key
from collabgen.output.eval_report import build_report, render_markdown
from collabgen.output.outdir import write_json_atomic
from collabgen.tasks.reference_metrics import cl100k_tokens

REPORT = "report.json"
REPORT_MD = "report.md"
LOG = "journal.jsonl"
"""The eval folder's files: the report and the append log of finished conversations
(`collabgen view` reads both)."""


def check_policies(recipe: Recipe, specs: list[PolicySpec]) -> None:
    if not specs:
        raise RecipeError("eval: give at least one --policy")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RecipeError(f"eval: policy names must differ, got {names}; set name=... in each --policy")
    for role, config in [("user", recipe.models.user), ("judge", recipe.models.judge)] + [
        (f"--policy {s.name}", s.config) for s in specs
    ]:
        resolve_api_key(role, config)


def finished_results(log: LogReader, prompts: dict[str, str | None]) -> dict[tuple[str, int], EvalResult]:
    """Finished conversations of the policies in `prompts` (name -> its sampling system
    prompt); one held under another system prompt is played again. `collabgen view` picks
    an eval report's conversations with it too, so it shows the ones the report counted."""
    done: dict[tuple[str, int], EvalResult] = {}
    for record in log.records():
        try:
            result = EvalResult(**record)
        except TypeError:
            continue
        if result.status == "ok" and result.policy in prompts and result.system_prompt == prompts[result.policy]:
            done[(result.policy, result.index)] = result
    return done


def sampling_prompts(recipe: Recipe, specs: list[PolicySpec]) -> dict[str, str | None]:
    """Each policy's sampling system prompt: its own, else the recipe's."""
    return {s.name: s.sampling_prompt(recipe.generation.system_prompt) for s in specs}


def evaluator(context: RunContext, specs: list[PolicySpec]) -> Evaluator:
    """The engine's evaluator with one role per policy, on the run's cache and usage book."""
    policies = {
        s.name: build_role(f"policy:{s.name}", s.config, build_backend("policy", s.config), context.cache,
                           context.usage)
        for s in specs
    }
    return Evaluator(task=context.setup.task, prompts=context.setup.prompts, generation=eval_generation(
        context.setup.recipe), user=context.roles["user"], judge=context.roles["judge"], scorer=context.scorer(),
        policies=policies, system_prompts=sampling_prompts(context.setup.recipe, specs))


async def evaluate(recipe: Recipe, specs: list[PolicySpec]) -> list[EvalResult]:
    """All conversations of all policies; returns every result, resumed ones included."""
    check_policies(recipe, specs)
    cl100k_tokens("")  # the reference's token count must be at hand before any call
    names = [s.name for s in specs]
    task_config = eval_task_config(recipe)
    setup = prepare(recipe, task_config=task_config, check_keys=False)
    seeds = list(iter_seeds(setup.task, task_config))  # eval sets are small; validated before any call
    out = eval_dir(recipe)
    out.mkdir(parents=True, exist_ok=True)
    log = AppendLog(out / LOG)
    done = finished_results(log, sampling_prompts(recipe, specs))
    results = list(done.values())
    async with open_context(setup, cache_path=out / "cache.sqlite") as context:
        await prove_sandboxes(context)
        judge = evaluator(context, specs)
        limit = asyncio.Semaphore(recipe.eval.conversations)

        async def one(name: str, index: int, seed: Any) -> None:
            async with limit:
                result = await judge.converse(name, index, seed)
            log.append(asdict(result))
            results.append(result)

        try:
            await asyncio.gather(*(one(name, index, seed) for index, seed in seeds for name in names
                                   if (name, index) not in done))
        finally:
            log.close()
            for policy in judge.policies.values():
                await policy.aclose()
    return sorted(results, key=lambda r: (r.index, names.index(r.policy) if r.policy in names else 0))


def write_report(
    recipe: Recipe, specs: list[PolicySpec], results: list[EvalResult], metrics: list[str] | None = None,
) -> tuple[dict[str, Any], Path]:
    """report.json and report.md in the eval folder (secrets scrubbed); `metrics` limits
    the report to those metrics (default: all)."""
    report = build_report(recipe, specs, results, metrics)
    out = eval_dir(recipe)
    secrets = secret_values(recipe)
    write_json_atomic(out / REPORT, report, secrets)
    write_atomic(out / REPORT_MD, scrub(render_markdown(report), secrets))
    return report, out / REPORT_MD


def eval_outcome(recipe: Recipe, report: dict[str, Any]) -> Outcome:
    failed = sum(p["failed"] for p in report["policies"].values())
    ok = sum(p["conversations"] for p in report["policies"].values())
    return Outcome(total=ok + failed, ok=ok, failed=failed, max_failure_rate=recipe.generation.max_failure_rate)
