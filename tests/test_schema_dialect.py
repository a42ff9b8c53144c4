"""Every schema collabgen sends is one its backend takes (OpenAI strict mode takes a subset
of JSON Schema: no `maxLength`, every property required, every object closed), and what a
backend is not sent is checked on the parsed reply: a reply breaking it is asked again."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from collabgen.app.context import check_schemas
from collabgen.config.errors import RecipeError
from collabgen.config.recipe import ModelConfig, Recipe
from collabgen.engine.simulator import parse_user_reply
from collabgen.models.base import CallFailed, ChatRequest
from collabgen.models.executor import RoleModel
from collabgen.models.openai_backend import OpenAIBackend
from collabgen.models.registry import build_role
from collabgen.models.schema_dialect import Dropped, SchemaUntranslatable, for_backend, openai_strict
from collabgen.models.usage import UsageBook
from collabgen.prompting import PROMPTS_DIR, Prompts
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe
from tests.openai_strict import strict_schema_errors

SHIPPED = sorted(PROMPTS_DIR.glob("**/*.schema.json"))
USER_SCHEMA = json.loads((PROMPTS_DIR / "user_simulator.schema.json").read_text())


def test_the_shipped_schemas_are_found():
    assert len(SHIPPED) >= 11 and any(p.parent.name == "tasks" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
@pytest.mark.parametrize("model", ["gpt-4o-mini", "ft:gpt-4o-mini:org::abc"])
def test_every_shipped_schema_translated_for_openai_is_taken_in_strict_mode(path: Path, model: str):
    schema = json.loads(path.read_text())
    before = copy.deepcopy(schema)
    sent = for_backend(ModelConfig(model=model), schema).schema
    assert strict_schema_errors(sent, model) == []
    assert schema == before  # the template's schema itself is not changed


def test_the_user_simulator_schema_as_written_is_refused_and_its_lengths_are_dropped():
    assert "'maxLength' is not permitted" in strict_schema_errors(USER_SCHEMA, "gpt-4o")[0]
    translated = openai_strict(USER_SCHEMA)
    assert translated.dropped == (Dropped("reply.thought", "maxLength", 400), Dropped("reply.message", "minLength", 1),
                                  Dropped("reply.message", "maxLength", 1200))
    assert translated.residual == {"properties": {"thought": {"maxLength": 400},
                                                  "message": {"minLength": 1, "maxLength": 1200}}}


def test_fine_tuned_models_also_lose_number_bounds_which_are_checked_after():
    judge = json.loads((PROMPTS_DIR / "interactivity_judge.schema.json").read_text())
    assert openai_strict(judge).residual is None  # minimum/maximum: supported by OpenAI's own models
    assert openai_strict(judge, fine_tuned=True).residual == {
        "properties": {"interactivity": {"minimum": 0, "maximum": 1}}}


def test_optional_properties_become_required_and_objects_closed():
    loose = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "object", "properties": {
        "c": {"type": "integer", "default": 3}}}}, "required": ["a"]}
    sent = openai_strict(loose).schema
    assert strict_schema_errors(sent) == []
    assert sent["required"] == ["a", "b"] and sent["properties"]["b"]["required"] == ["c"]
    assert sent["additionalProperties"] is False and sent["properties"]["b"]["additionalProperties"] is False


def test_a_constraint_dropped_inside_anyof_is_checked_against_the_whole_branch():
    schema = {"type": "object", "properties": {"v": {"anyOf": [{"type": "string", "maxLength": 2},
                                                               {"type": "integer"}]}}}
    translated = openai_strict(schema)
    assert strict_schema_errors(translated.schema) == []
    assert translated.residual == {"properties": {"v": {"anyOf": schema["properties"]["v"]["anyOf"]}}}


@pytest.mark.parametrize("keyword", [{"not": {"type": "null"}}, {"allOf": [{"type": "string"}]},
                                     {"patternProperties": {"x": {}}}])
def test_a_keyword_neither_sent_nor_checkable_is_refused(keyword):
    schema = {"type": "object", "properties": {"v": {"type": "string", **keyword}}}
    with pytest.raises(SchemaUntranslatable, match=f"reply.v: '{next(iter(keyword))}'"):
        openai_strict(schema)


def test_anthropic_vllm_and_a_full_dialect_server_are_sent_the_schema_as_written():
    for config in (ModelConfig(model="m", backend="anthropic"), ModelConfig(model="m", backend="vllm"),
                   ModelConfig(model="m", schema_dialect="full")):
        translated = for_backend(config, USER_SCHEMA)
        assert translated.schema == USER_SCHEMA and translated.residual is None
    sent = OpenAIBackend(ModelConfig(model="m", base_url="http://127.0.0.1:9/v1", schema_dialect="full"), None).body(
        ChatRequest(messages=[], json_mode=True, json_schema=USER_SCHEMA, stage="user"))
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["message"]["maxLength"] == 1200
    assert "schema_dialect" not in ModelConfig(model="m").model_dump()  # the default leaves fingerprints alone


def test_an_untranslatable_template_schema_is_a_recipe_error_before_any_call(tmp_path):
    (tmp_path / "user_simulator.schema.json").write_text(json.dumps(
        {**USER_SCHEMA, "properties": {**USER_SCHEMA["properties"], "mood": {"not": {"type": "null"}}}}))
    recipe = Recipe.model_validate(math_recipe("http://127.0.0.1:9/v1", tmp_path / "out"))
    check_schemas(recipe, Prompts(), ["user_simulator"])  # the shipped one translates
    with pytest.raises(RecipeError, match=r"template user_simulator.schema.json, for models.user .*'not'"):
        check_schemas(recipe, Prompts(extra_dirs=[tmp_path]), ["user_simulator"])


def user_role(server: FakeLLMServer) -> RoleModel:
    config = ModelConfig(model="user-sim", base_url=server.base_url, temperature=1.0, retry_wait=0.01,
                         parse_retries=2)
    return build_role("user", config, OpenAIBackend(config, None), None, UsageBook())


def reply(thought: str, message: str = "Please help.") -> str:
    return json.dumps({"thought": thought, "satisfied": False, "message": message})


async def ask_user(role: RoleModel):
    return await role.complete_parsed([{"role": "user", "content": "go"}], seed=1, stage="user",
                                      parse=parse_user_reply, json_schema=USER_SCHEMA)


async def test_a_reply_breaking_a_dropped_length_is_asked_again():
    replies = iter([reply("x" * 401), reply("short")])
    with FakeLLMServer(scripts={"user-sim": lambda call: next(replies)}) as server:
        (only,) = await ask_user(user_role(server))
        calls = server.ok_calls("user-sim")
    assert only.value.message == "Please help."
    assert len(calls) == 2  # the first reply's 401-character thought was not taken
    sent = calls[0].body["response_format"]["json_schema"]["schema"]
    assert "maxLength" not in json.dumps(sent) and strict_schema_errors(sent) == []


async def test_a_reply_always_breaking_a_dropped_length_fails_with_the_reason():
    with FakeLLMServer(scripts={"user-sim": lambda call: reply("ok", "y" * 1201)}) as server:
        with pytest.raises(CallFailed, match="reply.message is 1201 characters, more than maxLength 1200"):
            await ask_user(user_role(server))
        assert len(server.ok_calls("user-sim")) == 3  # parse_retries 2: asked again twice
