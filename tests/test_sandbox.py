"""Hostile-code tests for `collabgen.sandbox`, under bubblewrap and under the opt-in fallback.

Each test runs real malicious code and then checks, from the host side, that the
protection held (no file, no surviving process, no leaked secret, no connection, bounded
memory and disk) and that this test process is unharmed. Where the unisolated fallback
cannot contain something, the test says so explicitly (that is the record the opt-in is
accepting). Forging the verdict is in ``test_sandbox_verdict.py``; refusal, canary and
infrastructure errors in ``test_sandbox_infra.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collabgen.sandbox import LazySandbox, Sandbox, SandboxLimits, make_backend
from collabgen.sandbox.workspace import workspace
from tests.sandbox_helpers import (
    ALLOWED_ENV,
    FALLBACK_ENV,
    FAST,
    ISOLATIONS,
    SOLUTION,
    TESTS_CONCATENATED,
    TESTS_IMPORTING,
    processes_with,
    rss_of_uid,
    run_script,
    sandbox_for,
)

MIB = 1024 * 1024


def unique_marker() -> str:
    """A `sleep` argument no other process uses."""
    return f"{secrets.randbelow(900) + 100}.{secrets.randbelow(10**9):09d}"


# --------------------------------------------------------------------------- 1. unit tests


async def test_correct_solution_passes_all_tests() -> None:
    outcome = await Sandbox().run_unittests(SOLUTION, TESTS_IMPORTING)
    assert (outcome.passed, outcome.total, outcome.pass_rate) == (2, 2, 1.0)
    assert outcome.all_passed and outcome.reason is None and not outcome.tampered


async def test_solution_names_are_visible_to_tests_like_bigcodebench() -> None:
    outcome = await Sandbox().run_unittests(SOLUTION, TESTS_CONCATENATED)
    assert outcome.pass_rate == 1.0


async def test_half_wrong_solution_scores_one_half() -> None:
    wrong = "def task_func(a, b):\n    return a + b if a > 0 else 0\n"
    outcome = await Sandbox().run_unittests(wrong, TESTS_IMPORTING)
    assert (outcome.passed, outcome.failed, outcome.errors, outcome.total) == (1, 1, 0, 2)
    assert outcome.pass_rate == 0.5 and not outcome.all_passed and not outcome.tampered
    assert "test_negative" in outcome.stderr


async def test_syntax_error_counts_declared_tests_as_errors() -> None:
    outcome = await Sandbox().run_unittests("def task_func(a, b)\n    return a +", TESTS_IMPORTING)
    assert (outcome.passed, outcome.errors, outcome.total) == (0, 2, 2)
    assert outcome.reason is not None and "syntax error" in outcome.reason


async def test_solution_that_raises_on_import_is_an_error_not_infrastructure() -> None:
    outcome = await Sandbox().run_unittests("raise ValueError('no')\n", TESTS_IMPORTING)
    assert (outcome.passed, outcome.errors, outcome.total) == (0, 2, 2) and not outcome.tampered
    assert outcome.reason is not None and "could not be loaded" in outcome.reason and "ValueError" in outcome.reason


async def test_setup_teardown_skips_and_class_fixtures_follow_unittest() -> None:
    tests = """\
import unittest
from solution import task_func

class TestCases(unittest.TestCase):
    order = []

    @classmethod
    def setUpClass(cls):
        cls.base = 10

    def setUp(self):
        self.offset = 1

    def tearDown(self):
        TestCases.order.append(self._testMethodName)

    def test_a_uses_fixtures(self):
        self.assertEqual(task_func(self.base, self.offset), 11)

    @unittest.skip("not today")
    def test_b_skipped(self):
        self.fail("never runs")

    @unittest.expectedFailure
    def test_c_expected_failure(self):
        self.assertEqual(task_func(1, 1), 3)

    def test_d_subtests(self):
        for a in range(3):
            with self.subTest(a=a):
                self.assertEqual(task_func(a, 0), a)

    def test_e_teardown_ran(self):
        self.assertEqual(TestCases.order, ['test_a_uses_fixtures', 'test_c_expected_failure', 'test_d_subtests'])
