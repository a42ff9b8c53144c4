"""Hostile or broken input is refused with exit 2, naming the file and line (or the field),
before any model call.

Each test runs the real CLI against a live fake server and checks the server saw no
request: "before any call" is a property of the whole command, not of one function.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, math_recipe, write_recipe
from tests.scripts import install_math


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_math(fake)
        yield fake


def run(*args: str):
    return CliRunner().invoke(app, ["run", *args])


def refused(result, server, *needles: str) -> None:
    """Exit 2, every needle in the message, no traceback, and the server never called."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    assert server.calls == []


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if fragment in line)


def recipe_text(server, tmp_path, **overrides) -> str:
    return yaml.safe_dump(math_recipe(server.base_url, tmp_path / "out", **overrides), sort_keys=False)


def test_an_empty_seed_file_is_refused_not_run_into_empty_shards(server, tmp_path):
    seeds = tmp_path / "empty.jsonl"
    seeds.write_text("")
    text = recipe_text(server, tmp_path, **{"task.source.path": str(seeds)})
    path = tmp_path / "r.yaml"
    path.write_text(text)
    refused(run(str(path)), server, f"{path}:{line_of(text, 'empty.jsonl')}: task.source.path", "holds no seed rows")
    assert not (tmp_path / "out" / "pairs").exists()


def test_a_non_utf8_byte_in_a_seed_file_names_file_line_and_column(server, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    good = json.dumps({"problem": "1+1?", "solution": "\\boxed{2}"}).encode()
    seeds.write_bytes(good + b"\n" + b'{"problem": "caf\xe9?", "solution": "\\\\boxed{1}"}\n')
    path = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, tmp_path / "out",
                                                          **{"task.source.path": str(seeds)}))
    refused(run(str(path)), server, f"{seeds}:2: not UTF-8 text (byte 0xe9 at column 17)")


def test_a_non_utf8_byte_in_the_recipe_names_file_line_and_column(server, tmp_path):
    text = recipe_text(server, tmp_path).replace("min_gap: 0.02", "min_gap: 0.02 # \xa7")
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode("latin-1"))
    line = line_of(text, "min_gap")
    refused(run(str(path)), server, f"{path}:{line}: not UTF-8 text (byte 0xa7")


def test_a_fifty_megabyte_seed_row_is_refused_before_it_is_read_whole(server, tmp_path):
    seeds = tmp_path / "huge.jsonl"
    with seeds.open("w") as handle:
        handle.write(json.dumps({"problem": "1+1?", "solution": "\\boxed{2}"}) + "\n")
        handle.write('{"problem": "' + "x" * (50 * 1024 * 1024) + '", "solution": "\\\\boxed{1}"}\n')
    path = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, tmp_path / "out",
                                                          **{"task.source.path": str(seeds)}))
    refused(run(str(path)), server, f"{seeds}:2: seed row is more than 4,194,304 bytes",
            "task.source.max_row_bytes")


def test_the_row_size_limit_is_a_recipe_field(server, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"problem": "What is 2+3? " + "please " * 40, "solution": "\\boxed{5}"}) + "\n")
    tight = math_recipe(server.base_url, tmp_path / "out", **{"task.source.path": str(seeds),
                                                              "task.source.max_row_bytes": 100})
    refused(CliRunner().invoke(app, ["plan", str(write_recipe(tmp_path / "r.yaml", tight))]), server,
            f"{seeds}:1: seed row is more than 100 bytes")
    tight["task"]["source"]["max_row_bytes"] = 10_000
    result = CliRunner().invoke(app, ["plan", str(write_recipe(tmp_path / "r.yaml", tight))])
    assert result.exit_code == 0, result.output
    assert "1 seeds" in result.output


def test_a_yaml_alias_bomb_is_refused_at_once(server, tmp_path):
    bomb = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[i]
        bomb.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text(server, tmp_path) + "\n".join(bomb) + "\n")
    refused(run(str(path)), server, f"{path}:", "YAML aliases expand this recipe to more than 100,000 values")


def test_a_self_referring_alias_is_refused(server, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text(server, tmp_path) + "loop: &loop [1, *loop]\n")
    refused(run(str(path)), server, "a YAML alias refers to itself")


def test_a_key_given_twice_is_refused_naming_both_lines(server, tmp_path):
    text = recipe_text(server, tmp_path).replace("  futures: 2\n", "  futures: 2\n  futures: 5\n")
    path = tmp_path / "r.yaml"
    path.write_text(text)
    first = line_of(text, "futures: 2")
    refused(run(str(path)), server, f"{path}:{first + 1}: generation.futures: duplicate key (first given at line "
                                    f"{first})")


def test_aliases_within_the_limit_still_work(server, tmp_path):
    data = math_recipe(server.base_url, tmp_path / "out")
    text = yaml.safe_dump(data, sort_keys=False).replace("  policy:\n", "  policy: &role\n", 1)
    result = CliRunner().invoke(app, ["plan", str(_write(tmp_path / "r.yaml", text))])
    assert result.exit_code == 0, result.output


def _write(path, text):
    path.write_text(text)
    return path


