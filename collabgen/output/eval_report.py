"""The evaluation report: per policy, mean and 95% bootstrap interval of every metric;
paired differences against the first policy on the seeds both finished; pinned simulator
and judge. Written as JSON and Markdown (the shape of the paper's main table)."""

from __future__ import annotations

from typing import Any

import numpy as np

from collabgen.config.recipe import Recipe
from collabgen.engine.evaluation import EvalResult, PolicySpec


def bootstrap_interval(values: list[float], resamples: int, seed: int) -> tuple[float, float, float]:
    """(mean, low, high): the 2.5th and 97.5th percentiles of resampled means."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(data.mean()), float(low), float(high)


def build_report(recipe: Recipe, specs: list[PolicySpec], results: list[EvalResult]) -> dict[str, Any]:
    names = [s.name for s in specs]
    resamples, seed = recipe.eval.bootstrap, recipe.eval.seed
    ok = {(r.policy, r.index): r for r in results if r.status == "ok"}
    metric_names = sorted({m for r in ok.values() for m in r.metrics})
    policies: dict[str, Any] = {}
    for spec in specs:
        mine = [r for r in ok.values() if r.policy == spec.name]
        summary = {}
        for metric in metric_names:
            mean, low, high = bootstrap_interval([r.metrics[metric] for r in mine], resamples, seed)
            summary[metric] = {"mean": mean, "low": low, "high": high}
        policies[spec.name] = {
            "model": spec.config.model,
            "temperature": spec.config.temperature,
            "conversations": len(mine),
            "failed": sum(1 for r in results if r.policy == spec.name and r.status != "ok"),
            "metrics": summary,
        }
    baseline = names[0]
    paired: dict[str, Any] = {}
    for name in names[1:]:
        shared = sorted({i for (p, i) in ok if p == name} & {i for (p, i) in ok if p == baseline})
        diffs = {}
        for metric in metric_names:
            values = [ok[(name, i)].metrics[metric] - ok[(baseline, i)].metrics[metric] for i in shared]
            mean, low, high = bootstrap_interval(values, resamples, seed)
            diffs[metric] = {"mean": mean, "low": low, "high": high}
        paired[f"{name} - {baseline}"] = {"seeds": len(shared), "metrics": diffs}
    return {
        "task": recipe.task.type,
        "metrics": metric_names,
        "policies": policies,
        "paired": paired,
        "pinned": {
            role: {"backend": c.backend, "model": c.model, "temperature": c.temperature}
            for role, c in (("user", recipe.models.user), ("judge", recipe.models.judge))
        }
        | {"eval_seed": seed, "bootstrap_resamples": resamples, "max_turns": recipe.eval.max_turns
           or recipe.generation.max_turns},
    }


def _cell(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def render_markdown(report: dict[str, Any]) -> str:
    metrics = report["metrics"]
    lines = [
        f"# collabgen eval: {report['task']}",
        "",
        "Mean and 95% bootstrap interval per policy; `tokens_k` is the assistant's tokens in thousands.",
        "",
        "| policy | model | n | failed | " + " | ".join(metrics) + " |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in metrics) + " |",
    ]
    for name, policy in report["policies"].items():
        cells = [_cell(policy["metrics"][m]) for m in metrics]
        lines.append(f"| {name} | {policy['model']} | {policy['conversations']} | {policy['failed']} | "
                     + " | ".join(cells) + " |")
    if report["paired"]:
        lines += ["", "Paired differences on the same seeds:", "",
                  "| comparison | seeds | " + " | ".join(metrics) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in metrics) + " |"]
        for label, diff in report["paired"].items():
            lines.append(f"| {label} | {diff['seeds']} | " + " | ".join(_cell(diff["metrics"][m]) for m in metrics)
                         + " |")
    pinned = report["pinned"]
    lines += ["", f"Pinned: user simulator `{pinned['user']['model']}` (temperature {pinned['user']['temperature']}), "
              f"judge `{pinned['judge']['model']}` (temperature {pinned['judge']['temperature']}), "
              f"eval seed {pinned['eval_seed']}, {pinned['bootstrap_resamples']} bootstrap resamples, "
              f"at most {pinned['max_turns']} turns.", ""]
    return "\n".join(lines)
