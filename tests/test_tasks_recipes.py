"""The shipped recipes: every one validates; the defaults keep the paper's formula, the
`recipes/collabllm/` presets carry the reference code's numbers, the `recipes/paper/` ones
the paper-era code's, and the math one runs."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.recipe import Recipe
from collabgen.engine.multiturn_reward import token_penalty
from collabgen.tasks.recipe_check import load_recipe
from tests import scripts
from tests.fakeserver import FakeLLMServer
from tests.helpers import RECIPES, SEEDS, read_shards, recipe_from_file, write_recipe
from tests.scripts import install_math

DEFAULTS = {"mediumdoc": ("document", "bleu"), "bigcodebench": ("code", "pass_rate"), "math": ("math", "accuracy")}
PRESETS = {
    # name: (task, reward weights, token-penalty weight per thousand tokens)
    "math": ("math", {"accuracy": 1.0, "interactivity": 0.5, "token_penalty": 0.5}),
    "mediumdoc": ("document", {"bleu_nltk": 1.0, "token_penalty": 0.1}),
    "bigcodebench": ("code", {"pass_rate": 1.0, "token_penalty": 0.5}),
}
PAPER = {
    # name: (task, reward weights, lambda, user model, policy temperature, max_turns, min_gap)
    "math": ("math", {"accuracy": 1.0, "interactivity": 1.0, "token_penalty": 1.0}, 5e-4, "gpt-4o-mini", 0.6, 6, 0.05),
    "mediumdoc": ("document", {"bleu_nltk": 1.0, "token_penalty": 1.0}, 1e-4, "gpt-4o", 0.8, 8, 0.02),
    "bigcodebench": ("code", {"pass_rate": 1.0, "interactivity": 1.0, "token_penalty": 1.0}, 5e-4, "gpt-4o-mini",
                     0.5, 8, 0.02),
}
ALL = sorted(p.relative_to(RECIPES).with_suffix("").as_posix() for p in RECIPES.rglob("*.yaml"))


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "dummy")
    monkeypatch.delenv("POLICY_BASE_URL", raising=False)
    monkeypatch.delenv("POLICY_MODEL", raising=False)


def test_the_shipped_recipes_are_the_ones_this_file_checks():
    assert set(ALL) == {*DEFAULTS, *(f"collabllm/{n}" for n in PRESETS), *(f"paper/{n}" for n in PAPER),
                        "eval/abgcoqa", "custom_qa"}


@pytest.mark.parametrize("name", ALL)
def test_every_shipped_recipe_validates_with_its_task(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.task.limit and str(recipe.output.dir).startswith("out/")
    header = (RECIPES / f"{name}.yaml").read_text().split("\ntask:")[0]
    assert "paper default" not in header.lower()
    if not name.startswith("eval/"):
        assert re.search(r"calls per conversation: \d+ \(policy \d+, user \d+, judge \d+\)", header)


@pytest.mark.parametrize(("name", "task_and_metric"), DEFAULTS.items())
def test_the_default_recipes_keep_the_papers_formula(name, task_and_metric):
    task, metric = task_and_metric
    recipe = Recipe.from_yaml(RECIPES / f"{name}.yaml")
    assert recipe.task.type == task and recipe.task.source.hub is not None
    # MR = task metric + interactivity + token penalty, -min(lambda * tokens, 1).
    assert recipe.reward.weights == {metric: 1.0, "interactivity": 1.0, "token_penalty": 1.0}
    assert recipe.reward.token_penalty.lambda_ == (1e-4 if task == "document" else 5e-4)
    assert recipe.reward.token_penalty.cap == 1.0
    gen = recipe.generation
    # The reference code's defaults (its build script and its DPO script's minimum gap).
    assert (gen.candidates, gen.futures, gen.window, gen.min_gap, gen.proactive_share) == (2, 3, 4, 0.02, 0.5)
    assert recipe.models.user.temperature == 1.0 and recipe.models.judge.temperature == 0.0
    if name == "mediumdoc":  # the main job: in-process engines, no server, no key
        roles = recipe.models.roles().values()
        assert all(c.backend == "vllm" and c.api_key_env is None for c in roles)
        assert recipe.models.policy.model == "Qwen/Qwen2.5-7B-Instruct"
        # The user and the judge share one engine (same model and engine_args) on a stronger model.
        user, judge = recipe.models.user, recipe.models.judge
        assert (user.model, user.engine_args) == (judge.model, judge.engine_args) == (
            "Qwen/Qwen2.5-72B-Instruct-AWQ", user.engine_args)
        share = sum(c.engine_args["gpu_memory_utilization"] for c in (recipe.models.policy, user))
        assert share <= 0.9  # both engines fit on one GPU
    else:
        assert recipe.models.policy.base_url == "http://localhost:8000/v1"
        assert {recipe.models.user.api_key_env, recipe.models.judge.api_key_env} == {"OPENAI_API_KEY"}
    assert str(recipe.output.dir) == f"out/{name}"


def test_the_default_recipes_build_the_datasets_as_the_reference_does():
    math = Recipe.from_yaml(RECIPES / "math.yaml")
    assert math.task.source.select.where == {"level": "Level 5"} and math.eval.split == "test"
    medium = Recipe.from_yaml(RECIPES / "mediumdoc.yaml").task.source.select
    assert (medium.sort_by, medium.descending, medium.top_fraction) == ("timestamp", True, None)
    assert medium.top_parts.model_dump() == {"train": 0.02, "test": 0.005}
    assert medium.split.model_dump() == {"seed": 42, "part": "train", "test_first": True}
    assert medium.max_tokens.model_dump() == {"column": "text", "limit": 512}
    code = Recipe.from_yaml(RECIPES / "bigcodebench.yaml")
    assert code.task.source.hub.split == code.eval.split == "v0.1.2"
    assert code.task.source.select.split.model_dump() == {"seed": 42, "train_fraction": 0.8, "part": "train",
                                                          "test_first": False}
    assert code.eval.part == "test"


@pytest.mark.parametrize(("name", "spec"), PRESETS.items())
def test_the_collabllm_presets_carry_the_reference_codes_numbers(name, spec):
    task, weights = spec
    recipe = load_recipe(RECIPES / "collabllm" / f"{name}.yaml")
    default = Recipe.from_yaml(RECIPES / f"{name}.yaml")
    assert recipe.task.type == task and recipe.reward.weights == weights
    assert recipe.task.source.model_dump() == default.task.source.model_dump()  # the same seeds
    gen = recipe.generation
    # 3 candidates; 3 futures of 4 new messages; 14 messages = the opening + 7 assistant replies.
    assert (gen.candidates, gen.futures, gen.window, gen.max_turns) == (3, 3, 4, 7)
    assert gen.proactive_share == 0.5 and gen.reuse_futures is False and gen.system_prompt is None
    assert recipe.task.limit == (100 if task == "math" else 200)
    models = recipe.models
    assert models.user.model == models.policy.model == "gpt-4o"
    assert (models.judge.backend, models.judge.model) == ("anthropic", "claude-3-5-sonnet-latest")
    assert models.policy.temperature == (0.9 if task == "document" else 0.8) and models.judge.temperature == 0
    # "-0.5 per thousand tokens" exactly: weight * -min(lambda * tokens, cap), no cap.
    assert recipe.reward.token_penalty.lambda_ == 1e-3 and recipe.reward.token_penalty.cap is None
    per_thousand = {"math": -0.5, "document": -0.1, "code": -0.5}[task]
    for tokens in (0, 1, 999, 2048, 14_336, 1_000_000):
        got = weights["token_penalty"] * token_penalty(tokens, recipe.reward)
        assert got == pytest.approx(per_thousand * tokens / 1000, abs=1e-12)


@pytest.mark.parametrize(("name", "spec"), PAPER.items())
def test_the_paper_presets_carry_the_paper_era_codes_numbers(name, spec):
    task, weights, lambda_, user, temperature, max_turns, min_gap = spec
    recipe = load_recipe(RECIPES / "paper" / f"{name}.yaml")
    assert recipe.task.type == task and recipe.reward.weights == weights and recipe.task.limit == 500
    # reward = llm_rw + task - min(cost_weight * tokens, 1), every message after the history counted.
    penalty = recipe.reward.token_penalty
    assert (penalty.lambda_, penalty.cap, penalty.over) == (lambda_, 1.0, "all")
    # The 1-3 judge on the candidate and its future, the history as context.
    assert (recipe.reward.interactivity, recipe.reward.interactivity_scale) == ("window", "three_level")
    gen = recipe.generation
    assert (gen.candidates, gen.futures, gen.window, gen.max_turns, gen.min_gap) == (2, 3, 4, max_turns, min_gap)
    assert gen.proactive_share == 0.5 and gen.reuse_futures is False
    models = recipe.models
    assert (models.policy.model, models.policy.temperature, models.policy.top_p) == ("gpt-4o", temperature, 0.9)
    assert (models.user.model, models.user.temperature, models.user.top_p) == (user, 1.0, 1.0)
    assert (models.judge.backend, models.judge.model, models.judge.temperature, models.judge.top_p) == (
        "anthropic", "claude-3-5-sonnet-20240620", 0.2, 0.9)
    header = (RECIPES / "paper" / f"{name}.yaml").read_text().split("\ntask:")[0]
    assert "Wuyxin/collabllm, branch review" in header and "generate_conv_dpo.sh:43" in header
    if task == "document":  # the newest articles are the test part, unshuffled
        assert recipe.task.source.select.split.shuffle == "none" and recipe.eval.part == "test"
    if task == "code":  # the part labels shuffled with seed 42, dealt in order
        assert recipe.task.source.select.split.model_dump()["shuffle"] == "labels"
        assert recipe.task.options["pass_mode"] == "all"
    if task == "math":
        assert recipe.task.options == {"accuracy": "judge"}


def test_the_math_preset_judges_as_the_reference_does():
    recipe = Recipe.from_yaml(RECIPES / "collabllm" / "math.yaml")
    assert recipe.task.options == {"accuracy": "judge"} and recipe.reward.interactivity == "conversation"


def test_only_the_math_preset_filters_sft_as_the_reference_does():
    # scripts/train/sft.py: --lower_bound_metric rewards.accuracy --lower_bound 0.5 for math-hard only.
    minimums = {name: load_recipe(RECIPES / "collabllm" / f"{name}.yaml").output.sft.min_final for name in PRESETS}
    assert minimums == {name: ({"accuracy": 0.5} if name == "math" else {}) for name in PRESETS}
    assert all(not Recipe.from_yaml(RECIPES / f"{name}.yaml").output.sft.min_final for name in DEFAULTS)


def test_abgcoqa_is_an_evaluation_recipe():
    recipe = Recipe.from_yaml(RECIPES / "eval" / "abgcoqa.yaml")
    assert recipe.task.type == "clarify" and recipe.eval.split == "test"
    header = (RECIPES / "eval" / "abgcoqa.yaml").read_text().split("\ntask:")[0]
    assert "collabgen eval recipes/eval/abgcoqa.yaml" in header and "Not a" in header


def test_math_recipe_runs_end_to_end_and_writes_the_math_card(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        out = tmp_path / "out"
        recipe = recipe_from_file("math", server.base_url, out, SEEDS / "math.jsonl",
                                  **{"task.limit": 3, "generation.max_turns": 2})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "math.yaml", recipe))])
    assert result.exit_code == 0, result.output
    candidates = read_shards(out, "candidates")
    # A candidate's accuracy is the share of its 3 futures with the right answer.
    shares = {round(v * 3, 9) for v in candidates["metrics"].struct.field("accuracy")}
    assert shares <= {0.0, 1.0, 2.0, 3.0} and len(shares) > 1
    card = (out / "README.md").read_text()
    # Local seeds: the card does not claim they are MATH (see tests/test_card.py for the benchmark).
    assert "license: other" in card and "hendrycks2021math" not in card and "math.jsonl" in card


def test_the_paper_math_preset_runs_with_the_three_level_judge_and_every_token_counted(tmp_path):
    from collabgen.tasks.reference_metrics import cl100k_tokens

    with FakeLLMServer() as server:
        install_math(server)
        out = tmp_path / "out"
        # The scripted judge grades no accuracy prompt: accuracy from the boxed answer here.
        recipe = recipe_from_file("paper/math", server.base_url, out, SEEDS / "math.jsonl",
                                  **{"task.limit": 2, "generation.max_turns": 2, "task.options": {}})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "math.yaml", recipe))])
        prompts = [c.body["messages"][-1]["content"] for c in server.calls_for(scripts.JUDGE)]
    assert result.exit_code == 0, result.output
    assert any(scripts.THREE_LEVEL_PROMPT in p for p in prompts)
    candidates = read_shards(out, "candidates")
    futures = [f for row in candidates["futures"].to_list() for f in row]
    # The scripted judge answers 3 or 1: each future scores 1 or 1/3, never the unit scale's 0.9 / 0.2.
    assert {round(f["metrics"]["interactivity"], 9) for f in futures} <= {1.0, round(1 / 3, 9)}
    # Every future's penalty counts its users' words: at least lambda x their cl100k tokens.
    for f in futures:
        users = sum(cl100k_tokens(m["content"]) for m in f["messages"] if m["role"] == "user")
        assert -f["metrics"]["token_penalty"] >= 5e-4 * users > 0
