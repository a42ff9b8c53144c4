"""The command line follows the usual conventions: -h/--help, -V/--version, help on a bare
call with success, metavars instead of type names, choices listed."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.version import __version__

COMMANDS = ("run", "plan", "eval", "score", "merge", "push", "inspect", "export", "repair")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})


def test_a_bare_call_prints_the_help_and_succeeds():
    result = invoke()
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and all(name in result.output for name in COMMANDS)


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_has_a_short_flag_everywhere(flag):
    assert invoke(flag).exit_code == 0
    for name in COMMANDS:
        result = invoke(name, flag)
        assert result.exit_code == 0, (name, result.output)
        assert "-h, --help" in result.output


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_the_version_has_a_short_flag(flag):
    result = invoke(flag)
    assert result.exit_code == 0 and result.output.strip() == f"collabgen {__version__}"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_names_values_by_metavar_not_by_python_type(name):
    text = invoke(name, "-h").output
    usage = text.splitlines()[0]
    assert not re.search(r"[{}]", usage), usage  # arguments by their metavar, click style: RECIPE, OUT_DIR
    assert not re.search(r"<(str|int|float|list\[str\]|bool)>", text), text


def test_export_lists_its_choices_and_refuses_others_naming_them():
    text = invoke("export", "-h").output
    assert "best-worst|all" in text and "collabgen|collabllm" in text
    result = invoke("export", "out", "--pairs-per-turn", "some")
    assert result.exit_code == 2 and "best-worst" in result.output and "all" in result.output
    result = invoke("export", "out", "--format", "trl")
    assert result.exit_code == 2 and "collabllm" in result.output
