"""`collabgen inspect OUT --plot DIR`: the viewer's charts as PNG files that show something."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.view.data import RunView
from tests.view_run import make_view_run

image = pytest.importorskip("matplotlib.image", reason="the plot extra (matplotlib) is not installed")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return make_view_run(tmp_path_factory.mktemp("plots"))


def _not_blank(path: Path) -> bool:
    pixels = image.imread(path)
    return pixels.std() > 0.01 and (pixels[..., :3] < 0.5).mean() > 0.001  # varied, with dark ink on it


def test_inspect_plot_writes_every_chart_as_a_non_blank_png(out, tmp_path):
    result = CliRunner().invoke(app, ["inspect", str(out), "--plot", str(tmp_path / "charts")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "charts").glob("*.png"))
    assert written == ["by_turn.png", "metrics.png", "pairs.png"]
    for name in written:
        assert f"wrote {tmp_path / 'charts' / name}" in " ".join(result.output.split())
        assert _not_blank(tmp_path / "charts" / name), name
    assert "counts" in result.output  # the text summary still follows


def test_the_charts_draw_the_viewers_own_numbers(out, tmp_path, monkeypatch):
    from collabgen.view import plots

    drawn: list[dict] = []
    real = plots._by_turn
    monkeypatch.setattr(plots, "_by_turn", lambda pyplot, overview: drawn.append(overview) or real(pyplot, overview))
    plots.write_plots(out, tmp_path)
    assert drawn and drawn[0]["by_turn"] == RunView(out).overview()["by_turn"]


def test_without_matplotlib_the_error_says_how_to_install_it(out, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refusing(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refusing)
    result = CliRunner().invoke(app, ["inspect", str(out), "--plot", str(tmp_path / "charts")])
    assert result.exit_code == 2 and 'pip install "collabgen[plot]"' in result.output
