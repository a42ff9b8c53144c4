"""The out dir's layout (`OutDir`), its one atomic writer, and the typed `Manifest`.

Run, export, inspect, push and merge rely on these for every path and every read of
manifest.json, so they are pinned here on their own: a path that moves or a manifest key
that stops round-tripping fails one small test, not a distant end-to-end one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.errors import CollabgenError
from collabgen.config.recipe import Recipe
from collabgen.config.secrets import scrub, secret_values
from collabgen.engine.slices import Slice
from collabgen.files import write_atomic
from collabgen.output.manifest import Manifest
from collabgen.output.outdir import OutDir, write_json_atomic
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import install_math


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- layout


def test_paths_of_the_dataset_files(tmp_path):
    out = OutDir(tmp_path)
    assert OutDir.CONFIGS == ("pairs", "sft", "candidates")
    assert out.manifest_path == tmp_path / "manifest.json"
    assert out.card_path == tmp_path / "README.md"
    assert out.folder("pairs") == tmp_path / "pairs"
    with pytest.raises(ValueError, match="unknown config"):
        out.folder("eval")
    assert out.shards("sft") == []
    (tmp_path / "sft").mkdir()
    for name in ("part-00001.parquet", "part-00000.parquet", "notes.txt"):
        (tmp_path / "sft" / name).write_bytes(b"x")
    assert [p.name for p in out.shards("sft")] == ["part-00000.parquet", "part-00001.parquet"]
    assert out.relative(out.shards("sft")[0]) == "sft/part-00000.parquet"
    assert OutDir(str(tmp_path)) == out


def test_state_of_the_whole_run_and_of_a_slice(tmp_path):
    out = OutDir(tmp_path)
    whole = out.state()
    assert whole.dir == tmp_path / ".collabgen" == out.state_dir
    assert (whole.journal, whole.cache, whole.manifest) == (
        tmp_path / ".collabgen" / "journal.jsonl", tmp_path / ".collabgen" / "cache.sqlite",
        tmp_path / ".collabgen" / "manifest.json",
    )
    assert whole.shard_prefix == "part"
    part = out.state(Slice(1, 4))
    assert part.dir == tmp_path / ".collabgen" / "slices" / "1-of-4"
    assert part.journal == part.dir / "journal.jsonl" and part.cache == part.dir / "cache.sqlite"
    assert part.shard_prefix == "s001of004"
    assert out.recipe_stamp_path == tmp_path / ".collabgen" / "recipe.json"
    part.dir.mkdir(parents=True)
    part.manifest.write_text("{}")
    assert out.slice_manifests() == [part.manifest]


def test_recipe_stamp_round_trip(tmp_path):
    out = OutDir(tmp_path / "out")
    out.stamp_recipe("abc123")
    assert out.stamped_fingerprint() == "abc123"
    assert out.recipe_stamp_path.read_text() == '{"fingerprint": "abc123"}\n'
    assert leftovers(tmp_path) == []


def test_discard_drops_the_dataset_and_journals_but_keeps_request_caches(tmp_path):
    out = OutDir(tmp_path)
    part = out.state(Slice(0, 2))
    keep = [out.state().cache, part.cache]
    drop = [out.manifest_path, out.card_path, out.state().journal, out.state().manifest, out.recipe_stamp_path,
            part.journal, *(out.folder(c) / "part-00000.parquet" for c in OutDir.CONFIGS)]
    for path in keep + drop:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    out.discard()
    assert [p for p in drop if p.exists()] == []
    assert not any(out.folder(c).exists() for c in OutDir.CONFIGS)
    assert all(p.exists() for p in keep)
    out.discard()  # nothing left to drop is not an error


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_of_bytes_text_and_json_leaves_no_temp_file(tmp_path):
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "a.txt", "héllo")
    write_json_atomic(tmp_path / "a.json", {"key": "sk-secret-value", "n": 1}, ["sk-secret-value"])
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "a.json").read_text()) == {"key": "***", "n": 1}
    assert (tmp_path / "a.json").read_text().endswith("}\n")
    assert leftovers(tmp_path) == []


def test_a_failed_write_never_leaves_a_half_file(tmp_path):
    target = tmp_path / "shard.parquet"
    target.write_text("old, complete")

    def crash_midway(temp: Path) -> None:
        temp.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, crash_midway)
    assert target.read_text() == "old, complete"
    assert leftovers(tmp_path) == []
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing-folder" / "x.json", "{}")
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- secrets


def test_one_secret_list_from_a_recipe_or_its_dump(tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MY_POLICY_KEY", "pk-1234")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdef")
    monkeypatch.setenv("OPENAI_API_KEY", "abc")  # shorter than 4: masking it would mangle text
    data = math_recipe("http://127.0.0.1:9/v1", tmp_path / "out", **{"models.policy.api_key_env": "MY_POLICY_KEY"})
    recipe = Recipe.from_dict(data)
    assert secret_values(recipe) == secret_values(recipe.public_dump()) == ["hf_abcdef", "pk-1234"]
    assert scrub("key pk-1234, token hf_abcdef, abc", secret_values(recipe)) == "key ***, token ***, abc"


# --------------------------------------------------------------------------- the manifest


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One whole run, and the same recipe as two slices merged."""
    base = tmp_path_factory.mktemp("runs")
    with FakeLLMServer() as server:
        install_math(server)
        whole = write_recipe(base / "whole.yaml", math_recipe(server.base_url, base / "whole"))
        assert CliRunner().invoke(app, ["run", str(whole)]).exit_code == 0
        sliced = write_recipe(base / "sliced.yaml", math_recipe(server.base_url, base / "sliced"))
        for i in range(2):
            assert CliRunner().invoke(app, ["run", str(sliced), "--shard", f"{i}/2"]).exit_code == 0
        assert CliRunner().invoke(app, ["merge", str(base / "sliced")]).exit_code == 0
    return {"whole": base / "whole", "sliced": base / "sliced"}


