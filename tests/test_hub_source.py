"""A Hub seed source with no network: one quick, clear failure, not half a minute of retries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import write_recipe
from tests.test_endpoints import closed_port_url

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "collabgen", *args], capture_output=True, text=True,
                          env=environ, timeout=120)


def hub_recipe(tmp_path: Path) -> Path:
    url = closed_port_url()
    return write_recipe(tmp_path / "hub.yaml", {
        "task": {"type": "document", "source": {"hub": {"name": "fabiochiu/medium-articles", "split": "train"}}},
        "models": {role: {"backend": "openai", "model": role, "base_url": url} for role in ("policy", "user", "judge")},
        "output": {"dir": str(tmp_path / "out")},
    })


def test_an_unreachable_hub_fails_at_once_in_one_line_naming_the_way_out(tmp_path):
    # A Hub endpoint where nothing listens: huggingface_hub retries a refused connection five
    # times (1 + 2 + 4 + 8 + 8 s) when asked; collabgen asks once.
    started = time.monotonic()
    result = run_cli("run", str(hub_recipe(tmp_path)), HF_ENDPOINT=closed_port_url().removesuffix("/v1"))
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "cannot reach the Hugging Face Hub" in lines[0] and "task.source.path" in lines[0]
    assert "HF_HUB_OFFLINE=1" in lines[0]
    assert elapsed < 15, elapsed


def test_the_libraries_offline_mode_is_honoured_without_any_request(tmp_path):
    result = run_cli("run", str(hub_recipe(tmp_path)), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 2
    assert "OfflineModeIsEnabled" in result.stderr + result.stdout and "Retrying" not in result.stderr
