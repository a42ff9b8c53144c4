"""An out dir for the `collabgen view` tests: a math run on the scripted server where one
conversation's plain replies carry hostile markup, one conversation fails (its judge
never answers in JSON) and one candidate per turn of another is cut at its token budget.

`make_view_eval` adds an eval next to it (OUT/eval, `collabgen eval` with two scripted
policies): "asker" asks a question first, "direct" answers at once and puts the hostile
markup before its answer on one seed; on the failing seed the judge fails both."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from collabgen.cli import app
from tests import scripts
from tests.fakeserver import FakeLLMServer, Reply, ScriptCall
from tests.helpers import math_recipe, write_recipe

EVAL_POLICIES = ("direct", "asker")  # the report's order: the first is the paired baseline
ASKER_QUESTION = "Quick question before I start: do you want an exact value or a decimal?"

HOSTILE = ('<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> '
           '[click me](javascript:window.__pwned=3) </script><!-- ')
HOSTILE_PROBLEM = "3^2"  # its conversation's plain candidates start with HOSTILE
FAILING_PROBLEM = "9 - 4"  # its judge never answers in JSON: the conversation fails
TRUNCATED_PROBLEM = "7 \\times 6"  # its second candidate is cut at its token budget


def _policy(call: ScriptCall) -> str | Reply:
    reply = scripts.math_policy(call)
    if scripts.is_proactive(call):
        return reply
    if HOSTILE_PROBLEM in call.last_user:
        return HOSTILE + reply
    if TRUNCATED_PROBLEM in call.last_user and call.choice_index == 1:
        return Reply(text="Let me work it out step by", finish_reason="length")
    return reply


def _judge(call: ScriptCall) -> str | Reply:
    if FAILING_PROBLEM in call.messages[-1]["content"]:
        return scripts.never_parsable_judge(call)
    return scripts.judge(call)


def make_view_run(base: Path) -> Path:
    out = base / "out"
    with FakeLLMServer() as server:
        scripts.install_math(server)
        server.set_script(scripts.POLICY, _policy)
        server.set_script(scripts.JUDGE, _judge)
        recipe = math_recipe(server.base_url, out, **{"generation.candidates": 4,
                                                      "generation.max_failure_rate": 0.5})
        recipe["models"]["judge"]["parse_retries"] = 0
        result = CliRunner().invoke(app, ["run", str(write_recipe(base / "math.yaml", recipe))])
        assert result.exit_code == 0, result.output
    return out


def _eval_answer(call: ScriptCall) -> str:
    return scripts.math_policy(call)


def _asker(call: ScriptCall) -> str:
    """Asks one clarifying question first, then answers."""
    if not any(m["role"] == "assistant" for m in call.messages):
        return ASKER_QUESTION
    return _eval_answer(call)


def _direct(call: ScriptCall) -> str:
    """Answers at once; on the hostile seed its answer starts with HOSTILE."""
    reply = _eval_answer(call)
    return HOSTILE + reply if HOSTILE_PROBLEM in call.last_user else reply


def make_view_eval(out: Path, base: Path) -> Path:
    """`collabgen eval` of the two policies into OUT/eval; returns that folder."""
    with FakeLLMServer() as server:
        scripts.install_math(server)
        server.set_script(scripts.JUDGE, _judge)
        server.set_script("asker", _asker)
        server.set_script("direct", _direct)
        recipe = math_recipe(server.base_url, out, **{"generation.max_failure_rate": 0.5})
        recipe["models"]["judge"]["parse_retries"] = 0
        recipe["eval"] = {"source": recipe["task"]["source"], "max_turns": 3, "bootstrap": 300}
        args = ["eval", str(write_recipe(base / "eval.yaml", recipe)),
                *(a for name in EVAL_POLICIES for a in ("--policy", f"name={name},model={name}"))]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    return out / "eval"
