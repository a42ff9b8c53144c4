"""`collabgen run --ray`: slices of the seed set as Ray tasks, each running the same async
engine into the shared out dir; the driver merges manifests and writes the card.

The out dir must be on a filesystem every node sees. Resume works per slice: running
the same command again continues each slice from its own journal.
"""

from __future__ import annotations

import asyncio
from typing import Any

from collabgen.config.errors import CollabgenError
from collabgen.config.recipe import Recipe
from collabgen.engine.slices import Slice


def _run_slice(recipe_data: dict[str, Any], index: int, count: int) -> dict[str, Any]:
    from collabgen.app.generate import run_async

    recipe = Recipe.from_dict(recipe_data)
    report = asyncio.run(run_async(recipe, progress=False, part=Slice(index, count)))
    return {"slice": f"{index}/{count}", "ok": report.ok, "failed": report.failed, "seeds": report.seeds}


def run_on_ray(recipe: Recipe, *, slices: int | None, address: str | None, overwrite: bool) -> dict[str, Any]:
    try:
        import ray
    except ImportError:
        raise CollabgenError("--ray needs Ray: pip install 'collabgen[ray]'") from None
    from collabgen.app.context import prepare
    from collabgen.app.generate import prepare_out_dir
    from collabgen.output.merge import merge_outputs
    from collabgen.output.partition import Partition

    prepare(recipe)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        count = slices or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        out = prepare_out_dir(recipe, overwrite, Partition(count)).root  # another partition there: refused
        recipe_data = recipe.model_dump(mode="json", by_alias=True)
        # Workers may start in another directory: hand them absolute paths.
        recipe_data["output"]["dir"] = str(out.resolve())
        if recipe.task.source.path is not None:
            recipe_data["task"]["source"]["path"] = str(recipe.task.source.path.resolve())
        task = ray.remote(num_cpus=1, max_retries=2)(_run_slice)
        reports = ray.get([task.remote(recipe_data, i, count) for i in range(count)])
    finally:
        if started_here:
            ray.shutdown()
    manifest = merge_outputs(out)
    return {"slices": reports, "manifest": manifest}