"""
    outcome = await Sandbox().run_unittests(SOLUTION, tests)
    assert (outcome.passed, outcome.skipped, outcome.failed, outcome.errors, outcome.total) == (4, 1, 0, 0, 5), outcome


async def test_a_test_that_forks_does_not_report_twice() -> None:
    tests = """\
import os, unittest
from solution import task_func

class TestCases(unittest.TestCase):
    def test_forks(self):
        pid = os.fork()
        if pid:
            os.waitpid(pid, 0)
        self.assertEqual(task_func(1, 2), 3)

    def test_after(self):
        self.assertEqual(task_func(2, 2), 4)
"""
    outcome = await Sandbox(FAST).run_unittests(SOLUTION, tests)
    assert (outcome.passed, outcome.total) == (2, 2) and not outcome.tampered


async def test_runaway_solution_reports_zero_passed_with_reason() -> None:
    outcome = await Sandbox(FAST).run_unittests("while True:\n    pass\n", TESTS_IMPORTING)
    assert (outcome.passed, outcome.total) == (0, 2) and not outcome.tampered
    assert outcome.reason is not None and ("CPU" in outcome.reason or "timed out" in outcome.reason)


async def test_a_crashing_solution_scores_zero_without_being_called_tampering() -> None:
    crash = "import os\ndef task_func(a, b):\n    os._exit(3)\n"
    outcome = await Sandbox(FAST).run_unittests(crash, TESTS_IMPORTING)
    assert (outcome.passed, outcome.total) == (0, 2) and not outcome.tampered
    assert outcome.reason is not None and "exited with code 3" in outcome.reason
    in_process = await Sandbox(FAST).run_unittests(crash, TESTS_IMPORTING, verdict="in_process")
    assert in_process.reason == "no test report (exited with code 3)" and not in_process.tampered


# --------------------------------------------------------------------------- 2. CPU


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_infinite_loop_is_killed(isolation: str) -> None:
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n"
    result = await run_script(sandbox_for(isolation, FAST), code)
    assert result.returncode != 0 and result.reason is not None
    assert "CPU" in result.reason or "timed out" in result.reason
    assert processes_with("SIGXCPU") == []


# --------------------------------------------------------------------------- 3. fork bomb


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_fork_bomb_is_contained_and_leaves_nothing_behind(isolation: str) -> None:
    sandbox = sandbox_for(isolation, FAST)
    assert sandbox.process_limit_enforced
    marker = f"bomb_{secrets.token_hex(6)}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    task = asyncio.create_task(sandbox.run_python({f"{marker}.py": bomb}, f"{marker}.py"))
    peak, host_could_fork = 0, []
    while not task.done():
        peak = max(peak, len(processes_with(marker)))
        probe = await asyncio.create_subprocess_exec("true")
        host_could_fork.append(await probe.wait() == 0)
        await asyncio.sleep(0.1)
    result = task.result()
    assert host_could_fork and all(host_could_fork)
    assert 1 < peak <= FAST.max_processes, peak
    assert processes_with(marker) == []
    assert result.returncode != 0 or result.timed_out


# --------------------------------------------------------------------------- 4. memory


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_huge_allocation_fails_and_host_survives(isolation: str) -> None:
    result = await run_script(sandbox_for(isolation, FAST), "x = bytearray(10 * 1024**3)\nprint('allocated', len(x))\n")
    assert "allocated" not in result.stdout and result.returncode != 0
    assert "MemoryError" in result.stderr and result.reason is not None and "memory" in result.reason
    assert len(bytearray(10 * MIB)) == 10 * MIB  # and we are fine


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_children_together_stay_within_the_memory_budget(isolation: str) -> None:
    """Four children asking 800 MiB each under a 1 GiB budget: the tree never holds more."""
    limits = SandboxLimits(memory_mb=1024, max_processes=8, cpu_seconds=5, wall_seconds=15)
    marker = f"hog_{secrets.token_hex(6)}"
    child = (
        f"# {marker}\nimport time\ntry:\n    x = bytearray(800 * 1024 * 1024)\n    print('held', flush=True)\n"
        "    time.sleep(2)\nexcept MemoryError:\n    print('refused', flush=True)\n"
    )
    code = (
        "import subprocess, sys\n"
        f"procs = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in range(4)]\n"
        "print('exits', [p.wait() for p in procs])\n"
    )
    task = asyncio.create_task(run_script(sandbox_for(isolation, limits), code, name=f"{marker}.py"))
    peak = 0
    while not task.done():
        uids = {os.stat(f"/proc/{pid}").st_uid for pid in processes_with(marker) if os.path.exists(f"/proc/{pid}")}
        peak = max([peak, *(rss_of_uid(uid) for uid in uids if uid)])
        await asyncio.sleep(0.05)
    result = task.result()
    assert result.stdout.count("refused") == 4 and "held" not in result.stdout, result.stdout + result.stderr
    assert peak <= limits.memory_mb * MIB


# --------------------------------------------------------------------------- 5. disk


def _host_tmp_entries() -> dict[str, float]:
    return {entry.path: entry.stat(follow_symlinks=False).st_mtime for entry in os.scandir("/tmp")}


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_two_gigabytes_of_files_hit_the_disk_cap_and_leave_nothing(isolation: str) -> None:
    limits = SandboxLimits(disk_mb=64, file_size_mb=16, cpu_seconds=10, wall_seconds=30)
    code = (
        "import os\nwritten = 0\ntry:\n    for i in range(140):\n"
        "        for where in ('.', '/tmp'):\n"
        "            with open(f'{where}/blob{i}', 'wb') as fh:\n"
        "                fh.write(b'x' * (15 * 1024 * 1024))\n"
        "            written += 15\n            print('MiB', written, flush=True)\n"
        "except OSError as exc:\n    print('stopped', exc.errno, flush=True)\n"
    )
    before = _host_tmp_entries()
    result = await run_script(sandbox_for(isolation, limits), code)
    written = max((int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("MiB")), default=0)
    if isolation == "bwrap":  # a size-capped tmpfs: the write fails at the cap
        assert "stopped 28" in result.stdout and written <= limits.disk_mb
    else:  # the watchdog kills the run within one poll of writes: far from the 2 GB it asked for
        assert result.reason is not None and "disk limit" in result.reason
        assert written < 2048, written
    leftovers = {path for path in _host_tmp_entries() if path not in before and os.path.basename(path).startswith("blob")}
    assert leftovers == set()


@pytest.fixture
def nested_world_writable() -> Iterator[Path]:
    """A ``0777`` folder inside a root-owned ``0755`` one in /tmp: not the run's, but writable by it."""
    parent = Path(tempfile.mkdtemp(prefix="nested-shared-", dir="/tmp"))
    parent.chmod(0o755)
    inner = parent / "inner"
    inner.mkdir()
    inner.chmod(0o777)
    try:
        yield inner
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _mib_of(folder: Path) -> int:
    return sum(entry.stat(follow_symlinks=False).st_blocks * 512 for entry in os.scandir(folder)) // MIB


