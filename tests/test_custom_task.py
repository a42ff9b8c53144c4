"""`task.type: custom`: a task declared in the recipe runs end to end, and the simulated
user never sees a reference (proved from the fake server's request log)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from collabgen.app.context import prepare
from collabgen.app.generate import run_async
from collabgen.app.plan import plan_run
from collabgen.cli import app
from collabgen.config.errors import RecipeError, SeedError
from collabgen.prompting import Prompts
from collabgen.tasks.custom import CustomTask
from collabgen.tasks.recipe_check import load_recipe
from tests.fakeserver import FakeLLMServer, ScriptCall
from tests.helpers import RECIPES, math_recipe, read_shards, write_recipe
from tests.scripted_backend import ScriptedBackend
from tests.scripts import JUDGE, POLICY, USER, is_proactive, judge, say, sim_view

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "http://127.0.0.1:9/v1"

# question -> (what the user means, the right answer, the answer a policy guesses without asking)
QA = {
    "What is the capital?": ("You mean the capital of Australia.", "Canberra", "Sydney"),
    "When did it fall?": ("You mean the Berlin Wall.", "1989", "1453"),
}
SECRET = "GRADER-ONLY"  # in a reference field no model but the judge should ever read


def seed_rows() -> list[dict[str, Any]]:
    return [{"question": q, "details": d, "answer": [a, f"{a}!"], "notes": f"{SECRET}-{i}: the answer is {a}"}
            for i, (q, (d, a, _)) in enumerate(QA.items())]


def custom_options(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": "qa",
        "fields": {"question": "str", "details": "str?", "answer": "list[str]", "notes": "str"},
        "user_fields": ["question", "details"],
        "brief": "You want to know: {{ seed.question }}\n{% if seed.details %}What you mean: {{ seed.details }}{% endif %}",
        "metrics": [
            {"name": "correct", "type": "exact_match", "reference": "answer",
             "prediction": {"extract": "the assistant's final answer, a short phrase"}},
            {"name": "helpful", "type": "rubric", "reference": "notes", "rubric": "Answers what the user meant."},
            {"name": "format", "type": "regex", "pattern": r"^ANSWER: ", "full_match": False},
        ],
    }
    options.update(overrides)
    return options


def custom_recipe(base_url: str, tmp_path: Path, **options: Any) -> dict[str, Any]:
    seeds = tmp_path / "qa.jsonl"
    seeds.write_text("".join(json.dumps(r) + "\n" for r in seed_rows()), encoding="utf-8")
    recipe = math_recipe(base_url, tmp_path / "out", **{"generation.futures": 2, "generation.max_turns": 2})
    recipe["task"] = {"type": "custom", "source": {"path": str(seeds)}, "options": custom_options(**options)}
    recipe["reward"]["weights"] = {"correct": 1.0, "helpful": 0.5, "format": 0.1, "interactivity": 0.5,
                                   "token_penalty": 1.0}
    return recipe


# --------------------------------------------------------------------------- scripted models


def qa_user(call: ScriptCall) -> str:
    view = sim_view(call)
    if view.opening:
        return say(re.search(r"You want to know: (.*)", view.system).group(1))
    if view.last.startswith("ANSWER: "):
        return say("thanks!", satisfied=True)
    meant = re.search(r"What you mean: (.*)", view.system)
    return say(meant.group(1) if meant and "?" in view.last else "hmm?")


def qa_policy(call: ScriptCall) -> str:
    said = [m["content"] for m in call.messages if m["role"] == "user"]
    _, right, wrong = next(v for q, v in QA.items() if said[0] == q)
    if any(s.startswith("You mean") for s in said):
        return f"ANSWER: {right}"
    if is_proactive(call):
        return "Which one do you mean?"
    return f"ANSWER: {wrong}"


def qa_judge(call: ScriptCall) -> str:
    prompt = call.messages[-1]["content"]
    if "<<<EVALUATE" in prompt:
        return judge(call)
    if '{"answer"' in prompt:
        answers = re.findall(r"^ASSISTANT: ANSWER: (.*)$", prompt, re.MULTILINE)
        return json.dumps({"answer": answers[-1] if answers else ""})
    if '"score"' in prompt:
        graded = prompt.split("<<<GRADE", 1)[-1].split("GRADE>>>", 1)[0]
        return json.dumps({"reason": "scripted", "score": 0.9 if "ANSWER:" in graded else 0.1})
    return "no idea"


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        fake.set_script(POLICY, qa_policy)
        fake.set_script(USER, qa_user)
        fake.set_script(JUDGE, qa_judge)
        yield fake


# --------------------------------------------------------------------------- end to end


def test_a_custom_task_runs_end_to_end_with_exact_match_rubric_and_regex(server, tmp_path):
    recipe = write_recipe(tmp_path / "qa.yaml", custom_recipe(server.base_url, tmp_path))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"

    candidates = read_shards(out, "candidates")
    assert set(candidates["conv_id"]) == {"qa-000000", "qa-000001"}
    metrics = candidates["metrics"].struct
    assert set(metrics.fields) == {"correct", "helpful", "format", "interactivity", "token_penalty"}
    # The proactive candidate asks, learns what is meant and answers right in every future;
    # the plain one answers the wrong reading first and is told "hmm?".
    turn0 = candidates.filter(candidates["turn"] == 0)
    by_kind = {(r["conv_id"], r["proactive"]): r["metrics"] for r in turn0.iter_rows(named=True)}
    for conv in ("qa-000000", "qa-000001"):
        assert by_kind[(conv, True)]["correct"] == 1.0 and by_kind[(conv, False)]["correct"] == 0.0
        assert by_kind[(conv, True)]["helpful"] == pytest.approx(0.9)
        assert by_kind[(conv, True)]["format"] == 1.0
    pairs = read_shards(out, "pairs")
    assert pairs.height >= 2 and set(pairs["task"]) == {"qa"}
    assert all(row["proactive_chosen"] for row in pairs.filter(pairs["turn"] == 0).iter_rows(named=True))
    assert "# collabgen qa collaboration data" in (out / "README.md").read_text()


def test_the_simulated_user_never_sees_a_reference(server, tmp_path):
    recipe = write_recipe(tmp_path / "qa.yaml", custom_recipe(server.base_url, tmp_path))
    assert CliRunner().invoke(app, ["run", str(recipe)]).exit_code == 0
    user_calls = server.ok_calls(USER)
    assert user_calls
    answers = [a for row in seed_rows() for a in row["answer"]]
    for call in user_calls:
        body = json.dumps(call.body)
        assert SECRET not in body  # the grader-only field: not in any user request, ever
        system = call.body["messages"][0]["content"]
        assert "You want to know:" in system and "What you mean:" in system  # the user fields are there
        assert not any(a in system for a in answers)  # the gold: not in the brief
        if sim_view(SimpleNamespace(messages=call.body["messages"])).opening:  # nothing said yet
            assert not any(a in body for a in answers)
    assert SECRET not in json.dumps([c.body for c in server.ok_calls(POLICY)])
    # ...while the rubric judge got it as its reference.
    assert any(SECRET in json.dumps(c.body) and "<<<RUBRIC" in json.dumps(c.body) for c in server.ok_calls(JUDGE))


def test_plan_counts_a_custom_task_and_equals_a_run_that_plays_every_turn(tmp_path):
    recipe = load_recipe(custom_recipe(UNREACHABLE, tmp_path))
    base = ScriptedBackend("judge")
    base.on("interactivity", lambda request, _: json.dumps({"thought": "t", "interactivity": 0.5}))
    base.on("extraction", lambda request, _: json.dumps({"answer": f"answer {request.seed}"}))
    base.on("rubric", lambda request, _: json.dumps({"reason": "r", "score": 0.5}))
    backends = {role: base.for_role(role) for role in ("policy", "user", "judge")}
    report = asyncio.run(run_async(recipe, backends=backends, progress=False))
    assert report.exit_code == 0 and report.ok == report.seeds == 2
    planned = asyncio.run(plan_run(prepare(recipe, check_keys=False)))
    assert len(base.log) / report.seeds == planned.calls_per_conversation
    assert base.requests(stage="rubric") and base.requests(stage="extraction")


def test_the_shipped_custom_recipe_plans_from_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    monkeypatch.delenv("POLICY_BASE_URL", raising=False)
    result = CliRunner().invoke(app, ["plan", "recipes/custom_qa.yaml"])
    assert result.exit_code == 0, result.output
    assert "task qa, 6 seeds" in result.output
    header = (RECIPES / "custom_qa.yaml").read_text().split("\ntask:")[0]
    planned = re.search(r"calls per conversation \(upper bound, 4 turns\): (\d+)", result.output).group(1)
    assert f"calls per conversation: {planned} " in header


# --------------------------------------------------------------------------- the recipe check


def check(tmp_path: Path, **options: Any) -> None:
    load_recipe(custom_recipe(UNREACHABLE, tmp_path, **options))


def test_reward_weights_are_keyed_by_the_recipes_metric_names(tmp_path):
    data = custom_recipe(UNREACHABLE, tmp_path)
    data["reward"]["weights"]["corect"] = 1.0
    with pytest.raises(RecipeError, match=r"reward.weights.corect: unknown metric for task 'custom'.*did you mean 'correct'"):
        load_recipe(data)
    assert CustomTask.metric_names(CustomTask.Options.model_validate(custom_options())) == ("correct", "helpful", "format")


@pytest.mark.parametrize(("options", "message"), [
    ({"user_fields": ["question", "answer"]}, "reference 'answer' is in user_fields: the simulated user must never see"),
    ({"user_fields": ["question", "colour"]}, "'colour' not among the declared fields"),
    ({"brief": "Q: {{ seed.question }} (psst: {{ seed.notes }})"}, "the brief reads seed.notes, not in user_fields"),
    ({"brief": "{% if x %}{{ seed['answer'] }}{% endif %}"}, "the brief uses x; it is rendered with `seed` only"),
    ({"brief": "{{ seed['answer'] }}"}, "the brief reads seed.answer, not in user_fields"),
    ({"brief": "{% if %}"}, "the brief is not a valid Jinja template"),
    ({"brief": None}, "give exactly one of `brief`"),
    ({"brief_file": "brief.j2"}, "give exactly one of `brief`"),
    ({"metrics": [{"type": "exact_match", "reference": "colour"}]}, "reference 'colour' is not a declared field"),
    ({"metrics": [{"type": "exact_match", "reference": "details"}]}, "must be a required field"),
    ({"metrics": [{"type": "unit_tests", "reference": "answer"}]}, "reference 'answer' is list\\[str\\]; unit_tests reads str"),
    ({"metrics": [{"type": "bleu", "reference": "notes"}, {"type": "bleu", "reference": "answer"}]},
     "two metrics are named 'bleu'"),
    ({"metrics": [{"type": "rouge_l", "reference": "notes", "name": "interactivity"}]}, "taken by the intrinsic metric"),
    ({"fields": {"question": "str", "json": "str"}}, "'json' cannot be a seed field name"),
    ({"fields": {"question": "text"}}, "fields.question.type"),
    ({"name": "math"}, "a built-in task's name"),
])
def test_a_wrong_custom_recipe_is_refused_with_what_to_fix(tmp_path, options, message):
    with pytest.raises(RecipeError, match=message) as caught:
        check(tmp_path, **options)
    assert "task.options" in str(caught.value)


def test_errors_name_the_recipe_line(tmp_path):
    data = custom_recipe(UNREACHABLE, tmp_path, user_fields=["question", "answer"])
    path = write_recipe(tmp_path / "r.yaml", data)
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    lines = path.read_text().splitlines()
    metrics = next(i for i, text in enumerate(lines, 1) if text.strip() == "metrics:")
    output = " ".join(result.output.split())
    assert f"{path}:{metrics}: task.options.metrics: metric 'correct': reference 'answer' is in " \
        "user_fields" in output


def test_fields_in_list_form_with_required_and_optional(tmp_path):
    fields = [{"name": "question"}, {"name": "details", "required": False}, {"name": "answer", "type": "list[str]"},
              "notes"]
    t = CustomTask(custom_options(fields=fields))
    seed = t.seed_from_row({"question": 7, "answer": "Canberra", "notes": "n"}, {}, "row 0")
    assert (seed.question, seed.details, seed.answer) == ("7", None, ["Canberra"])  # type: ignore[attr-defined]
    with pytest.raises(SeedError, match=r"column 'note_column' \(seed field 'notes'\) is missing"):
        t.seed_from_row({"question": "q", "answer": "a"}, {"notes": "note_column"}, "row 1")


def test_the_brief_from_a_file_gets_the_user_fields_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("brief.j2").write_text("Ask about {{ seed.question }}.{% if seed.details %} Mean: {{ seed.details }}{% endif %}")
    t = CustomTask(custom_options(brief=None, brief_file="brief.j2"))
    seed = t.seed_from_row(seed_rows()[0], {}, "row 0")
    brief = t.user_brief(seed, Prompts())
    assert brief == "Ask about What is the capital?. Mean: You mean the capital of Australia."
    with pytest.raises(Exception, match="cannot read the brief template 'missing.j2'"):
        CustomTask(custom_options(brief=None, brief_file="missing.j2"))


def test_the_brief_cannot_reach_a_hidden_field_at_render_time_either():
    # A dynamic key escapes the static check; the brief's `seed` holds the user fields only.
    t = CustomTask(custom_options(brief="{% for k in ['question', 'notes'] %}{{ seed[k] }} {% endfor %}"))
    with pytest.raises(SeedError, match="row 0: the brief does not render for this row: .*'notes'"):
        t.seed_from_row(seed_rows()[0], {}, "row 0")


def test_the_example_recipe_documents_every_metric_type():
    from collabgen.tasks.custom_metrics import METRIC_TYPES

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A task without Python", 1)[1].split("\n## ", 1)[0]
    assert all(f"`{kind}`" in section for kind in METRIC_TYPES)
    shipped = yaml.safe_load((RECIPES / "custom_qa.yaml").read_text())
    assert shipped["task"]["type"] == "custom"


# --------------------------------------------------------------------------- the brief is sandboxed


def test_a_brief_reaching_python_internals_is_refused_at_the_recipe_check(server, tmp_path):
    brief = "{{ ''.__class__.__mro__[1].__subclasses__() }} {{ seed.question }}"
    path = write_recipe(tmp_path / "r.yaml", custom_recipe(server.base_url, tmp_path, brief=brief))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "the brief reads __class__, __mro__, __subclasses__: a brief may not reach Python internals" \
        in " ".join(result.output.split())
    assert server.calls == []


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_brief_that_builds_its_way_to_os_system_runs_nothing(server, tmp_path, command):
    # Names built at render time escape any static check: Jinja's sandbox stops them.
    marker = tmp_path / "pwned"
    brief = ("{{ (cycler|attr('__in' ~ 'it__')|attr('__glob' ~ 'als__'))['os'].system('touch " + str(marker)
             + "') }} {{ seed.question }}")
    path = write_recipe(tmp_path / "r.yaml", custom_recipe(server.base_url, tmp_path, brief=brief))
    result = CliRunner().invoke(app, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "qa.jsonl:1: the brief tried an operation Jinja's sandbox refuses (access to attribute '__init__'" \
        in " ".join(result.output.split())
    assert not marker.exists()
    assert server.calls == []


def test_the_packaged_prompts_render_in_the_sandbox_too(tmp_path):
    # A plugin's template folder is not ours either.
    (tmp_path / "evil.j2").write_text("{{ (x|attr('__cla' ~ 'ss__')) }}")
    with pytest.raises(Exception, match="access to attribute '__class__' of a 'str' object is unsafe"):
        Prompts(extra_dirs=[tmp_path]).render("evil", x="text")
