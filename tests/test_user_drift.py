"""A simulated user who does the assistant's work is a visible defect: its future is flagged
`user_drift`, left out of the MR, counted in the manifest, the run summary and `inspect`, and
a candidate whose every future drifted is never chosen."""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.engine.records import Candidate, Future, lead_future
from collabgen.tasks.drift import pastes_document, states_final_answer, writes_code
from tests import scripts
from tests.fakeserver import FakeLLMServer, ScriptCall
from tests.helpers import math_recipe, write_recipe

SIGNATURE = "import math\ndef task_func(a, b):"


def test_the_math_rule_sees_a_boxed_or_stated_answer_and_not_a_question():
    assert states_final_answer("so the answer is \\boxed{12}, right?")
    assert states_final_answer("I worked it out: the final answer is 12.")
    assert not states_final_answer("is the answer 12? I'm not sure")
    assert not states_final_answer("that doesn't look right, try again")


def test_the_code_rule_sees_code_beyond_the_signature_the_user_was_given():
    assert not writes_code(f"it must start like this:\n```python\n{SIGNATURE}\n```", SIGNATURE)
    assert not writes_code(f"```python\n{SIGNATURE}\n    pass\n```", SIGNATURE)
    assert writes_code(f"here you go:\n```python\n{SIGNATURE}\n    c = a + b\n    return c\n```", SIGNATURE)


ARTICLE = ("Rivers shape the land over thousands of years by carrying sediment downstream. "
           "Floods deposit rich soil on the plains that farmers have used since ancient times. "
           "Dams change this balance and can starve the delta of the sediment it needs. "
           "Engineers now release pulses of water to imitate the natural floods again.")


def test_the_document_rule_sees_pasted_sentences_and_not_shared_points():
    assert pastes_document(f"Write exactly this: {ARTICLE}", ARTICLE)
    assert not pastes_document("I'd like it to cover how floods feed the plains and how dams change that.", ARTICLE)
    assert not pastes_document(ARTICLE.split(". ")[0] + ".", ARTICLE)  # one sentence is a quote, not a rewrite


def _future(drifted: bool, score: float, length: int = 2) -> Future:
    return Future(messages=[{"role": "user", "content": "x"}] * length, tokens=[1] * length, terminated=False,
                  score=score, flags=["user_drift"] if drifted else [])


def test_drifted_futures_leave_the_mr_and_the_lead_and_an_all_drifted_candidate_is_never_chosen():
    mixed = Candidate(text="a", tokens=1, proactive=False, futures=[_future(True, 9.0, 5), _future(False, 1.0)])
    assert mixed.scored_futures == [mixed.futures[1]] and mixed.choosable
    assert lead_future(mixed.futures) == 1  # the longer future drifted: the next user message is the other's
    only = Candidate(text="b", tokens=1, proactive=False, futures=[_future(True, 9.0), _future(True, 8.0)])
    assert "user_drift_only" in only.flags and not only.choosable


def _drifting_user(call: ScriptCall) -> str:
    """The math user, except that the first sample of every future's opening solves the
    problem itself (the message a small model playing the user writes)."""
    view = scripts.sim_view(call)
    if not view.opening and call.choice_index == 0 and call.body.get("n", 1) > 1:
        return scripts.say("ok let me just do it: the answer is \\boxed{99}")
    return scripts.math_user(call)


def test_a_run_flags_drifting_futures_and_scores_only_the_others(tmp_path):
    with FakeLLMServer() as server:
        scripts.install_math(server)
        server.set_script(scripts.USER, _drifting_user)
        recipe = math_recipe(server.base_url, tmp_path / "out", **{"task.limit": 3, "generation.futures": 3})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 0, result.output
    candidates = pl.read_parquet(tmp_path / "out" / "candidates" / "*.parquet").to_dicts()
    drifted_any = [c for c in candidates if c["drifted_futures"]]
    assert drifted_any, "the scripted user drifted in no future"
    for row in candidates:
        futures = row["futures"]
        clean = [f for f in futures if "user_drift" not in f["flags"]]
        drifted = [f for f in futures if "user_drift" in f["flags"]]
        assert row["drifted_futures"] == len(drifted)
        assert all("\\boxed{99}" in " ".join(m["content"] for m in f["messages"] if m["role"] == "user")
                   for f in drifted)
        if clean:
            assert row["n_futures"] == len(clean)
            assert abs(row["score"] - sum(f["score"] for f in clean) / len(clean)) < 1e-9
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["flags"]["user_drift_futures"] == sum(r["drifted_futures"] for r in candidates)
    summary = " ".join(result.output.split())
    total = sum(len(r["futures"]) for r in candidates)
    assert f"{manifest['flags']['user_drift_futures']} of {total} futures" in summary and scripts.USER in summary
    shown = CliRunner().invoke(app, ["inspect", str(tmp_path / "out")])
    assert shown.exit_code == 0 and "simulated-user drift:" in " ".join(shown.output.split())
