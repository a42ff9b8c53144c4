"""How often does the interactivity judge tie a clarifying and a direct candidate, per scale?

`python -m bench.interactivity_ties` (from the repository root; about a minute) runs the
scripted test workloads (math, document, code, clarify: `tests/scripts.py` on the fake
server, the recipes `tests/test_golden.py` runs) once with `reward.interactivity_scale:
unit` and once with `three_level`, and counts, over every turn with a proactive
(clarifying) and a plain (direct) candidate, how often their interactivity (the mean over
futures) is equal, higher for the proactive one, or lower.

What this can show: the plumbing (every judge call answered on its scale, scored rating / 3).
What it cannot: whether a real judge ties less or more on three levels. The scripted judge
is a two-valued function of one fact, whether an assistant message in the rated part asks
a question (0.9 or 0.2; 3 or 1), so it ties two candidates exactly when both windows ask or
neither does, on either scale; the counts below are equal by construction of the script.
Only a model judge can measure the scale's effect.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, math_recipe, read_shards, recipe_from_file, write_recipe
from tests.scripts import install_clarify, install_code, install_document, install_math

FAST_SANDBOX = {"cpu_seconds": 5, "wall_seconds": 20, "memory_mb": 512}
WORKLOADS: dict[str, tuple[Any, Any]] = {
    "math": (install_math, lambda url, out, **o: math_recipe(url, out, **o)),
    "document": (install_document, lambda url, out, **o: recipe_from_file(
        "mediumdoc", url, out, SEEDS / "document.jsonl", **o)),
    "code": (install_code, lambda url, out, **o: recipe_from_file(
        "bigcodebench", url, out, SEEDS / "code.jsonl",
        **{"task.options.sandbox": FAST_SANDBOX, "task.options.canary_imports": [], **o})),
    "clarify": (install_clarify, lambda url, out, **o: recipe_from_file(
        "eval/abgcoqa", url, out, SEEDS / "clarify.jsonl", **o)),
}


def ties(name: str, scale: str, folder: Path) -> Counter[str]:
    """Turns by how the proactive candidate's interactivity compares with the plain one's."""
    install, make = WORKLOADS[name]
    with FakeLLMServer() as server:
        install(server)
        out = folder / f"{name}-{scale}"
        recipe = make(server.base_url, out, **{"reward.interactivity_scale": scale,
                                                "reward.weights.interactivity": 1.0})
        result = CliRunner().invoke(app, ["run", str(write_recipe(folder / f"{name}-{scale}.yaml", recipe))])
        if result.exit_code != 0:
            raise SystemExit(f"{name} ({scale}) failed:\n{result.output}")
    turns: dict[tuple[str, int], dict[bool, list[float]]] = {}
    for row in read_shards(out, "candidates").iter_rows(named=True):
        value = row["metrics"].get("interactivity")
        if value is not None:
            turns.setdefault((row["conv_id"], row["turn"]), {}).setdefault(row["proactive"], []).append(value)
    counts: Counter[str] = Counter()
    for sides in turns.values():
        if True not in sides or False not in sides:
            continue
        clarifying, direct = max(sides[True]), max(sides[False])
        counts["tie" if abs(clarifying - direct) < 1e-12 else "clarifying higher" if clarifying > direct
               else "direct higher"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'workload':<10} {'scale':<12} {'turns':>5} {'ties':>5} {'clarifying higher':>18} {'direct higher':>14}")
        for name in args.workloads:
            for scale in ("unit", "three_level"):
                c = ties(name, scale, Path(tmp))
                total = sum(c.values())
                print(f"{name:<10} {scale:<12} {total:>5} {c['tie']:>5} {c['clarifying higher']:>18} "
                      f"{c['direct higher']:>14}")


if __name__ == "__main__":
    main()
