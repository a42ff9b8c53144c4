"""A full disk stops the run with "no space left on <out dir>", exit 3 and no traceback,
wherever it strikes (the request cache's sqlite, a journal append, a shard writer at
finalize); once space is freed the same command resumes to the rows of an uninterrupted run.

The end-to-end tests put the out dir on a tmpfs of a few hundred KiB, which needs root and
a kernel that lets this container mount one; elsewhere they skip, saying so.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from collabgen.output import diskspace
from collabgen.output.diskspace import is_out_of_space
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import install_math

ROOT = Path(__file__).resolve().parent.parent


def test_out_of_space_is_recognised_in_every_voice(tmp_path, monkeypatch):
    assert is_out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_out_of_space(sqlite3.OperationalError("database or disk is full"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("shard writer failed") from inner
    except RuntimeError as chained:
        assert is_out_of_space(chained)
    for other in (ValueError("bad"), OSError(errno.EACCES, "Permission denied"), sqlite3.OperationalError("locked")):
        assert not is_out_of_space(other, tmp_path)
    # A vaguer I/O error counts only when the out dir's disk is (nearly) full.
    vague = sqlite3.OperationalError("disk I/O error")
    assert not is_out_of_space(vague, tmp_path)
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 4096)
    assert is_out_of_space(vague, tmp_path) and is_out_of_space(pl.exceptions.ComputeError("Invalid thrift"), tmp_path)
    assert not is_out_of_space(ValueError("a bug"), tmp_path)


def _can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode:
        return False
    subprocess.run(["umount", str(where)], check=True)
    return True


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    if not _can_mount_tmpfs(mount):
        pytest.skip("needs root and permission to mount a tmpfs")

    def sized(size: str, remount: bool = False) -> Path:
        options = f"remount,size={size}" if remount else f"size={size}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
        return mount

    yield sized
    subprocess.run(["umount", str(mount)], capture_output=True)


def _run(recipe: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "collabgen", "run", str(recipe)], capture_output=True, text=True,
                          env=env, timeout=300)


def _rows(out: Path, folder: str) -> list[dict]:
    frame = pl.concat([pl.read_parquet(p) for p in sorted((out / folder).glob("*.parquet"))])
    return sorted(frame.drop([c for c in frame.columns if "elapsed" in c], strict=False).to_dicts(), key=repr)


def _says_no_space(result: subprocess.CompletedProcess[str], out: Path) -> None:
    assert result.returncode == 3, result.stderr
    assert f"no space left on {out}" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr


def test_a_disk_full_mid_run_stops_naming_the_out_dir_and_resumes_to_the_same_rows(tmp_path, small_disk):
    with FakeLLMServer() as server:
        install_math(server)
        reference = math_recipe(server.base_url, tmp_path / "reference", **{"task.limit": 6})
        assert _run(write_recipe(tmp_path / "reference.yaml", reference)).returncode == 0
        disk = small_disk("200k")
        out = disk / "out"
        recipe = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, out, **{"task.limit": 6}))
        _says_no_space(_run(recipe), out)
        small_disk("16m", remount=True)
        resumed = _run(recipe)
    assert resumed.returncode == 0, resumed.stderr
    for folder in ("pairs", "sft", "candidates"):
        assert _rows(out, folder) == _rows(tmp_path / "reference", folder)


def test_a_disk_full_at_finalize_stops_naming_the_out_dir_and_writes_once_freed(tmp_path, small_disk):
    with FakeLLMServer() as server:
        install_math(server)
        disk = small_disk("16m")
        out = disk / "out"
        recipe = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, out, **{"task.limit": 6}))
        assert _run(recipe).returncode == 0
        expected = _rows(out, "pairs")
        for written in out.iterdir():  # keep the journal: the rerun only finalizes
            if written.name != ".collabgen":
                shutil.rmtree(written) if written.is_dir() else written.unlink()
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 8192))  # less than the shards need
        paid = len(server.calls)
        _says_no_space(_run(recipe), out)
        filler.unlink()
        freed = _run(recipe)
        assert len(server.calls) == paid  # finishing asked the servers nothing
    assert freed.returncode == 0, freed.stderr
    assert _rows(out, "pairs") == expected and (out / "manifest.json").exists()
