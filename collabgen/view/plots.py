"""`collabgen inspect OUT --plot DIR`: the viewer's charts as PNG files.

The figures draw what the page's overview shows, from the same `RunView.overview()` (one
reading of the rows, never a second one): the MR and each metric over all candidates and
the chosen ones, the pairs' MR gap and confidence, and per turn the chosen candidates' mean
MR and the share of them that were proactive. matplotlib is an optional dependency (the
`plot` extra), imported only here and drawn without a screen (the Agg backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collabgen.config.errors import CollabgenError
from collabgen.view.data import RunView

INSTALL_HINT = 'inspect --plot draws with matplotlib: pip install "collabgen[plot]"'


def write_plots(out_dir: Path, plot_dir: Path) -> list[Path]:
    """Draw every chart of the run in `out_dir` into `plot_dir` (created); the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise CollabgenError(INSTALL_HINT) from None
    overview = RunView(out_dir).overview()
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("metrics", _metrics), ("pairs", _pairs), ("by_turn", _by_turn)):
        figure = draw(pyplot, overview)
        if figure is None:
            continue
        path = plot_dir / f"{name}.png"
        figure.savefig(path, dpi=100)
        pyplot.close(figure)
        written.append(path)
    return written


def _bars(axes: Any, histogram: dict[str, Any], label: str, alpha: float = 1.0) -> None:
    edges, counts = histogram["edges"], histogram["counts"]
    if not counts:
        return
    if len(edges) == 2 and len(counts) == 1:  # every value the same
        axes.bar([edges[0]], counts, width=0.05, label=label, alpha=alpha)
        return
    widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
    axes.bar(edges[:-1], counts, width=widths, align="edge", label=label, alpha=alpha, edgecolor="black")


def _metrics(pyplot: Any, overview: dict[str, Any]) -> Any:
    histograms = overview["histograms"]
    if not histograms:
        return None
    figure, grid = pyplot.subplots(1, len(histograms), figsize=(4 * len(histograms), 3.2), squeeze=False)
    for axes, item in zip(grid[0], histograms):
        _bars(axes, item["all"], "all candidates", alpha=0.5)
        _bars(axes, item["chosen"], "chosen", alpha=0.8)
        axes.set_title(item["metric"])
        axes.set_ylabel("candidates")
        axes.tick_params(axis="x", labelrotation=30)
        axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def _pairs(pyplot: Any, overview: dict[str, Any]) -> Any:
    gaps = overview["gaps"]
    if not gaps["gap"]["counts"]:
        return None
    panels = [("MR gap (chosen - rejected)", gaps["gap"])]
    if gaps["confidence"] is not None and gaps["confidence"]["counts"]:
        panels.append(("confidence P(chosen truly better)", gaps["confidence"]))
    figure, grid = pyplot.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for axes, (title, histogram) in zip(grid[0], panels):
        _bars(axes, histogram, "pairs")
        axes.set_title(title)
        axes.set_ylabel("pairs")
    figure.tight_layout()
    return figure


def _by_turn(pyplot: Any, overview: dict[str, Any]) -> Any:
    rows = overview["by_turn"]
    if not rows:
        return None
    turns = [row["turn"] for row in rows]
    figure, (mr, proactive) = pyplot.subplots(1, 2, figsize=(9, 3.2))
    mr.plot(turns, [row["mean_chosen_mr"] for row in rows], marker="o")
    mr.set_title("mean MR of the chosen candidate by turn")
    proactive.plot(turns, [row["proactive_share"] for row in rows], marker="o")
    proactive.set_ylim(-0.05, 1.05)
    proactive.set_title("share of proactive winners by turn")
    for axes in (mr, proactive):
        axes.set_xlabel("turn")
        axes.set_xticks(turns)
    figure.tight_layout()
    return figure
