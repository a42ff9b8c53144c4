"""The dataset card (`out/README.md`): Hub YAML configs, how the data was made, its numbers.

Rendered from the task's template in `data_cards/` (packaged as `collabgen.data_cards`).
No secret and no local path goes in: paths are relative to the out dir.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import polars as pl

from collabgen.config.recipe import Recipe
from collabgen.config.secrets import scrub
from collabgen.files import write_atomic
from collabgen.output.manifest import Manifest
from collabgen.output.outdir import OutDir
from collabgen.tasks.base import Task

if TYPE_CHECKING:
    from datasets.info import DatasetInfosDict


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if rows < limit:
            return name
    return "1B<n<10B"


def score_summary(out: OutDir) -> dict[str, Any]:
    """Means of chosen vs rejected MR and of each metric, from the pairs shards."""
    files = out.shards("pairs")
    if not files:
        return {}
    frame = pl.concat([pl.read_parquet(f) for f in files])
    if frame.height == 0:
        return {}
    summary: dict[str, Any] = {
        "score_chosen_mean": frame["score_chosen"].mean(),
        "score_rejected_mean": frame["score_rejected"].mean(),
        "gap_mean": (frame["score_chosen"] - frame["score_rejected"]).mean(),
        "metrics": {},
    }
    for side in ("chosen", "rejected"):
        struct = frame[f"metrics_{side}"].struct.unnest()
        for name in struct.columns:
            summary["metrics"].setdefault(name, {})[side] = struct[name].mean()
    return summary


# The benchmarks the built-in tasks describe, by their default Hub source, and their licenses.
BENCHMARK_LICENSES = {"math": "mit", "code": "apache-2.0", "document": "other", "clarify": "other"}


def _load_template(name: str) -> str | None:
    path = resources.files("collabgen.data_cards").joinpath(name)
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _template(task: Task) -> jinja2.Template:
    """The task's card (`<task>.md.j2`, extending `card.md.j2`), or the base card."""
    env = jinja2.Environment(loader=jinja2.FunctionLoader(_load_template), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, digits=3: "n/a" if v is None else f"{v:.{digits}f}"
    return env.select_template([f"{task.name}.md.j2", "card.md.j2"])


def is_benchmark(recipe: Recipe, task: Task) -> bool:
    """Whether the seeds are the task's own benchmark: only then does the card describe
    it (its license, its contamination risk, its citation)."""
    hub = recipe.task.source.hub
    return hub is not None and task.default_hub is not None and hub.name == task.default_hub


def seed_source(recipe: Recipe) -> str:
    hub = recipe.task.source.hub
    if hub is not None:
        return f"the Hub dataset `{hub.name}` (split `{hub.split}`)"
    return f"a local seed file, `{recipe.task.source.path.name}`" if recipe.task.source.path else "a local seed file"


def dataset_infos(out: OutDir) -> DatasetInfosDict:
    """Per config, what `datasets` itself records for it (`DatasetInfosDict`): the shards'
    features, the `train` split's rows and Arrow bytes (`num_bytes`, as `load_dataset`
    counts them), `dataset_size` and `download_size` (the Parquet files' bytes). The card's
    `dataset_info` is written from these by `datasets`' own YAML writer, so `load_dataset`
    and the Hub read every field; the sizes and the loader's file times key its cache."""
    import datasets
    import pyarrow.parquet as pq
    from datasets.info import DatasetInfosDict

    infos = DatasetInfosDict()
    for name in OutDir.CONFIGS:
        shards = out.shards(name)
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
        arrow_bytes = sum(pq.read_table(p).nbytes for p in shards)  # one bounded shard at a time
        features = datasets.Features.from_arrow_schema(pq.read_schema(shards[0])) if shards else None
        infos[name] = datasets.DatasetInfo(
            config_name=name, features=features,
            splits=datasets.SplitDict({"train": datasets.SplitInfo(name="train", num_bytes=arrow_bytes,
                                                                   num_examples=rows)}),
            download_size=sum(p.stat().st_size for p in shards), dataset_size=arrow_bytes,
        )
    return infos


def front_matter(out: OutDir, *, license: str, pretty_name: str, rows: int) -> str:
    """The card's YAML metadata, through huggingface_hub's `DatasetCardData` (quoting and
    field names as the Hub reads them) with `datasets`' `dataset_info` and the configs
    that make each folder loadable by name (`pairs` the default)."""
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        license=license, pretty_name=pretty_name, size_categories=[_size_category(rows)],
        task_categories=["text-generation"], tags=["collabgen", "collabllm", "multiturn", "dpo", "sft", "synthetic"],
        configs=[{"config_name": name, **({"default": True} if name == "pairs" else {}),
                  "data_files": [{"split": "train", "path": f"{name}/*.parquet"}]} for name in OutDir.CONFIGS],
    )
    dataset_infos(out).to_dataset_card_data(data)
    return data.to_yaml()


def example_conversation(out: OutDir) -> list[dict[str, str]] | None:
    """The longest trajectory of the first SFT shard: one real example for the card."""
    files = out.shards("sft")
    if not files:
        return None
    frame = pl.read_parquet(files[0], columns=["messages", "turns"])
    if frame.height == 0:
        return None
    return frame.sort("turns", descending=True, maintain_order=True)["messages"][0].to_list()


def write_card(out: OutDir, recipe: Recipe, task: Task, manifest: Manifest, secrets: list[str]) -> Path:
    """Render the card from the manifest as written (the plain dict the templates index),
    so the card and manifest.json never disagree on a number."""
    data = manifest.to_dict()
    counts = manifest.counts
    rows = max(counts.pairs, counts.sft, counts.candidates)
    card = recipe.output.card
    benchmark = is_benchmark(recipe, task)
    license = card.license or (BENCHMARK_LICENSES.get(task.name, "other") if benchmark else "other")
    pretty_name = card.pretty_name or f"collabgen {task.name} collaboration data"
    text = _template(task).render(
        task=task,
        recipe=recipe,
        card=card,
        benchmark=benchmark,
        license=license,
        pretty_name=pretty_name,
        seed_source=seed_source(recipe),
        front_matter=front_matter(out, license=license, pretty_name=pretty_name, rows=rows),
        task_metrics=[m for m in task.metric_names(task.options) if recipe.reward.weights.get(m, 0.0) != 0.0],
        flags={k: v for k, v in (manifest.flags or {}).items() if v},
        models={role: c.model for role, c in recipe.models.roles().items()},
        manifest=data,
        counts=data["counts"],
        usage=data["usage"]["by_role"],
        size_category=_size_category(rows),
        scores=score_summary(out),
        example=example_conversation(out),
        lambda_=recipe.reward.token_penalty.lambda_,
        token_penalty_formula=token_penalty_formula(recipe),
    )
    return write_atomic(out.card_path, scrub(text, secrets))


def token_penalty_formula(recipe: Recipe) -> str:
    """The token penalty as the card states it: `-min(lambda * tokens, cap)`, or without a cap."""
    penalty = recipe.reward.token_penalty
    if penalty.cap is None:
        return f"-{penalty.lambda_} * tokens (no cap)"
    return f"-min({penalty.lambda_} * tokens, {penalty.cap})"
