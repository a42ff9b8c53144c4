"""Scale-out: `--shard i/n` slices plus `collabgen merge`, and `--ray` on a local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.errors import CollabgenError
from collabgen.engine.slices import Slice
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import install_math


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def rows(out: Path, config: str) -> pl.DataFrame:
    frame = pl.read_parquet(sorted((out / config).glob("*.parquet")))
    keys = [k for k in ("conv_id", "turn", "candidate") if k in frame.columns]
    return frame.sort(keys)


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_math(fake)
        yield fake


def test_slices_are_disjoint_and_cover_every_seed():
    parts = [Slice.parse(f"{i}/3") for i in range(3)]
    owners = [[p.contains(index) for p in parts].count(True) for index in range(100)]
    assert owners == [1] * 100
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(CollabgenError, match="--shard"):
            Slice.parse(bad)


def test_shards_then_merge_equal_one_run(server, tmp_path):
    reference = tmp_path / "reference"
    assert invoke("run", str(write_recipe(tmp_path / "a.yaml", math_recipe(server.base_url, reference)))).exit_code == 0

    out = tmp_path / "sliced"
    recipe = write_recipe(tmp_path / "b.yaml", math_recipe(server.base_url, out))
    for i in range(2):
        result = invoke("run", str(recipe), "--shard", f"{i}/2")
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "pairs").glob("*.parquet"))
    assert names and all(n.startswith(("s000of002-", "s001of002-")) for n in names)
    assert not (out / "manifest.json").exists()  # a slice does not claim the whole run

    result = invoke("merge", str(out))
    assert result.exit_code == 0, result.output
    for config in ("pairs", "sft", "candidates"):
        assert rows(out, config).equals(rows(reference, config)), config
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["conversations_ok"] == 6 and manifest["slices"]["missing"] == []
    assert "configs:" in (out / "README.md").read_text()


def test_merge_reports_missing_slices(server, tmp_path):
    out = tmp_path / "sliced"
    recipe = write_recipe(tmp_path / "b.yaml", math_recipe(server.base_url, out))
    assert invoke("run", str(recipe), "--shard", "0/3").exit_code == 0
    result = invoke("merge", str(out))
    assert result.exit_code == 1 and "missing slices" in result.output
    assert invoke("merge", str(tmp_path / "nothing")).exit_code == 2


@pytest.mark.slow
def test_ray_runs_slices_on_two_workers_and_merges(server, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    reference = tmp_path / "reference"
    assert invoke("run", str(write_recipe(tmp_path / "a.yaml", math_recipe(server.base_url, reference)))).exit_code == 0
    out = tmp_path / "ray"
    recipe = write_recipe(tmp_path / "b.yaml", math_recipe(server.base_url, out))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = invoke("run", str(recipe), "--ray", "--slices", "2")
        assert result.exit_code == 0, result.output
        # Resume per slice: a second run finds every slice finished and calls nothing.
        calls = len(server.calls)
        assert invoke("run", str(recipe), "--ray", "--slices", "2").exit_code == 0
        assert len(server.calls) == calls
    finally:
        ray.shutdown()
    for config in ("pairs", "sft", "candidates"):
        assert rows(out, config).equals(rows(reference, config)), config
    assert json.loads((out / "manifest.json").read_text())["slices"]["present"] == [0, 1]
