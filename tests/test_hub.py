"""`collabgen push` against a stand-in Hub: a local HTTP server speaking the endpoints
huggingface_hub calls for a dataset commit (repo create, YAML check, preupload, LFS batch
and upload, tree listing, branch, NDJSON commit). The real client runs in a subprocess
with HF_ENDPOINT pointed at it: nothing is mocked on our side of the socket.

hf_xet is switched off (HF_HUB_DISABLE_XET=1) because its storage protocol has no
stand-in here; shards then travel by the classic LFS "basic" transfer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer
from tests.helpers import datasets_warnings, math_recipe, write_recipe
from tests.scripts import install_math

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_standin_write_token_0123456789"
MODEL_KEY = "sk-collabgen-test-secret-abcdef"


# --------------------------------------------------------------------------- stand-in Hub


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Commit:
    repo: str
    revision: str
    summary: str
    added: dict[str, bytes]
    deleted: list[str]
    lfs_paths: list[str]


@dataclass
class Repo:
    type: str
    private: bool | None
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})


class StandInHub:
    """Just enough of the Hub's HTTP API for create_repo + create_commit/upload_folder."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.requests: list[Request] = []
        self.repos: dict[str, Repo] = {}
        self.commits: list[Commit] = []
        self.lfs: dict[str, bytes] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo].branches[revision]

    # -- request handling

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with hub._lock:
                    hub.requests.append(request)
                    try:
                        status, payload, headers = hub.route(request)
                    except Exception as err:  # noqa: BLE001 - surfaces in the test as hub.errors
                        hub.errors.append(f"{self.command} {self.path}: {err!r}")
                        status, payload, headers = 500, {"error": repr(err)}, {}
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

        return Handler

    def route(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        path = unquote(urlparse(req.path).path)
        if req.method == "PUT" and path.startswith("/lfs-upload/"):
            oid = path.rsplit("/", 1)[-1]
            if hashlib.sha256(req.body).hexdigest() != oid:
                return 400, {"error": "sha256 mismatch"}, {}
            self.lfs[oid] = req.body
            return 200, b"", {}
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}, {}
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            spec = json.loads(req.body)
            repo = f"{spec['organization']}/{spec['name']}"
            if repo in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": f"{self.url}/datasets/{repo}"}, {}
            self.repos[repo] = Repo(type=spec.get("type", "model"), private=spec.get("visibility") == "private")
            return 200, {"url": f"{self.url}/datasets/{repo}", "name": repo}, {}
        if path == "/api/validate-yaml":
            content = json.loads(req.body)["content"]
            front = content.split("---", 2)[1] if content.startswith("---") else ""
            meta = yaml.safe_load(front) or {}
            names = [c.get("config_name") for c in meta.get("configs", [])]
            if names != ["pairs", "sft", "candidates"]:
                return 400, {"errors": [{"message": f"configs: {names}"}], "warnings": []}, {}
            return 200, {"errors": [], "warnings": []}, {}
        if path.endswith(".git/info/lfs/objects/batch"):
            spec = json.loads(req.body)
            objects = []
            for obj in spec["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in self.lfs:
                    entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
                objects.append(entry)
            return 200, {"transfer": "basic", "objects": objects}, {}
        if parts[:2] == ["api", "datasets"] and len(parts) >= 6:
            repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
            repo = self.repos.get(repo_id)
            if repo is None:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            if action == "branch":
                if revision in repo.branches:
                    return 409, {"error": "branch exists"}, {}
                repo.branches[revision] = dict(repo.branches["main"])
                return 200, {}, {}
            if revision not in repo.branches:
                return 404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}
            files = repo.branches[revision]
            if action == "preupload":
                spec = json.loads(req.body)
                modes = [
                    {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular",
                     "shouldIgnore": False, "oid": None}
                    for f in spec["files"]
                ]
                return 200, {"files": modes}, {}
            if action == "tree" and req.method == "GET":
                listing = [
                    {"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for p, data in sorted(files.items())
                ]
                return 200, listing, {}
            if action == "commit":
                return self._commit(repo_id, revision, files, req)
        return 404, {"error": f"no stand-in for {req.method} {path}"}, {}

    def _commit(self, repo_id: str, revision: str, files: dict[str, bytes], req: Request) -> tuple[int, Any, dict]:
        assert req.headers.get("content-type") == "application/x-ndjson"
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        assert lines[0]["key"] == "header"
        commit = Commit(repo_id, revision, lines[0]["value"]["summary"], {}, [], [])
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                commit.added[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {value['oid']} was never uploaded"}, {}
                commit.added[value["path"]] = self.lfs[value["oid"]]
                commit.lfs_paths.append(value["path"])
            elif line["key"] == "deletedFile":
                if value["path"] not in files:
                    return 404, {"error": "A file with this name doesn't exist"}, {"X-Error-Code": "EntryNotFound"}
                commit.deleted.append(value["path"])
            else:
                return 400, {"error": f"unexpected commit line {line['key']}"}, {}
        for path in commit.deleted:
            del files[path]
        files.update(commit.added)
        self.commits.append(commit)
        oid = hashlib.sha1(repr(len(self.commits)).encode()).hexdigest()
        return 200, {"commitUrl": f"{self.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid,
                     "pullRequestUrl": None}, {}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    """One real `collabgen run` on math seeds; its model key lives in an env variable."""
    base = tmp_path_factory.mktemp("run")
    out = base / "out"
    previous = os.environ.get("COLLABGEN_TEST_KEY")
    os.environ["COLLABGEN_TEST_KEY"] = MODEL_KEY
    try:
        with FakeLLMServer() as server:
            install_math(server)
            recipe = math_recipe(server.base_url, out)
            for role in recipe["models"].values():
                role["api_key_env"] = "COLLABGEN_TEST_KEY"
            result = CliRunner().invoke(app, ["run", str(write_recipe(base / "math.yaml", recipe))])
            assert result.exit_code == 0, result.output
    finally:
        if previous is None:
            os.environ.pop("COLLABGEN_TEST_KEY", None)
        else:
            os.environ["COLLABGEN_TEST_KEY"] = previous
    assert (out / ".collabgen" / "journal.jsonl").is_file()
    return out


@pytest.fixture
def out(made_run, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(made_run, copy)
    return copy


@pytest.fixture
def hub():
    with StandInHub() as stand_in:
        yield stand_in
    assert stand_in.errors == []


def push(hub: StandInHub, *args: str, token: str | None = TOKEN, home: Path, **env: str):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    environment.update(
        HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1,localhost", COLLABGEN_TEST_KEY=MODEL_KEY, **env,
    )
    if token is not None:
        environment["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "collabgen", "push", *args], cwd=ROOT, env=environment,
        capture_output=True, text=True, timeout=120,
    )


def expected_files(out: Path) -> set[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {p for paths in manifest["files"].values() for p in paths} | {"README.md", "manifest.json"}


# --------------------------------------------------------------------------- tests


def test_push_uploads_shards_card_and_manifest_in_one_commit_without_state_or_secrets(out, hub, tmp_path):
    result = push(hub, str(out), "--repo", "collab-org/math-collab", "--private", home=tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert hub.errors == []

    repo = hub.repos["collab-org/math-collab"]
    assert repo.type == "dataset" and repo.private is True
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert set(commit.added) == expected_files(out)
    assert not any(p.startswith(".collabgen") or "/." in p or p.startswith(".") for p in commit.added)
    for path, data in commit.added.items():
        assert data == (out / path).read_bytes(), path
    assert sorted(commit.lfs_paths) == sorted(p for p in commit.added if p.endswith(".parquet"))
    assert "pairs" in commit.summary and "collabgen push" in commit.summary

    # The token travels only in the Authorization header; the model key travels nowhere.
    for request in hub.requests:
        assert TOKEN.encode() not in request.body
        assert MODEL_KEY.encode() not in request.body
        assert not any(MODEL_KEY in v for v in request.headers.values())
        other_headers = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert not any(TOKEN in v for v in other_headers.values())
    assert TOKEN not in result.stdout + result.stderr
    assert "collab-org/math-collab" in result.stdout

    # What landed on the stand-in Hub loads by config name, as from the real Hub.
    mirror = tmp_path / "mirror"
    for path, data in hub.files("collab-org/math-collab").items():
        (mirror / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path).write_bytes(data)
    manifest = json.loads((out / "manifest.json").read_text())
    for config in ("pairs", "sft", "candidates"):
        with datasets_warnings() as warnings:
            loaded = datasets.load_dataset(str(mirror), config, split="train", cache_dir=str(tmp_path / "cache"))
        assert warnings == [], warnings  # the card's dataset_info is read whole
        assert len(loaded) == manifest["counts"][config], config


def test_second_push_deletes_stale_shards_in_the_same_single_commit(out, hub, tmp_path):
    home = tmp_path / "hf"
    assert push(hub, str(out), "--repo", "org/data", home=home).returncode == 0
    old_pairs = {p for p in hub.files("org/data") if p.startswith("pairs/")}
    assert len(old_pairs) >= 2
    # A stricter selection leaves fewer pairs shards on disk.
    exported = CliRunner().invoke(app, ["export", str(out), "--min-gap", "1000"])
    assert exported.exit_code == 0, exported.output
    result = push(hub, str(out), "--repo", "org/data", home=home)
    assert result.returncode == 0, result.stderr
    assert len(hub.commits) == 2
    second = hub.commits[1]
    assert set(second.deleted) == old_pairs - {"pairs/part-00000.parquet"}
    assert {p for p in hub.files("org/data") if p.startswith("pairs/")} == {"pairs/part-00000.parquet"}
    assert set(hub.files("org/data")) == expected_files(out)


def test_push_to_a_branch_creates_it_and_leaves_main_alone(out, hub, tmp_path):
    home = tmp_path / "hf"
    result = push(hub, str(out), "--repo", "org/data", "--revision", "v2", home=home)
    assert result.returncode == 0, result.stderr
    assert hub.files("org/data", "main") == {}
    assert set(hub.files("org/data", "v2")) == expected_files(out)
    assert [c.revision for c in hub.commits] == ["v2"]
    assert hub.repos["org/data"].private is False


def test_push_large_goes_through_upload_folder_with_the_same_files(out, hub, tmp_path):
    (out / "notes.txt").write_text("not part of the dataset")
    result = push(hub, str(out), "--repo", "org/big", "--large", home=tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    uploaded = set().union(*(c.added for c in hub.commits))
    assert uploaded == expected_files(out)


def test_push_without_a_token_exits_2_and_names_hf_token(out, hub, tmp_path):
    result = push(hub, str(out), "--repo", "org/data", token=None, home=tmp_path / "empty-hf-home")
    assert result.returncode == 2
    assert "HF_TOKEN" in result.stderr and "hf auth login" in result.stderr
    assert "Traceback" not in result.stderr
    assert hub.requests == []


def test_push_with_an_unset_token_env_names_that_variable(out, hub, tmp_path):
    result = push(hub, str(out), "--repo", "org/data", "--token-env", "MY_HUB_TOKEN", home=tmp_path / "hf")
    assert result.returncode == 2
    assert "MY_HUB_TOKEN" in result.stderr and "Traceback" not in result.stderr
    assert hub.requests == []


def test_push_with_a_token_the_hub_refuses_exits_2_without_echoing_it(out, hub, tmp_path):
    wrong = "hf_wrong_token_9876543210"
    result = push(hub, str(out), "--repo", "org/data", token=wrong, home=tmp_path / "hf")
    assert result.returncode == 2
    assert "401" in result.stderr and "Traceback" not in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert hub.commits == []


def test_push_of_a_folder_that_is_not_a_collabgen_output_exits_2(hub, tmp_path):
    folder = tmp_path / "random"
    (folder / "pairs").mkdir(parents=True)
    (folder / "README.md").write_text("# hi")
    result = push(hub, str(folder), "--repo", "org/data", home=tmp_path / "hf")
    assert result.returncode == 2
    assert "manifest.json" in result.stderr and "not a collabgen output" in result.stderr
    assert "Traceback" not in result.stderr
    assert hub.requests == []


def test_push_refuses_a_card_that_holds_the_token(out, hub, tmp_path):
    card = out / "README.md"
    card.write_text(card.read_text() + f"\ntoken: {TOKEN}\n")
    result = push(hub, str(out), "--repo", "org/data", home=tmp_path / "hf")
    assert result.returncode == 2
    assert "refusing to push" in result.stderr and TOKEN not in result.stderr
    assert hub.requests == []


def test_push_refuses_an_out_dir_whose_shards_do_not_match_the_manifest(out, hub, tmp_path):
    next(iter(sorted((out / "candidates").glob("*.parquet")))).unlink()
    result = push(hub, str(out), "--repo", "org/data", home=tmp_path / "hf")
    assert result.returncode == 2
    assert "do not match manifest.json" in result.stderr
    assert hub.requests == []


def test_push_refuses_a_shard_whose_rows_quote_a_key(out, hub, tmp_path):
    import polars as pl

    # A model that quotes the key in a reply puts it in a row (a compressed page would hide
    # it from a byte search: the check reads the rows).
    shard = sorted((out / "sft").glob("*.parquet"))[0]
    frame = pl.read_parquet(shard)
    frame = frame.with_columns(pl.lit(f"the key is {MODEL_KEY}").alias("task"))
    frame.write_parquet(shard, compression="zstd")
    result = push(hub, str(out), "--repo", "collab-org/math-collab", home=tmp_path / "hf")
    assert result.returncode != 0
    relative = shard.relative_to(out).as_posix()
    assert f"refusing to push: {relative} contains a token or API key value" in " ".join(result.stderr.split())
    assert hub.commits == []
