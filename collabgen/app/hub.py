"""`collabgen push`: an out dir becomes one commit on a Hub dataset repo.

What goes up: `pairs/*.parquet`, `sft/*.parquet`, `candidates/*.parquet`, `README.md`
(the card, whose YAML `configs` make the repo loadable by config name) and
`manifest.json`. What never goes up: `.collabgen/` (journal, request cache, recipe copy),
hidden temp files of a shard being written, anything else in the folder.

The default push is ONE `create_commit`: a reader of the repo sees the old dataset or
the new one, never shards of one with the card of the other. (`upload_folder` is not
used for it: with `hf_xet` installed it commits large folders in several batches.)
Remote shards of the three configs that the new push does not have (a run that shrank,
an export with a larger min-gap) are deleted in that same commit, or `load_dataset`
would still read them. `--large` trades atomicity for resumability: `upload_folder`'s
pipelined multi-commit upload, which a re-run resumes.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collabgen.config.errors import CollabgenError
from collabgen.config.secrets import scrub, secret_values
from collabgen.output.manifest import Manifest
from collabgen.output.outdir import OutDir

SHARD_PATTERNS = [f"{config}/{OutDir.SHARD_GLOB}" for config in OutDir.CONFIGS]
ALLOW_PATTERNS = [*SHARD_PATTERNS, OutDir.CARD, OutDir.MANIFEST]
IGNORE_PATTERNS = [f"{OutDir.STATE_DIR}/*", f"{OutDir.STATE_DIR}/**", ".*", "*/.*"]
DEFAULT_TOKEN_ENV = "HF_TOKEN"


class PushError(CollabgenError):
    """Bad input to a push: no token, not a collabgen out dir, a bad repo id."""


class PushFailed(CollabgenError):
    """The Hub (or the network) refused a push that was well formed."""

    exit_code = 1


@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit_url: str | None
    commit_oid: str | None
    uploaded: list[str]
    deleted: list[str] = field(default_factory=list)


def resolve_token(token_env: str = DEFAULT_TOKEN_ENV) -> str:
    """The token from `token_env`; for the default variable also the stored `hf auth login`.

    A variable named explicitly that is unset is an error, not a silent fallback to
    whatever identity happens to be logged in.
    """
    token = (os.environ.get(token_env) or "").strip()
    if token:
        return token
    if token_env == DEFAULT_TOKEN_ENV:
        from huggingface_hub import get_token

        stored = get_token()
        if stored:
            return stored
        raise PushError(
            f"no Hugging Face token: set the {token_env} environment variable to a token with write access "
            "(https://huggingface.co/settings/tokens) or run `hf auth login` (formerly `huggingface-cli login`)"
        )
    raise PushError(f"no Hugging Face token: the environment variable {token_env} (from --token-env) is not set")


def files_to_push(out_dir: Path, manifest: Manifest) -> list[str]:
    """Relative POSIX paths of the files that make the dataset, checked against the manifest."""
    out = OutDir(out_dir)
    if not out.card_path.is_file():
        raise PushError(f"{out_dir} has no README.md (the dataset card); run `collabgen run` again to write it")
    found = sorted(
        f"{config}/{p.name}"
        for config in OutDir.CONFIGS
        if out.folder(config).is_dir()
        for p in out.folder(config).iterdir()
        if p.is_file() and _allowed(f"{config}/{p.name}")
    )
    listed = manifest.files
    if listed is not None:
        expected = sorted(p for paths in listed.values() for p in paths)
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        if missing or extra:
            detail = "; ".join(
                part
                for part in (
                    f"missing: {', '.join(missing[:5])}" if missing else "",
                    f"not in the manifest: {', '.join(extra[:5])}" if extra else "",
                )
                if part
            )
            raise PushError(
                f"{out_dir}: the shards on disk do not match manifest.json ({detail}); "
                "finish the run (`collabgen run` resumes) before pushing"
            )
    if not found:
        raise PushError(f"{out_dir} has no shards under {', '.join(OutDir.CONFIGS)}")
    return [*found, OutDir.CARD, OutDir.MANIFEST]


def _allowed(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    if name.startswith(".") or path.startswith(f"{OutDir.STATE_DIR}/"):
        return False
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in ALLOW_PATTERNS)


def _check_no_secret(out_dir: Path, manifest: Manifest, token: str, files: list[str]) -> None:
    """Refuse to push any file holding the token or a model key's value (the same values
    every writer scrubs): the card and manifest, and every shard, read as its rows (a
    compressed column would hide a key from a byte search), since a model can quote a key
    in a reply that becomes a row."""
    secrets = [s for s in {token, *secret_values(manifest.recipe)} if s]
    for name in files:
        if any(secret in _pushed_text(out_dir / name) for secret in secrets):
            raise PushError(f"refusing to push: {name} contains a token or API key value; remove it and try again")


def _pushed_text(path: Path) -> str:
    if path.suffix == ".parquet":
        import polars as pl

        return pl.read_parquet(path).write_ndjson()
    return path.read_text(encoding="utf-8", errors="replace")


def push(
    out_dir: Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token_env: str = DEFAULT_TOKEN_ENV,
    large: bool = False,
    commit_message: str | None = None,
) -> PushResult:
    """Create the dataset repo if needed and commit the out dir's dataset files to it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    manifest = Manifest.read(out_dir)
    files = files_to_push(out_dir, manifest)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PushError(f"--repo {repo_id!r}: not a valid Hub repo id, expected ORG/NAME ({err})") from None
    token = resolve_token(token_env)
    _check_no_secret(out_dir, manifest, token, files)
    counts = manifest.counts
    fingerprint = "?" if manifest.recipe_fingerprint is None else manifest.recipe_fingerprint
    message = commit_message or (
        f"collabgen push: {counts.pairs} pairs, {counts.sft} sft, "
        f"{counts.candidates} candidates (recipe {fingerprint})"
    )
    try:
        return _push(out_dir, repo_id, files, token, private, revision, large, message)
    except CollabgenError:
        raise
    except Exception as err:  # noqa: BLE001 - every Hub/network failure becomes one clear line
        raise _explain(err, token) from None