async def test_the_fallback_disk_cap_holds_in_a_nested_world_writable_folder_and_nothing_stays(
    nested_world_writable: Path,
) -> None:
    limits = SandboxLimits(disk_mb=256, file_size_mb=16, cpu_seconds=20, wall_seconds=60)
    code = (
        "import os\nwritten = 0\n"
        "for i in range(20):\n"
        f"    with open('{nested_world_writable}/blob' + str(i), 'wb') as fh:\n"
        "        fh.write(b'x' * (15 * 1024 * 1024))\n"
        "    written += 15\n    print('MiB', written, flush=True)\n"
    )
    result = await run_script(sandbox_for("fallback", limits), code)
    assert result.reason == "disk limit of 256 MiB exceeded", (result.reason, result.stdout[-200:])
    assert "MiB 300" not in result.stdout
    assert list(nested_world_writable.iterdir()) == [], _mib_of(nested_world_writable)


async def test_the_fallback_disk_cap_counts_deleted_files_the_code_holds_open() -> None:
    limits = SandboxLimits(disk_mb=64, file_size_mb=16, cpu_seconds=20, wall_seconds=30)
    code = (
        "import os, time\nkept = []\n"
        "for i in range(12):\n"
        "    fh = open('/tmp/held' + str(os.getpid()) + '-' + str(i), 'wb')\n"
        "    os.unlink(fh.name)\n"
        "    fh.write(b'x' * (15 * 1024 * 1024)); fh.flush(); kept.append(fh)\n"
        "    print('MiB', 15 * (i + 1), flush=True)\n"
        "time.sleep(20)\n"
    )
    result = await run_script(sandbox_for("fallback", limits), code)
    assert result.reason == "disk limit of 64 MiB exceeded", (result.reason, result.stdout[-200:])
    assert "MiB 180" not in result.stdout


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_concurrent_runs_cannot_read_each_others_workspaces(isolation: str) -> None:
    token = secrets.token_hex(8)
    sandbox = sandbox_for(isolation, SandboxLimits(cpu_seconds=5, wall_seconds=20))
    victim = f"SECRET = {token!r}\nimport time\ntime.sleep(4)\n"
    peeker = (
        "import glob, os, time\ntime.sleep(1.5)\n"
        "for folder in glob.glob('/tmp/collabgen-sbx-*'):\n"
        "    if folder == os.getcwd():\n        continue\n"
        "    for name in ['victim.py', *(os.listdir(folder) if os.access(folder, os.R_OK) else [])]:\n"
        "        try:\n            print('READ', open(os.path.join(folder, name)).read())\n"
        "        except OSError:\n            pass\n"
    )
    _, peeked = await asyncio.gather(
        sandbox.run_python({"victim.py": victim}, "victim.py"), sandbox.run_python({"peek.py": peeker}, "peek.py")
    )
    assert peeked.returncode == 0, peeked.stderr
    assert token not in peeked.stdout


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("mode", ["script", "unittest"])
async def test_a_leftover_daemon_does_not_hold_the_run_to_the_wall_clock(isolation: str, mode: str) -> None:
    marker = unique_marker()
    daemon = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
    )
    sandbox = sandbox_for(isolation, SandboxLimits(cpu_seconds=5, wall_seconds=30))
    started = time.monotonic()
    if mode == "script":
        result = await run_script(sandbox, daemon + "print('bye')\n")
        assert result.returncode == 0 and "bye" in result.stdout
    else:
        outcome = await sandbox.run_unittests(daemon + SOLUTION, TESTS_IMPORTING)
        assert outcome.all_passed and not outcome.tampered, outcome
    assert time.monotonic() - started < 10  # the run ended, not the 30 s wall clock
    assert processes_with(marker) == []


