"""What model code can see of the host: the system directories and its interpreter, nothing else.

Why: with ``--ro-bind / /`` every file the invoking user could read was readable by model
code too: ``~/.cache/huggingface/token``, ``~/.ssh/id_rsa``, other projects and out dirs. As a
non-root user bubblewrap runs the code as that very user, so only what the sandbox does not
mount is safe. These files are made world-readable on purpose: that is what the invoking
user's own files are to code running as that user.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox_helpers import FAST, sandbox_for

PROBE = """\
import json, os
found = {}
for path in PATHS:
    try:
        with open(path) as f:
            found[path] = f.read()
    except OSError as exc:
        found[path] = type(exc).__name__
print(json.dumps({"found": found, "top": sorted(os.listdir("/"))}))
"""


@pytest.fixture()
def user_home() -> Iterator[Path]:
    """A home directory outside /tmp (which the sandbox replaces anyway), readable by anyone."""
    top = Path(tempfile.mkdtemp(prefix="collabgen-home-", dir="/var/tmp"))
    os.chmod(top, 0o755)
    for name, text in ((".cache/huggingface/token", "hf_secretTOKENvalue123"), (".ssh/id_rsa", "-----BEGIN KEY-----")):
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
        for parent in path.relative_to(top).parents:
            os.chmod(top / parent, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


async def test_model_code_cannot_read_the_users_home_or_other_host_files(user_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(user_home))
    repo_file = str(Path(__file__).resolve())  # the project itself (and out dirs beside it)
    paths = [str(user_home / ".cache/huggingface/token"), str(user_home / ".ssh/id_rsa"), repo_file, "/etc/hostname"]
    sandbox = sandbox_for("bwrap", FAST)
    result = await sandbox.run_python({"main.py": f"PATHS = {paths!r}\n" + PROBE}, "main.py")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for secret in paths[:3]:
        assert seen["found"][secret] == "FileNotFoundError", seen["found"]
    allowed = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp"}
    interpreter_tops = {Path(p).parts[1] for p in (os.path.realpath(sys.base_prefix), sys.prefix)}
    assert set(seen["top"]) <= allowed | interpreter_tops, seen["top"]


async def test_the_interpreters_home_directory_shows_only_the_interpreter(user_home: Path) -> None:
    """A pyenv under /root is bound back alone: the rest of root's home stays hidden."""
    base = Path(os.path.realpath(sys.base_prefix))
    home = Path("/", base.parts[1])
    if home in (Path("/usr"), Path("/opt")) or len(base.parts) < 3:
        pytest.skip("the interpreter is not installed under a home-like directory here")
    sandbox = sandbox_for("bwrap", FAST)
    code = f"import os, json\nprint(json.dumps(sorted(os.listdir({str(home)!r}))))\n"
    result = await sandbox.run_python({"main.py": code}, "main.py")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [base.parts[2]]


def test_text_the_code_chose_is_bounded_and_printable_before_it_is_logged() -> None:
    from collabgen.sandbox.verdict import bounded_text

    hostile = "\x1b[2J" + "x" * 5000
    shown = bounded_text(hostile)
    assert len(shown) <= 200 and "\x1b" not in shown and shown.endswith("...")
    assert bounded_text("ok reason") == "ok reason"