def _push(
    out_dir: Path, repo_id: str, files: list[str], token: str, private: bool, revision: str | None, large: bool,
    message: str,
) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    # HF_ENDPOINT read now, not at import time, so a stand-in Hub set late is honoured too.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    api.create_repo(repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
    branch = revision or "main"
    if branch != "main":
        api.create_branch(repo_id, repo_type="dataset", branch=branch, exist_ok=True)
    if large:
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=out_dir,
            revision=branch,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
            delete_patterns=SHARD_PATTERNS,
            commit_message=message,
        )
        return PushResult(repo_id, branch, info.commit_url, info.oid, files)
    uploading = set(files)
    stale = [
        path
        for path in _remote_files(api, repo_id, branch)
        if path not in uploading and any(fnmatch.fnmatchcase(path, p) for p in SHARD_PATTERNS)
    ]
    operations: list[Any] = [CommitOperationDelete(path_in_repo=path) for path in stale]
    operations += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(out_dir / path)) for path in files]
    info = api.create_commit(
        repo_id=repo_id, repo_type="dataset", operations=operations, commit_message=message, revision=branch
    )
    return PushResult(repo_id, branch, info.commit_url, info.oid, files, stale)


def _remote_files(api: Any, repo_id: str, branch: str) -> list[str]:
    from huggingface_hub.errors import RemoteEntryNotFoundError, RevisionNotFoundError

    try:
        return sorted(api.list_repo_files(repo_id, repo_type="dataset", revision=branch))
    except (RevisionNotFoundError, RemoteEntryNotFoundError):
        return []  # an empty repo or a new branch


def _explain(err: Exception, token: str) -> CollabgenError:
    from huggingface_hub.errors import HfHubHTTPError

    text = scrub(" ".join(str(err).split()), [token])
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        if status in (401, 403):
            return PushError(f"the Hub refused the token ({status}): use a token with write access to the repo. {text}")
        return PushFailed(f"the Hub answered {status}: {text}")
    if isinstance(err, ValueError) and "README.md" in text:
        return PushError(f"the Hub rejected the dataset card: {text}")
    return PushFailed(f"push failed ({type(err).__name__}): {text}")