# --------------------------------------------------------------------------- 6. filesystem


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_writes_outside_the_sandbox_do_not_remain_on_the_host(isolation: str, tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    repo_file = Path(__file__).resolve().parent / f"PWNED-{token}"
    targets = [str(repo_file), f"/tmp/pwned-{token}", "~/../x-" + token, str(tmp_path / "pwned"), f"/usr/local/pwned-{token}"]
    code = (
        "import os\n"
        f"for target in {targets!r}:\n"
        "    path = os.path.expanduser(target)\n"
        "    try:\n"
        "        with open(path, 'w') as fh:\n"
        "            fh.write('pwned')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc)\n"
    )
    result = await run_script(sandbox_for(isolation), code)
    assert result.returncode == 0, result.stderr
    home_parent = Path(tempfile.gettempdir()).resolve()
    for leaked in (repo_file, Path(f"/tmp/pwned-{token}"), home_parent / f"x-{token}", tmp_path / "pwned", Path(f"/usr/local/pwned-{token}")):
        assert not leaked.exists(), f"{leaked} was written by sandboxed code"
    for refused in (repo_file, tmp_path / "pwned", f"/usr/local/pwned-{token}"):
        assert f"refused {refused}" in result.stdout
    if isolation == "fallback":  # not prevented, only removed afterwards: the uid owns /tmp entries
        assert f"wrote /tmp/pwned-{token}" in result.stdout


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_root_home_and_shadow_are_unreadable(isolation: str, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("top secret")
    code = (
        "import os\n"
        f"for path in ('/etc/shadow', '/root/.bashrc', {str(secret)!r}):\n"
        "    try:\n        print('READ', path, open(path).read()[:20])\n"
        "    except OSError as exc:\n        print('denied', path, type(exc).__name__)\n"
        "try:\n    print('home-entries', sorted(os.listdir('/root')))\n"
        "except OSError as exc:\n    print('home-entries denied', type(exc).__name__)\n"
    )
    result = await run_script(sandbox_for(isolation), code)
    assert "READ" not in result.stdout and "top secret" not in result.stdout, result.stdout
    listed = result.stdout.split("home-entries", 1)[1]
    assert all(name not in listed for name in (".ssh", ".bash_history", ".bashrc", ".config"))


# --------------------------------------------------------------------------- 7. environment


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_api_keys_in_host_environment_do_not_leak(isolation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test")
    code = (
        "import os\n"
        "print(dict(os.environ))\n"
        f"for pid in ('1', str(os.getppid()), '{os.getpid()}'):\n"
        "    try:\n"
        "        print(open(f'/proc/{pid}/environ').read())\n"
        "    except OSError as exc:\n"
        "        print('no access', exc)\n"
        "print('KEYS', sorted(os.environ))\n"
    )
    result = await run_script(sandbox_for(isolation), code)
    assert result.returncode == 0, result.stderr
    assert "sk-secret-test" not in result.stdout + result.stderr
    keys = set(eval(result.stdout.split("KEYS", 1)[1].strip()))
    assert ALLOWED_ENV <= keys <= ALLOWED_ENV | FALLBACK_ENV


# --------------------------------------------------------------------------- 8. network


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_local_sockets_are_unreachable(isolation: str) -> None:
    token = secrets.token_hex(6)
    paths = [f"/dev/shm/cg-{token}.sock", f"/run/cg-{token}.sock"]  # world-connectable socket files
    with contextlib.ExitStack() as stack:
        tcp = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        servers = [tcp]
        for path in [*paths, f"\0cg-{token}"]:
            server = stack.enter_context(socket.socket(socket.AF_UNIX))
            server.bind(path)
            if not path.startswith("\0"):
                os.chmod(path, 0o777)
                stack.callback(os.unlink, path)
            servers.append(server)
        for server in servers:
            server.listen()
            server.setblocking(False)
        addresses = [("127.0.0.1", tcp.getsockname()[1]), *paths, f"\0cg-{token}", ("1.1.1.1", 53)]
        code = (
            "import socket\n"
            f"for address in {addresses!r}:\n"
            "    family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX\n"
            "    try:\n"
            "        s = socket.socket(family); s.settimeout(2); s.connect(address); print('CONNECTED', repr(address))\n"
            "    except OSError as exc:\n"
            "        print('BLOCKED', repr(address), exc)\n"
        )
        result = await run_script(sandbox_for(isolation), code)
        connected = {line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("CONNECTED")}
        assert len(result.stdout.splitlines()) == len(addresses), result.stdout + result.stderr
        if isolation == "bwrap":
            assert connected == set()
        else:  # not contained: socket files on the shared filesystem stay connectable (the network is not)
            assert connected == {repr(path) for path in paths}
        with pytest.raises(BlockingIOError):
            tcp.accept()


# --------------------------------------------------------------------------- 9. processes


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_wall_timeout_kills_child_and_grandchildren(isolation: str) -> None:
    marker = unique_marker()
    code = (
        "import subprocess, time\n"
        f"subprocess.Popen(['sleep', '{marker}'])\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        f"subprocess.Popen(['sh', '-c', 'sleep {marker}; true'])\n"
        "print('spawned', flush=True)\n"
        "time.sleep(100)\n"
    )
    limits = SandboxLimits(cpu_seconds=5, wall_seconds=3.0)
    task = asyncio.create_task(run_script(sandbox_for(isolation, limits), code))
    seen = 0
    while not task.done():
        seen = max(seen, len(processes_with(marker)))
        await asyncio.sleep(0.1)
    result = task.result()
    assert result.timed_out and result.returncode is None
    assert result.reason == "timed out after 3s" and "spawned" in result.stdout
    assert seen >= 3  # the grandchildren really ran
    assert processes_with(marker) == []


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_double_forked_setsid_daemon_does_not_outlive_the_run(isolation: str) -> None:
    marker = unique_marker()
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('bye')\n"
    )
    result = await run_script(sandbox_for(isolation, FAST), code)
    assert result.returncode == 0 and not result.timed_out and "bye" in result.stdout
    assert processes_with(marker) == []


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_the_code_cannot_kill_its_parent_or_the_host(isolation: str) -> None:
    code = (
        "import os, signal\n"
        f"for pid in (os.getppid(), 1, {os.getpid()}, -1):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL); print('signalled', pid)\n"
        "    except OSError as exc:\n"
        "        print('denied', pid, exc.errno)\n"
        "print('still here')\n"
    )
    result = await run_script(sandbox_for(isolation, FAST), code)
    # kill(-1) reaches only processes of the sandbox's own uid (never its caller): none here.
    assert [line for line in result.stdout.splitlines() if line.startswith("signalled") and line != "signalled -1"] == []
    assert "still here" in result.stdout and result.returncode == 0  # the warden lived on to report


# --------------------------------------------------------------------------- API hygiene


def test_limits_reject_unknown_fields_and_shares_too_small_for_python() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(memory_mib=10)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="memory_mb / max_processes"):
        SandboxLimits(memory_mb=256, max_processes=64)
    assert SandboxLimits(memory_mb=1024, max_processes=4).process_memory_mb == 256


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape.py", "a/../../b.py", ".collabgen_runner.py", ""])
async def test_unsafe_file_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        await Sandbox().run_python({name: "print(1)"}, "main.py")


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_stdin_and_multi_file_programs(isolation: str) -> None:
    files = {"main.py": "from pkg.helper import shout\nprint(shout(input()))\n", "pkg/helper.py": "def shout(s):\n    return s.upper()\n"}
    result = await sandbox_for(isolation).run_python(files, "main.py", stdin="hello\n")
    assert result.returncode == 0 and result.stdout.strip() == "HELLO" and result.reason is None, result.stderr


async def test_flood_of_output_is_truncated() -> None:
    limits = SandboxLimits(cpu_seconds=5, wall_seconds=10.0, max_output_bytes=10_000)
    result = await run_script(Sandbox(limits), "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 10000)\n")
    assert len(result.stdout) < 11_000 and "truncated" in result.stdout


async def test_many_concurrent_sandboxes_complete() -> None:
    sandbox = Sandbox(FAST)
    wrong = "def task_func(a, b):\n    return a + b if a > 0 else 0\n"
    runs = [sandbox.run_unittests(SOLUTION if i % 2 == 0 else wrong, TESTS_IMPORTING) for i in range(8)]
    outcomes = await asyncio.gather(*runs)
    assert [o.pass_rate for o in outcomes] == [1.0, 0.5] * 4


# --------------------------------------------------------------------------- privileges


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_code_runs_without_privileges(isolation: str) -> None:
    code = (
        "import os\n"
        "print('uid', os.getuid())\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapAmb'))])\n"
        "try:\n"
        "    os.setuid(0)\n"
        "    print('BECAME ROOT')\n"
        "except OSError:\n"
        "    print('setuid refused')\n"
    )
    result = await run_script(sandbox_for(isolation), code)
    assert "uid 0" not in result.stdout and "BECAME ROOT" not in result.stdout
    assert "setuid refused" in result.stdout
    assert "['0000000000000000', '0000000000000000', '0000000000000000']" in result.stdout


async def test_nested_user_namespace_root_is_still_process_limited() -> None:
    sandbox = Sandbox(SandboxLimits(max_processes=8, wall_seconds=10.0))
    inner = (
        "import os, time\n"
        "count = 0\n"
        "for _ in range(40):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(1)\n"
        "        os._exit(0)\n"
        "    count += 1\n"
        "print('uid', os.getuid(), 'forked', count)\n"
    )
    code = f"import subprocess, sys\nsubprocess.run(['unshare', '-Ur', sys.executable, '-c', {inner!r}])\n"
    result = await run_script(sandbox, code)
    if "forked" not in result.stdout:
        pytest.skip(f"cannot create a nested user namespace here: {result.stderr.strip()[-200:]}")
    assert int(result.stdout.split("forked", 1)[1].split()[0]) < 8


async def test_scratch_tmpfs_cannot_eat_host_memory() -> None:
    code = (
        "written = 0\n"
        "try:\n"
        "    for i in range(64):\n"
        "        with open(f'/dev/shm/f{i}', 'wb') as fh:\n"
        "            fh.write(b'x' * (8 * 1024 * 1024))\n"
        "        written += 8\n"
        "except OSError as exc:\n"
        "    print('stopped', exc.errno)\n"
        "print('MiB', written)\n"
    )
    result = await run_script(Sandbox(SandboxLimits(disk_mb=32)), code)
    assert int(result.stdout.split("MiB", 1)[1]) <= 32


# --------------------------------------------------------------------------- package seams


def test_lazy_sandbox_makes_one_sandbox_on_first_use() -> None:
    lazy = LazySandbox(FAST)
    assert lazy._sandbox is None  # nothing probed until a code task asks
    first = lazy()
    assert first is lazy() and first.limits == FAST


def test_isolation_backends_are_chosen_by_name() -> None:
    with workspace(False, None) as ws:
        launch = make_backend("rlimits").launch(ws, FAST)
    assert launch.wrapper == [] and launch.watch_disk and launch.workdir == str(ws.path)
    assert make_backend("bwrap", path="/nonexistent/bwrap").probe(FAST) == "/nonexistent/bwrap not found"
    with pytest.raises(KeyError, match="known: bwrap, rlimits"):
        make_backend("container")


def test_a_run_never_changes_the_mode_of_the_shared_tmp() -> None:
    before = os.stat("/tmp").st_mode
    with workspace(False, None) as ws:
        os.rmdir(ws.path)  # gone before cleanup, as when a sweep removed it first
    assert os.stat("/tmp").st_mode == before



async def test_module_fixtures_and_class_cleanups_run() -> None:
    tests = """\
import unittest
from solution import task_func

EVENTS = []

def setUpModule():
    EVENTS.append('module')

class TestCases(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.addClassCleanup(EVENTS.append, 'class-cleanup')

    def test_fixtures_ran(self):
        self.assertEqual(EVENTS, ['module'])
        self.assertEqual(task_func(1, 1), 2)
"""
    outcome = await Sandbox().run_unittests(SOLUTION, tests)
    assert outcome.all_passed, outcome
    failing = await Sandbox().run_unittests(SOLUTION, tests.replace("EVENTS.append('module')", "raise RuntimeError"))
    assert (failing.passed, failing.errors, failing.reason) == (0, 1, "setUpModule failed")
