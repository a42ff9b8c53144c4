"""A judge reply that is not in the shape its JSON schema asks (a required field missing, a
bool where a number is asked) is a format failure: asked again, then the conversation
fails with the reason; never a score of 0 or 1.0."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.models.reply_shape import shape_errors
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import JUDGE, POLICY, install_math, judge

SCHEMA = {"type": "object", "properties": {"thought": {"type": "string"},
                                           "interactivity": {"type": "number", "minimum": 0, "maximum": 1},
                                           "done": {"type": "boolean"}},
          "required": ["thought", "interactivity"]}


@pytest.mark.parametrize(("reply", "error"), [
    ({"thought": "x", "interactivity": True}, "reply.interactivity is bool True, expected number"),
    ({"thought": "x"}, "reply lacks the required field 'interactivity'"),
    ({"thought": "x", "interactivity": 0.5, "done": 1}, "reply.done is int 1, expected boolean"),
    ({"thought": "x", "interactivity": 2}, "reply.interactivity is 2, above the maximum 1"),
])
def test_shape_errors_name_what_is_wrong(reply, error):
    assert shape_errors(reply, SCHEMA) == [error]
    assert shape_errors({"thought": "x", "interactivity": 1, "extra": None}, SCHEMA) == []


BOUNDED = {"type": "object", "properties": {
    "s": {"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[a-z]*$"},
    "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.25},
    "tags": {"type": "array", "minItems": 1, "maxItems": 2, "uniqueItems": True,
             "items": {"type": "string", "maxLength": 1}},
    "v": {"anyOf": [{"type": "string", "maxLength": 1}, {"type": "integer"}]},
    "k": {"const": "a"}}}


@pytest.mark.parametrize(("reply", "error"), [
    ({"s": ""}, "reply.s is 0 characters, fewer than minLength 1"),
    ({"s": "abcd"}, "reply.s is 4 characters, more than maxLength 3"),
    ({"s": "AB"}, "reply.s is 'AB', not matching the pattern '^[a-z]*$'"),
    ({"x": 0}, "reply.x is 0, not above the exclusive minimum 0"),
    ({"x": 1}, "reply.x is 1, not below the exclusive maximum 1"),
    ({"x": 0.3}, "reply.x is 0.3, not a multiple of 0.25"),
    ({"tags": []}, "reply.tags has 0 items, fewer than minItems 1"),
    ({"tags": ["a", "b", "c"]}, "reply.tags has 3 items, more than maxItems 2"),
    ({"tags": ["a", "a"]}, "reply.tags repeats an item (uniqueItems)"),
    ({"tags": ["ab"]}, "reply.tags[0] is 2 characters, more than maxLength 1"),
    ({"v": "ab"}, "reply.v is 'ab', fitting none of its anyOf branches"),
    ({"k": "b"}, "reply.k is 'b', expected 'a'"),
])
def test_constraints_a_backend_may_not_be_sent_are_checked(reply, error):
    """What OpenAI strict mode is not sent (`maxLength`, ...) is checked on the parsed reply."""
    assert shape_errors(reply, BOUNDED) == [error]
    assert shape_errors({"s": "abc", "x": 0.75, "tags": ["a"], "v": 7, "k": "a"}, BOUNDED) == []


def run_failing(tmp_path, server):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, out, **{"task.limit": 2}))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    return result, json.loads((out / "manifest.json").read_text())


def test_a_boolean_interactivity_is_asked_again_then_fails_the_conversation(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(JUDGE, lambda call: json.dumps({"thought": "scripted", "interactivity": True}))
        result, manifest = run_failing(tmp_path, server)
        judged = len(server.calls_for(JUDGE))
    assert result.exit_code == 1, result.output
    assert manifest["counts"]["conversations_ok"] == 0 and manifest["counts"]["conversations_failed"] == 2
    reasons = " ".join(f["reason"] for f in manifest["failures"])
    assert "reply.interactivity is bool True, expected number" in reasons
    assert judged > 2  # asked again, not taken as 1.0


def test_a_math_extraction_without_answer_is_asked_again_then_fails_the_conversation(tmp_path):
    def unboxed_policy(call):
        return "Let me work it out. The answer is 3."  # no box: the judge extracts the answer

    def judge_without_answer(call):
        prompt = call.messages[-1]["content"]
        return judge(call) if '"interactivity"' in prompt else json.dumps({"final": "3"})

    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(POLICY, unboxed_policy)
        server.set_script(JUDGE, judge_without_answer)
        result, manifest = run_failing(tmp_path, server)
    assert result.exit_code == 1, result.output
    assert manifest["counts"]["conversations_ok"] == 0  # never an accuracy of 0 for every future
    assert "reply lacks the required field 'answer'" in " ".join(f["reason"] for f in manifest["failures"])