@pytest.mark.parametrize("which", ["whole", "slice", "merged"])
def test_manifest_round_trips_byte_for_byte(runs, which, tmp_path):
    path = {
        "whole": OutDir(runs["whole"]).manifest_path,
        "slice": OutDir(runs["sliced"]).state(Slice(1, 2)).manifest,
        "merged": OutDir(runs["sliced"]).manifest_path,
    }[which]
    manifest = Manifest.load(path)
    copy = manifest.write(tmp_path / "manifest.json", [])
    assert copy.read_bytes() == path.read_bytes()
    assert Manifest.load(copy) == manifest


def test_manifest_is_typed(runs):
    manifest = Manifest.read(runs["whole"])
    assert manifest.counts.conversations_ok == 6 and manifest.counts.rows("pairs") == manifest.counts.pairs
    assert manifest.usage.by_role["policy"].calls > 0
    assert manifest.this_run.elapsed_seconds >= 0 and manifest.slices is None and manifest.slice is None
    assert manifest.recipe_view.generation.min_gap == 0.02
    assert manifest.files["pairs"] == [OutDir(runs["whole"]).relative(p) for p in OutDir(runs["whole"]).shards("pairs")]
    merged = Manifest.read(runs["sliced"])
    assert (merged.slices.count, merged.slices.present, merged.slices.missing) == (2, [0, 1], [])
    assert merged.this_run is None and merged.counts == manifest.counts
    assert Manifest.load(OutDir(runs["sliced"]).state(Slice(0, 2)).manifest).slice == "0/2"


def test_an_older_manifest_with_missing_and_unknown_keys_loads_and_writes_back_as_it_was(runs, tmp_path):
    data = json.loads(OutDir(runs["whole"]).manifest_path.read_text())
    del data["this_run"]["prefix_share"], data["cost_usd"], data["versions"]
    data["notes"] = {"by": "an older collabgen"}
    data["counts"]["rejected_turns"] = 3
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    manifest = Manifest.load(old)
    assert manifest.cost_usd is None and manifest.this_run.prefix_share == {} and manifest.versions == {}
    assert manifest.to_dict() == data


def test_manifest_read_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(CollabgenError, match="no such directory"):
        Manifest.read(tmp_path / "absent")
    with pytest.raises(CollabgenError, match="is not a collabgen output: it has no manifest.json"):
        Manifest.read(tmp_path)
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(CollabgenError, match="not valid JSON"):
        Manifest.read(tmp_path)
    path.write_text('{"task": "math"}')
    with pytest.raises(CollabgenError, match=r"not a collabgen manifest \(no counts\)"):
        Manifest.read(tmp_path)
    path.write_text('{"counts": {"pairs": "many"}}')
    with pytest.raises(CollabgenError, match="not a collabgen manifest"):
        Manifest.read(tmp_path)


def test_one_of_racing_creators_wins_and_the_loser_reads_the_winner(tmp_path):
    from collabgen.files import create_exclusive

    target = tmp_path / "partition.json"
    assert create_exclusive(target, '{"first": true}')
    assert not create_exclusive(target, '{"second": true}')
    assert target.read_text() == '{"first": true}' and leftovers(tmp_path) == []
