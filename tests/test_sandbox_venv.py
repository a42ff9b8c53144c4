"""The sandbox works wherever the user's interpreter lives.

Why: bubblewrap mounts a fresh /tmp, and a venv there used to vanish from inside the
sandbox; a venv two levels under /tmp then came back behind a parent bubblewrap made
``0700 root``; a venv in a ``mkdtemp`` directory, or a base interpreter under a closed home
directory (pyenv), could not be reached by the sandbox's private uid at all. These tests
build those layouts on purpose (so no machine passes by the luck of where its Python is)
and drive the sandbox from the venv's interpreter in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


PROBE = """\
import asyncio, sys, warnings
from collabgen.sandbox import Sandbox, SandboxLimits

TESTS = '''
import unittest
from solution import task_func

class TestCases(unittest.TestCase):
    def test_small(self):
        self.assertEqual(task_func(1, 2), 3)
'''

async def main() -> None:
    warnings.simplefilter("ignore")
    print("executable", sys.executable, sys.prefix)
    for sandbox in (Sandbox(), Sandbox(SandboxLimits(allow_unisolated=True), use_bwrap=False)):
        await sandbox.canary()
        right = await sandbox.run_unittests("def task_func(a, b):\\n    return a + b\\n", TESTS)
        wrong = await sandbox.run_unittests("def task_func(a, b):\\n    return 0\\n", TESTS)
        spawned = await sandbox.run_python({"main.py": "import subprocess, sys\\n"
            "print(subprocess.run([sys.executable, '-c', 'import sys; print(sys.prefix)'], capture_output=True, text=True).stdout)"}, "main.py")
        print(sandbox.isolation, right.passed, right.total, wrong.passed, "child-prefix", spawned.stdout.strip(), spawned.stderr[-300:])

asyncio.run(main())
"""


def make_venv(venv: Path) -> Path:
    """A venv that sees every package this interpreter sees, even when this one is itself a venv.

    Why the ``.pth``: ``--system-site-packages`` only reaches the *base* installation, so
    a pytest run from a venv would lose its own packages (pytest-asyncio, ...) in the inner
    one. The sandbox must then bind these chained directories too (they are on the child's
    ``sys.path``): that is part of what is tested.
    """
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    inner = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    Path(inner, "collabgen-outer.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    return venv


@pytest.fixture(scope="module")
def closed_dir() -> Iterator[Path]:
    """A 0700 directory nested two levels under /tmp (what ``mkdtemp`` gives, and what
    bubblewrap used to recreate closed inside the sandbox)."""
    top = Path(tempfile.mkdtemp(prefix="collabgen-test-"))
    closed = top / "private"
    closed.mkdir(mode=0o700)
    os.chmod(top, 0o700)
    try:
        yield closed
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def tmp_venv(closed_dir: Path) -> Path:
    return make_venv(closed_dir / "venv")


def in_venv(venv: Path, *args: str, timeout: float, python: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VIRTUAL_ENV", None)
    exe = python if python is not None else venv / "bin" / "python"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_the_venv_layout_is_really_closed(tmp_venv: Path) -> None:
    """Guards the other tests: the venv is two levels under /tmp behind 0700 directories."""
    assert tmp_venv.parent.stat().st_mode & 0o777 == 0o700
    assert tmp_venv.parent.parent.stat().st_mode & 0o777 == 0o700
    assert tmp_venv.parent.parent.parent == Path("/tmp") or str(tmp_venv).startswith(tempfile.gettempdir())


def test_a_venv_behind_closed_directories_runs_canary_tests_and_subprocesses_in_both_isolations(tmp_venv: Path) -> None:
    done = in_venv(tmp_venv, "-c", PROBE, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[2] == str(tmp_venv)  # really the venv's interpreter
    for isolation, line in zip(("bwrap", "rlimits"), lines[1:]):
        assert line.startswith(f"{isolation} 1 1 0 child-prefix {tmp_venv}"), line


def test_a_venv_reached_through_a_symlink_runs_in_the_sandbox(tmp_venv: Path, closed_dir: Path) -> None:
    link = closed_dir / "linked-venv"
    if not link.exists():
        link.symlink_to(tmp_venv, target_is_directory=True)
    done = in_venv(tmp_venv, "-c", PROBE, timeout=120, python=link / "bin" / "python")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split()[:4] for line in done.stdout.splitlines()[1:]] == [["bwrap", "1", "1", "0"], ["rlimits", "1", "1", "0"]]


def test_the_base_interpreter_behind_a_closed_directory_runs_in_the_sandbox() -> None:
    """pyenv under root's 0700 home (this machine's and CI's Python): its parents are made open inside."""
    closed = [a for a in Path(sys.base_prefix).resolve().parents if a != Path("/") and not a.stat().st_mode & 0o001]
    if os.geteuid() != 0 or not closed:
        pytest.skip("this interpreter's base installation has no closed parent directory here")
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split()[:4] for line in done.stdout.splitlines()[1:]] == [["bwrap", "1", "1", "0"], ["rlimits", "1", "1", "0"]]


def test_an_interpreter_directory_closed_itself_is_refused_with_what_to_do(closed_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root drops to a private uid")
    venv = make_venv(closed_dir / "shut-venv")
    site_dir = next((venv / "lib").glob("python3*/site-packages"))
    os.chmod(site_dir, 0o700)
    try:
        done = in_venv(venv, "-c", "import asyncio\nfrom collabgen.sandbox import Sandbox\nprint(Sandbox().isolation)", timeout=60)
    finally:
        shutil.rmtree(venv, ignore_errors=True)
    assert done.returncode != 0
    assert f"{site_dir} is closed to other users" in done.stderr, done.stderr[-2000:]
    assert "chmod o+rx" in done.stderr


@pytest.mark.slow
def test_the_sandbox_suites_pass_from_a_venv_behind_closed_directories(tmp_venv: Path) -> None:
    suites = ["tests/test_sandbox.py", "tests/test_sandbox_verdict.py", "tests/test_sandbox_infra.py"]
    done = in_venv(tmp_venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *suites, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
