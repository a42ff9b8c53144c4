"""The out dir's layout in one place, and the one way anything in it is written.

    out/
      pairs/ sft/ candidates/      the configs: Parquet shards, `part-NNNNN.parquet`
                                   (a `--shard i/n` slice writes `sNNNofNNN-NNNNN.parquet`)
      manifest.json  README.md     the manifest and the dataset card
      .collabgen/                  state that never leaves the machine:
        recipe.json                  the fingerprint of the recipe that owns this dir
        partition.json               whole run or `--shard i/n` slices: one partition per dir
        journal.jsonl cache.sqlite   the run's journal and request cache
        lock                         held (flock) by the run writing here; its PID inside
        slices/i-of-n/               the same per slice, plus that slice's manifest.json

Run, export, inspect, push and merge all read and write this layout; when each spelled
its own paths, a new file (or a renamed one) had to be found in every one of them.

Every file is written through `collabgen.files.write_atomic` (a temp file in its own
folder renamed over the target): a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collabgen.config.errors import OutputError
from collabgen.config.secrets import scrub
from collabgen.engine.slices import Slice
from collabgen.files import write_atomic


def write_json_atomic(path: Path, data: Any, secrets: Iterable[str] = ()) -> Path:
    """Indented JSON, scrubbed of secret values after serialising (a key may hide anywhere,
    e.g. inside an error message in `failures`)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return write_atomic(path, scrub(text, secrets) + "\n")


@dataclass(frozen=True)
class SliceState:
    """Where a whole run, or one `--shard i/n` slice of it, keeps its own files: slices
    share the out dir (on a shared filesystem) and must not touch each other's files."""

    dir: Path
    shard_prefix: str

    @property
    def journal(self) -> Path:
        return self.dir / OutDir.JOURNAL

    @property
    def cache(self) -> Path:
        return self.dir / OutDir.CACHE

    @property
    def manifest(self) -> Path:
        """A slice's own manifest; `collabgen merge` joins these into the top-level one."""
        return self.dir / OutDir.MANIFEST

    @property
    def lock(self) -> Path:
        return self.dir / OutDir.LOCK