def test_an_output_dir_that_is_a_file_is_refused_with_field_and_line(server, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    text = recipe_text(server, tmp_path, **{"output.dir": str(target)})
    path = _write(tmp_path / "r.yaml", text)
    refused(run(str(path)), server, f"{path}:{line_of(text, 'dir: ')}: output.dir:", f"{target} is a file")
    nested = recipe_text(server, tmp_path, **{"output.dir": str(target / "math")})
    refused(run(str(_write(tmp_path / "r.yaml", nested))), server, f"{target} is a file")


def test_a_base_url_without_a_scheme_is_refused_by_the_schema(server, tmp_path):
    data = math_recipe(server.base_url, tmp_path / "out")
    data["models"]["judge"]["base_url"] = server.base_url.removeprefix("http://")
    text = yaml.safe_dump(data, sort_keys=False)
    path = _write(tmp_path / "r.yaml", text)
    line = line_of(text, "base_url: 127.0.0.1")
    refused(run(str(path)), server, f"{path}:{line}: models.judge.base_url:", "is not an http(s) URL",
            f"did you mean 'http://{server.base_url.removeprefix('http://')}'")


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_model_name_is_refused_by_the_schema(server, tmp_path, name):
    data = math_recipe(server.base_url, tmp_path / "out")
    data["models"]["user"]["model"] = name
    text = yaml.safe_dump(data, sort_keys=False)
    path = _write(tmp_path / "r.yaml", text)
    user_block = line_of(text, "  user:")
    model_line = next(i for i, line in enumerate(text.splitlines(), start=1) if i > user_block and "model:" in line)
    refused(run(str(path)), server, f"{path}:{model_line}: models.user.model: must name the model")


def test_a_missing_seed_file_names_the_recipe_line(server, tmp_path):
    text = recipe_text(server, tmp_path, **{"task.source.path": str(tmp_path / "nope.jsonl")})
    path = _write(tmp_path / "r.yaml", text)
    refused(run(str(path)), server,
            f"{path}:{line_of(text, 'nope.jsonl')}: task.source.path: seed file not found: {tmp_path / 'nope.jsonl'}")


def test_an_unset_key_variable_names_the_recipe_line(server, tmp_path, monkeypatch):
    monkeypatch.delenv("COLLABGEN_UNSET_KEY", raising=False)
    data = math_recipe(server.base_url, tmp_path / "out")
    data["models"]["judge"]["api_key_env"] = "COLLABGEN_UNSET_KEY"
    text = yaml.safe_dump(data, sort_keys=False)
    path = _write(tmp_path / "r.yaml", text)
    refused(run(str(path)), server, f"{path}:{line_of(text, 'COLLABGEN_UNSET_KEY')}: models.judge.api_key_env: "
                                    "environment variable COLLABGEN_UNSET_KEY is not set")


def test_seed_rows_of_every_file_type_still_load(server, tmp_path):
    """The byte-wise readers keep what worked: JSONL with blank lines, CSV with a quoted
    multi-line field (named by the line it starts on), and JSON lists."""
    rows = [json.loads(line) for line in (SEEDS / "math.jsonl").read_text().splitlines() if line.strip()][:2]
    (tmp_path / "s.jsonl").write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    (tmp_path / "s.json").write_text(json.dumps(rows))
    import csv

    with (tmp_path / "s.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**rows[0], "problem": rows[0]["problem"] + "\nsecond line"}, rows[1]])
    for name in ("s.jsonl", "s.json", "s.csv"):
        data = math_recipe(server.base_url, tmp_path / "out", **{"task.source.path": str(tmp_path / name)})
        result = CliRunner().invoke(app, ["plan", str(write_recipe(tmp_path / "r.yaml", data))])
        assert result.exit_code == 0, (name, result.output)
        assert re.search(r"\b2 seeds\b", result.output), (name, result.output)
    assert server.calls == []


def test_a_lone_surrogate_escape_in_a_seed_names_the_row(server, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"problem": "1+1?", "solution": "\\boxed{2}"}) + "\n"
                     + '{"problem": "bad \\ud800 text", "solution": "\\\\boxed{1}"}\n')
    path = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, tmp_path / "out",
                                                          **{"task.source.path": str(seeds)}))
    refused(run(str(path)), server, f"{seeds}:2:", "lone surrogate escape (\\ud800)")


def test_very_deep_json_in_a_seed_names_the_row(server, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    deep = '{"problem": "1+1?", "solution": "2", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    seeds.write_text(json.dumps({"problem": "1+1?", "solution": "\\boxed{2}"}) + "\n" + deep + "\n")
    path = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, tmp_path / "out",
                                                          **{"task.source.path": str(seeds)}))
    refused(run(str(path)), server, f"{seeds}:2:", "nested too deeply")


def test_a_nul_byte_in_the_recipe_names_file_and_line(server, tmp_path):
    text = recipe_text(server, tmp_path).replace("min_gap: 0.02", "min_gap: 0.02 # \x00")
    path = tmp_path / "r.yaml"
    path.write_text(text)
    refused(run(str(path)), server, f"{path}:{line_of(text, 'min_gap')}: not valid YAML", "(character U+0000)")


def test_very_deep_yaml_nesting_is_refused_naming_the_file(server, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text(server, tmp_path) + "extra: " + "[" * 50_000 + "]" * 50_000 + "\n")
    refused(run(str(path)), server, f"{path}: not a recipe: nested too deeply")
