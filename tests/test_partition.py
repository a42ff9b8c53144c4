"""One out dir, one partition of the seeds: a whole run and `--shard` slices (or slices of
two `n`) on one out dir are refused before any call, in turn or at once, naming what the
out dir holds; `merge` refuses inputs of two partitions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import install_math

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def pair_count(out: Path) -> int:
    return pl.read_parquet(sorted((out / "pairs").glob("*.parquet"))).height


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_math(fake)
        yield fake


@pytest.mark.parametrize(("first", "second", "holds"), [
    ((), ("--shard", "0/2"), "a whole run (no --shard)"),
    (("--shard", "0/2"), (), "--shard i/2 slices"),
    (("--shard", "0/2"), ("--shard", "0/3"), "--shard i/2 slices"),
])
def test_a_second_partition_on_one_out_dir_is_refused_before_any_call(server, tmp_path, first, second, holds):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, out))
    assert (done := invoke("run", str(recipe), *first)).exit_code == 0, done.output
    calls, pairs = len(server.calls), pair_count(out)

    refused = invoke("run", str(recipe), *second)
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert f"{out} holds {holds}" in text and "partition.json" in text
    assert "another output.dir" in text
    assert len(server.calls) == calls  # not one request paid for the refused run
    assert pair_count(out) == pairs  # and no row written twice


def test_slices_of_the_recorded_partition_still_go_side_by_side(server, tmp_path):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, out))
    assert invoke("run", str(recipe), "--shard", "0/2").exit_code == 0
    assert invoke("run", str(recipe), "--shard", "0/3").exit_code == 2
    assert invoke("run", str(recipe), "--shard", "1/2").exit_code == 0
    merged = invoke("merge", str(out))
    assert merged.exit_code == 0, merged.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["counts"]["pairs"] == pair_count(out)


def test_overwrite_discards_the_other_partition(server, tmp_path):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, out))
    assert invoke("run", str(recipe)).exit_code == 0
    whole = pair_count(out)
    result = invoke("run", str(recipe), "--shard", "0/1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert pair_count(out) == whole  # the whole run's rows went: only the slice's are left
    assert all(p.name.startswith("s000of001-") for p in (out / "pairs").glob("*.parquet"))


def test_a_whole_run_and_a_slice_started_at_once_do_not_both_run(tmp_path):
    with FakeLLMServer(latency=0.05) as server:
        install_math(server)
        out = tmp_path / "out"
        recipe = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, out))
        runs = [subprocess.Popen([sys.executable, "-m", "collabgen", "run", str(recipe), *args], cwd=ROOT,
                                 text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for args in ((), ("--shard", "0/2"))]
        results = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]
        keys = [call.key for call in server.ok_calls()]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(" ".join(err.split()) for code, err in results if code == 2)
    assert "holds" in refused and "partition.json" in refused
    assert len(keys) == len(set(keys))  # no request paid twice
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else None
    if manifest is not None:  # the whole run won: its manifest counts every row on disk
        assert manifest["counts"]["pairs"] == pair_count(out)


def test_merge_refuses_rows_of_another_partition(server, tmp_path):
    whole, sliced = tmp_path / "whole", tmp_path / "sliced"
    assert invoke("run", str(write_recipe(tmp_path / "a.yaml", math_recipe(server.base_url, whole)))).exit_code == 0
    recipe = write_recipe(tmp_path / "b.yaml", math_recipe(server.base_url, sliced))
    for index in range(2):
        assert invoke("run", str(recipe), "--shard", f"{index}/2").exit_code == 0
    for shard in (whole / "pairs").glob("*.parquet"):
        shutil.copy(shard, sliced / "pairs" / shard.name)  # a whole run's rows among the slices'
    refused = invoke("merge", str(sliced))
    assert refused.exit_code == 2, refused.output
    assert "holds shards no --shard i/2 slice wrote (pairs/part-00000.parquet" in " ".join(refused.output.split())
    assert not (sliced / "manifest.json").exists()  # no manifest claiming `complete` over half the rows


def test_merge_refuses_an_out_dir_recorded_as_a_whole_run(server, tmp_path):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, out))
    assert invoke("run", str(recipe)).exit_code == 0
    sliced = tmp_path / "sliced"
    assert invoke("run", str(write_recipe(tmp_path / "b.yaml", math_recipe(server.base_url, sliced))),
                  "--shard", "0/1").exit_code == 0
    shutil.copytree(sliced / ".collabgen" / "slices", out / ".collabgen" / "slices")  # a slice manifest copied in
    refused = invoke("merge", str(out))
    assert refused.exit_code == 2 and "holds a whole run (no --shard)" in " ".join(refused.output.split())