@dataclass(frozen=True)
class OutDir:
    """The files of one out dir: names are constants, every path is a property or method."""

    root: Path

    CONFIGS = ("pairs", "sft", "candidates")
    MANIFEST = "manifest.json"
    CARD = "README.md"
    STATE_DIR = ".collabgen"
    SLICES_DIR = "slices"
    JOURNAL = "journal.jsonl"
    CACHE = "cache.sqlite"
    RECIPE_STAMP = "recipe.json"
    PARTITION = "partition.json"
    LOCK = "lock"
    SHARD_PREFIX = "part"
    SHARD_GLOB = "*.parquet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest_path(self) -> Path:
        return self.root / self.MANIFEST

    @property
    def card_path(self) -> Path:
        return self.root / self.CARD

    @property
    def state_dir(self) -> Path:
        return self.root / self.STATE_DIR

    @property
    def slices_dir(self) -> Path:
        return self.state_dir / self.SLICES_DIR

    @property
    def recipe_stamp_path(self) -> Path:
        return self.state_dir / self.RECIPE_STAMP

    @property
    def partition_path(self) -> Path:
        return self.state_dir / self.PARTITION

    def folder(self, config: str) -> Path:
        if config not in self.CONFIGS:
            raise ValueError(f"unknown config {config!r}; expected one of {', '.join(self.CONFIGS)}")
        return self.root / config

    def shards(self, config: str) -> list[Path]:
        """The config's shards in name order (which is write order within one prefix)."""
        return sorted(self.folder(config).glob(self.SHARD_GLOB))

    def relative(self, path: Path) -> str:
        """A path as the manifest and the card list it: relative to the out dir, never local."""
        return str(path.relative_to(self.root))

    def state(self, part: Slice | None = None) -> SliceState:
        if part is None:
            return SliceState(self.state_dir, self.SHARD_PREFIX)
        name, prefix = f"{part.index}-of-{part.count}", f"s{part.index:03d}of{part.count:03d}"
        return SliceState(self.slices_dir / name, prefix)

    def slice_manifests(self) -> list[Path]:
        return sorted(self.slices_dir.glob(f"*/{self.MANIFEST}"))

    def journals(self) -> list[Path]:
        """The journal of the whole run and of every slice, those that exist."""
        found = [self.state().journal, *sorted(self.slices_dir.glob(f"*/{self.JOURNAL}"))]
        return [path for path in found if path.is_file()]

    def check_usable(self, state: SliceState) -> None:
        """Refuse, before any call, an out dir this run could not finish writing: a file
        where a folder should be, or anything it writes that is read-only or immutable
        (`chattr +i`). Creates the root and the state dir. An `OutputError` names the path."""
        for folder in self._ancestors_to_create(self.root):
            if folder.exists() and not folder.is_dir():
                raise OutputError(f"{folder} is a file, not a folder; set output.dir to a folder")
        try:
            state.dir.mkdir(parents=True, exist_ok=True)
            folders = [self.root, self.state_dir, state.dir,
                       *(self.folder(c) for c in self.CONFIGS if self.folder(c).is_dir())]
            for folder in folders:
                _probe_folder(folder)
            cache = state.cache
            for path in (state.journal, state.lock, state.manifest, cache, self.manifest_path, self.card_path,
                         cache.with_name(cache.name + "-wal"), cache.with_name(cache.name + "-shm")):
                if path.is_file():
                    path.open("ab").close()  # opens for writing, changes nothing
        except OSError as err:
            if err.errno not in _UNWRITABLE:
                raise
            raise OutputError(f"cannot write to the out dir: {err.filename or self.root}: {err.strerror}; "
                              "make it writable (an immutable file or folder: chattr -i) or set another "
                              "output.dir") from None

    @staticmethod
    def _ancestors_to_create(root: Path) -> list[Path]:
        """`root` and its parents, up to the first that exists."""
        chain = [root]
        while not chain[-1].exists() and chain[-1].parent != chain[-1]:
            chain.append(chain[-1].parent)
        return chain

    def stamped_fingerprint(self) -> str | None:
        """The fingerprint of the recipe that owns this dir (None: a stamp without one)."""
        return json.loads(self.recipe_stamp_path.read_text(encoding="utf-8")).get("fingerprint")

    def stamped_semantic(self) -> dict[str, Any] | None:
        """What the owning recipe's fingerprint hashes (None for stamps written before it was kept)."""
        return json.loads(self.recipe_stamp_path.read_text(encoding="utf-8")).get("semantic")

    def stamp_recipe(self, fingerprint: str, semantic: dict[str, Any] | None = None) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        stamp = {"fingerprint": fingerprint, **({"semantic": semantic} if semantic is not None else {})}
        return write_atomic(self.recipe_stamp_path, json.dumps(stamp) + "\n")

    def discard(self) -> None:
        """Drop the dataset, the journals, the slices' manifests, the stamp and the partition
        record. Request caches stay: requests are keyed by content, so a fresh run of any
        recipe replays them correctly."""
        for config in self.CONFIGS:
            shutil.rmtree(self.folder(config), ignore_errors=True)
        whole_run = self.state()
        for path in (self.manifest_path, self.card_path, whole_run.journal, self.recipe_stamp_path,
                     whole_run.manifest, self.partition_path):
            path.unlink(missing_ok=True)
        for leftover in (*self.slices_dir.glob(f"*/{self.JOURNAL}"), *self.slice_manifests()):
            leftover.unlink()



_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC, errno.EDQUOT}


def _probe_folder(folder: Path) -> None:
    """Create and delete a file in `folder`: the one sure test that it takes new files
    (root bypasses permission bits, but not `chattr +i` or a read-only mount)."""
    probe = folder / f".collabgen-probe.{os.getpid()}"
    probe.open("wb").close()
    probe.unlink()
