"""How `collabgen view` scales: the overview, a page of the list and one conversation, on
out dirs of growing size, each measured in a fresh process (time and peak memory).

    python -m bench.view_scale                  # 10k and 100k candidates, about a minute
    python -m bench.view_scale --sizes 10000 100000 300000

The out dirs are one real scripted run (`tests/view_run.py`: 6 conversations, 60
candidates, hostile markup, a failure, a truncation), its shards copied with fresh
conversation ids until the size is reached, and its manifest's counts set to match. The
figures are what a user meets after `collabgen view OUT` starts: the time to the first
overview (cold: the list's summary is built then), a list page deep in the run, a text
search, and one conversation; then the process's peak RSS. Ratios between sizes are the
point: memory should stay flat-ish while the rows grow 10x.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from bench.report import write_marked_section

ROOT = Path(__file__).resolve().parent.parent


def build(base: Path, candidates: int) -> Path:
    """An out dir of about `candidates` candidate rows, copied from one scripted run."""
    sys.path.insert(0, str(ROOT))
    from tests.view_run import make_view_run

    seed_dir = base / "seed"
    seed_dir.mkdir(parents=True, exist_ok=True)
    source = make_view_run(seed_dir)
    frames = {c: pl.read_parquet(source / c / "*.parquet") for c in ("candidates", "pairs", "sft")}
    copies = max(1, candidates // frames["candidates"].height)
    out = base / f"out-{candidates}"
    for config, frame in frames.items():
        folder = out / config
        folder.mkdir(parents=True)
        per_shard = max(1, 20_000 // max(1, frame.height))
        for start in range(0, copies, per_shard):
            parts = [frame.with_columns(pl.col("conv_id") + f"-{k:06d}") for k in range(start, min(copies, start + per_shard))]
            pl.concat(parts).write_parquet(folder / f"part-{start // per_shard:05d}.parquet")
    manifest = json.loads((source / "manifest.json").read_text())
    counts = manifest["counts"]
    for key in ("seeds", "conversations_ok", "conversations_failed", "turns", "pairs", "sft", "candidates"):
        if isinstance(counts.get(key), int):
            counts[key] *= copies
    manifest["failures"] = [{**f, "conv_id": f"{f['conv_id']}-{k:06d}"} for k in range(copies) for f in manifest["failures"]]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def measure(out: Path) -> dict[str, float]:
    """In this process: the view's first answers over `out`, timed, then the peak RSS."""
    from collabgen.view.data import ListQuery, RunView

    figures: dict[str, float] = {}
    started = time.perf_counter()
    view = RunView(out)
    overview = view.overview()
    figures["overview_s"] = time.perf_counter() - started
    started = time.perf_counter()
    page = view.conversations(ListQuery())  # the first page builds the list's summary
    figures["first_page_s"] = time.perf_counter() - started
    started = time.perf_counter()
    view.conversations(ListQuery(offset=page["total"] // 2))
    figures["deep_page_s"] = time.perf_counter() - started
    started = time.perf_counter()
    found = view.conversations(ListQuery(text="__pwned"))
    figures["text_search_s"] = time.perf_counter() - started
    started = time.perf_counter()
    view.conversation(page["items"][0]["conv_id"])
    figures["conversation_s"] = time.perf_counter() - started
    figures["candidates"] = float(overview["in_shards"]["candidates"])
    figures["conversations"] = float(page["total"])
    figures["search_hits"] = float(found["total"])
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md",
                        help="the RESULTS.md whose view-scale section to write (default: bench/RESULTS.md)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for size in args.sizes:
            out = build(Path(tmp) / str(size), size)
            child = subprocess.run([sys.executable, "-m", "bench.view_scale", "--measure", str(out)],
                                   cwd=ROOT, capture_output=True, text=True, check=True)
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    columns = ["candidates", "conversations", "overview_s", "first_page_s", "deep_page_s", "text_search_s",
               "conversation_s", "peak_rss_mib"]
    print("\n".join(table_lines(rows, columns)))
    first, last = rows[0], rows[-1]
    growth = last["candidates"] / first["candidates"]
    summary = (f"rows grew {growth:.1f}x; overview {last['overview_s'] / first['overview_s']:.2f}x, first page "
               f"{last['first_page_s'] / first['first_page_s']:.2f}x, peak RSS "
               f"{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}x")
    print("\n" + summary)
    if args.results is not None:
        write_marked_section(args.results, "view-scale", "\n".join([
            "## `collabgen view` at scale", "",
            f"`python -m bench.view_scale --sizes {' '.join(map(str, args.sizes))}` (each size measured in a fresh "
            "process; seconds from the view's start; peak RSS of that process, polars and collabgen imported):", "",
            *table_lines(rows, columns), "", summary + ".",
        ]))


def table_lines(rows: list[dict[str, float]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[c]:.0f}" if c in ("candidates", "conversations") else f"{row[c]:.3f}"
                                        for c in columns) + " |")
    return lines


if __name__ == "__main__":
    main()
